"""int8 weight quantization of MusicGen's decoder linear layers (CPU).

Why `torch.ao.quantization.quantize_dynamic` and not torchao: measured on this project's 2-core
CPU with torch 2.13, torchao 0.18's `Int8WeightOnlyConfig` and
`Int8DynamicActivationInt8WeightConfig` run eager (no `torch.compile`, which costs minutes of
warm-up on CPU) *slower* than plain fp32 for the decoder's (2 x 1024) x (1024 x 4096) matmuls, while
`quantize_dynamic` (fbgemm int8 kernels) is several times faster (docs/performance.md). The
old API still works in torch 2.13 but warns that it is deprecated; the warning is silenced here,
on purpose, and this module is the one place to change when it goes away.
"""

from __future__ import annotations

import warnings
from typing import Any

from samplemind_gen.errors import BadInputError

MODES = ("int8",)


def quantize_decoder(model: Any, mode: str, device: str) -> None:
    """Quantize every `nn.Linear` of `model.decoder` in place, one transformer layer at a time so
    peak memory stays at the loaded (bf16) model plus one fp32 layer. The rest of the decoder
    (embeddings, layer norms) is switched to fp32, which the quantized layers take and return."""
    import torch
    from torch import nn

    if mode not in MODES:
        raise BadInputError(f"unknown quantization '{mode}'; use int8")
    if not device.startswith("cpu"):
        raise BadInputError(
            "--quantize int8 is a CPU mode (fbgemm kernels); on a GPU use --dtype float16 or "
            "bfloat16 instead"
        )
    decoder = model.decoder
    groups: list[nn.Module] = list(decoder.model.decoder.layers) + [decoder.lm_heads]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecat.*")
        for group in groups:
            group.to(torch.float32)
            torch.ao.quantization.quantize_dynamic(
                group, {nn.Linear}, dtype=torch.qint8, inplace=True
            )
            # quantize_dynamic leaves a `qconfig` on every module whose observer factory closes
            # over the original float module: without this the fp32 weights (1.6 GB for
            # musicgen-small) stay alive next to the int8 ones.
            for module in group.modules():
                if hasattr(module, "qconfig"):
                    del module.qconfig
    decoder.to(torch.float32)
    release_freed_memory()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise,
    and peak RSS is what users see)."""
    import contextlib
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def is_quantized(module: Any) -> bool:
    """True when `module` holds dynamically quantized linear layers."""
    return any("quantized" in type(m).__module__ for m in module.modules())
