"""Device and dtype choice: cuda > mps > cpu; fp16 on CUDA, bf16/fp32 on CPU."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from samplemind_gen.errors import BadInputError

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
QUANTIZE_MODES = ("int8", "int4")  # `LoadOptions.quantize`: MusicGen decoder weights on CPU


def quantized_cpu_dtype(quantize: str) -> str:
    """The dtype a quantized MusicGen loads in on CPU, as its recipe records it: int8 runs fp32
    math over fp16-loaded weights (`float16+int8`), int4 bf16 math (`bfloat16+int4`)."""
    return "bfloat16" if quantize == "int4" else "float16"


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    base = device.split(":")[0]
    if base not in DEVICES:
        raise BadInputError(f"unknown device '{device}'; use auto, cpu, cuda or mps")
    if base == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda asked for, but no CUDA GPU is available; use cpu")
    return device


def pick_dtype(device: str, dtype: str = "auto", *, cpu_default: str = "float32") -> str:
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype '{dtype}'; use auto, float32, float16 or bfloat16")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "float16"
    if device == "mps":
        return "float16"
    return cpu_default


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none), read once."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 / AMX), where bf16 is a real win."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Iterations an OpenMP worker thread spins for more work before it sleeps (libgomp's default:
# about 5 ms here). A decode step is ~170 parallel kernels with small single-threaded ops
# between them; at this count (~0.3 s of spinning after the last one) the workers never sleep
# within a take. Measured on 8 s takes: int4 22.3 -> 18.7 ms/step, int8 23.5 -> 22.6, first sound
# 0.95 -> 0.6 s; transformers' own generate gained nothing (0.97x).
OMP_SPIN_COUNT = "20000000"


def keep_cpu_threads_warm() -> bool:
    """Set libgomp's spin count (`OMP_SPIN_COUNT`) unless the user set one. Only works before
    torch is first imported (libgomp reads it at start): the front ends call it first thing.
    True when it was applied."""
    import os
    import sys

    if (
        "torch" in sys.modules
        or "GOMP_SPINCOUNT" in os.environ
        or os.environ.get("OMP_WAIT_POLICY")
    ):
        return False
    os.environ["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT
    return True
