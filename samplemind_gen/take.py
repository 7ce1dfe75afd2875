"""A take: one generated piece of audio with its recipe and analysis."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samplemind_gen.recipe import Recipe

if TYPE_CHECKING:
    from samplemind_gen.analysis import AudioFeatures


@dataclass
class Take:
    audio: np.ndarray  # float32, (channels, samples)
    sample_rate: int
    recipe: Recipe
    features: AudioFeatures | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    path: Path | None = None  # where it was exported, once it was

    @property
    def prompt(self) -> str:
        return self.recipe.prompt

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def channels(self) -> int:
        return int(self.audio.shape[0])

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / self.sample_rate

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints for a take."""
        return {
            "id": self.id,
            "path": str(self.path) if self.path else None,
            "prompt": self.recipe.prompt,
            "model": self.recipe.model,
            "revision": self.recipe.revision,
            "family": self.recipe.family,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "duration": round(self.duration, 6),
            "seed": self.recipe.seed,
            "device": self.recipe.device,
            "dtype": self.recipe.dtype,
            "params": self.recipe.params,
            "features": self.features.to_dict() if self.features else None,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": self.notes,
        }
