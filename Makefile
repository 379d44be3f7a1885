# Two commands on a fresh machine:
#   make demo   creates .venv if missing, installs graph_prune, trains and prunes
#               the default MLP to 90% on the embedded digits (graph_prune.train)
#   make test   creates .venv if missing, installs the test extras, runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m graph_prune.train

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadscope tests $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/mask_update.py

clean:
	rm -rf $(VENV) *.egg-info
