#!/usr/bin/env bash
# run.sh, written by `memx bundle`: on the board, build memx's C++ runtime (libmemx, memx-run,
# libmemx_ops) from the bundled sources against the board's ONNX Runtime (with its CUDA and
# TensorRT execution providers), else use the bundle's prebuilt binaries (CPU-only ONNX Runtime);
# then time the bundled package on every device with tegrastats alongside, and print a table.
# What it runs (package, sample tokens, devices) is in bundle.env beside it. See README.md.
set -eu
set -o pipefail

usage() {
  cat <<'EOF'
usage: ./run.sh [options]

  --device LIST     devices to time, comma-separated (default: bundle.env's BUNDLE_DEVICES,
                    tensorrt,cuda,cpu); a device the ONNX Runtime lacks is reported and skipped
  --build           build from the bundled sources (fail if no ONNX Runtime is found)
  --prebuilt        use the prebuilt binaries (CPU only), do not build
  --out DIR         where reports go (default: ./results beside run.sh): DEVICE.json (memx-run's
                    latency report), DEVICE.log, DEVICE.tegrastats
  --save-outputs    also write every output and the final state (memx-run --out DIR/DEVICE/)
  --tokens FILE     token ids (.npy, int64 [T] or [B, T]; default: the bundle's sample)
  --segment-len S   tokens per step (default: the package's maximum)
  --warmup N        untimed steps on GPU devices (default 20: TensorRT builds its engines then)
  --cpu-warmup N    untimed steps on cpu (default 2)
  --threads N       ONNX Runtime intra-op threads (default: ONNX Runtime's choice)
  --jobs N          build parallelism (default: nproc)
  --trt-engines     also build TensorRT engines for memx's Python runtime (memx build PKG
                    --target-cc sm87), when python3 can import memx and tensorrt
  -h, --help        this text

environment:
  ONNXRUNTIME_ROOT       ONNX Runtime to build against (include/ + lib/libonnxruntime.so); default:
                         searched in /usr/local, /usr, /opt/onnxruntime*, /usr/local/onnxruntime*,
                         ~/onnxruntime*, then python3's onnxruntime(-gpu) wheel
  MEMX_BUNDLE_EMULATOR   on a host that is not aarch64: run the prebuilt aarch64 binaries through
                         this command, e.g. "qemu-aarch64 -cpu cortex-a76 -L /usr/aarch64-linux-gnu" (try the
                         bundle on an x86 host); ONNXRUNTIME_ROOT set as well builds natively instead
  MEMX_BUNDLE_BUILD_DIR  where the build goes (default: ./build beside run.sh)
  MEMX_BUNDLE_CMAKE_ARGS extra arguments for both cmake configure steps
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "run.sh: error: $*" >&2; exit 1; }
say() { echo "run.sh: $*"; }

[ -f "$here/bundle.env" ] || die "expected bundle.env beside run.sh (written by memx bundle), found no $here/bundle.env"
# shellcheck source=/dev/null
. "$here/bundle.env"
[ "${BUNDLE_FORMAT_VERSION:-}" = 1 ] || die "bundle.env has format version '${BUNDLE_FORMAT_VERSION:-none}', this run.sh reads version 1"

devices=$BUNDLE_DEVICES
mode=auto
out=$here/results
save_outputs=0
tokens=$here/$BUNDLE_TOKENS
segment_len=$BUNDLE_SEGMENT_LEN
warmup_gpu=20
warmup_cpu=2
jobs=$(nproc 2>/dev/null || echo 2)
threads=""
trt_engines=0

value() { [ "$#" -ge 2 ] || die "$1 expects a value (./run.sh --help)"; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --device) value "$@"; devices=$(echo "$2" | tr ',' ' '); shift 2 ;;
    --build) mode=build; shift ;;
    --prebuilt) mode=prebuilt; shift ;;
    --out) value "$@"; out=$2; shift 2 ;;
    --save-outputs) save_outputs=1; shift ;;
    --tokens) value "$@"; tokens=$2; shift 2 ;;
    --segment-len) value "$@"; segment_len=$2; shift 2 ;;
    --warmup) value "$@"; warmup_gpu=$2; shift 2 ;;
    --cpu-warmup) value "$@"; warmup_cpu=$2; shift 2 ;;
    --jobs) value "$@"; jobs=$2; shift 2 ;;
    --threads) value "$@"; threads=$2; shift 2 ;;
    --trt-engines) trt_engines=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1': expected one of --device --build --prebuilt --out --save-outputs --tokens --segment-len --warmup --cpu-warmup --threads --jobs --trt-engines --help" ;;
  esac
done
for d in $devices; do
  case "$d" in tensorrt|cuda|cpu) ;; *) die "unknown device '$d': expected tensorrt, cuda or cpu" ;; esac
done
[ -n "$devices" ] || die "--device: expected at least one of tensorrt, cuda, cpu, got none"
for n in "$segment_len" "$warmup_gpu" "$warmup_cpu" "$jobs" "${threads:-1}"; do
  case "$n" in ''|*[!0-9]*) die "expected a whole number, got '$n'" ;; esac
done
[ -f "$tokens" ] || die "token file not found: expected a .npy file, got '$tokens'"
[ -f "$here/$BUNDLE_PACKAGE/memx.json" ] || die "package not found: expected $here/$BUNDLE_PACKAGE/memx.json"
mkdir -p "$out"
out=$(cd "$out" && pwd)

arch=$(uname -m)
emulator=${MEMX_BUNDLE_EMULATOR:-}
build_dir=${MEMX_BUNDLE_BUILD_DIR:-$here/build}
say "memx bundle of $BUNDLE_PACKAGE: $BUNDLE_MODEL; host $arch"
if [ -r /etc/nv_tegra_release ]; then
  say "board: $(head -n 1 /etc/nv_tegra_release)"
fi
if command -v nvpmodel >/dev/null 2>&1; then
  say "power mode: $(nvpmodel -q 2>/dev/null | head -n 1 || true) (sudo jetson_clocks for steady clocks)"
fi

# --- ONNX Runtime to build against ------------------------------------------------------------
ort_root=""; ort_include=""; ort_lib=""; ort_origin=""
ort_headers_of() {  # the directory holding onnxruntime_cxx_api.h under a prefix
  local d
  for d in "$1/include" "$1/include/onnxruntime"; do
    [ -f "$d/onnxruntime_cxx_api.h" ] && { echo "$d"; return 0; }
  done
  return 1
}
ort_lib_of() {  # the directory holding libonnxruntime.so* under a prefix
  local d
  for d in "$1/lib" "$1/lib64" "$1/lib/aarch64-linux-gnu" "$1/lib/$arch-linux-gnu"; do
    compgen -G "$d/libonnxruntime.so*" >/dev/null && { echo "$d"; return 0; }
  done
  return 1
}
bundled_headers() {  # the bundle's ONNX Runtime headers, for a library that came without its own
  [ -n "$BUNDLE_ORT_HEADERS" ] && [ -f "$here/$BUNDLE_ORT_HEADERS/onnxruntime_cxx_api.h" ] || return 1
  echo "$here/$BUNDLE_ORT_HEADERS"
}
# A prefix in the build directory: headers + links to ONNX Runtime's libraries (the execution-
# provider libraries must sit beside libonnxruntime, where it looks for them).
make_prefix() {  # LIBDIR INCLUDE
  local prefix=$build_dir/onnxruntime f
  rm -rf "$prefix" && mkdir -p "$prefix/lib"
  ln -s "$2" "$prefix/include"
  for f in "$1"/libonnxruntime*; do ln -s "$f" "$prefix/lib/$(basename "$f")"; done
  for f in "$1"/libonnxruntime.so*; do :; done  # the last in glob order: the versioned file
  f=$(basename "$f")
  [ -e "$prefix/lib/libonnxruntime.so" ] || ln -s "$1/$f" "$prefix/lib/libonnxruntime.so"
  [ -e "$prefix/lib/libonnxruntime.so.1" ] || ln -s "$1/$f" "$prefix/lib/libonnxruntime.so.1"
  echo "$prefix"
}
lib_version() {  # LIBDIR: x.y.z from libonnxruntime.so.x.y.z, empty when no file says
  local f v=""
  for f in "$1"/libonnxruntime.so.*.*; do
    [ -e "$f" ] && v=${f##*/libonnxruntime.so.}
  done
  echo "$v"
}
check_api() {  # VERSION (x.y.z of the library): the bundled headers need a library at least as new
  local minor
  minor=$(echo "$1" | cut -d. -f2)
  if [ -n "$BUNDLE_ORT_HEADERS_API" ] && [ -n "$minor" ] && [ "$minor" -lt "$BUNDLE_ORT_HEADERS_API" ]; then
    die "ONNX Runtime $1 is older than the bundled headers (API $BUNDLE_ORT_HEADERS_API, ONNX Runtime 1.$BUNDLE_ORT_HEADERS_API): expected a library >= 1.$BUNDLE_ORT_HEADERS_API or ONNXRUNTIME_ROOT with its own include/, got $1"
  fi
}
use_ort() {  # ROOT INCLUDE LIBDIR: cpp/runtime looks in ROOT/lib and ROOT/lib64, else a prefix of links
  ort_include=$2; ort_lib=$3
  if [ "$3" = "$1/lib" ] || [ "$3" = "$1/lib64" ]; then
    ort_root=$1
  else
    ort_root=$(make_prefix "$3" "$2")
  fi
}
find_ort() {
  local cand inc lib py
  if [ -n "${ONNXRUNTIME_ROOT:-}" ]; then
    [ -d "$ONNXRUNTIME_ROOT" ] || die "ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT: expected an ONNX Runtime prefix (include/ + lib/libonnxruntime.so), found no such directory"
    lib=$(ort_lib_of "$ONNXRUNTIME_ROOT") || die "ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT: expected lib/libonnxruntime.so*, found in it: $(find "$ONNXRUNTIME_ROOT" -mindepth 1 -maxdepth 2 -printf '%P ' 2>/dev/null | head -c 300)"
    if inc=$(ort_headers_of "$ONNXRUNTIME_ROOT"); then
      use_ort "$ONNXRUNTIME_ROOT" "$inc" "$lib"
    else
      inc=$(bundled_headers) || die "ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT: expected include/onnxruntime_cxx_api.h (and this bundle carries no headers), found none"
      say "ONNXRUNTIME_ROOT has no headers: using the bundled ones (API $BUNDLE_ORT_HEADERS_API)"
      check_api "$(lib_version "$lib")"
      ort_root=$(make_prefix "$lib" "$inc"); ort_include=$inc; ort_lib=$lib
    fi
    ort_origin="ONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT"
    return 0
  fi
  for cand in /usr/local /usr /opt/onnxruntime* /usr/local/onnxruntime* "$HOME"/onnxruntime*; do
    [ -d "$cand" ] || continue
    inc=$(ort_headers_of "$cand") || continue
    lib=$(ort_lib_of "$cand") || continue
    use_ort "$cand" "$inc" "$lib"
    ort_origin=$cand
    return 0
  done
  if command -v python3 >/dev/null 2>&1 && py=$(python3 -c 'import os, onnxruntime as o; print(o.__version__, os.path.join(os.path.dirname(o.__file__), "capi"))' 2>/dev/null); then
    local version=${py%% *} capi=${py#* }
    if ! compgen -G "$capi/libonnxruntime.so*" >/dev/null; then
      say "python3's onnxruntime $version has no libonnxruntime.so in $capi: cannot build against it"
      return 1
    fi
    inc=$(bundled_headers) || { say "python3's onnxruntime $version ships no headers and this bundle carries none"; return 1; }
    check_api "$version"
    ort_root=$(make_prefix "$capi" "$inc"); ort_include=$inc; ort_lib=$capi
    ort_origin="python3's onnxruntime $version ($capi; providers: $(python3 -c 'import onnxruntime as o; print(",".join(o.get_available_providers()))' 2>/dev/null || echo unknown))"
    return 0
  fi
  return 1
}

# --- what runs memx-run ---------------------------------------------------------------------------
runner=()      # the emulator's words, when the prebuilt binaries run through one
memx_run=""
ops_lib=""
cpu_only=0
how=""

use_prebuilt() {  # WHY
  local dir=$here/$BUNDLE_PREBUILT
  if [ -z "$BUNDLE_PREBUILT" ] || [ ! -x "$dir/bin/memx-run" ]; then
    die "$1, and this bundle has no prebuilt binaries (memx bundle found none: make cpp-aarch64): expected ONNXRUNTIME_ROOT=DIR (an ONNX Runtime with include/ and lib/) to build from the bundled sources"
  fi
  if [ "$arch" != "$BUNDLE_ARCH" ]; then
    [ -n "$emulator" ] || die "the prebuilt binaries are for $BUNDLE_ARCH, this host is $arch: run on the board, set MEMX_BUNDLE_EMULATOR='qemu-aarch64 -L SYSROOT' to try them here, or ONNXRUNTIME_ROOT=DIR (an ONNX Runtime for $arch) to build from the sources"
    read -r -a runner <<<"$emulator"
    command -v "${runner[0]}" >/dev/null 2>&1 || die "MEMX_BUNDLE_EMULATOR: expected an executable, found no '${runner[0]}'"
    how="prebuilt $BUNDLE_ARCH binaries through '$emulator' (CPU-only ONNX Runtime)"
  else
    how="prebuilt $BUNDLE_ARCH binaries (CPU-only ONNX Runtime: build against JetPack's for CUDA/TensorRT)"
  fi
  memx_run=$dir/bin/memx-run
  ops_lib=$dir/lib/libmemx_ops.so
  cpu_only=1
}

build_from_sources() {
  local log=$build_dir/build.log deps_arg=() extra=() stamp
  command -v cmake >/dev/null 2>&1 || die "expected cmake on PATH to build (sudo apt-get install cmake g++), found none"
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || die "expected a C++ compiler (sudo apt-get install g++), found none"
  if [ -n "$BUNDLE_NLOHMANN" ] && [ -f "$here/$BUNDLE_NLOHMANN/nlohmann/usr/include/nlohmann/json.hpp" ]; then
    deps_arg=(-DMEMX_DEPS="$here/$BUNDLE_NLOHMANN")
  elif [ ! -f /usr/include/nlohmann/json.hpp ] && [ ! -f /usr/local/include/nlohmann/json.hpp ]; then
    die "expected nlohmann-json (sudo apt-get install nlohmann-json3-dev): not bundled, and no nlohmann/json.hpp in /usr/include or /usr/local/include"
  fi
  # shellcheck disable=SC2206
  extra=(${MEMX_BUNDLE_CMAKE_ARGS:-})
  mkdir -p "$build_dir"
  stamp="$ort_root|$ort_include|$ort_lib|${MEMX_BUNDLE_CMAKE_ARGS:-}"
  memx_run=$build_dir/runtime/memx-run
  ops_lib=$build_dir/ops/lib/libmemx_ops.so
  if [ -x "$memx_run" ] && [ -f "$build_dir/.built-with" ] && [ "$(cat "$build_dir/.built-with")" = "$stamp" ]; then
    say "already built against $ort_origin (remove $build_dir to rebuild)"
  else
    rm -f "$build_dir/.built-with"
    say "building libmemx and memx-run against $ort_origin (-j$jobs; log: $log)"
    : >"$log"
    if ! { cmake -S "$here/cpp/runtime" -B "$build_dir/runtime" -DCMAKE_BUILD_TYPE=Release -DONNXRUNTIME_ROOT="$ort_root" -DMEMX_BUILD_TESTS=OFF \
             ${deps_arg[@]+"${deps_arg[@]}"} ${extra[@]+"${extra[@]}"} && cmake --build "$build_dir/runtime" --target memx-run -j "$jobs"; } >>"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "building libmemx/memx-run failed (full log: $log)"
    fi
    if [ -f "$ort_include/onnxruntime_lite_custom_op.h" ]; then
      say "building libmemx_ops (memx custom-op kernels)"
      if ! { cmake -S "$here/cpp/ops" -B "$build_dir/ops" -DCMAKE_BUILD_TYPE=Release -DONNXRUNTIME_INCLUDE_DIR="$ort_include" -DMEMX_OPS_OUTPUT_DIR="$build_dir/ops/lib" \
               ${extra[@]+"${extra[@]}"} && cmake --build "$build_dir/ops" --target memx_ops -j "$jobs"; } >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "building libmemx_ops failed (full log: $log)"
      fi
    else
      say "no onnxruntime_lite_custom_op.h in $ort_include (ONNX Runtime < 1.16?): libmemx_ops not built, memx ops run their ONNX reference bodies"
    fi
    echo "$stamp" >"$build_dir/.built-with"
  fi
  how="built here against $ort_origin"
}

if [ "$mode" = auto ]; then
  if [ "$arch" != "$BUNDLE_ARCH" ] && [ -n "$emulator" ] && [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
    use_prebuilt "MEMX_BUNDLE_EMULATOR is set on this $arch host"
  elif find_ort; then
    mode=build
  else
    say "no ONNX Runtime found to build against (ONNXRUNTIME_ROOT unset; none in /usr/local, /usr, /opt/onnxruntime*, /usr/local/onnxruntime*, ~/onnxruntime*, python3's onnxruntime)"
    use_prebuilt "no ONNX Runtime found to build against"
  fi
fi
case "$mode" in
  build) [ -n "$ort_root" ] || find_ort || die "--build: expected an ONNX Runtime (ONNXRUNTIME_ROOT=DIR with include/ and lib/, or one in /usr/local, /opt/onnxruntime*, python3's onnxruntime-gpu), found none"
         build_from_sources ;;
  prebuilt) use_prebuilt "--prebuilt was given" ;;
esac
say "memx-run: $how"

# --- TensorRT engines for memx's Python runtime (memx build) ----------------------------------------
memx_python=0
if command -v python3 >/dev/null 2>&1 && python3 -c "import memx, tensorrt" >/dev/null 2>&1; then
  memx_python=1
fi
if [ "$trt_engines" = 1 ] && [ "$memx_python" = 0 ]; then
  die "--trt-engines: expected python3 to import memx and tensorrt (pip install memx-toolkit; JetPack's python3-libnvinfer brings tensorrt), found: $(python3 -c 'import memx, tensorrt' 2>&1 | tail -n 1 || echo 'no python3')"
fi

# --- tegrastats ------------------------------------------------------------------------------------
stats_pid=""
stop_stats() {
  if [ -n "$stats_pid" ]; then
    kill "$stats_pid" 2>/dev/null || true
    wait "$stats_pid" 2>/dev/null || true
    stats_pid=""
  fi
}
trap stop_stats EXIT
start_stats() {  # FILE
  : >"$1"
  if command -v tegrastats >/dev/null 2>&1; then
    tegrastats --interval 500 >"$1" 2>&1 &
    stats_pid=$!
  fi
}
# min/max/mean of GPU load (GR3D_FREQ %), RAM in use and each power rail tegrastats prints
# (JetPack 5/6 "VDD_GPU_SOC 1593mW/1593mW", JetPack 4 "POM_5V_IN 3129/3129"); unknown fields are skipped
summarize_stats() {  # FILE
  if ! command -v tegrastats >/dev/null 2>&1; then
    echo "  tegrastats not found: no GPU load, RAM or power figures"
    return 0
  fi
  awk -v file="$1" '
    function add(key, v) {
      if (!(key in count)) { order[++keys] = key; lo[key] = v; hi[key] = v }
      count[key]++; sum[key] += v
      if (v < lo[key]) lo[key] = v
      if (v > hi[key]) hi[key] = v
    }
    {
      for (i = 1; i < NF; i++) {
        f = $i; v = $(i + 1)
        if (f == "RAM" && v ~ /^[0-9]+\/[0-9]+[KMG]?B?$/) { split(v, a, "/"); add("RAM used (MB)", a[1] + 0) }
        else if (f == "GR3D_FREQ" && v ~ /^[0-9]+%/) { sub(/%.*/, "", v); add("GPU load GR3D_FREQ (%)", v + 0) }
        else if (v ~ /^[0-9]+mW\/[0-9]+mW$/) { split(v, a, "/"); add(f " (mW)", a[1] + 0) }
        else if (f ~ /^(POM_|VDD_|VIN_)/ && v ~ /^[0-9]+\/[0-9]+$/) { split(v, a, "/"); add(f " (mW)", a[1] + 0) }
      }
      lines++
    }
    END {
      if (keys == 0) { printf "  tegrastats: %d line(s), no GR3D_FREQ, RAM or power fields recognised (see %s)\n", lines, file; exit }
      printf "  tegrastats, %d sample(s):\n", lines
      for (k = 1; k <= keys; k++) {
        key = order[k]
        printf "    %-28s min %9.1f  max %9.1f  mean %9.1f\n", key, lo[key], hi[key], sum[key] / count[key]
      }
    }' "$1"
}

# --- the runs ------------------------------------------------------------------------------------------
json_number() {  # KEY FILE: a number from memx-run's one-line JSON report
  sed -n "s/.*\"$1\": *\\([-0-9.eE+]*\\).*/\\1/p" "$2" | head -n 1
}
table=()
failed=0
ran=0
for dev in $devices; do
  if [ "$dev" != cpu ] && [ "$cpu_only" = 1 ]; then
    table+=("$(printf '%-9s %10s %10s %12s  %s' "$dev" - - - "skipped: the prebuilt ONNX Runtime is CPU-only")")
    continue
  fi
  warm=$warmup_cpu
  [ "$dev" = cpu ] || warm=$warmup_gpu
  report=$out/$dev.json
  log=$out/$dev.log
  rm -f "$report"
  args=("$here/$BUNDLE_PACKAGE" --tokens "$tokens" --segment-len "$segment_len" --device "$dev" --warmup "$warm" --json "$report")
  if [ -n "$ops_lib" ] && [ -f "$ops_lib" ]; then
    args+=(--ops-lib "$ops_lib")
  fi
  if [ -n "$threads" ]; then
    args+=(--threads "$threads")
  fi
  for spec in ${BUNDLE_INPUTS:-}; do
    args+=(--input "${spec%%=*}=$here/${spec#*=}")
  done
  if [ "$save_outputs" = 1 ]; then
    rm -rf "${out:?}/$dev"
    args+=(--out "$out/$dev")
  fi
  say "running on $dev (warmup $warm)"
  start_stats "$out/$dev.tegrastats"
  set +e
  ${runner[@]+"${runner[@]}"} "$memx_run" "${args[@]}" >"$log" 2>&1
  rc=$?
  set -e
  stop_stats
  if [ "$rc" = 0 ] && [ -f "$report" ]; then
    ran=$((ran + 1))
    sed 's/^/  /' "$log"
    summarize_stats "$out/$dev.tegrastats"
    table+=("$(printf '%-9s %10.3f %10.3f %12.0f  %s' "$dev" "$(json_number p50_ms "$report")" "$(json_number p99_ms "$report")" "$(json_number tokens_per_s "$report")" ok)")
  elif grep -q "is not in this ONNX Runtime build" "$log"; then
    say "$dev: not available in this ONNX Runtime ($(grep -o 'available providers \[[^]]*\]' "$log" | head -n 1))"
    table+=("$(printf '%-9s %10s %10s %12s  %s' "$dev" - - - "not available in this ONNX Runtime")")
  else
    failed=$((failed + 1))
    echo "run.sh: $dev failed (exit $rc; log $log):" >&2
    tail -n 20 "$log" | sed 's/^/  /' >&2
    table+=("$(printf '%-9s %10s %10s %12s  %s' "$dev" - - - "FAILED (exit $rc, see $log)")")
  fi
done

echo
echo "latency of $BUNDLE_PACKAGE (batch 1, segment $segment_len; memx-run: $how)"
printf '%-9s %10s %10s %12s  %s\n' device "p50 ms" "p99 ms" "tokens/s" status
for row in "${table[@]}"; do
  echo "$row"
done
echo "reports: $out"

if [ "$memx_python" = 1 ]; then
  if [ "$trt_engines" = 1 ]; then
    say "building TensorRT engines into $BUNDLE_PACKAGE (memx build --target-cc $BUNDLE_TARGET_CC)"
    if command -v memx >/dev/null 2>&1; then
      memx build "$here/$BUNDLE_PACKAGE" --target-cc "$BUNDLE_TARGET_CC"
    else
      python3 -c 'import sys; from memx.cli import main; sys.argv[0] = "memx"; main()' build "$here/$BUNDLE_PACKAGE" --target-cc "$BUNDLE_TARGET_CC"
    fi
  else
    say "python3 has memx and tensorrt: ./run.sh --trt-engines (or memx build $here/$BUNDLE_PACKAGE --target-cc $BUNDLE_TARGET_CC) builds TensorRT engines for memx's Python runtime"
  fi
else
  say "for memx's Python runtime on TensorRT: pip install memx-toolkit (tensorrt comes with JetPack), then memx build $BUNDLE_PACKAGE --target-cc $BUNDLE_TARGET_CC"
fi

[ "$ran" -gt 0 ] || die "no device ran: expected at least one of '$devices' to run, got none (see the logs in $out)"
[ "$failed" = 0 ] || die "$failed device run(s) failed (see the table above)"
