# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck pytest install bench wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# What the suite drives besides Python: wrk loads the HTTP benchmark's smoke test; the
# browser tests run Debian's Chromium (never a downloaded browser) and inject axe-core.
TOOLS := $(VENV)/.tools
AXE := $(VENV)/node/node_modules/axe-core/axe.min.js
$(TOOLS): $(STAMP)
	command -v wrk >/dev/null && test -x /usr/bin/chromium || \
		{ apt-get update -qq && apt-get install -y -qq wrk chromium; }
	test -f $(AXE) || npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@4
	touch $(TOOLS)

install: $(STAMP) $(TOOLS)

# The FastAPI example, served as `asgimon demo` serves the packaged one.
demo: $(STAMP)
	$(PY) -m examples.fastapi_app

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

pytest: $(STAMP) $(TOOLS)
	$(PY) -m pytest

test: check pytest

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

# The wheel and the sdist, into dist/.
wheel: $(STAMP)
	$(PY) -m build --outdir dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
