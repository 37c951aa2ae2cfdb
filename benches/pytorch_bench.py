#!/usr/bin/env python3
"""Times PyTorch's nn.LSTM / nn.GRU (cuDNN on a GPU, or the CPU) on the shapes
of benches/shapes.json and prints one JSON object per line, with the same
fields as `rnn-wgpu bench --json`, so results line up by shape.

A step is forward plus backward (gradients of the input and every parameter)
with a given output gradient, as `rnn-wgpu bench` measures it. TF32 is off
(fp32 everywhere), as the comparison requires.

With --precision f16 (or bf16) the cell runs under
torch.autocast(dtype=torch.float16): cuDNN's 16-bit RNN with f32 weights
cast on the way in, the counterpart of `rnn-wgpu bench --precision f16`
(16-bit storage, f32 arithmetic); the JSON says which.

    python3 benches/pytorch_bench.py --device cuda --table gpu [--kernels]
    python3 benches/pytorch_bench.py --device cuda --table half --precision f16
    python3 benches/pytorch_bench.py --device cpu --table cpu
"""

import contextlib

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def shapes(table):
    with open(os.path.join(HERE, "shapes.json")) as f:
        grid = json.load(f)[table]
    for cell in grid["cells"]:
        for i in grid["inputs"]:
            for h in grid["hiddens"]:
                for b in grid["batches"]:
                    for t in grid["seqs"]:
                        yield cell, i, h, b, t, grid["layers"]


def timer(device):
    def run(fn, iters):
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out = []
        for _ in range(iters):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                out.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(out)

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--table", default=None, help="gpu, cpu or small (default: gpu on cuda, cpu otherwise)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--kernels", action="store_true", help="also time torch.matmul on the matmul shapes")
    ap.add_argument("--precision", choices=["f32", "f16", "bf16"], default="f32",
                    help="f16/bf16: the cells under torch.autocast with that dtype")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    table = args.table or ("gpu" if device.type == "cuda" else "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        backend = "cudnn" if torch.backends.cudnn.is_available() else "cuda"
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        backend = "cpu"
    run = timer(device)
    half = {"f16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)

    def autocast():
        if half is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=half)

    torch.manual_seed(0)
    for cell, i, h, b, t, layers in shapes(table):
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](i, h, num_layers=layers).to(device)
        x = torch.randn(t, b, i, device=device, requires_grad=True)
        dy = torch.randn(t, b, h, device=device)

        def forward():
            with autocast():
                module(x)

        def infer():
            with torch.no_grad(), autocast():
                module(x)

        def step():
            with autocast():
                out, _ = module(x)
            out.backward(dy.to(out.dtype))

        try:
            fwd = run(forward, args.iters)
            inf = run(infer, args.iters)
            st = run(step, args.iters)
        except RuntimeError as e:
            # (oneDNN has no 16-bit LSTM on CPUs without AVX-512 BF16/FP16.)
            print(f"skipped {cell} I{i} H{h} B{b} T{t} at {args.precision}: {e}", file=sys.stderr)
            continue
        g = {"lstm": 4, "gru": 3}[cell]
        flops = 3 * sum(2.0 * t * b * g * h * ((i if l == 0 else h) + h) for l in range(layers))
        print(json.dumps({
            "implementation": "pytorch", "backend": backend, "device": name, "cell": cell,
            "input": i, "hidden": h, "batch": b, "seq": t, "layers": layers,
            "forward_ms": fwd, "backward_ms": st - fwd, "step_ms": st, "inference_ms": inf,
            "gflops": flops / (st * 1e-3) / 1e9, "torch": torch.__version__,
            "precision": args.precision,
        }), flush=True)
    if args.kernels:
        sizes = [(256, 256, 256), (1024, 1024, 1024), (4096, 4096, 4096), (1600, 2048, 512), (64, 4096, 1024)]
        if device.type == "cpu":
            sizes = [(64, 64, 64), (128, 128, 128)]
        for m, n, k in sizes:
            a = torch.randn(m, k, device=device)
            w = torch.randn(n, k, device=device)
            ms = run(lambda: a @ w.T, args.iters)
            print(json.dumps({
                "implementation": "pytorch", "kernel": "matmul_nt", "backend": backend, "device": name,
                "shape": f"{m}x{n}x{k}", "ms": ms, "rate": 2.0 * m * n * k / (ms * 1e-3) / 1e9,
                "unit": "GFLOP/s",
            }), flush=True)


if __name__ == "__main__":
    main()
