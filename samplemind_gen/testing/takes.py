"""Takes made from plain synthesised tones, for UI tests and demos that need real audio data
without running a model."""

from __future__ import annotations

import numpy as np

from samplemind_gen.recipe import Recipe
from samplemind_gen.take import Take


def tone_take(
    prompt: str = "sine test tone",
    *,
    seed: int = 1234,
    duration: float = 0.5,
    channels: int = 1,
    sample_rate: int = 32000,
    frequency: float = 220.0,
    analyze: bool = True,
    created: str = "2026-01-01T00:00:00+00:00",
) -> Take:
    """A decaying tone (the right channel an octave up) with a full recipe and, by default,
    real analysed features."""
    t = np.arange(int(duration * sample_rate), dtype=np.float32) / sample_rate
    envelope = np.exp(-3.0 * t / max(duration, 1e-3)).astype(np.float32)
    rows = [0.8 * envelope * np.sin(2 * np.pi * frequency * (c + 1) * t) for c in range(channels)]
    audio = np.stack(rows).astype(np.float32)
    recipe = Recipe(
        prompt=prompt,
        model="tone",
        revision=None,
        family="musicgen",
        seed=seed,
        params={"duration": duration},
        device="cpu",
        dtype="float32",
        sample_rate=sample_rate,
        channels=channels,
        duration=duration,
        created=created,
    )
    take = Take(audio=audio, sample_rate=sample_rate, recipe=recipe, id=f"tone{seed}")
    if analyze:
        from samplemind_gen.analysis import analyze as measure

        take.features = measure(audio, sample_rate)
    return take
