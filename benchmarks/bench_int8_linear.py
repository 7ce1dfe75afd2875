"""Which int8 path is fast on this CPU? The decoder's linear layers at decode shape (2 rows: CFG's
conditional and unconditional halves), side by side, interleaved, medians and ratios to fp32.

    .venv/bin/python benchmarks/bench_int8_linear.py
    PYTHONPATH=/path/to/torchao .venv/bin/python benchmarks/bench_int8_linear.py   # + torchao

One musicgen-small layer's linears: q, k, v, out (1024x1024) for self- and cross-attention
(cross k/v are computed once per take, so 6 per step), fc1 (1024->4096), fc2 (4096->1024).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings


def main() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    sizes = [(1024, 1024)] * 6 + [(1024, 4096), (4096, 1024)]
    layers = 4  # 4 of musicgen-small's 24 layers: ~270 MB of fp32 weights, beyond the L3 cache
    base = nn.ModuleList([nn.Linear(i, o, bias=False) for _ in range(layers) for i, o in sizes])
    variants: dict[str, tuple[nn.Module, torch.dtype]] = {"fp32": (base, torch.float32)}
    variants["bf16"] = (copy.deepcopy(base).to(torch.bfloat16), torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants["quantize_dynamic int8"] = (
            torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, torch.qint8),
            torch.float32,
        )
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        for name, config in (
            ("torchao int8 weight-only", Int8WeightOnlyConfig()),
            ("torchao int8 dyn-act", Int8DynamicActivationInt8WeightConfig()),
        ):
            m = copy.deepcopy(base)
            quantize_(m, config)
            variants[name] = (m, torch.float32)
    except Exception as exc:  # torchao missing or broken on this torch
        print(f"torchao skipped: {type(exc).__name__}: {str(exc)[:120]}")

    inputs = {
        (n, dt): torch.randn(2, n).to(dt)
        for n in (1024, 4096)
        for dt in (torch.float32, torch.bfloat16)
    }

    def run(module: nn.Module, dtype: torch.dtype) -> float:
        t0 = time.perf_counter()
        for lin, (i, _o) in zip(module, sizes * layers, strict=True):
            lin(inputs[(i, dtype)])
        return time.perf_counter() - t0

    for module, dtype in variants.values():  # warm-up
        run(module, dtype)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(15):
        for name, (module, dtype) in variants.items():
            times[name].append(run(module, dtype))
    fp32 = times["fp32"]
    print(f"{'variant':28s} {'ms / layer':>10s} {'speedup vs fp32':>16s}")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(fp32, ts, strict=True))
        print(f"{name:28s} {1000 * statistics.median(ts) / layers:10.2f} {ratio:15.2f}x")


if __name__ == "__main__":
    main()
