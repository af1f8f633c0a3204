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
DEPS := $(CURDIR)/.deps
CPP_BUILD := build/cpp
CPP_ASAN := build/cpp-asan
CPP_SOURCES := $(wildcard cpp/runtime/CMakeLists.txt cpp/runtime/*/*.cc cpp/runtime/*/*.hpp cpp/runtime/src/*.inc cpp/runtime/include/memx/*.hpp)

.PHONY: quickstart test test-all test-fast bench clean install wheel ops ops-optional cpp cpp-test cpp-gtest cpp-asan-build cpp-asan-tests cpp-embed fuzz serving-client cpp-aarch64 cpp-aarch64-test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	$(MAKE) --no-print-directory serving-client
	touch $(STAMP)

# The Triton client for tests/serving. Its [grpc] extra pins protobuf<7, which would move the
# protobuf every other tool here runs on; the client works with protobuf 7, so its own
# dependencies are installed without that pin (`pip install 'memx-toolkit[serving]'` is the user's way).
serving-client:
	$(PY) -m pip install -q --no-deps "tritonclient[http,grpc]>=2.50"
	$(PY) -m pip install -q grpcio python-rapidjson geventhttpclient "urllib3>=2.0.7" packaging

install: $(STAMP) ops-optional

# The C++ kernels for memx custom ops (ONNX Runtime custom-op library). Without them the
# ops run their portable reference bodies; tests that need the kernels skip with a reason.
ops: $(OPS_LIB)

$(OPS_LIB): cpp/ops/CMakeLists.txt $(wildcard cpp/ops/*.cc cpp/ops/*.h cpp/ops/*.cmake cpp/ops/tests/*.cc)
	bash cpp/fetch_onnxruntime_headers.sh $(ORT_HEADERS)
	cmake -S cpp/ops -B build/ops -DONNXRUNTIME_INCLUDE_DIR=$(CURDIR)/$(ORT_HEADERS)/include -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/ops -j 2

# The distributable wheel (memx-toolkit): pip's wheel (scikit-build-core compiles libmemx_ops,
# portable + AVX2 kernels), repaired by auditwheel into dist/*manylinux*.whl (libgomp vendored).
wheel: $(STAMP)
	rm -rf dist/raw && $(PY) -m pip wheel . --no-deps -q -w dist/raw
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m auditwheel repair dist/raw/memx_toolkit-*.whl -w dist
	rm -rf dist/raw
	@ls dist/*.whl

ops-optional:
	@$(MAKE) --no-print-directory ops || echo "WARNING: libmemx_ops was not built (see above); memx ops will run their reference bodies"

# libmemx, memx-run and the GoogleTest suite (cpp/runtime), against the onnxruntime wheel's
# library; headers, nlohmann-json and GoogleTest come from Debian packages (cpp/fetch_cpp_deps.sh).
cpp: $(CPP_BUILD)/memx-run

$(CPP_BUILD)/memx-run: $(STAMP) $(CPP_SOURCES)
	bash cpp/fetch_cpp_deps.sh $(DEPS) $(PY)
	cmake -S cpp/runtime -B $(CPP_BUILD) -DONNXRUNTIME_ROOT=$(DEPS)/onnxruntime -DMEMX_DEPS=$(DEPS) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(CPP_BUILD) -j 2

# The C++ suite's package comes from the test cache that pytest shares (tests/package_cache.py):
# exported once per code version, whichever asks first.
CPP_TEST_PKG = pkg=$$($(PY) -m tests.package_cache rmt-tiny) && inputs_pkg=$$($(PY) -m tests.package_cache tests.models.byo_models:make_seq2seq) &&
SANITIZERS := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# GoogleTest suite, plain and under AddressSanitizer + UndefinedBehaviorSanitizer, and an
# application built with find_package(memx) against the install. `make test` runs these
# pieces beside pytest (tools/run_tests.py); `make cpp-test` runs them one after another.
cpp-test: cpp-gtest cpp-asan-tests cpp-embed

cpp-gtest: cpp
	$(CPP_TEST_PKG) MEMX_TEST_PACKAGE=$$pkg MEMX_TEST_INPUTS_PACKAGE=$$inputs_pkg $(CPP_BUILD)/memx_tests --gtest_brief=1

cpp-asan-build: $(CPP_ASAN)/memx_tests

$(CPP_ASAN)/memx_tests: $(STAMP) $(CPP_SOURCES)
	bash cpp/fetch_cpp_deps.sh $(DEPS) $(PY)
	cmake -S cpp/runtime -B $(CPP_ASAN) -DONNXRUNTIME_ROOT=$(DEPS)/onnxruntime -DMEMX_DEPS=$(DEPS) -DCMAKE_BUILD_TYPE=Debug -DMEMX_SANITIZE=ON -DMEMX_BUILD_TOOLS=OFF > /dev/null
	cmake --build $(CPP_ASAN) -j 2 --target memx_tests

cpp-asan-tests: $(CPP_ASAN)/memx_tests
	$(CPP_TEST_PKG) MEMX_TEST_PACKAGE=$$pkg MEMX_TEST_INPUTS_PACKAGE=$$inputs_pkg $(SANITIZERS) $(CPP_ASAN)/memx_tests --gtest_brief=1

cpp-embed: cpp
	rm -rf build/cpp-install build/cpp-embed
	cmake --install $(CPP_BUILD) --prefix $(CURDIR)/build/cpp-install > /dev/null
	cmake -S cpp/runtime/examples/embed -B build/cpp-embed -DCMAKE_PREFIX_PATH=$(CURDIR)/build/cpp-install > /dev/null
	cmake --build build/cpp-embed > /dev/null
	$(CPP_TEST_PKG) build/cpp-embed/embed $$pkg 16

# aarch64 (Jetson's CPU): libmemx_ops (portable + NEON kernels), libmemx, memx-run and the
# GoogleTest suite cross-built with Debian's GCC against the aarch64 onnxruntime wheel's library
# (cpp/fetch_aarch64.sh fetches all of it, no root), installed into build/aarch64/install
# (bin/memx-run, lib/libmemx.so + libonnxruntime.so.1 + libmemx_ops.so, include/, lib/cmake/memx).
# cpp-aarch64-test runs them here under qemu-user: the GoogleTest suite, then tests/edge
# (memx-run over every zoo package against the x86 Python runtime, snapshots both ways, the NEON
# kernel against the scalar loops).
AARCH64_DEPS := $(DEPS)/aarch64
AARCH64_BUILD := build/aarch64
AARCH64_CMAKE := --toolchain $(CURDIR)/cpp/toolchains/aarch64-linux-gnu.cmake -DMEMX_AARCH64_DEPS=$(AARCH64_DEPS) -DCMAKE_BUILD_TYPE=Release
QEMU_AARCH64 := $(AARCH64_DEPS)/qemu/qemu-aarch64 -cpu cortex-a76 -L $(AARCH64_DEPS)/sysroot
# emulated: a tenth of the fuzz cases (the native suite runs them all)
AARCH64_FUZZ_CASES ?= 300
MEMX_EDGE_PYTEST_ARGS ?= -m 'not slow'

cpp-aarch64: $(AARCH64_BUILD)/install/bin/memx-run

$(AARCH64_BUILD)/install/bin/memx-run: $(STAMP) $(CPP_SOURCES) cpp/toolchains/aarch64-linux-gnu.cmake cpp/fetch_aarch64.sh cpp/ops/CMakeLists.txt $(wildcard cpp/ops/*.cc cpp/ops/*.h cpp/ops/*.cmake cpp/ops/tests/*.cc)
	bash cpp/fetch_cpp_deps.sh $(DEPS) $(PY)
	bash cpp/fetch_aarch64.sh $(AARCH64_DEPS) $(PY)
	cmake -S cpp/ops -B $(AARCH64_BUILD)/ops $(AARCH64_CMAKE) -DONNXRUNTIME_INCLUDE_DIR=$(AARCH64_DEPS)/onnxruntime/include -DMEMX_OPS_OUTPUT_DIR=$(CURDIR)/$(AARCH64_BUILD)/ops/lib > /dev/null
	cmake --build $(AARCH64_BUILD)/ops -j 2
	cmake -S cpp/runtime -B $(AARCH64_BUILD)/runtime $(AARCH64_CMAKE) -DONNXRUNTIME_ROOT=$(AARCH64_DEPS)/onnxruntime -DMEMX_DEPS=$(DEPS) > /dev/null
	cmake --build $(AARCH64_BUILD)/runtime -j 2
	rm -rf $(AARCH64_BUILD)/install
	cmake --install $(AARCH64_BUILD)/runtime --prefix $(CURDIR)/$(AARCH64_BUILD)/install > /dev/null
	cp $(AARCH64_BUILD)/ops/lib/libmemx_ops.so $(AARCH64_BUILD)/install/lib/
	@file $(AARCH64_BUILD)/install/bin/memx-run $(AARCH64_BUILD)/install/lib/libmemx_ops.so | sed 's|$(CURDIR)/||'

cpp-aarch64-test: cpp-aarch64
	$(CPP_TEST_PKG) MEMX_TEST_PACKAGE=$$pkg MEMX_TEST_INPUTS_PACKAGE=$$inputs_pkg MEMX_FUZZ_CASES=$(AARCH64_FUZZ_CASES) $(QEMU_AARCH64) $(AARCH64_BUILD)/runtime/memx_tests --gtest_brief=1
	MEMX_TEST_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider $(MEMX_EDGE_PYTEST_ARGS) tests/edge

# The fuzz suite at length (CI runs it at scale 1 inside `make test`): tests/fuzz at 20x its
# CI case counts, libmemx's fuzz tests with 60,000 cases each, plain and under ASan/UBSan;
# then one table of every family's cases, typed refusals and accepted inputs.
FUZZ_SCALE ?= 20
FUZZ_CPP_CASES ?= 60000
fuzz: $(STAMP) cpp cpp-asan-build
	rm -rf build/fuzz && mkdir -p build/fuzz
	MEMX_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest -q tests/fuzz -p no:cacheprovider
	$(CPP_TEST_PKG) MEMX_TEST_PACKAGE=$$pkg MEMX_FUZZ_CASES=$(FUZZ_CPP_CASES) $(CPP_BUILD)/memx_tests --gtest_filter='Fuzz.*' --gtest_brief=1 > build/fuzz/cpp-plain.log 2>&1 || { tail -40 build/fuzz/cpp-plain.log; exit 1; }
	$(CPP_TEST_PKG) MEMX_TEST_PACKAGE=$$pkg MEMX_FUZZ_CASES=$$(( $(FUZZ_CPP_CASES) / 10 )) $(SANITIZERS) $(CPP_ASAN)/memx_tests --gtest_filter='Fuzz.*' --gtest_brief=1 > build/fuzz/cpp-asan.log 2>&1 || { tail -40 build/fuzz/cpp-asan.log; exit 1; }
	$(PY) tools/fuzz_report.py build/fuzz/cpp-plain.log build/fuzz/cpp-asan.log

quickstart: $(STAMP) ops-optional
	$(VENV)/bin/memx quickstart

# Every phase timed, C++ tests beside pytest (pytest-xdist, a worker per core); prints a phase
# table and writes build/test-phases.md. test-all adds the `slow` full-length checks.
test:
	$(PYTHON) tools/run_tests.py

test-all:
	$(PYTHON) tools/run_tests.py --all

test-fast: $(STAMP) ops-optional cpp
	MEMX_TEST_THREADS=1 $(PY) -m pytest -q -m "not slow" -n auto

bench: $(STAMP) ops-optional cpp
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) quickstart .pytest_cache build dist *.egg-info memx/ops/lib
