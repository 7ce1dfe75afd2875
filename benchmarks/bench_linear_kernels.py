"""Which linear kernel is fast on this CPU? The MusicGen decoder's linear layers at decode shape
(2 rows: classifier-free guidance's conditional and unconditional halves), every candidate side by
side, interleaved rounds, medians, and each one's ratio to fp32 `F.linear` in the same round.

    .venv/bin/python benchmarks/bench_linear_kernels.py              # 24 layers (musicgen-small)
    .venv/bin/python benchmarks/bench_linear_kernels.py --layers 4 --rows 8

Per layer and step: self-attention q/k/v and out, cross-attention q and out (its k/v are computed
once per take), fc1 (1024->4096), fc2 (4096->1024). With 24 layers the weights (1.4 GB in fp32)
do not fit any cache, as in a real decode step.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

SIZES = [(1024, 1024)] * 6 + [(1024, 4096), (4096, 1024)]  # (in, out)


def build(weights: list[Any], rows: int) -> dict[str, tuple[list[Callable[[Any], Any]], Any]]:
    """name -> (one callable per weight, activation dtype)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from samplemind_gen.engines.musicgen_quant import Int4Linear, OneDNNLinear

    def linears(ws: list[Any]) -> list[nn.Linear]:
        out = []
        for w in ws:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = w
            out.append(lin)
        return out

    variants: dict[str, tuple[list[Callable[[Any], Any]], Any]] = {}
    variants["fp32 F.linear"] = ([lambda x, w=w: F.linear(x, w) for w in weights], torch.float32)
    bf16 = [w.to(torch.bfloat16) for w in weights]
    variants["bf16 F.linear"] = ([lambda x, w=w: F.linear(x, w) for w in bf16], torch.bfloat16)
    try:
        packed = [OneDNNLinear(lin) for lin in linears(bf16)]
        variants["bf16 oneDNN packed"] = (packed, torch.bfloat16)  # type: ignore[assignment]
    except (RuntimeError, AttributeError) as exc:
        print(f"oneDNN bf16 skipped: {exc}")
    for mode, name in (("float16", "fp16 fbgemm packed"), ("int8", "int8 fbgemm per-channel")):
        variants[name] = ([_packed(lin, mode) for lin in linears(weights)], torch.float32)
    try:
        q8 = []
        for w in weights:
            scale = w.abs().amax(1) / 127
            q8.append((torch.round(w / scale[:, None]).to(torch.int8), scale.to(torch.bfloat16)))
        op = torch.ops.aten._weight_int8pack_mm
        variants["int8 _weight_int8pack_mm bf16"] = (
            [lambda x, q=q, s=s: op(x, q, s) for q, s in q8],
            torch.bfloat16,
        )
    except (RuntimeError, AttributeError) as exc:
        print(f"_weight_int8pack_mm skipped: {exc}")
    try:
        int4 = [Int4Linear(lin, native=False) for lin in linears(weights)]
        variants["int4 group 32 aten"] = (int4, torch.bfloat16)  # type: ignore[assignment]
    except (RuntimeError, AttributeError) as exc:
        print(f"int4 skipped: {exc}")
    from samplemind_gen.engines import native_kernels

    if native_kernels.available():  # samplemind-gen's own (kernels/vnni.cpp)
        from samplemind_gen.engines.musicgen_quant import CompactLinear, HalfLinear, Int8Linear

        isa = native_kernels.isa()
        ours8 = [Int8Linear(lin) for lin in linears(weights)]
        variants[f"int8 samplemind {isa}"] = (ours8, torch.float32)  # type: ignore[assignment]
        ours4 = [Int4Linear(lin, native=True) for lin in linears(weights)]
        variants[f"int4 group 32 samplemind {isa}"] = (ours4, torch.bfloat16)  # type: ignore[assignment]
        for dtype, label in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
            half = [HalfLinear(lin, dtype) for lin in linears(weights)]
            variants[f"{label} samplemind {isa}"] = (half, torch.bfloat16)  # type: ignore[assignment]
        if CompactLinear.available():  # bf16 weights in 12 bits
            compact = [CompactLinear(lin) for lin in linears(bf16)]
            variants[f"bf16 compact samplemind {isa}"] = (compact, torch.bfloat16)  # type: ignore[assignment]
        if torch.ops.samplemind.amx_kinds():  # the same kernels with AMX switched off
            for name in [n for n in variants if " samplemind " in n and n[:4] in ("bf16", "int8")]:
                variants[f"{name} no AMX"] = variants[name]
    else:
        print(f"samplemind-gen's kernels skipped: {native_kernels.reason()}")
    return variants


def _packed(linear: Any, mode: str) -> Callable[[Any], Any]:
    from torch import nn

    from samplemind_gen.engines.musicgen_decoder import direct
    from samplemind_gen.engines.musicgen_quant import pack_linears

    holder = nn.Sequential(linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pack_linears(holder, mode)
    return direct(holder[0])  # type: ignore[no-any-return]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--only", default="", help="comma-separated name parts: run just those kernels (and fp32)"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    shapes = SIZES * args.layers
    weights = [torch.randn(o, i) * 0.02 for i, o in shapes]
    variants = build(weights, args.rows)
    if args.only:
        parts = args.only.split(",")
        variants = {
            k: v for k, v in variants.items() if k == "fp32 F.linear" or any(p in k for p in parts)
        }
    inputs = {n: torch.randn(args.rows, n) for n in (1024, 4096)}

    def run(name: str, fns: list[Callable[[Any], Any]], dtype: Any) -> float:
        xs = {n: x.to(dtype) for n, x in inputs.items()}
        if " samplemind " in name:  # AMX where it runs by default, or switched off
            torch.ops.samplemind.set_amx_min_rows(1 << 30 if name.endswith("no AMX") else -1)
        t0 = time.perf_counter()
        for fn, (i, _o) in zip(fns, shapes, strict=True):
            fn(xs[i])
        return time.perf_counter() - t0

    for name, (fns, dtype) in variants.items():  # warm-up: first-call allocations, kernel choice
        run(name, fns, dtype)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (fns, dtype) in variants.items():
            times[name].append(run(name, fns, dtype))
    fp32 = times["fp32 F.linear"]
    print(f"{args.layers} layers, {args.rows} rows, torch {torch.__version__}")
    print(f"{'kernel':32s} {'ms / layer':>10s} {'vs fp32':>8s}")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(fp32, ts, strict=True))
        print(f"{name:32s} {1000 * statistics.median(ts) / args.layers:10.3f} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
