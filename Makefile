# Plain, idempotent targets. `make test` and `make fit` set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATASET ?= fashion_mnist
FIT_ARGS ?=

.PHONY: install data fit test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST offline: Debian's dataset-fashion-mnist package, when apt is available
# and the files are not already there (no-op otherwise).
data:
	@bash scripts/ensure-data.sh

fit: install data
	$(PY) -m trainers.fit --dataset $(DATASET) $(FIT_ARGS)

test: install data
	$(PY) -m pytest -q -m "not slow" --durations=15

test-all: install data
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m pylint evae_tf
	$(VENV)/bin/lint-imports

bench: install data
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
