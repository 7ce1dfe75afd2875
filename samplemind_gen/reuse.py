"""The result cache: a request the library has already answered is answered again from the
library, at once, instead of being generated a second time.

A stored take is reused when its identity (`library.take_identity`: prompt, model, revision,
family, seed, every parameter, device, dtype and post-processing) equals the request's, and its
file is still where it was with the same SHA-256. Only requests with a fixed seed can match: a
random seed is a request for something new.

The device and dtype a request would run with are known before the model loads (the same
`pick_device`/`pick_dtype` the engines use; the loaded engine's own values once it is loaded),
and the revision comes from the model store without any download, so a cache hit never loads a
model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from samplemind_gen.catalog import ResolvedModel
from samplemind_gen.engines.base import AudioCallback, ProgressCallback
from samplemind_gen.errors import SampleMindError
from samplemind_gen.library import Library, StoredTake, take_identity
from samplemind_gen.request import GenerationRequest, validate_request
from samplemind_gen.service import AudioEngineWithGeneration
from samplemind_gen.take import Take

REUSED_NOTE = "reused from the library (same recipe, seed, model, device and dtype)"


def expected_identity(
    service: AudioEngineWithGeneration,
    model: str | ResolvedModel | None,
    request: GenerationRequest,
    processing: Mapping[str, Any] | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> str | None:
    """The identity the take for `request` will have, or None when it cannot be known without
    generating (no fixed seed, or the model is not on this machine)."""
    if request.seed is None:
        return None
    resolved = service.resolve(model)
    engine = service.loaded_engine(resolved)
    if engine is not None:
        revision, device, dtype = engine.revision, engine.device, engine.dtype
    else:
        from samplemind_gen.devices import pick_device, pick_dtype
        from samplemind_gen.store import locate_model

        try:
            _path, revision = locate_model(resolved, allow_download=False)
            device = pick_device(service.options.device)
            dtype = pick_dtype(
                device, service.options.dtype, cpu_default=_cpu_default_dtype(resolved)
            )
        except SampleMindError:
            return None
        if service.options.quantize and resolved.spec.family == "musicgen":
            from samplemind_gen.devices import quantized_cpu_dtype

            quantize = service.options.quantize
            base = quantized_cpu_dtype(quantize) if device == "cpu" else dtype
            dtype = f"{base}+{quantize}"
    return take_identity(
        prompt=request.prompt,
        model=resolved.spec.repo_id,
        revision=revision,
        family=resolved.spec.family,
        seed=int(request.seed),
        params={**request.params(), **dict(extra_params or {})},
        device=device,
        dtype=dtype,
        processing=processing,
    )


def _cpu_default_dtype(model: ResolvedModel) -> str:
    """What "auto" means on a CPU for this model, as its engine decides it."""
    if model.spec.family == "musicgen" and not model.spec.melody:
        from samplemind_gen.engines.musicgen import cpu_default_dtype

        return cpu_default_dtype()
    return "float32"


def find_reusable(
    library: Library,
    service: AudioEngineWithGeneration,
    model: str | ResolvedModel | None,
    request: GenerationRequest,
    processing: Mapping[str, Any] | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> StoredTake | None:
    identity = expected_identity(service, model, request, processing, extra_params)
    return library.find_cached(identity) if identity is not None else None


def generate_or_reuse(
    service: AudioEngineWithGeneration,
    requests: Sequence[GenerationRequest],
    *,
    library: Library | None,
    model: str | ResolvedModel | None = None,
    processing: Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    long_form: Any = None,
    on_audio: AudioCallback | None = None,
) -> list[Take]:
    """One take per request, in order. Takes found in the library come back with `path` set
    (they are already exported and recorded); the others are fresh, with `path` None.
    `long_form` (a `LongForm`) sends MusicGen requests through the windowed path."""
    resolved = service.resolve(model)
    extra: dict[str, Any] = {}
    limit = resolved.spec.max_duration
    if long_form is not None:
        from samplemind_gen.longform import MAX_LONG_DURATION, check_model, long_form_params

        check_model(resolved)
        extra = long_form_params(long_form)
        limit = MAX_LONG_DURATION
    for request in requests:
        validate_request(request, max_duration=limit)
    found: dict[int, Take] = {}
    if library is not None:
        for i, request in enumerate(requests):
            stored = find_reusable(library, service, resolved, request, processing, extra)
            if stored is not None:
                take = stored.load()
                take.notes.append(f"{REUSED_NOTE}: {stored.path}")
                take.timings["reused"] = 0.0
                found[i] = take
    missing = [r for i, r in enumerate(requests) if i not in found]
    fresh: list[Take] = []
    if missing and long_form is not None:
        from samplemind_gen.longform import generate_long_blocking

        fresh = generate_long_blocking(
            service, missing, long_form, model=resolved, on_progress=on_progress, cancel=cancel
        )
    elif missing:
        fresh = service.generate_blocking(
            missing, model=resolved, on_progress=on_progress, cancel=cancel, on_audio=on_audio
        )
    it = iter(fresh)
    return [found[i] if i in found else next(it) for i in range(len(requests))]


def was_reused(take: Take) -> bool:
    return "reused" in take.timings
