#!/usr/bin/env bash
# DeepSeek-R1 on one node of 8 x H200 141 GB with vLLM: the FP8 weights (~690 GB) fit on one node
# with ~400 GB left for KV cache, so tensor parallel 8 alone, no pipeline stage, no Ray.
#
#   bash vllm-r1-8xh200.sh            # then base_urls: [http://THIS_NODE:8000/v1]
set -euo pipefail
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1}
PORT=${PORT:-8000}
exec vllm serve "$MODEL" \
  --served-model-name "$MODEL" \
  --host 0.0.0.0 --port "$PORT" \
  --tensor-parallel-size 8 \
  --max-model-len 34816 \
  --gpu-memory-utilization 0.92 \
  --enable-prefix-caching \
  --reasoning-parser deepseek_r1 \
  --trust-remote-code
