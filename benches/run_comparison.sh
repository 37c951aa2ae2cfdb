#!/usr/bin/env bash
# Runs `rnn-wgpu bench` and the PyTorch script on the same shapes, in one go,
# and writes a comparison table.
#
#   bash benches/run_comparison.sh --cpu [--bin target/release/rnn-wgpu] [--out DIR]
#   bash benches/run_comparison.sh --gpu [--bin .devbin/rnn-wgpu] [--out DIR]
#
# --gpu is meant for a GPU machine that has PyTorch but no Rust toolchain and
# no network: pass a prebuilt binary with --bin, and if the Vulkan loader is
# missing, carry Debian's packages in .gl/ (libvulkan1 and friends); they are
# unpacked into / first. VK_DRIVER_FILES may point at the vendor's ICD.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=cpu
bin=target/release/rnn-wgpu
out=${OUT:-bench-out}
iters=10
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) mode=gpu ;;
        --cpu) mode=cpu ;;
        --bin) bin=$2; shift ;;
        --out) out=$2; shift ;;
        --iters) iters=$2; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
if [ "$mode" = gpu ]; then
    if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    "$bin" adapters | tee "$out/adapters.txt"
    "$bin" doctor > "$out/doctor.txt" 2>&1 || echo "doctor reported failures (see $out/doctor.txt)"
    "$bin" bench --backend gpu --table gpu --kernels --json --iters "$iters" > "$out/ours.jsonl"
    # Each recurrent-product variant forced, for the columns that compare them.
    for k in tiled split resident; do
        RNN_WGPU_STEP_KERNEL=$k "$bin" bench --backend gpu --table gpu --json --iters "$iters" > "$out/ours-$k.jsonl"
    done
    also=("$out/ours-tiled.jsonl" "$out/ours-split.jsonl" "$out/ours-resident.jsonl")
    python3 benches/pytorch_bench.py --device cuda --table gpu --kernels --iters "$iters" > "$out/pytorch.jsonl"
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
else
    also=()
    "$bin" bench --backend cpu --table cpu --kernels --json --iters "$iters" > "$out/ours.jsonl"
    python3 benches/pytorch_bench.py --device cpu --table cpu --kernels --iters "$iters" > "$out/pytorch.jsonl"
fi
python3 benches/compare.py "$out/ours.jsonl" "$out/pytorch.jsonl" --md "$out/comparison.md" --svg "$out/comparison.svg" --also ${also[@]+"${also[@]}"}
if [ "$mode" = gpu ]; then
    # Two-layer stacks in each step order (auto: the wavefront with the tiled
    # and split kernels), against cuDNN's stacks; appended to comparison.md.
    for o in auto layers wavefront; do
        "$bin" bench --backend gpu --table stack --step-order "$o" --json --iters "$iters" > "$out/ours-stack-$o.jsonl"
    done
    python3 benches/pytorch_bench.py --device cuda --table stack --iters "$iters" > "$out/pytorch-stack.jsonl"
    python3 benches/compare.py "$out/ours-stack-auto.jsonl" "$out/pytorch-stack.jsonl" --md "$out/comparison-stack.md" \
        --also "layers=$out/ours-stack-layers.jsonl" "wavefront=$out/ours-stack-wavefront.jsonl"
    { echo; echo "## Two-layer stacks, each step order"; echo; cat "$out/comparison-stack.md"; } >> "$out/comparison.md"
fi
git rev-parse --short HEAD > "$out/commit.txt" 2>/dev/null || true
date -u +%Y-%m-%dT%H:%MZ > "$out/date.txt"
