# Two commands on a fresh machine:
#   make demo   creates .venv if missing, installs graph_prune, trains and prunes
#               the default MLP to 90% on the embedded digits (graph_prune.train)
#   make test   creates .venv if missing, installs the test extras, checks
#               format and lint (ruff), runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-heavy lint format bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m graph_prune.train

# Format and lint checks (settings in pyproject.toml); `make format` fixes.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

test: lint
	$(PY) -m pytest -q -n 2 --dist loadscope tests $(PYTEST_ARGS)

# EfficientNetB0 end to end (minutes; `make test` runs a small swish network
# with its swish, squeeze-and-excitation and depthwise convs, and ResNet50),
# and a model of 2.4 GB of masked weights exported past the proto limit
# (about 10 GB of memory; `make test` runs the same export path small).
test-heavy: $(VENV)/.installed
	GRAPH_PRUNE_HEAVY_TESTS=1 $(PY) -m pytest -q tests/architectures_test.py tests/export_variables_test.py -k "Heavy or BeyondTwoGigabytes" $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/mask_update.py

clean:
	rm -rf $(VENV) *.egg-info
