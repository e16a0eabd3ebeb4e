#!/usr/bin/env bash
# The built-in trainer's GPU check, for a machine with a CUDA PyTorch, a C++ compiler and CMake,
# and no network: builds the worker (and only the worker) against that PyTorch's LibTorch, runs
# the worker tests (the CudaTest.* suite among them) and then the GPU benchmark
# (bench/gpu_bench.sh: moesweep vs eager PyTorch, same GPU, same model). A few minutes on one GPU.
#
#   DEPS_PREFIX=/opt/moesweep-deps scripts/gpu_check.sh
#   DEVICE=cpu PY=/usr/bin/python3 scripts/gpu_check.sh       # the same steps on a CPU machine
#
# DEPS_PREFIX: a folder into which the Debian 12 (bookworm, amd64) packages below were extracted
# with `dpkg -x PKG.deb "$DEPS_PREFIX"` (run with LIST_DEBS=1 to print the list); unset = the
# system has them installed. Their libraries need glibc >= 2.36 and libstdc++ >= 12 at run time.
#
# Environment:
#   PY          python with the CUDA PyTorch (default python3)
#   DEVICE      cuda (default) or cpu (a dry run: CPU LibTorch, bench on the CPU)
#   BUILD_DIR   default <repo>/build-gpu;  JOBS  default nproc
#   TORCH_MODE  auto (default: TorchConfig.cmake through CMAKE_PREFIX_PATH, and if that fails, as it
#               does for a CUDA wheel without the CUDA toolkit, -DMOESWEEP_TORCH_ROOT), config, root
#   BENCH       1 (default) runs bench/gpu_bench.sh after the tests; BATCHES, EXPERTS, PRECISION
#               pass through to it
#   OUT         where logs and results go (default <BUILD_DIR>/gpu-check)
#   TORCH_CMAKE, TORCH_DIR  override what PY's torch reports (its cmake prefix, its package folder);
#               e.g. TORCH_CMAKE=/usr for Debian's LibTorch in a CPU dry run
set -euo pipefail

DEBS="libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 protobuf-compiler-grpc libprotobuf-dev libprotobuf32
libprotobuf-lite32 protobuf-compiler libprotoc32 libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev
libc-ares2 libssl-dev libssl3 zlib1g-dev libfmt-dev libfmt9 nlohmann-json3-dev libgtest-dev libgmock-dev googletest
pkgconf pkgconf-bin libpkgconf3"
if [[ "${LIST_DEBS:-0}" == 1 ]]; then
  echo $DEBS
  exit 0
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BUILD=${BUILD_DIR:-$ROOT/build-gpu}
JOBS=${JOBS:-$(nproc)}
TORCH_MODE=${TORCH_MODE:-auto}
OUT=${OUT:-$BUILD/gpu-check}
mkdir -p "$OUT"
say() { echo "== $*" >&2; }
die() { echo "gpu_check.sh: $*" >&2; exit 1; }

# --- what is on this machine -------------------------------------------------------------------
command -v cmake >/dev/null || die "no cmake (>= 3.20) on PATH"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (g++ >= 9) on PATH"
"$PY" -c 'import torch' 2>/dev/null || die "$PY cannot import torch (set PY)"
eval "$("$PY" - "${TORCH_CMAKE:-}" "${TORCH_DIR:-}" <<'EOF'
import os, sys, torch, torch.utils
print(f"TORCH_VERSION={torch.__version__}")
print(f"TORCH_CMAKE={sys.argv[1] or torch.utils.cmake_prefix_path}")
print(f"TORCH_DIR={sys.argv[2] or os.path.dirname(torch.__file__)}")
print(f"TORCH_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
print(f"TORCH_CUDA={1 if torch.cuda.is_available() else 0}")
EOF
)"
say "torch $TORCH_VERSION at $TORCH_DIR (C++11 ABI $TORCH_ABI, CUDA device visible: $TORCH_CUDA)"
[[ "$TORCH_ABI" == 1 ]] || die "this LibTorch uses the pre-C++11 ABI; Debian's gRPC and Protobuf use the C++11 one (PyTorch >= 2.7 wheels do)"
[[ "$DEVICE" == cpu || "$TORCH_CUDA" == 1 ]] || die "torch sees no CUDA device (DEVICE=cpu for a dry run)"
nvidia-smi -L 2>/dev/null | sed 's/^/   /' >&2 || true

# --- the Debian dependencies from DEPS_PREFIX --------------------------------------------------
prefix_path="$TORCH_CMAKE"
if [[ -n "${DEPS_PREFIX:-}" ]]; then
  DEPS=$(cd "$DEPS_PREFIX" && pwd)
  [[ -d "$DEPS/usr/lib/x86_64-linux-gnu/cmake/grpc" ]] ||
    die "DEPS_PREFIX=$DEPS has no usr/lib/x86_64-linux-gnu/cmake/grpc: dpkg -x these .debs into it: $DEBS"
  export PATH="$DEPS/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The .pc files say prefix=/usr; the sysroot puts them under DEPS.
  export PKG_CONFIG_PATH="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig:$DEPS/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$DEPS"
  export PKG_CONFIG="$DEPS/usr/bin/pkgconf"
  [[ -x "$PKG_CONFIG" ]] || unset PKG_CONFIG
  # Multiarch headers (openssl/opensslconf.h) that the compiler would look for in /usr/include/<arch>.
  export CPLUS_INCLUDE_PATH="$DEPS/usr/include/x86_64-linux-gnu${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
  prefix_path="$DEPS/usr;$TORCH_CMAKE"
  say "dependencies from $DEPS"
fi

# --- configure and build -----------------------------------------------------------------------
common=(-DCMAKE_BUILD_TYPE=Release -DMOESWEEP_WORKER_ONLY=ON -DMOESWEEP_BUILD_BENCH=OFF
        -DMOESWEEP_WORKER_OPENMP=OFF -DMOESWEEP_WORKER_DNNL=OFF)
command -v ccache >/dev/null && common+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
configure() {  # configure MODE
  rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  if [[ "$1" == config ]]; then
    cmake -S "$ROOT" -B "$BUILD" "${common[@]}" -DCMAKE_PREFIX_PATH="$prefix_path" >"$OUT/configure-config.log" 2>&1
  else
    cmake -S "$ROOT" -B "$BUILD" "${common[@]}" -DCMAKE_PREFIX_PATH="${prefix_path%;*}" \
      -DMOESWEEP_TORCH_ROOT="$TORCH_DIR" -DMOESWEEP_TORCH_CXX11_ABI="$TORCH_ABI" >"$OUT/configure-root.log" 2>&1
  fi
}
case "$TORCH_MODE" in
  config) configure config || { tail -30 "$OUT/configure-config.log" >&2; die "configure failed"; } ;;
  root) configure root || { tail -30 "$OUT/configure-root.log" >&2; die "configure failed"; } ;;
  auto)
    if configure config; then
      say "LibTorch through TorchConfig.cmake (CMAKE_PREFIX_PATH=$TORCH_CMAKE)"
    else
      say "TorchConfig.cmake failed ($(grep -m1 -i 'error' "$OUT/configure-config.log" || true)); trying -DMOESWEEP_TORCH_ROOT=$TORCH_DIR"
      configure root || { tail -30 "$OUT/configure-root.log" >&2; die "configure failed (logs in $OUT)"; }
    fi
    ;;
  *) die "TORCH_MODE must be auto, config or root" ;;
esac
say "building moesweep-worker and worker_tests in $BUILD (-j$JOBS)"
cmake --build "$BUILD" -j"$JOBS" --target moesweep-worker worker_tests >"$OUT/build.log" 2>&1 ||
  { grep -m20 -E 'error|Error' "$OUT/build.log" >&2; die "build failed (log: $OUT/build.log)"; }

# --- tests -------------------------------------------------------------------------------------
say "worker tests (CudaTest.* need the GPU)"
rc=0
ctest --test-dir "$BUILD" -R '^worker\.' -j"$JOBS" --output-on-failure >"$OUT/ctest.log" 2>&1 || rc=$?
tail -15 "$OUT/ctest.log" >&2
"$BUILD/tests/worker/worker_tests" --gtest_filter='CudaTest.*:DeviceTrialTest.*:GenericPathTest.*' \
  >"$OUT/cuda-tests.log" 2>&1 || rc=1
grep -E '^\[ +(OK|FAILED|SKIPPED) +\]' "$OUT/cuda-tests.log" >&2 || true

# --- benchmark ---------------------------------------------------------------------------------
if [[ "${BENCH:-1}" == 1 ]]; then
  say "bench/gpu_bench.sh"
  WORKER="$BUILD/worker/moesweep-worker" PY="$PY" DEVICE="$DEVICE" OUT="$OUT/bench" \
    "$ROOT/bench/gpu_bench.sh" 2>&1 | tee "$OUT/bench.log" >&2 || rc=1
fi
say "done (exit $rc); logs and results in $OUT"
exit $rc
