# memx — `make quickstart` and `make test` work on a fresh machine: they create .venv,
# install the CPU build of torch (pinned: an unpinned torch pulls a multi-GB CUDA build)
# and memx with its test tools, then run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.memx-installed

.PHONY: quickstart test test-fast bench clean install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/memx quickstart

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/step_latency.py
	$(PY) benchmarks/gmat_attention.py
	$(PY) benchmarks/mrbp_vs_bptt.py

clean:
	rm -rf $(VENV) quickstart .pytest_cache build *.egg-info
