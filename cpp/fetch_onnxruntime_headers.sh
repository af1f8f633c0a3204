#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ headers (Debian trixie's libonnxruntime-dev, headers only) into
# DEST/include once. libmemx_ops needs only these (it gets the ORT API from the session at
# registration time); libmemx links against the onnxruntime wheel's library (fetch_cpp_deps.sh).
# Usage: cpp/fetch_onnxruntime_headers.sh DEST
set -euo pipefail
dest=${1:?usage: $0 DEST}
if [ -f "$dest/include/onnxruntime_lite_custom_op.h" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$(dirname "$0")/fetch_deb.sh" trixie libonnxruntime-dev "$work/x" > /dev/null
mkdir -p "$dest/include"
cp -r "$work/x/usr/include/onnxruntime/." "$dest/include/"
echo "ONNX Runtime headers (trixie libonnxruntime-dev) -> $dest/include"
