#!/usr/bin/env bash
# DeepSeek-R1 on 2 nodes of 8 x H100 with SGLang (the engine DeepSeek recommends for V3/R1): one
# tensor-parallel group of 16 GPUs across both nodes. Run on both nodes with the same HEAD_ADDR.
#
#   HEAD_ADDR=10.0.0.1 NODE_RANK=0 bash sglang-r1-2x8xh100.sh
#   HEAD_ADDR=10.0.0.1 NODE_RANK=1 bash sglang-r1-2x8xh100.sh
# Node 0 serves http://HEAD:30000/v1. For many replicas, put sglang_router in front
# (python -m sglang_router.launch_router --worker-urls ...) or list every replica in base_urls.
set -euo pipefail
: "${HEAD_ADDR:?set HEAD_ADDR to the address of node 0}" "${NODE_RANK:?set NODE_RANK to 0 or 1}"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1}
PORT=${PORT:-30000}
exec python3 -m sglang.launch_server \
  --model-path "$MODEL" \
  --served-model-name "$MODEL" \
  --tp 16 --nnodes 2 --node-rank "$NODE_RANK" \
  --dist-init-addr "$HEAD_ADDR:5000" \
  --host 0.0.0.0 --port "$PORT" \
  --context-length 34816 \
  --reasoning-parser deepseek-r1 \
  --trust-remote-code
