#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): bf16 SFT MFU of a 0.5B Qwen2 shape, FSDP2 with tied embeddings,
# the offline vLLM backend. Minutes on one H200; without a GPU it stops at once with one line (exit 2).
#   benchmarks/gpu_check.sh [--out DIR]       on a GPU machine (figures in DIR/gpu_check.md, RESULTS.md's format)
#   benchmarks/gpu_check.sh --self-test       the same steps at tiny sizes on this CPU
# On the lent device machine (no network): carry the wheels benchmarks/gpu_wheels.sh downloads, then
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:. benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
exec "$py" -m benchmarks.gpu_check "$@"
