# The two commands of the README: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q --no-compile --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-compile --no-deps -e .
	# pip compiles serially; compile in parallel instead (py312-only files in torch would fail).
	$(PY) -m compileall -q -j 0 -x py312 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: venv
	$(PY) -m tanl_guard.demo

bench: venv
	$(PY) -m benchmarks

lint: venv
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_out
