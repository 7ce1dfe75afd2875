"""Shared fixtures: a self-contained home, no network, tiny local checkpoints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are dominated by per-op overhead: two threads on a busy 2-core machine made them
# 10-40x slower than one. Subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The CPU kernels compiled for this machine (native_kernels) are shared by every test and run,
# not rebuilt in each test's isolated home.
os.environ.setdefault(
    "SAMPLEMIND_GEN_KERNEL_CACHE",
    os.path.join(tempfile.gettempdir(), f"samplemind-gen-test-kernels-{os.getuid()}"),
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SAMPLEMIND_GEN_HOME and HF cache, and the Hub is offline."""
    home = tmp_path / "smg-home"
    monkeypatch.setenv("SAMPLEMIND_GEN_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight mono MusicGen checkpoint saved in the Hugging Face format."""
    from samplemind_gen.testing.tiny_musicgen import build_musicgen

    return build_musicgen(tmp_path_factory.mktemp("tiny-musicgen") / "musicgen-tiny")


@pytest.fixture(scope="session")
def tiny_musicgen_stereo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from samplemind_gen.testing.tiny_musicgen import build_musicgen

    return build_musicgen(
        tmp_path_factory.mktemp("tiny-musicgen-stereo") / "musicgen-tiny-stereo", stereo=True
    )


@pytest.fixture(scope="session")
def musicgen_engine(tiny_musicgen: Path):  # type: ignore[no-untyped-def]
    """The tiny mono checkpoint loaded once through the normal code path, in fp32."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    return load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(dtype="float32"))
