"""samplemind-gen's own CPU kernels, compiled for this machine on first use.

- `kernels/vnni.cpp`: int8 and 4-bit weight linear layers. MusicGen's decode step multiplies two
  activation rows by every decoder weight matrix, so its speed is how fast the weights stream
  from memory. These kernels (int8 activations, software prefetch ahead of the weight stream)
  read 26 GB/s of int8 and 24 GB/s of 4-bit weights on the project's 2-core Xeon through
  AVX512-VNNI `vpdpbusd`, where fbgemm's dynamic int8 reads 19 and aten's int4 15
  (benchmarks/bench_linear_kernels.py; docs/performance.md). CPUs with AVX-VNNI (256-bit) or only
  AVX2 get 256-bit versions of the same kernels, chosen at run time (`isa()`).
- `kernels/step_ops.cpp`: the rest of a decode step's small ops (single-query attention with
  fp32/bf16/int8 caches, residual add + layer norm, GELU), one op where PyTorch needs several,
  for AVX-512 and AVX2.
- `kernels/sampling.cpp`: the next-token choice (guidance, temperature, top-k, the draw) in one
  op.

They are built with the C++ compiler (`$CXX`, else `g++`) against the installed torch, once per
machine and torch version, into `paths.kernel_cache_dir()` (atomically: a half-written library
is never loaded), and registered as `torch.ops.samplemind.*`. Where the CPU lacks AVX2/FMA/F16C,
no compiler is found, the build fails, or `SAMPLEMIND_GEN_NATIVE_KERNELS=0` is set, `available()`
is False and the callers use PyTorch's kernels: everything still works, a little slower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = (KERNELS / "vnni.cpp", KERNELS / "step_ops.cpp", KERNELS / "sampling.cpp")  # + headers
ENV_SWITCH = "SAMPLEMIND_GEN_NATIVE_KERNELS"
FOLD_SWITCH = "SAMPLEMIND_GEN_FOLD_CROSS"
# The least the kernels need (their AVX2 path); AVX-VNNI and AVX512-VNNI paths are chosen at run
# time where the CPU has them (`isa()`). The library itself is built for plain x86-64.
REQUIRED_FLAGS = ("avx2", "fma", "f16c")

_lock = threading.Lock()
_state: dict[str, object] = {}


def available() -> bool:
    """True when the kernels are built (now, if needed) and loaded. Never raises."""
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _load()
        return bool(_state["ok"])


def isa() -> str:
    """The instruction set the kernels run on here: "avx512vnni", "avxvnni" or "avx2" ("" when
    they are not available). `SAMPLEMIND_GEN_KERNEL_ISA` can ask for a lower one."""
    if not available():
        return ""
    import torch

    return str(torch.ops.samplemind.kernel_isa())


def amx() -> frozenset[str]:
    """The products that run on AMX tiles here: "bf16", "int8", both, or none (no AMX, no
    permission from the OS, a lower path forced, `SAMPLEMIND_GEN_AMX=0`, or no kernels)."""
    if not available():
        return frozenset()
    import torch

    return frozenset(k for k in str(torch.ops.samplemind.amx_kinds()).split(",") if k)


def fold_cross() -> bool:
    """Whether MusicGen's decode step folds each prompt's cross-attention into two small linears
    where that reads fewer bytes (`CachedDecoder._folded_cross`); SAMPLEMIND_GEN_FOLD_CROSS=0
    switches it off."""
    return os.environ.get(FOLD_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def label(*, bf16: bool = False, compact: bool = False) -> str:
    """How a take's recipe names samplemind-gen's kernels here: "samplemind <isa>", plus "+amx"
    when `bf16` products are involved and run on AMX tiles (int8 on tiles gives the vector
    kernel's numbers, so it needs no mark), plus "+compact" for bf16 weights stored in 12 bits
    (the same weights; the rare ones outside a row's table are summed apart, which rounds
    differently), plus "+fold" where prompts' cross-attention is folded (`fold_cross`: the
    same math, associated otherwise)."""
    return (
        f"samplemind {isa()}"
        + ("+amx" if bf16 and "bf16" in amx() else "")
        + ("+compact" if compact else "")
        + ("+fold" if fold_cross() else "")
    )


def reason() -> str:
    """Why the kernels are not in use ("" when they are)."""
    available()
    return str(_state.get("why", ""))


def _compiler_or_reason() -> tuple[str | None, str]:
    """(the C++ compiler to build with, "") when the kernels can be built here, else
    (None, why not): switched off, a CPU without AVX2/FMA/F16C, or no compiler."""
    from samplemind_gen.devices import cpu_flags

    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"switched off by {ENV_SWITCH}"
    missing = [f for f in REQUIRED_FLAGS if f not in cpu_flags()]
    if missing:
        return None, f"the CPU lacks {', '.join(missing)}"
    compiler = shutil.which(os.environ.get("CXX") or "g++")
    if compiler is None:
        return None, "no C++ compiler (g++ or $CXX) found"
    return compiler, ""


def _load() -> bool:
    compiler, why = _compiler_or_reason()
    if compiler is None:
        return _skip(why)
    try:
        import torch

        library = _build(compiler)
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return _skip(f"building them failed: {str(exc).strip()[:300]}")
    return True


def _skip(why: str) -> bool:
    _state["why"] = why
    log.info("samplemind-gen CPU kernels not used: %s; PyTorch's kernels instead", why)
    return False


def _compile_command(compiler: str, source: Path, output: Path) -> list[str]:
    """One source file to an object file."""
    import torch
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        compiler,
        "-O3",
        "-std=c++20",
        "-fPIC",
        "-fopenmp",  # at::parallel_for is OpenMP in torch's CPU builds (its own libgomp)
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *(f"-I{p}" for p in cpp_extension.include_paths()),
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def _link_command(compiler: str, objects: list[Path], output: Path) -> list[str]:
    import torch

    lib = Path(torch.__file__).parent / "lib"
    return [
        compiler,
        "-shared",
        "-fopenmp",
        *(str(o) for o in objects),
        f"-L{lib}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{lib}",
        "-o",
        str(output),
    ]


def will_compile() -> bool:
    """True when `available()` would compile the kernels first (~20 s): the front ends say so."""
    if "ok" in _state:
        return False
    compiler, _ = _compiler_or_reason()
    try:
        return compiler is not None and not _library_path(compiler).is_file()
    except (OSError, subprocess.SubprocessError):
        return False


def _library_path(compiler: str) -> Path:
    """Where the library for this source, torch and compiler is cached."""
    from samplemind_gen.paths import kernel_cache_dir

    return kernel_cache_dir() / f"vnni-{_build_key(compiler)}.so"


@lru_cache(maxsize=4)
def _build_key(compiler: str) -> str:
    """A hash of the source, torch's version and the compiler's (asked once per process)."""
    import torch

    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.splitlines()[:1]
    key = hashlib.sha256()
    for source in sorted(KERNELS.glob("*.cpp")) + sorted(KERNELS.glob("*.h")):
        key.update(source.name.encode() + source.read_bytes())
    key.update(f"{torch.__version__}|{version}".encode())
    return key.hexdigest()[:16]


def _first_error(stderr: str | None) -> str:
    """The compiler's first error line (its last line is often a caret under source code)."""
    lines = (stderr or "").strip().splitlines()
    errors = [line for line in lines if "error" in line]
    return (errors or lines or ["failed"])[0]


def _build(compiler: str) -> Path:
    """The compiled library: from the cache, or built now."""
    library = _library_path(compiler)
    if library.is_file():
        return library
    folder = library.parent
    folder.mkdir(parents=True, exist_ok=True)
    log.info("compiling samplemind-gen's CPU kernels for this machine (once, ~20 s)")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as work:
        objects = [Path(work) / f"{source.stem}.o" for source in SOURCES]
        # The sources compile side by side (each is ~10 s of one core), then link.
        running = [
            subprocess.Popen(
                _compile_command(compiler, source, obj),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for source, obj in zip(SOURCES, objects, strict=True)
        ]
        failures = []
        for proc in running:
            try:
                _, err = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0:
                failures.append(_first_error(err))
        if failures:
            raise RuntimeError(failures[0])
        tmp = Path(work) / "library.so"
        done = subprocess.run(
            _link_command(compiler, objects, tmp), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(_first_error(done.stderr))
        os.replace(tmp, library)
    return library
