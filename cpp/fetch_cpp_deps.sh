#!/usr/bin/env bash
# Everything the C++ runtime (libmemx, memx-run, its GoogleTest suite) builds against, into DEPS:
#   DEPS/onnxruntime/include   ONNX Runtime headers (Debian trixie libonnxruntime-dev)
#   DEPS/onnxruntime/lib       libonnxruntime.so{,.1} -> the onnxruntime wheel's library (PYTHON's)
#   DEPS/nlohmann/usr/include  nlohmann-json (Debian bookworm nlohmann-json3-dev, header only)
#   DEPS/googletest/usr/src/googletest  GoogleTest sources (Debian bookworm googletest)
# so that `cmake -DONNXRUNTIME_ROOT=DEPS/onnxruntime -DMEMX_DEPS=DEPS` finds all of it.
# Usage: cpp/fetch_cpp_deps.sh DEPS PYTHON
set -euo pipefail
deps=${1:?usage: $0 DEPS PYTHON}
python=${2:?usage: $0 DEPS PYTHON}
here=$(dirname "$0")
bash "$here/fetch_onnxruntime_headers.sh" "$deps/onnxruntime"
bash "$here/fetch_deb.sh" bookworm nlohmann-json3-dev "$deps/nlohmann"
bash "$here/fetch_deb.sh" bookworm googletest "$deps/googletest"
ortlib=$("$python" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')
mkdir -p "$deps/onnxruntime/lib"
ln -sf "$ortlib" "$deps/onnxruntime/lib/libonnxruntime.so.1"
ln -sf "$ortlib" "$deps/onnxruntime/lib/libonnxruntime.so"
