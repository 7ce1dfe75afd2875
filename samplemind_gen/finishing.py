"""Finishing a take: post-processing, export with its recipe, loop points, and the library
record. The one path `generate`, `batch` and the TUI share after a take comes out of a model."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samplemind_gen.library import Library, LibraryError
from samplemind_gen.take import Take

log = logging.getLogger(__name__)


def open_library(path: Path | None = None) -> Library | None:
    """The library, or None (with a warning) when it cannot be opened: a damaged database must
    never stop a producer from generating."""
    try:
        return Library(path)
    except LibraryError as exc:
        log.warning("%s", exc)
        return None


def finish_take(
    take: Take,
    destination: Path | None,
    *,
    fmt: str | None = None,
    template: str = "{prompt_slug}_{seed}",
    processing: Mapping[str, Any] | None = None,
    library: Library | None = None,
    batch_id: str | None = None,
    tags: tuple[str, ...] = (),
) -> Take:
    """Process (see `samplemind_gen.dsp.Processing`), export and record a fresh take; a take the
    library reused is only copied to `destination` when one was asked for."""
    from samplemind_gen.reuse import was_reused
    from samplemind_gen.service import export_take_to

    if was_reused(take):
        if destination is not None and take.path is not None:
            take.path = _copy_export(take.path, Path(destination), fmt)
        return take
    steps = dict(processing or {})
    loop = None
    if steps:
        from samplemind_gen.dsp import Processing, process_take

        take, loop = process_take(take, Processing.from_dict(steps))
    written = export_take_to(take, destination, fmt=fmt, template=template)
    if loop is not None and written.suffix.lower() == ".wav":
        from samplemind_gen.dsp import write_loop_chunks

        write_loop_chunks(written, loop)
    if library is not None:
        try:
            library.add(take, processing=steps, batch_id=batch_id, tags=tags)
        except LibraryError as exc:  # the file is safe on disk; say so and carry on
            log.warning("could not record %s in the library: %s", written, exc)
    return take


def _copy_export(source: Path, destination: Path, fmt: str | None) -> Path:
    from samplemind_gen import export

    if destination.suffix and not destination.is_dir():
        target = destination
    else:
        target = export.unique_path(destination / source.name)
    wanted = export.parse_format(fmt) if fmt else None
    if wanted is not None and export.FORMATS[wanted].extension != source.suffix.lower():
        from samplemind_gen.audio_io import read_audio

        envelope = export.read_recipe(source)
        audio, sr = read_audio(source)
        return export.export_take(
            audio,
            sr,
            target.with_suffix(export.FORMATS[wanted].extension),
            recipe=envelope["recipe"],
            features=envelope.get("features"),
            fmt=wanted,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != source.resolve():
        shutil.copy2(source, target)
        side = export.sidecar_path(source)
        if side.exists():
            shutil.copy2(side, export.sidecar_path(target))
    return target
