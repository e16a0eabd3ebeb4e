#!/usr/bin/env bash
# Installs every Debian 12 package moesweep needs, then configures and builds it.
# Idempotent: safe to run again; apt-get skips what is installed, CMake rebuilds only what changed.
#
#   scripts/setup.sh            # packages + build (Release) into ./build
#   scripts/setup.sh --no-build # packages only
#   scripts/setup.sh --bench    # also the peers the benchmarks compare against (optuna, perf)
#   scripts/setup.sh --no-browser  # without the dashboard's test browser (chromium: 131 MB, 440 MB installed)
set -euo pipefail

cd "$(dirname "$0")/.."
build=1
bench=0
browser=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --bench) bench=1 ;;
    --no-browser) browser=0 ;;
    *) echo "setup.sh: unknown flag '$arg' (known: --no-build, --bench, --no-browser)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config ccache git python3
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libsqlite3-dev sqlite3
  nlohmann-json3-dev libfmt-dev libgtest-dev libgmock-dev
  # Boost.Math (headers): Student's t for the significance of stage winners.
  libboost-dev
  # The worker: LibTorch, plus OpenBLAS. Debian's LibTorch links libblas.so.3 and with only the
  # reference BLAS behind it trains 5-8x slower.
  libtorch-dev libopenblas0-openmp
  # oneDNN's header, for the worker's sgemm calls into the libdnnl2 that LibTorch already links.
  libdnnl-dev
  # Fashion-MNIST idx files for the `fashion-mnist` dataset.
  dataset-fashion-mnist
  # Lets the tests validate docker-compose.yml without a Docker engine.
  docker-compose
  # Tests drive the CLI and the two daemons as real processes.
  procps
  # libcrypto for the coordinator's token hashes; the openssl command makes the TLS tests' certificates.
  libssl-dev openssl
  # HTTP (cpp-httplib): the coordinator's Prometheus /metrics (--metrics-listen) and the web dashboard.
  libcpp-httplib-dev
  # Command trainers: the Python library's tests, the PyTorch example trainer (real PyTorch) and the
  # C++/Python expert-statistics parity test.
  python3-torch python3-yaml
  # The Python client (moesweep.Client) and its tests against a real coordinator: gRPC and protobuf
  # for Python (grpc_python_plugin, from protobuf-compiler-grpc above, generates its stubs); pandas
  # for trials_frame; tqdm and matplotlib for the notebook in docs/python-client.md, which a test
  # runs. python3-yaml (above) also checks deploy/kubernetes.
  python3-grpcio python3-protobuf python3-pandas python3-tqdm python3-matplotlib
  # deploy/slurm's test (tests/slurm) runs a real single-node Slurm: slurmctld, slurmd, sbatch and
  # munge. The test starts its own daemons with their own config, key and sockets in a temp folder;
  # it uses none of the packages' system services (with systemd, munge's starts with its own key).
  slurm-wlm munge
)
if [ "$browser" = 1 ]; then
  # The dashboard's browser test: headless Chromium driven by Selenium (it skips without them).
  packages+=(chromium chromium-driver python3-selenium)
fi
if [ "$bench" = 1 ]; then
  packages+=(python3-optuna python3-numpy linux-perf)
fi

source scripts/apt_install.sh
apt_install "${packages[@]}"

# Make sure libblas.so.3 resolves to OpenBLAS, not the reference BLAS.
if command -v update-alternatives >/dev/null; then
  openblas=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep openblas | head -n1 || true)
  if [ -n "$openblas" ]; then
    $([ "$(id -u)" = 0 ] || echo sudo) update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas" >/dev/null
  fi
fi

if [ "$build" = 1 ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${launcher[@]}" >/dev/null
  cmake --build build -j"${JOBS:-2}"
fi
