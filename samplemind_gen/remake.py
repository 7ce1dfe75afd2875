"""Making a stored take again: re-roll (same recipe, a new seed) or regenerate exactly (same
seed). The new take is exported next to the original and recorded in the library."""

from __future__ import annotations

import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from samplemind_gen.engines.base import ProgressCallback
from samplemind_gen.library import Library, StoredTake
from samplemind_gen.recipe import Recipe
from samplemind_gen.request import GenerationRequest, random_seed
from samplemind_gen.take import Take

REQUEST_FIELDS = {f.name for f in fields(GenerationRequest)} - {"prompt", "seed"}
LONG_FORM_RECORD_ONLY = {"continue_sha256", "melody_sha256"}


def request_of(entry: StoredTake, *, new_seed: bool) -> GenerationRequest:
    """The request that made `entry` (with a fresh random seed when `new_seed`)."""
    params = {k: v for k, v in entry.recipe.params.items() if k in REQUEST_FIELDS}
    seed = random_seed() if new_seed else entry.recipe.seed
    return GenerationRequest(prompt=entry.recipe.prompt, seed=seed, **params)


def long_form_of(entry: StoredTake) -> Any:
    data = entry.recipe.params.get("long_form")
    if not data:
        return None
    from samplemind_gen.engines.musicgen_windows import LongForm

    known = {f.name for f in fields(LongForm)}
    return LongForm(**{k: v for k, v in data.items() if k in known})


def remake_take(
    service: Any,
    library: Library,
    entry: StoredTake,
    *,
    new_seed: bool,
    destination: Path | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Take:
    """Generate `entry` again (always a new run, never the cached file), process it the same
    way, export it (next to the original unless `destination`) and record it."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.finishing import finish_take
    from samplemind_gen.reuse import generate_or_reuse

    model = resolve_model(entry.recipe.model)
    request = request_of(entry, new_seed=new_seed)
    (take,) = generate_or_reuse(
        service,
        [request],
        library=None,
        model=model,
        processing=entry.processing,
        on_progress=on_progress,
        cancel=cancel,
        long_form=long_form_of(entry),
    )
    if not new_seed:
        take.notes.extend(remake_differences(entry.recipe, take.recipe))
    if destination is None and entry.path is not None:
        destination = entry.path.parent
    return finish_take(
        take,
        destination,
        processing=entry.processing,
        library=library,
        tags=entry.tags,
        fmt=_format_of(entry.path),
    )


def remake_differences(original: Recipe, remade: Recipe) -> list[str]:
    """Why an exact remake can sound different from the original: it ran on other kernels (they
    round differently) or another samplemind-gen version. Empty when neither."""
    notes = []
    if original.kernels and remade.kernels and original.kernels != remade.kernels:
        notes.append(
            f"the original was made on {original.kernels} kernels and this machine runs "
            f"{remade.kernels}: they round differently, so the remake can differ"
        )
    if original.app_version != remade.app_version:
        notes.append(
            f"the original was made by samplemind-gen {original.app_version}, this is "
            f"{remade.app_version}: a kernel change between them can make the remake differ"
        )
    return notes


def _format_of(path: Path | None) -> str | None:
    if path is None:
        return None
    from samplemind_gen.export import EXTENSIONS

    suffix = path.suffix.lower()
    if suffix == ".wav":
        import soundfile as sf

        try:
            subtype = sf.info(str(path)).subtype
        except RuntimeError:
            return None
        return {"PCM_16": "wav16", "PCM_24": "wav24", "FLOAT": "wav32f"}.get(subtype)
    return EXTENSIONS.get(suffix)
