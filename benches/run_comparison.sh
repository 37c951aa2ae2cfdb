#!/usr/bin/env bash
# Runs `rnn-wgpu bench` and the PyTorch script on the same shapes, in one go,
# and writes a comparison table.
#
#   bash benches/run_comparison.sh --cpu [--bin target/release/rnn-wgpu] [--out DIR]
#   bash benches/run_comparison.sh --gpu [--bin .devbin/rnn-wgpu] [--out DIR]
#
# --gpu also compares `bench --precision f16` with PyTorch under
# torch.autocast(float16) on the `half` table (comparison-f16.md, appended
# to comparison.md).
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
git rev-parse --short HEAD > "$out/commit.txt" 2>/dev/null || true
date -u +%Y-%m-%dT%H:%MZ > "$out/date.txt"
if [ "$mode" = cpu ]; then
    "$bin" bench --backend cpu --table cpu --kernels --json --iters "$iters" > "$out/ours.jsonl"
    python3 benches/pytorch_bench.py --device cpu --table cpu --kernels --iters "$iters" > "$out/pytorch.jsonl"
    python3 benches/compare.py "$out/ours.jsonl" "$out/pytorch.jsonl" --md "$out/comparison.md" --svg "$out/comparison.svg"
    exit 0
fi
if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
# comparison.md is put together again after every stage from the parts
# written so far, so a run cut short (a time limit) still has them all.
assemble() {
    {
        cat "$out/comparison-main.md"
        if [ -f "$out/comparison-f16.md" ]; then
            echo; echo "## 16-bit storage (f16) against torch.autocast(float16)"; echo; cat "$out/comparison-f16.md"
        fi
        if [ -f "$out/comparison-stack.md" ]; then
            echo; echo "## Two-layer stacks, each step order"; echo; cat "$out/comparison-stack.md"
        fi
    } > "$out/comparison.md"
}
"$bin" adapters | tee "$out/adapters.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
"$bin" doctor > "$out/doctor.txt" 2>&1 || echo "doctor reported failures (see $out/doctor.txt)"
# The stages, most wanted first.
# 1. Every shape of the gpu table and the matmul kernels, against cuDNN and torch.matmul.
"$bin" bench --backend gpu --table gpu --kernels --json --iters "$iters" > "$out/ours.jsonl"
python3 benches/pytorch_bench.py --device cuda --table gpu --kernels --iters "$iters" > "$out/pytorch.jsonl"
python3 benches/compare.py "$out/ours.jsonl" "$out/pytorch.jsonl" --md "$out/comparison-main.md" --svg "$out/comparison.svg"
assemble
# 2. 16-bit storage (f32 arithmetic) against cuDNN under torch.autocast(float16)
#    on the half table, our f32 step beside.
"$bin" bench --backend gpu --table half --precision f16 --json --iters "$iters" > "$out/ours-f16.jsonl"
python3 benches/pytorch_bench.py --device cuda --table half --precision f16 --iters "$iters" > "$out/pytorch-f16.jsonl"
python3 benches/compare.py "$out/ours-f16.jsonl" "$out/pytorch-f16.jsonl" --md "$out/comparison-f16.md" \
    --also "ours f32=$out/ours.jsonl"
assemble
# 3. Two-layer stacks in each step order (auto: the wavefront with the tiled
#    and split kernels), against cuDNN's stacks.
for o in auto layers wavefront; do
    "$bin" bench --backend gpu --table stack --step-order "$o" --json --iters "$iters" > "$out/ours-stack-$o.jsonl"
done
python3 benches/pytorch_bench.py --device cuda --table stack --iters "$iters" > "$out/pytorch-stack.jsonl"
python3 benches/compare.py "$out/ours-stack-auto.jsonl" "$out/pytorch-stack.jsonl" --md "$out/comparison-stack.md" \
    --also "layers=$out/ours-stack-layers.jsonl" "wavefront=$out/ours-stack-wavefront.jsonl"
assemble
# 4. Each recurrent-product variant forced, as columns of the main table.
for k in tiled split resident; do
    RNN_WGPU_STEP_KERNEL=$k "$bin" bench --backend gpu --table gpu --json --iters "$iters" > "$out/ours-$k.jsonl"
done
python3 benches/compare.py "$out/ours.jsonl" "$out/pytorch.jsonl" --md "$out/comparison-main.md" --svg "$out/comparison.svg" \
    --also "$out/ours-tiled.jsonl" "$out/ours-split.jsonl" "$out/ours-resident.jsonl"
assemble
