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
    engine = service.load(resolved, on_progress=on_progress)
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
