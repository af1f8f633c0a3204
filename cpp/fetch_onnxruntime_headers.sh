#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ headers (Debian trixie's libonnxruntime-dev, headers only) into
# DEST/include once. Only headers are needed: libmemx_ops gets the ORT API from the session at
# registration time (ORT_API_MANUAL_INIT), so it links against no onnxruntime library.
# Usage: cpp/fetch_onnxruntime_headers.sh DEST
set -euo pipefail
dest=${1:?usage: $0 DEST}
if [ -f "$dest/include/onnxruntime_lite_custom_op.h" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb $mirror trixie main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${opts[@]}" -qq update
(cd "$work" && apt-get "${opts[@]}" -qq download libonnxruntime-dev)
dpkg -x "$work"/libonnxruntime-dev_*.deb "$work/x"
mkdir -p "$dest/include"
cp -r "$work/x/usr/include/onnxruntime/." "$dest/include/"
echo "ONNX Runtime headers: $(ls "$work"/libonnxruntime-dev_*.deb | xargs -n1 basename) -> $dest/include"
