#!/usr/bin/env bash
# Runs the whole test suite, GPU tests included.
#
# The GPU tests need a wgpu adapter; on Linux a Vulkan one (a GL adapter alone
# would run them on GL and hide a missing driver). When there is none and this
# is a Debian or Ubuntu machine where we may install packages (root, or
# password-less sudo), Mesa's Vulkan drivers are installed: they include
# lavapipe, a software adapter that is slow but exact enough for the parity
# tests. Otherwise the exact command to run is printed. With CI=true, a
# missing adapter fails the GPU tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

cargo build --release --bin rnn-wgpu

# On Linux only a Vulkan adapter counts: Mesa's GL (llvmpipe through EGL) is
# often installed without a Vulkan driver. (tests/portability.rs runs its own
# check on a GL adapter when there is one.)
has_adapter() {
    local list
    list="$(target/release/rnn-wgpu adapters 2>/dev/null)" || return 1
    if [ "$(uname -s)" = Linux ]; then
        grep -q "(Vulkan," <<<"$list"
    fi
}

# Installs Debian packages "$2..." (described as "$1") when this is a
# Debian/Ubuntu machine where we may (root, or password-less sudo); else
# prints the command to run. Fails (status 1) when it could not.
apt_install() {
    local what="$1" sudo
    shift
    if [ "$(uname -s)" != Linux ] || ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    if [ "$(id -u)" = 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "To install $what: sudo apt-get install -y $*" >&2
        return 1
    fi
    echo "Installing $what ($*)..."
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! has_adapter; then
    echo "No GPU adapter found (on Linux: no Vulkan adapter)."
    apt_install "Mesa's Vulkan drivers, with the lavapipe software adapter" mesa-vulkan-drivers ||
        target/release/rnn-wgpu adapters || true
fi
target/release/rnn-wgpu adapters || true

cargo test --release "$@"

# Data-parallel training over MPI (feature `mpi`): `mpirun -n 2` on this
# machine. Needs Open MPI and, to build the bindings, libclang; installed
# here like Mesa above when missing and we may. With CI=true a missing
# mpirun fails tests/mpi.rs instead of skipping it.
has_mpi() {
    command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
        { ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ldconfig -p | grep -q libclang; }
}
if ! has_mpi; then
    echo "No MPI (mpirun, mpicc) or libclang found."
    apt_install "Open MPI and libclang" openmpi-bin libopenmpi-dev libclang-dev || true
fi
if has_mpi; then
    cargo test --release --features mpi --test mpi "$@"
elif [ "${CI:-}" = true ]; then
    echo "CI=true and MPI is missing: sudo apt-get install -y openmpi-bin libopenmpi-dev libclang-dev" >&2
    exit 1
else
    echo "Skipping the MPI tests; to run them: sudo apt-get install -y openmpi-bin libopenmpi-dev libclang-dev" >&2
fi

# The examples run too (small settings): the training loop over the library
# (on this README as its text), streaming inference checked against the
# whole-sequence forward (on the CPU path, and on the GPU when there is an
# adapter), and XOR.
cargo run --release --quiet --example char_model -- README.md 40 cpu
cargo run --release --quiet --example stream -- cpu
if has_adapter; then
    cargo run --release --quiet --example stream -- gpu
fi
cargo run --release --quiet --example xor -- --backend cpu
