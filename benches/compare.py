#!/usr/bin/env python3
"""Lines up `rnn-wgpu bench --json` and `pytorch_bench.py` results by shape and
writes a Markdown table (and an SVG chart of the step-time ratios).

    python3 benches/compare.py ours.jsonl pytorch.jsonl --md out.md [--svg out.svg]
        [--also tiled.jsonl split.jsonl resident.jsonl]

`--also` adds, per file, a column with that run's step time (runs of `bench`
with one recurrent-product variant forced: RNN_WGPU_STEP_KERNEL, the column
named after it; `NAME=file.jsonl` names the column, e.g. a `--step-order`).
The `ours % limit` column is `bench`'s fraction of its roofline's limit and
the limit that binds (– where the adapter's peaks were unknown).
"""

import argparse
import json


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def key(r):
    return (r["cell"], r["input"], r["hidden"], r["batch"], r["seq"], r["layers"])


def roof(r):
    f = r.get("fraction_of_limit")
    return "–" if f is None else f'{100 * f:.1f} % {r.get("bound", "")}'


def svg(pairs, title):
    w, bar, pad = 760, 14, 160
    h = pad // 2 + bar * len(pairs) + 40
    biggest = max([2.0] + [p[1] for p in pairs])
    x = lambda v: pad + (w - pad - 20) * v / biggest
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="13">{title}</text>']
    for i, (label, ratio) in enumerate(pairs):
        y = 40 + i * bar
        color = "#31a354" if ratio <= 1.0 else ("#fd8d3c" if ratio <= 1.5 else "#de2d26")
        out.append(f'<text x="{pad - 6}" y="{y + 10}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{pad}" y="{y + 1}" width="{x(ratio) - pad:.1f}" height="{bar - 3}" fill="{color}"/>')
        out.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 10}">{ratio:.2f}×</text>')
    for v in (1.0, 1.5):
        out.append(f'<line x1="{x(v):.1f}" y1="32" x2="{x(v):.1f}" y2="{h - 10}" stroke="black" stroke-dasharray="3,3"/>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("peer")
    ap.add_argument("--md", required=True)
    ap.add_argument("--svg")
    ap.add_argument("--also", nargs="*", default=[])
    args = ap.parse_args()
    ours, peer = load(args.ours), load(args.peer)
    also = []
    for path in args.also:
        # NAME=PATH names the column; else the run's step kernel does.
        name, _, named = path.partition("=")
        if named:
            path = named
        rows = [r for r in load(path) if "cell" in r]
        if not named:
            name = next((r.get("step_kernel") for r in rows if r.get("step_kernel")), path)
        also.append((name, {key(r): r for r in rows}))
    peer_rnn = {key(r): r for r in peer if "cell" in r}
    lines = []
    dev_ours = next((r["device"] for r in ours if "device" in r), "?")
    dev_peer = next((r["device"] for r in peer if "device" in r), "?")
    lines.append(f"rnn-wgpu on: {dev_ours}  \npeer (PyTorch {next((r.get('torch') for r in peer if r.get('torch')), '?')}, {next((r['backend'] for r in peer if 'backend' in r), '?')}) on: {dev_peer}\n")
    prec = {r.get("precision", "f32") for r in ours + peer if "cell" in r} - {"f32"}
    if prec:
        lines.append(f"precision: ours at {'/'.join(sorted(prec))} storage with f32 arithmetic, "
                     f"the peer under torch.autocast (rows whose precisions differ are not paired)\n")
    extra = "".join(f" {name} step ms |" for name, _ in also)
    lines.append("| cell | I | H | B | T | ours fwd ms | peer fwd ms | peer infer ms | ours step ms | peer step ms | step ratio | ours GFLOP/s | ours % limit | dispatches | record ms | step kernel |" + extra)
    lines.append("|---" * (16 + len(also)) + "|")
    pairs = []
    for r in ours:
        if "cell" not in r:
            continue
        p = peer_rnn.get(key(r))
        if p is None or p.get("precision", "f32") != r.get("precision", "f32"):
            continue
        ratio = r["step_ms"] / p["step_ms"]
        label = f'{r["cell"]} I{r["input"]} H{r["hidden"]} B{r["batch"]} T{r["seq"]}'
        pairs.append((label, ratio))
        lines.append(
            f'| {r["cell"]} | {r["input"]} | {r["hidden"]} | {r["batch"]} | {r["seq"]} | {r["forward_ms"]:.3f} | '
            f'{p["forward_ms"]:.3f} | {p.get("inference_ms", float("nan")):.3f} | {r["step_ms"]:.3f} | {p["step_ms"]:.3f} | '
            f'**{ratio:.2f}×** | {r["gflops"]:.1f} | {roof(r)} | {r["dispatches_per_step"]} | {r["record_ms"]:.3f} | '
            f'{r.get("step_kernel", "")} |'
            + "".join(f' {rows[key(r)]["step_ms"]:.3f} |' if key(r) in rows else " – |" for _, rows in also)
        )
    kern_peer = {(r["kernel"], r["shape"]): r for r in peer if "kernel" in r}
    kern = [r for r in ours if "kernel" in r]
    if kern:
        lines.append("")
        lines.append("| kernel | shape | ours ms | ours rate | peer ms | peer rate | ratio (peer time / ours) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in kern:
            # Forced variants (`matmul_nt[large]`) line up with the peer's kernel.
            p = kern_peer.get((r["kernel"].split("[")[0], r["shape"]))
            if p:
                lines.append(f'| {r["kernel"]} | {r["shape"]} | {r["ms"]:.3f} | {r["rate"]:.1f} {r["unit"]} | {p["ms"]:.3f} | {p["rate"]:.1f} {p["unit"]} | {p["ms"] / r["ms"]:.2f} |')
            else:
                lines.append(f'| {r["kernel"]} | {r["shape"]} | {r["ms"]:.3f} | {r["rate"]:.1f} {r["unit"]} | – | – | – |')
    with open(args.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    if args.svg and pairs:
        with open(args.svg, "w") as f:
            f.write(svg(pairs, "training step time, rnn-wgpu / PyTorch (lower is better; dashed: 1× and 1.5×)"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
