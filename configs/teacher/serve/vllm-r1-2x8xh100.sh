#!/usr/bin/env bash
# DeepSeek-R1 (671B, FP8 weights ~690 GB) on 2 nodes of 8 x H100 80 GB with vLLM: tensor parallel 8
# inside a node (NVLink), pipeline parallel 2 across the nodes (only activations cross the network),
# over a Ray cluster. Run on both nodes; HEAD_ADDR is the address of node 0. The reasoning parser puts the
# thinking in `reasoning_content`, which `distill generate` reads (inline <think> works too).
#
#   HEAD_ADDR=10.0.0.1 NODE_RANK=0 bash vllm-r1-2x8xh100.sh   # on the head node
#   HEAD_ADDR=10.0.0.1 NODE_RANK=1 bash vllm-r1-2x8xh100.sh   # on the other node
set -euo pipefail
: "${HEAD_ADDR:?set HEAD_ADDR to the address of node 0}" "${NODE_RANK:?set NODE_RANK to 0 or 1}"
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1}
PORT=${PORT:-8000}
RAY_PORT=${RAY_PORT:-6379}

if [[ "$NODE_RANK" == 0 ]]; then
  ray start --head --port="$RAY_PORT" --num-gpus=8
  alive='import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(n["Alive"] for n in ray.nodes()))'
  until [[ $(python3 -c "$alive" 2>/dev/null) -ge 2 ]]; do
    sleep 5  # wait for the second node to join the Ray cluster
  done
  exec vllm serve "$MODEL" \
    --served-model-name "$MODEL" \
    --host 0.0.0.0 --port "$PORT" \
    --tensor-parallel-size 8 --pipeline-parallel-size 2 \
    --distributed-executor-backend ray \
    --max-model-len 34816 \
    --gpu-memory-utilization 0.92 \
    --enable-prefix-caching \
    --reasoning-parser deepseek_r1 \
    --trust-remote-code
else
  exec ray start --address="$HEAD_ADDR:$RAY_PORT" --num-gpus=8 --block
fi
