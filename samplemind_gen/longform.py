"""Long-form MusicGen takes through the service: beyond the 30 s window, continuing a file,
blending two prompts (see `samplemind_gen.engines.musicgen_windows`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from samplemind_gen.catalog import ResolvedModel
from samplemind_gen.engines.base import ProgressCallback
from samplemind_gen.engines.musicgen_windows import MAX_LONG_DURATION, LongForm
from samplemind_gen.errors import BadInputError
from samplemind_gen.request import GenerationRequest, Progress
from samplemind_gen.take import Take

__all__ = ["MAX_LONG_DURATION", "LongForm", "generate_long_blocking", "long_form_params"]


def long_form_params(long: LongForm) -> dict[str, Any]:
    """The extra recipe parameters of a long-form take."""
    return {"long_form": long.params()}


def check_model(model: ResolvedModel) -> None:
    if model.spec.family != "musicgen":
        raise BadInputError(
            f"{model.display_name} is a {model.spec.family} model; takes longer than its "
            f"{model.spec.max_duration:g} s, --continue and --blend work with MusicGen models"
        )


def generate_long_blocking(
    service: Any,
    requests: Sequence[GenerationRequest],
    long: LongForm,
    *,
    model: str | ResolvedModel | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[Take]:
    """Like `AudioEngineWithGeneration.generate_blocking`, window by window."""
    from samplemind_gen.engines.musicgen_windows import generate_windowed
    from samplemind_gen.service import analyze_audio

    resolved = service.resolve(model)
    check_model(resolved)
    if long.melody is not None and not resolved.spec.melody:
        raise BadInputError(
            f"--melody needs a musicgen-melody checkpoint; {resolved.display_name} is not one "
            "(try --model musicgen-melody)"
        )
    engine = service.load(resolved, on_progress=on_progress)
    with service.turn(on_progress, cancel):  # one take at a time, as generate_blocking
        if resolved.spec.melody:
            outputs = _generate_melody(engine, requests, long, on_progress, cancel)
        else:
            outputs = generate_windowed(
                engine, list(requests), long, on_progress=on_progress, cancel=cancel
            )
    extra = long_form_params(long)
    takes = []
    for out in outputs:
        take = service._to_take(engine, out)
        take.recipe = replace(take.recipe, params={**take.recipe.params, **extra})
        takes.append(take)
    if service.analyze_takes:
        if on_progress:
            on_progress(Progress(stage="analysing", message="analysing"))
        for take in takes:
            t0 = time.perf_counter()
            take.features = analyze_audio(take.audio, take.sample_rate)
            take.timings["analysis"] = time.perf_counter() - t0
    return takes


def _generate_melody(
    engine: Any,
    requests: Sequence[GenerationRequest],
    long: LongForm,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> list[Any]:
    from pathlib import Path

    from samplemind_gen.engines.musicgen_melody import melody_from_file

    if long.continue_from is not None or long.blend_prompt is not None:
        raise BadInputError("--continue and --blend work with text-only MusicGen models")
    for r in requests:
        if r.duration > engine.max_duration + 1e-9:
            raise BadInputError(
                f"musicgen-melody makes up to {engine.max_duration:g} s a take; use a shorter "
                "--duration"
            )
    chroma = melody_from_file(Path(long.melody)) if long.melody is not None else None
    return list(
        engine.generate(list(requests), on_progress=on_progress, cancel=cancel, melody=chroma)
    )
