"""Run code on one of samplemind-gen's CPU kernel paths (tests of every instruction set on one
machine: `SAMPLEMIND_GEN_KERNEL_ISA` picks a lower path than the CPU has)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

# The /proc/cpuinfo flag each path needs, and the name `native_kernels.isa()` reports for it.
CPU_FLAG = {"avx512": "avx512_vnni", "avxvnni": "avx_vnni", "avx2": "avx2"}
ISA_NAME = {"avx512": "avx512vnni", "avxvnni": "avxvnni", "avx2": "avx2"}


def has_path(isa: str) -> bool:
    from samplemind_gen.devices import cpu_flags

    return CPU_FLAG[isa] in cpu_flags()


def run_on_path(code: str, isa: str) -> dict[str, Any]:
    """`code` in a fresh Python on kernel path `isa`; returns its last stdout line as JSON."""
    return run_with_env(code, {"SAMPLEMIND_GEN_KERNEL_ISA": isa})


def run_with_env(code: str, env: dict[str, str]) -> dict[str, Any]:
    """`code` in a fresh Python with `env` added to the environment (the kernels read their
    switches once per process); returns its last stdout line as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class AmxRows:
    """Within the block, samplemind-gen's kernels use AMX tiles from `rows` activation rows up
    (1 << 30: never, so the vector kernels run, as on CPUs without AMX; -1: each kind's own
    threshold). Tests and benchmarks compare the two paths in one process this way."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __enter__(self) -> None:
        import torch

        self.before = torch.ops.samplemind.set_amx_min_rows(self.rows)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.ops.samplemind.set_amx_min_rows(self.before)
