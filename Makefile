# Two commands on a fresh clone: `make demo` and `make test`. Both run `make setup` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

# Rebuilt only when pyproject.toml changes. torch==2.13.0 is pinned in pyproject: on these machines
# pip takes the CPU wheel already on disk (README, "GPU machines", for a CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/distill run pipelines/demo.yaml
	$(BIN)/distill inspect runs/demo/prompts --rows 3

bench: setup
	$(BIN)/python -m benchmarks.run

lint: setup
	$(BIN)/ruff check distill tests benchmarks
	$(BIN)/ruff format --check distill tests benchmarks

clean:
	rm -rf runs .bench .pytest_cache .ruff_cache build *.egg-info
