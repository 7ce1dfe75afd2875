"""Synthetic takes for library tests: real files and features, no model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samplemind_gen.analysis import AudioFeatures
from samplemind_gen.library import Library
from samplemind_gen.recipe import Recipe
from samplemind_gen.service import export_take_to
from samplemind_gen.take import Take


def make_take(
    prompt: str = "dusty lofi drums",
    *,
    seed: int = 1,
    model: str = "facebook/musicgen-small",
    bpm: float | None = 90.0,
    key: str | None = "A",
    mode: str | None = "minor",
    lufs: float | None = -14.0,
) -> Take:
    sr = 8000
    t = np.arange(int(0.25 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * (220 + seed) * t)).astype(np.float32)[None, :]
    recipe = Recipe(
        prompt=prompt,
        model=model,
        revision=None,
        family="musicgen",
        seed=seed,
        params={"duration": 0.25, "guidance_scale": 3.0},
        device="cpu",
        dtype="float32",
        sample_rate=sr,
        channels=1,
        duration=0.25,
    )
    features = AudioFeatures(
        duration=0.25, sample_rate=sr, channels=1, tempo_bpm=bpm, key=key, mode=mode, lufs=lufs
    )
    return Take(audio=audio, sample_rate=sr, recipe=recipe, features=features)


def stored(library: Library, folder: Path, take: Take, **kw) -> str:  # type: ignore[no-untyped-def]
    export_take_to(take, folder, fmt="wav16")
    return library.add(take, **kw).id
