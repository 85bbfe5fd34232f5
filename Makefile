# make train: set up .venv (pinned dependencies) and train the autoencoder on Fashion-MNIST.
# make test:  set up .venv and run the fast tier (unit tests and one-process runs; a few minutes on 2 cores).
# make test-integration: the tests that start genlab's commands as processes (signals, sweeps, kill-and-resume).
# make test-slow: the tests marked slow (DDP of every family, torch.compile, the GPU suite's CPU smoke run).
# make test-gpu: the tests marked gpu (16-mixed precision and its gradient scaler), on a machine with a CUDA GPU.
# make mutate: mutation testing (mutmut) of the modules that guard users, against the fast-tier tests that guard them
#   ([tool.mutmut] in pyproject.toml; hours on 2 cores). MUTANTS='genlab.utils.files.*' runs one module's mutants.
# make lint: ruff's checks and formatting.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Datasets: $DATA_DIR if set, else ../shared/data when it exists, else ./data (downloaded there).
ifeq ($(DATA_DIR),)
  ifneq ($(wildcard ../shared/data),)
    export DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: train test test-integration test-all test-slow test-gpu mutate lint bench clean

$(BIN)/.installed: requirements.lock requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock -r requirements-dev.lock
	touch $@

train: $(BIN)/.installed
	$(BIN)/python -m src.train model=ae data=fashion_mnist $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

test-integration: $(BIN)/.installed
	$(BIN)/python -m pytest -m "integration and not slow and not gpu" $(ARGS)

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest -m "" $(ARGS)

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -m "slow and not gpu" $(ARGS)

test-gpu: $(BIN)/.installed
	$(BIN)/python -m pytest -m gpu $(ARGS)

# mutmut copies the code into mutants/ and runs the tests there, one mutant at a time; `mutmut results` lists the
# survivors, `mutmut show <name>` one mutant's diff (benchmarks/results/mutation-*.md: the last report)
mutate: $(BIN)/.installed
	$(BIN)/mutmut run --max-children $$(nproc) $(MUTANTS)
	$(BIN)/mutmut results

lint: $(BIN)/.installed
	$(BIN)/ruff check genlab src tests benchmarks hydra_plugins setup.py
	$(BIN)/ruff format --check genlab src tests benchmarks hydra_plugins setup.py

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.data_throughput

clean:
	rm -rf outputs .pytest_cache mutants
