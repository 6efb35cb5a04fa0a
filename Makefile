# fetalgen: `make demo` and `make test` work from a fresh clone with only Python and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real HC18 data: a local download (make data) or the shared copy beside the checkout.
HC18_DIR ?= $(firstword $(wildcard data/hc18/training_set/.. ../shared/data/hc18/training_set/..))
export FETALGEN_HC18_DIR ?= $(patsubst %/training_set/..,%,$(HC18_DIR))
PRESET ?= cpu

.PHONY: install test test-fast demo data weights lint format reproduce-paper bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python experiments/demo.py

data: install
	$(BIN)/fetalgen-download hc18 --out data/hc18

weights: install
	$(BIN)/fetalgen-download sam --model vit_b --out checkpoints

lint: install
	$(BIN)/ruff check fetalgen tests experiments
	$(BIN)/ruff format --check fetalgen tests experiments

format: install
	$(BIN)/ruff format fetalgen tests experiments
	$(BIN)/ruff check --fix fetalgen tests experiments

reproduce-paper: install
	$(BIN)/python experiments/reproduce_paper.py --preset $(PRESET)

bench: install
	$(BIN)/python experiments/bench/samplers.py
	$(BIN)/python experiments/bench/sam_cache.py

clean:
	rm -rf outputs logs results .pytest_cache
