"""Models brought in from a folder, for machines that never see the Hub.

`import_model(PATH, NAME)` copies (or links) the engine files of a checkpoint folder into
`<data dir>/store/imported/NAME/`, records each file's sha256, and registers NAME in
`<data dir>/store/imported.json`. Afterwards `--model NAME` finds it. Importing under a catalog
name (`--as musicgen-small`) makes that catalog entry work offline: the store then uses the
imported copy whenever the Hugging Face cache has none.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplemind_gen import paths
from samplemind_gen.catalog import CATALOG, spec_from_folder
from samplemind_gen.errors import BadInputError, DiskFullError, ModelFilesError, UnknownModelError
from samplemind_gen.store.cache import ALLOW_PATTERNS, COMMIT_RE, folder_size
from samplemind_gen.store.integrity import (
    READ_CHUNK,
    ContentHash,
    DamagedFile,
    ManifestFile,
    VerifyReport,
    check_file,
    now_iso,
    write_json_atomic,
)
from samplemind_gen.store.progress import ByteProgressCallback, Meter, format_bytes

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
REGISTRY_FORMAT = 1


def store_dir() -> Path:
    return paths.data_dir() / "store"


def registry_path() -> Path:
    return store_dir() / "imported.json"


@dataclass(frozen=True)
class ImportedModel:
    """A checkpoint folder registered under a name."""

    name: str
    path: Path
    source: str
    linked: bool
    family: str
    revision: str | None
    imported_at: str
    files: tuple[ManifestFile, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": self.source,
            "linked": self.linked,
            "family": self.family,
            "revision": self.revision,
            "imported_at": self.imported_at,
            "files": {f.path: f.to_json() for f in self.files},
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ImportedModel:
        return cls(
            name=name,
            path=Path(data["path"]),
            source=str(data.get("source", data["path"])),
            linked=bool(data.get("linked", False)),
            family=str(data.get("family", "")),
            revision=data.get("revision"),
            imported_at=str(data.get("imported_at", "")),
            files=tuple(
                ManifestFile(p, int(v["size"]), sha256=v.get("sha256"))
                for p, v in data.get("files", {}).items()
            ),
        )


def imported_models() -> dict[str, ImportedModel]:
    """Every imported model, by name."""
    try:
        data = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        return {}
    models = data.get("models", {})
    out = {}
    for name, entry in sorted(models.items()):
        try:
            out[name] = ImportedModel.from_json(name, entry)
        except (KeyError, TypeError, ValueError):
            continue  # a hand-edited entry we cannot read: skip it, keep the rest
    return out


def imported_model(name: str) -> ImportedModel | None:
    return imported_models().get(name)


def _save(models: dict[str, ImportedModel]) -> None:
    data = {
        "format": REGISTRY_FORMAT,
        "models": {name: m.to_json() for name, m in sorted(models.items())},
    }
    write_json_atomic(registry_path(), data)


def engine_files(folder: Path) -> list[str]:
    """The files of a checkpoint folder the engines load (the download's allow patterns)."""
    from huggingface_hub.utils import filter_repo_objects

    found = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return list(filter_repo_objects(found, allow_patterns=ALLOW_PATTERNS))


def import_model(
    source: Path,
    name: str,
    *,
    link: bool = False,
    on_progress: ByteProgressCallback | None = None,
) -> ImportedModel:
    """Copy (or, with `link`, just register) a checkpoint folder under `name`."""
    if not NAME_RE.fullmatch(name):
        raise BadInputError(
            f"'{name}' cannot be a model name: use letters, digits, '.', '_' and '-' "
            "(no slashes), e.g. musicgen-small or my-drums"
        )
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder; import takes a checkpoint folder")
    folder = folder.resolve()
    spec = spec_from_folder(folder, name)
    catalog = CATALOG.get(name)
    if catalog is not None and catalog.family != spec.family:
        raise BadInputError(
            f"{folder} holds a {spec.family} checkpoint, but {name} is a {catalog.family} model; "
            "import it under another name"
        )
    existing = imported_models()
    if name in existing:
        raise BadInputError(
            f"{name} is already imported (from {existing[name].source}); remove it first with "
            f"`samplemind-gen models remove {name}`"
        )
    files = engine_files(folder)
    if not any(f.endswith(".safetensors") for f in files):
        raise ModelFilesError(
            f"{folder} has no .safetensors weights; samplemind-gen loads safetensors only"
        )
    sizes = {f: (folder / f).stat().st_size for f in files}
    total = sum(sizes.values())
    meter = Meter("import", name, total, len(files), on_progress)
    dest = folder if link else store_dir() / "imported" / name
    records: list[ManifestFile] = []
    if link:
        for rel in files:
            meter.start_file(rel)
            records.append(_copy_and_hash(folder / rel, None, sizes[rel], rel, meter))
            meter.end_file()
    else:
        _check_space(dest.parent, total, name)
        tmp = dest.with_name(f".{name}.importing")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for rel in files:
                meter.start_file(rel)
                records.append(_copy_and_hash(folder / rel, tmp / rel, sizes[rel], rel, meter))
                meter.end_file()
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    model = ImportedModel(
        name=name,
        path=dest,
        source=str(folder),
        linked=link,
        family=spec.family,
        revision=_source_revision(folder),
        imported_at=now_iso(),
        files=tuple(records),
    )
    existing[name] = model
    _save(existing)
    return model


def _copy_and_hash(src: Path, dst: Path | None, size: int, rel: str, meter: Meter) -> ManifestFile:
    h = ContentHash("sha256", size)
    out = None
    if dst is not None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = dst.open("wb")
    try:
        with src.open("rb") as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
                meter.add(len(chunk))
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise DiskFullError(
                f"the disk filled up while importing {rel}; free some space"
            ) from exc
        raise
    finally:
        if out is not None:
            out.close()
    if dst is not None:
        shutil.copystat(src, dst)
    return ManifestFile(rel, size, sha256=h.hexdigest())


def _check_space(target: Path, need: int, name: str) -> None:
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise DiskFullError(
            f"not enough free disk space to import {name}: it needs {format_bytes(need)} and "
            f"{probe} has {format_bytes(free)} free; free some space or use --link"
        )


def _source_revision(folder: Path) -> str | None:
    """The commit of a folder copied out of a Hugging Face cache (`snapshots/<commit>`)."""
    if folder.parent.name == "snapshots" and COMMIT_RE.fullmatch(folder.name):
        return folder.name
    return None


def remove_imported(name: str) -> int:
    """Unregister `name`; delete its copy (never a linked source). Returns bytes freed."""
    models = imported_models()
    model = models.pop(name, None)
    if model is None:
        raise UnknownModelError(f"{name} is not an imported model")
    freed = 0
    if not model.linked and model.path.is_dir() and model.path.is_relative_to(store_dir()):
        freed = folder_size(model.path)
        shutil.rmtree(model.path)
    _save(models)
    return freed


def verify_imported(
    model: ImportedModel, on_progress: ByteProgressCallback | None = None
) -> VerifyReport:
    """Re-hash an imported model against the hashes recorded when it was imported."""
    meter = Meter("verify", model.name, model.size_bytes, len(model.files), on_progress)
    ok: list[str] = []
    damaged: list[DamagedFile] = []
    missing: list[str] = []
    for record in model.files:
        meter.start_file(record.path)
        reason = check_file(model.path / record.path, record, meter)
        if reason is None:
            ok.append(record.path)
        elif reason == "missing":
            missing.append(record.path)
        else:
            damaged.append(DamagedFile(record.path, reason))
        meter.end_file()
    return VerifyReport(
        name=model.name,
        commit=model.revision,
        path=model.path,
        ok=tuple(ok),
        damaged=tuple(damaged),
        missing=tuple(missing),
        unchecked=(),
        bytes_checked=meter.done,
        source="imported",
    )
