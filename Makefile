# fetalgen: `make demo` and `make test` work from a fresh clone with only Python and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install (e.g. TORCH="torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124").
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Real HC18 data: a local download (make data) or the shared copy beside the checkout, as an absolute path (tests
# run scripts from other folders). Nothing is exported when neither exists or the variable is already set, so the
# configs' own default (data/hc18) stays in force.
HC18_FOUND := $(firstword $(wildcard $(CURDIR)/data/hc18/training_set $(abspath $(CURDIR)/../shared/data/hc18)/training_set))
ifeq ($(origin FETALGEN_HC18_DIR),undefined)
ifneq ($(HC18_FOUND),)
export FETALGEN_HC18_DIR := $(patsubst %/training_set,%,$(HC18_FOUND))
endif
endif
PRESET ?= cpu
# pytest-xdist workers, one per core (each test runs its torch at one thread, tests/conftest.py); 0: one process.
TEST_JOBS ?= 2

.PHONY: install test test-full demo data weights lint format reproduce-paper bench gpu-check clean show-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

test: install # the fast lane: everything but the end-to-end runs marked slow
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_JOBS) --dist worksteal

test-full: install # the whole suite, slow end-to-end runs included (what CI runs)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal

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

reproduce-paper: install # DRY_RUN=1: the plan and a GPU-hours estimate only; ARGS='--finetune-overrides ...' (see --help)
	$(BIN)/python experiments/reproduce_paper.py --preset $(PRESET) $(if $(DRY_RUN),--dry-run) $(ARGS)

bench: install
	$(BIN)/python experiments/bench/samplers.py
	$(BIN)/python experiments/bench/sam_cache.py
	$(BIN)/python experiments/bench/lite_medsam.py
	$(BIN)/python experiments/bench/generator_designs.py

gpu-check: install # the first GPU machine: gpu.py and lite_medsam.py, then both tasks for 20 steps (bf16-mixed, DDP over every GPU)
	$(BIN)/python experiments/bench/gpu_check.py

show-data: # where the tests and scripts will look for HC18 (empty: not found, they skip)
	@echo "FETALGEN_HC18_DIR=$$FETALGEN_HC18_DIR"

clean:
	rm -rf outputs logs results .pytest_cache
