"""The contract every engine meets, so analysis, export, the library and the TUI never care
which model made a take."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from samplemind_gen.catalog import ModelSpec
from samplemind_gen.errors import GenerationCancelled
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress

ProgressCallback = Callable[[Progress], None]
AudioCallback = Callable[[Any, int], None]
"""`on_audio(chunk, start_sample)`: float32 numpy (batch, channels, n) audio from `start_sample`
on, in order and back to back, while a take is still being generated (streaming engines)."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. "auto" picks cuda > mps > cpu and the dtype that suits the device."""

    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None  # "int8" or "int4" (MusicGen decoder on CPU)
    # CPU: pack weights for the fastest kernels (oneDNN bf16, fbgemm fp16). False keeps plain
    # modules (transformers' own forward works on them: the reference path in benchmarks).
    pack: bool = True
    # CUDA, MusicGen: torch.compile the decode step (Inductor) before graph capture; the first
    # take pays the compile.
    compile: bool = False
    offload: bool | None = None  # diffusion: None = decide from free memory


class Engine(Protocol):
    """A loaded model that turns requests into audio."""

    spec: ModelSpec
    model_id: str
    revision: str | None
    device: str
    dtype: str
    sample_rate: int
    channels: int

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GeneratedAudio]:
        """Generate one take per request, as one batch. Requests share all parameters but the
        prompt and seed. Raises `GenerationCancelled` within one step of `cancel` being set."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...


class StreamingEngine(Engine, Protocol):
    """An engine that can hand out audio while it generates (MusicGen). Kept apart from `Engine`
    so engines that cannot stream (diffusion) need not accept `on_audio`; such an engine sets
    `streams_audio = True` (see `as_streaming`)."""

    streams_audio: bool

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_audio: AudioCallback | None = None,
    ) -> list[GeneratedAudio]: ...


def as_streaming(engine: Engine) -> StreamingEngine | None:
    """`engine` as a `StreamingEngine` when it declares `streams_audio`, else None."""
    return cast(StreamingEngine, engine) if getattr(engine, "streams_audio", False) else None


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled()


def fit_length(audio, samples: int):  # type: ignore[no-untyped-def]
    """Trim or zero-pad (channels, n) audio to exactly `samples` along the last axis."""
    import numpy as np

    n = audio.shape[-1]
    if n >= samples:
        return np.ascontiguousarray(audio[..., :samples])
    pad = np.zeros((*audio.shape[:-1], samples - n), dtype=audio.dtype)
    return np.concatenate([audio, pad], axis=-1)
