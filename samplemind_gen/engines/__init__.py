"""Engines: MusicGen (transformers) and the diffusion family (diffusers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from samplemind_gen.catalog import ResolvedModel
from samplemind_gen.engines.base import Engine, LoadOptions, ProgressCallback

__all__ = ["Engine", "LoadOptions", "ProgressCallback", "load_engine"]


def load_engine(
    model: ResolvedModel,
    options: LoadOptions | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    locate: Callable[[ResolvedModel], tuple[Path, str | None]] | None = None,
) -> Engine:
    """Load the engine for `model`. `locate` maps a model to (local folder, resolved revision);
    by default the model store does it (cache first, download when allowed)."""
    options = options or LoadOptions()
    if locate is None:
        from samplemind_gen.store import locate_model

        locate = locate_model
    path, revision = locate(model)
    family = model.spec.family
    if family == "musicgen" and model.spec.melody:
        from samplemind_gen.engines.musicgen_melody import MusicGenMelodyEngine

        return MusicGenMelodyEngine.load(
            model.spec, path, revision, options, on_progress=on_progress
        )
    if family == "musicgen":
        from samplemind_gen.engines.musicgen import MusicGenEngine

        return MusicGenEngine.load(model.spec, path, revision, options, on_progress=on_progress)
    from samplemind_gen.engines.diffusion import load_diffusion_engine

    return load_diffusion_engine(model.spec, path, revision, options, on_progress=on_progress)
