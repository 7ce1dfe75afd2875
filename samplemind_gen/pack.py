"""Sample packs: a selection of library takes as one folder a producer can drop into a DAW or
sampler: numbered, named audio files, an M3U playlist, and an index of every take's recipe and
features as CSV (for spreadsheets) and JSON (for scripts)."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from samplemind_gen.errors import BadInputError, OutputNotWritableError
from samplemind_gen.library import StoredTake

PACK_FORMAT = "samplemind-gen-pack/1"
DEFAULT_NAME = "{prompt_slug}_{seed}"
CSV_COLUMNS = (
    "file",
    "id",
    "prompt",
    "model",
    "revision",
    "seed",
    "duration",
    "sample_rate",
    "channels",
    "bpm",
    "key",
    "lufs",
    "true_peak_dbfs",
    "rating",
    "favourite",
    "tags",
    "device",
    "dtype",
    "created",
    "params",
    "processing",
)


@dataclass
class SamplePack:
    """What `export_pack` wrote."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    playlist: Path | None = None
    index_csv: Path | None = None
    index_json: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "files": [str(p) for p in self.files],
            "playlist": str(self.playlist) if self.playlist else None,
            "index_csv": str(self.index_csv) if self.index_csv else None,
            "index_json": str(self.index_json) if self.index_json else None,
        }


def export_pack(
    takes: Sequence[StoredTake],
    folder: Path,
    *,
    name_template: str = DEFAULT_NAME,
    fmt: str | None = None,
    numbered: bool = True,
    title: str | None = None,
) -> SamplePack:
    """Write `takes` into `folder` (created if needed). Files keep their exact bytes (embedded
    recipe, loop points) unless `fmt` asks for another format. `name_template` takes the export
    fields ({prompt_slug} {seed} {model} {date} {time} {bpm} {key}); `numbered` prefixes
    01_, 02_, ... in selection order."""
    from samplemind_gen import export

    if not takes:
        raise BadInputError("nothing to export: no takes match; check the ids or filters")
    wanted = export.parse_format(fmt) if fmt else None
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create the pack folder {folder} ({exc.strerror or exc})"
        ) from exc
    pack = SamplePack(folder=folder)
    rows: list[dict[str, Any]] = []
    width = max(2, len(str(len(takes))))
    for index, take in enumerate(takes, start=1):
        source = take.path
        if source is None or not source.is_file():
            raise BadInputError(
                f"take {take.id} has no audio file at {source}; restore it or leave it out"
            )
        source_fmt = export.EXTENSIONS.get(source.suffix.lower(), "wav24")
        target_fmt = wanted or source_fmt
        extension = export.FORMATS[target_fmt].extension
        stem = Path(
            export.default_filename(
                take.recipe, name_template, fmt=target_fmt, features=take.features
            )
        ).stem
        if numbered:
            stem = f"{index:0{width}d}_{stem}"
        target = export.unique_path(folder / f"{stem}{extension}")
        if wanted is None or export.FORMATS[wanted].extension == source.suffix.lower():
            shutil.copy2(source, target)
        else:
            loaded = take.load()
            export.export_take(
                loaded.audio,
                loaded.sample_rate,
                target,
                recipe=take.recipe,
                features=take.features,
                fmt=wanted,
                sidecar=False,
            )
        pack.files.append(target)
        rows.append(_row(target.name, take))
    pack.playlist = _write_playlist(folder, rows, title)
    pack.index_csv = _write_csv(folder, rows)
    pack.index_json = _write_json(folder, rows, takes, title)
    return pack


def _row(name: str, take: StoredTake) -> dict[str, Any]:
    f = take.features or {}
    r = take.recipe
    return {
        "file": name,
        "id": take.id,
        "prompt": r.prompt,
        "model": r.model,
        "revision": r.revision or "",
        "seed": r.seed,
        "duration": round(float(f.get("duration") or r.duration), 3),
        "sample_rate": f.get("sample_rate") or r.sample_rate,
        "channels": f.get("channels") or r.channels,
        "bpm": f.get("tempo_bpm") if f.get("tempo_bpm") is not None else "",
        "key": take.key_label or "",
        "lufs": f.get("lufs") if f.get("lufs") is not None else "",
        "true_peak_dbfs": f.get("true_peak_dbfs") if f.get("true_peak_dbfs") is not None else "",
        "rating": take.rating or "",
        "favourite": int(take.favourite),
        "tags": " ".join(take.tags),
        "device": r.device,
        "dtype": r.dtype,
        "created": take.created,
        "params": json.dumps(r.params, sort_keys=True),
        "processing": json.dumps(take.processing, sort_keys=True),
    }


def _write_playlist(folder: Path, rows: list[dict[str, Any]], title: str | None) -> Path:
    lines = ["#EXTM3U"]
    if title:
        lines.append(f"#PLAYLIST:{title}")
    for row in rows:
        prompt = " ".join(str(row["prompt"]).split())
        lines.append(f"#EXTINF:{round(float(row['duration']))},{prompt} (seed {row['seed']})")
        lines.append(row["file"])
    path = folder / "playlist.m3u"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_csv(folder: Path, rows: list[dict[str, Any]]) -> Path:
    path = folder / "index.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_json(
    folder: Path, rows: list[dict[str, Any]], takes: Sequence[StoredTake], title: str | None
) -> Path:
    entries = []
    for row, take in zip(rows, takes, strict=True):
        entries.append(
            {
                "file": row["file"],
                "id": take.id,
                "recipe": take.recipe.to_dict(),
                "features": take.features,
                "processing": take.processing,
                "rating": take.rating,
                "favourite": take.favourite,
                "tags": list(take.tags),
            }
        )
    data = {
        "format": PACK_FORMAT,
        "title": title,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "takes": entries,
    }
    path = folder / "index.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
