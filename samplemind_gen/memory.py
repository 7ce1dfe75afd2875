"""How much memory this machine has free, whether a model fits in it, and which model to
recommend. Cheap to call: psutil or /proc/meminfo for RAM, and CUDA only when torch is already
imported (importing torch just to ask would cost seconds)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from samplemind_gen.catalog import DEFAULT_MODEL, ModelSpec


@dataclass(frozen=True)
class FreeMemory:
    """Free RAM and, when a CUDA GPU is known, free VRAM, in bytes (None = unknown)."""

    ram: int | None
    vram: int | None = None

    @property
    def has_gpu(self) -> bool:
        return self.vram is not None


def free_memory() -> FreeMemory:
    return FreeMemory(ram=_free_ram(), vram=_free_vram())


def _free_ram() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _free_vram() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    except Exception:
        return None


def fits(spec: ModelSpec, memory: FreeMemory) -> bool | None:
    """Whether `spec` fits: in VRAM (fp16) when there is a GPU, else in RAM (fp32).
    None when the free memory is unknown."""
    if memory.has_gpu:
        assert memory.vram is not None
        return spec.memory_bytes("float16") <= memory.vram
    if memory.ram is None:
        return None
    return spec.memory_bytes("float32") <= memory.ram


def recommend(specs: Iterable[ModelSpec], memory: FreeMemory) -> ModelSpec | None:
    """The best text-to-music model that fits. On a CPU that is musicgen-small whatever the RAM:
    the bigger ones are several times slower per step for a modest gain. On a GPU, the largest
    plain MusicGen that fits in VRAM."""
    candidates = [
        s for s in specs if s.family == "musicgen" and not s.melody and s.channels == 1 and s.params
    ]
    if not memory.has_gpu:
        small = next((s for s in candidates if s.name == DEFAULT_MODEL), None)
        return small if small is not None and fits(small, memory) is not False else None
    fitting = [s for s in candidates if fits(s, memory)]
    return max(fitting, key=lambda s: s.params, default=None)
