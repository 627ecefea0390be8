# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_VENV := .venv-bench

.PHONY: demo test lint typecheck unit integration install clean bench bench-scale bench-floor faults

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/saga-tracker demo

lint: $(STAMP)
	$(BIN)/ruff check tracker topics tables tests bench
	$(BIN)/ruff format --check tracker topics tables tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy tracker topics tables tests bench

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

test: lint typecheck $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests

# Every fault scenario and a long fuzz run; rewrites the table in docs/faults.md.
faults: lint typecheck $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-20000} $(BIN)/pytest -q -p no:cacheprovider --hypothesis-show-statistics \
		tests/unit/test_hostile_input.py tests/unit/test_properties.py | grep -E "passing examples|passed|failed"
	FAULTS=full FAULTS_REPORT=docs/faults.md $(BIN)/pytest -q -p no:cacheprovider tests/faults

# Quix Streams is installed only for the benchmark, in a venv of its own.
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet quixstreams orjson pyyaml  # the same-work contender runs the tracker's core
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed
	QUIX_PYTHON=$(BENCH_VENV)/bin/python $(BIN)/python -m bench.run --sagas $${SAGAS:-20000}

# faust alone on the same input: an agent, its consumer without the agent, an agent writing a table.
bench-floor: $(STAMP)
	$(BIN)/python -m bench.floor --sagas $${SAGAS:-10000}

# A worker with SAGAS (default 1,000,000) in flight: recovery time, peak RSS, sweep cost.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale --sagas $${SAGAS:-1000000}

clean:
	rm -rf $(VENV) $(BENCH_VENV) test-artifacts .pytest_cache .mypy_cache .ruff_cache
