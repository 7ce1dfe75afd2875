"""What a producer asks for (`GenerationRequest`), what comes back (`GeneratedAudio`), and the
progress reports in between. Shared by every engine and both front ends."""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from samplemind_gen.errors import BadInputError

MAX_SEED = 2**32 - 1
Stage = Literal["loading", "encoding", "generating", "decoding", "analysing"]


@dataclass(frozen=True)
class GenerationRequest:
    """One take to generate. `seed=None` means "pick a random one" (the result records it)."""

    prompt: str
    duration: float = 8.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float | None = None
    guidance_scale: float = 3.0
    seed: int | None = None
    # Diffusion models only.
    steps: int | None = None
    negative_prompt: str | None = None
    scheduler: Literal["fast", "quality"] = "fast"
    waveforms_per_prompt: int = 1

    def with_seed(self, seed: int | None) -> GenerationRequest:
        return replace(self, seed=seed)

    def resolved(self) -> GenerationRequest:
        """A copy with a concrete seed, so the take can be reproduced."""
        return self if self.seed is not None else replace(self, seed=random_seed())

    def params(self) -> dict[str, Any]:
        """Every parameter except the prompt and seed, as plain JSON values."""
        data = asdict(self)
        data.pop("prompt")
        data.pop("seed")
        return data


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def validate_request(request: GenerationRequest, *, max_duration: float | None = None) -> None:
    """Raise `BadInputError` naming the fix for anything an engine would choke on."""
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise BadInputError("the prompt is empty; describe the sound, e.g. 'lofi hip hop drums'")
    d = request.duration
    if not isinstance(d, (int, float)) or math.isnan(d) or math.isinf(d) or d <= 0:
        raise BadInputError(f"duration must be a positive number of seconds (got {d})")
    if max_duration is not None and d > max_duration + 1e-9:
        raise BadInputError(
            f"duration {d:g} s is beyond this model's limit of {max_duration:g} s; "
            "use a shorter --duration"
        )
    t = request.temperature
    if math.isnan(t) or t <= 0:
        raise BadInputError(f"temperature must be greater than 0 (got {t}); try 1.0")
    if request.top_k < 0:
        raise BadInputError(f"top-k must be 0 (off) or positive (got {request.top_k})")
    p = request.top_p
    if p is not None and (math.isnan(p) or not 0 < p <= 1):
        raise BadInputError(f"top-p must be in (0, 1] (got {p}); try 0.9, or leave it unset")
    g = request.guidance_scale
    if math.isnan(g) or g < 0:
        raise BadInputError(f"guidance scale must be 0 or more (got {g}); try 3.0")
    s = request.seed
    if s is not None and (not isinstance(s, int) or s < 0 or s > MAX_SEED):
        raise BadInputError(f"seed must be an integer from 0 to {MAX_SEED} (got {s})")
    if request.steps is not None and not 1 <= request.steps <= 1000:
        raise BadInputError(f"steps must be from 1 to 1000 (got {request.steps})")
    if not 1 <= request.waveforms_per_prompt <= 16:
        raise BadInputError("waveforms per prompt must be from 1 to 16")
    if request.scheduler not in ("fast", "quality"):
        raise BadInputError(f"scheduler must be 'fast' or 'quality' (got {request.scheduler})")


@dataclass(frozen=True)
class Progress:
    """A progress report from a long job. Steps are decode or denoising steps."""

    stage: Stage
    step: int = 0
    total: int = 0
    audio_seconds: float = 0.0
    total_audio_seconds: float = 0.0
    elapsed: float = 0.0
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def eta(self) -> float | None:
        if not self.total or self.step <= 0:
            return None
        return self.elapsed * (self.total - self.step) / self.step


def describe_progress(progress: Progress) -> str:
    """One line for a progress bar or status line, the same in the CLI and the TUI."""
    if progress.stage != "generating" or not progress.total:
        return progress.message or progress.stage
    parts = [f"step {progress.step}/{progress.total}"]
    if progress.total_audio_seconds:
        parts.append(f"{progress.audio_seconds:.1f}/{progress.total_audio_seconds:.1f} s audio")
    parts.append(f"{progress.elapsed:.1f} s elapsed")
    eta = progress.eta
    if eta is not None:
        parts.append(f"ETA {eta:.1f} s")
    return " · ".join(parts)


@dataclass
class GeneratedAudio:
    """Raw engine output for one take: float32 audio shaped (channels, samples)."""

    audio: np.ndarray
    sample_rate: int
    request: GenerationRequest
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings for the user (e.g. prompt truncated)

    @property
    def channels(self) -> int:
        return int(self.audio.shape[0])

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / self.sample_rate
