"""What this machine runs samplemind-gen on, and how fast a path it gets: versions, the device,
the CPU's instruction sets, whether samplemind-gen's CPU kernels are built (and why not), which
kernels each MusicGen mode uses here, audio output and the folders in use. For `samplemind-gen
doctor`, and for bug reports: a slow take usually means a slow path, and this says which."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from samplemind_gen import __version__

# The /proc/cpuinfo flags that decide a path (docs/performance.md).
CPU_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report() -> dict[str, Any]:
    """Everything `doctor` shows, as plain data. Compiles samplemind-gen's CPU kernels if they
    are not built yet (~20 s, once per machine), so the report says what a take will run on."""
    import torch

    from samplemind_gen import paths
    from samplemind_gen.devices import cpu_flags, pick_device
    from samplemind_gen.engines import native_kernels
    from samplemind_gen.engines.musicgen import cpu_default_dtype
    from samplemind_gen.playback import output_available
    from samplemind_gen.store.cache import hub_cache_dir, hub_offline

    flags = cpu_flags()
    device = pick_device("auto")
    data: dict[str, Any] = {
        "versions": {
            "samplemind-gen": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "diffusers": _version("diffusers"),
        },
        "device": device,
        "cpu": {
            "name": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "flags": [f for f in CPU_FLAGS if f in flags],
            "openmp_spin": os.environ.get("GOMP_SPINCOUNT") or os.environ.get("OMP_WAIT_POLICY"),
        },
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        data["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    kernels: dict[str, Any] = {"cache": str(paths.kernel_cache_dir())}
    if native_kernels.available():
        kernels.update(
            built=True, isa=native_kernels.isa(), amx=",".join(sorted(native_kernels.amx()))
        )
    else:
        kernels.update(built=False, why=native_kernels.reason())
    data["kernels"] = kernels
    data["musicgen"] = _musicgen_paths(device, kernels, cpu_default_dtype())
    data["audio_output"] = output_available()
    data["paths"] = {
        "data": str(paths.data_dir()),
        "library": str(paths.library_db()),
        "exports": str(paths.export_dir()),
        "models": str(hub_cache_dir()),
    }
    data["offline"] = hub_offline()
    return data


def _musicgen_paths(device: str, kernels: dict[str, Any], default: str) -> dict[str, Any]:
    """Per MusicGen mode: the dtype it loads in and the kernels it runs on here (named as a
    take's recipe names them, `musicgen_quant.kernel_label`), with a note where one helps."""
    reference = {"dtype": "float32", "kernels": "pytorch", "note": "the bit-exact reference"}
    if not device.startswith("cpu"):
        return {"default": {"dtype": "float16", "kernels": "pytorch", "note": f"on {device}"}}
    if kernels.get("built"):
        from samplemind_gen.engines import native_kernels
        from samplemind_gen.engines.musicgen_quant import T5_LABEL, CompactLinear

        # The packed modes' T5 linears run on our half kernel too (pack_text_encoder).
        ours = native_kernels.label() + T5_LABEL
        # bf16 linears: on tiles where the CPU has them, 12-bit weights with AVX512-BF16
        tiles = native_kernels.label(bf16=True, compact=CompactLinear.available()) + T5_LABEL
        return {
            "default": {
                "dtype": default,
                "kernels": tiles if default == "bfloat16" else ours,
                "note": "",
            },
            "int8": {
                "dtype": "float16+int8",
                "kernels": ours,
                "note": "AMX tiles for batches, the same numbers"
                if "int8" in native_kernels.amx()
                else "",
            },
            # int4 keeps its LM heads in bf16: on tiles where the CPU has them
            "int4": {"dtype": "bfloat16+int4", "kernels": tiles, "note": "lossy: check by ear"},
            "float32": reference,
        }
    return {
        "default": {
            "dtype": default,
            "kernels": "onednn" if default == "bfloat16" else "fbgemm",
            "note": "",
        },
        "int8": {"dtype": "float16+int8", "kernels": "fbgemm", "note": ""},
        "int4": {"dtype": "bfloat16+int4", "kernels": "aten", "note": "lossy: check by ear"},
        "float32": reference,
    }
