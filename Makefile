# MetaGen: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metagen-installed

.PHONY: demo test test-all golden golden-check bench venv clean

venv: $(STAMP)

# Torch comes first, pinned to the CPU wheel this machine keeps on disk; the project's
# own range (>=2.6) is then already satisfied, so pip fetches no CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m metagen.demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto

test-all: $(STAMP)
	$(PY) -m pytest -q

golden: $(STAMP)
	$(PY) -m metagen.golden --update

golden-check: $(STAMP)
	$(PY) -m metagen.golden --check

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf build demo_output .pytest_cache
