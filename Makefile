# memx — `make quickstart` and `make test` work on a fresh machine: they create .venv,
# install the CPU build of torch (pinned: an unpinned torch pulls a multi-GB CUDA build)
# and memx with its test tools, then run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.memx-installed

OPS_LIB := memx/ops/lib/libmemx_ops.so
ORT_HEADERS := .deps/onnxruntime

.PHONY: quickstart test test-fast bench clean install ops ops-optional

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ops-optional

# The C++ kernels for memx custom ops (ONNX Runtime custom-op library). Without them the
# ops run their portable reference bodies; tests that need the kernels skip with a reason.
ops: $(OPS_LIB)

$(OPS_LIB): cpp/ops/CMakeLists.txt $(wildcard cpp/ops/*.cc cpp/ops/*.h)
	bash cpp/fetch_onnxruntime_headers.sh $(ORT_HEADERS)
	cmake -S cpp/ops -B build/ops -DONNXRUNTIME_INCLUDE_DIR=$(CURDIR)/$(ORT_HEADERS)/include -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/ops -j 2

ops-optional:
	@$(MAKE) --no-print-directory ops || echo "WARNING: libmemx_ops was not built (see above); memx ops will run their reference bodies"

quickstart: $(STAMP) ops-optional
	$(VENV)/bin/memx quickstart

test: $(STAMP) ops-optional
	$(PY) -m pytest -q

test-fast: $(STAMP) ops-optional
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP) ops-optional
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) quickstart .pytest_cache build *.egg-info memx/ops/lib
