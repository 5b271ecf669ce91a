#!/usr/bin/env bash
# Wheels of the packages benchmarks/gpu_check.sh needs and the lent GPU machine lacks (it has torch,
# transformers, accelerate, pyarrow, ...; see the device tool's KINDS.md), for its Python 3.12, into .whl/
# (git-ignored; name it in the device call's `carry`). Run here, where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
py=$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl)
for p in "${platforms[@]}"; do args+=(--platform "$p"); done
args+=(--platform any)
"$py" -m pip download -q "${args[@]}" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 orjson==3.13.0
du -sh .whl && ls .whl
