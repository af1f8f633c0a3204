#!/usr/bin/env bash
# Everything needed to cross-build memx's C++ for aarch64 (Jetson's CPU) and run it here under
# emulation, into DEST (no root, the machine's apt state untouched; Debian bookworm packages
# and the onnxruntime wheel for manylinux aarch64 from PyPI):
#   DEST/toolchain/usr/bin/aarch64-linux-gnu-{gcc,g++}-12, binutils   Debian's cross GCC 12, unpacked
#   DEST/sysroot -> toolchain/usr/aarch64-linux-gnu                   aarch64 glibc, libstdc++, libgomp
#   DEST/qemu/qemu-aarch64                                           qemu-user 10 from Debian trixie, static
#                                                                     (7.2's /proc/cpuinfo is the host's, which
#                                                                     ONNX Runtime's cpuinfo crashes on)
#   DEST/onnxruntime/{include,lib}                                    ONNX Runtime for aarch64, the same
#                                                                     version as PYTHON's onnxruntime
# cpp/toolchains/aarch64-linux-gnu.cmake reads DEST (MEMX_AARCH64_DEPS); `make cpp-aarch64` runs this.
# Usage: cpp/fetch_aarch64.sh DEST PYTHON
set -euo pipefail
dest=${1:?usage: $0 DEST PYTHON}
python=${2:?usage: $0 DEST PYTHON}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

packages=(g++-12-aarch64-linux-gnu gcc-12-aarch64-linux-gnu cpp-12-aarch64-linux-gnu gcc-12-aarch64-linux-gnu-base
          binutils-aarch64-linux-gnu libgcc-12-dev-arm64-cross libstdc++-12-dev-arm64-cross libc6-dev-arm64-cross
          libc6-arm64-cross linux-libc-dev-arm64-cross libgcc-s1-arm64-cross libstdc++6-arm64-cross
          libgomp1-arm64-cross libatomic1-arm64-cross patchelf)

if [ ! -f "$dest/toolchain/.complete" ]; then
  rm -rf "$dest/toolchain.partial" && mkdir -p "$dest/toolchain.partial"
  for pkg in "${packages[@]}"; do
    bash "$here/fetch_deb.sh" bookworm "$pkg" "$dest/toolchain.partial" > /dev/null
  done
  root="$dest/toolchain.partial/usr"
  # Unpacked away from /usr: binutils find their libbfd/libopcodes next to themselves ...
  for tool in "$root"/bin/aarch64-linux-gnu-*; do
    [ -L "$tool" ] && continue
    if readelf -d "$tool" 2>/dev/null | grep -q -E 'lib(bfd|opcodes|ctf)'; then
      "$root/bin/patchelf" --set-rpath '$ORIGIN/../lib/x86_64-linux-gnu' "$tool"
    fi
  done
  # ... and glibc's linker scripts name their libraries by file name, not by /usr path.
  for script in $(grep -l "GNU ld script" "$root"/aarch64-linux-gnu/lib/*.so 2>/dev/null); do
    sed -i 's|/usr/aarch64-linux-gnu/lib/||g' "$script"
  done
  ln -sfn usr/aarch64-linux-gnu "$dest/toolchain.partial/sysroot"
  touch "$dest/toolchain.partial/.complete"
  rm -rf "$dest/toolchain" && mv "$dest/toolchain.partial" "$dest/toolchain"
  echo "aarch64 cross GCC 12 and binutils (Debian bookworm) -> $dest/toolchain"
fi
ln -sfn toolchain/usr/aarch64-linux-gnu "$dest/sysroot"

if [ ! -x "$dest/qemu/qemu-aarch64" ]; then
  # only the aarch64 emulator out of the package (it holds every architecture's: 70 MB)
  rm -rf "$dest/qemu.partial"
  bash "$here/fetch_deb.sh" trixie qemu-user "$dest/qemu.partial" ./usr/bin/qemu-aarch64 > /dev/null
  mkdir -p "$dest/qemu" && mv "$dest/qemu.partial/usr/bin/qemu-aarch64" "$dest/qemu/" && rm -rf "$dest/qemu.partial"
  echo "qemu-aarch64 $("$dest/qemu/qemu-aarch64" --version | head -1 | awk '{print $3}') (Debian trixie qemu-user) -> $dest/qemu"
fi

ort_version=$("$python" -c 'import onnxruntime; print(onnxruntime.__version__)')
py_version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')  # any wheel of the release has the same library
if [ ! -f "$dest/onnxruntime/.version-$ort_version" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version "$py_version" "onnxruntime==$ort_version" -d "$work" 2>&1 | grep -v "is ignored" || true
  wheel=$(ls "$work"/onnxruntime-*aarch64.whl)
  "$python" -m zipfile -e "$wheel" "$work/x"
  rm -rf "$dest/onnxruntime" && mkdir -p "$dest/onnxruntime/lib"
  real=$(cd "$work/x/onnxruntime/capi" && ls libonnxruntime.so.1.*)
  cp "$work/x/onnxruntime/capi/$real" "$dest/onnxruntime/lib/"
  ln -sf "$real" "$dest/onnxruntime/lib/libonnxruntime.so.1"
  ln -sf "$real" "$dest/onnxruntime/lib/libonnxruntime.so"
  bash "$here/fetch_onnxruntime_headers.sh" "$dest/onnxruntime"
  touch "$dest/onnxruntime/.version-$ort_version"
  echo "ONNX Runtime $ort_version for aarch64 ($(basename "$wheel")) -> $dest/onnxruntime"
fi
