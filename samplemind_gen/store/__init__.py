"""The model store: finds a model's files offline first (the Hugging Face cache, then models
imported from folders) and downloads them when allowed.

`locate_model` is the one entry point the engines call. Once a model is cached it is found with
no network call at all, whatever `HF_HUB_OFFLINE` says.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from samplemind_gen.catalog import CATALOG, ModelSpec, ResolvedModel
from samplemind_gen.errors import ModelNotCachedError
from samplemind_gen.store.cache import (
    ALLOW_PATTERNS,
    COMMIT_RE,
    CachedModel,
    cached_model,
    cached_repo_ids,
    hub_cache_dir,
    hub_offline,
    partial_bytes,
    remove_cached,
)
from samplemind_gen.store.progress import ByteProgress, ByteProgressCallback, describe_bytes

if TYPE_CHECKING:
    from samplemind_gen.store.integrity import VerifyReport

__all__ = [
    "ALLOW_PATTERNS",
    "ByteProgress",
    "ByteProgressCallback",
    "CachedModel",
    "ModelStatus",
    "cached_snapshot",
    "describe_bytes",
    "folder_revision",
    "hub_cache_dir",
    "hub_offline",
    "list_models",
    "local_models_summary",
    "locate_model",
    "model_status",
    "remove_model",
    "verify_model",
]

log = logging.getLogger(__name__)


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of a completely cached repo, without any network call."""
    cached = cached_model(repo_id, revision)
    return cached.path if cached is not None and cached.complete else None


def folder_revision(path: Path) -> str | None:
    """The commit hash of a Hub cache snapshot folder, or None for a plain folder."""
    if path.parent.name == "snapshots" and COMMIT_RE.fullmatch(path.name):
        return path.name
    return None


def locate_model(
    model: ResolvedModel,
    *,
    allow_download: bool = True,
    on_progress: ByteProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, str | None]:
    """(local folder, resolved revision) for `model`: cache first, then imported models, then
    the Hub if allowed."""
    from samplemind_gen.store.importer import imported_model

    spec = model.spec
    if model.local_path is not None:
        imported = imported_model(spec.name)
        if imported is not None and imported.path == model.local_path:
            return model.local_path, imported.revision
        return model.local_path, folder_revision(model.local_path)
    cached = cached_model(spec.repo_id, spec.revision)
    if cached is not None and cached.complete:
        return cached.path, cached.commit
    imported = imported_model(spec.name)
    if imported is not None:
        return imported.path, imported.revision
    if hub_offline() or not allow_download:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "downloads are off"
        state = "is not downloaded"
        if cached is not None:
            state = "is only partly downloaded" if cached.missing else "has damaged files"
        raise ModelNotCachedError(
            f"{spec.name} {state} and {why}; on this machine {local_models_summary()}. Run "
            f"`samplemind-gen models download {spec.name}` on a connected machine, or pass "
            "--model PATH to a local checkpoint folder"
        )
    from samplemind_gen.store.download import download_model

    if on_progress is None:
        log.warning(
            "%s is not downloaded yet; downloading it from the Hub (%s)", spec.name, spec.size_label
        )
    return download_model(spec, on_progress=on_progress, cancel=cancel)


State = Literal["cached", "partial", "damaged", "imported", "local", "missing"]


@dataclass(frozen=True)
class ModelStatus:
    """What this machine holds of one model."""

    name: str
    spec: ModelSpec
    state: State
    path: Path | None = None
    commit: str | None = None
    size_bytes: int = 0  # on disk (cached or imported); partial bytes for "partial"
    in_catalog: bool = False
    imported: bool = False

    @property
    def usable(self) -> bool:
        return self.state in ("cached", "imported", "local")


def model_status(model: ResolvedModel) -> ModelStatus:
    """Cached, imported, partly downloaded, damaged or missing: disk only, no network."""
    from samplemind_gen.store.importer import imported_model

    spec = model.spec
    in_catalog = CATALOG.get(spec.name) == spec
    imported = imported_model(spec.name)
    if model.local_path is not None and imported is None:
        return ModelStatus(spec.name, spec, "local", model.local_path, None, spec.download_bytes)
    cached = cached_model(spec.repo_id, spec.revision) if model.local_path is None else None
    if cached is not None and cached.complete:
        return ModelStatus(
            spec.name,
            spec,
            "cached",
            cached.path,
            cached.commit,
            cached.size_bytes,
            in_catalog,
            imported is not None,
        )
    if imported is not None:
        return ModelStatus(
            spec.name,
            spec,
            "imported",
            imported.path,
            imported.revision,
            imported.size_bytes,
            in_catalog,
            True,
        )
    if cached is not None:
        state: State = "damaged" if cached.damaged else "partial"
        size = cached.size_bytes + partial_bytes(spec.repo_id)
        return ModelStatus(spec.name, spec, state, cached.path, cached.commit, size, in_catalog)
    partial = partial_bytes(spec.repo_id)
    return ModelStatus(
        spec.name, spec, "partial" if partial else "missing", None, None, partial, in_catalog
    )


def list_models() -> list[ModelStatus]:
    """The catalog, then imported models, then other cached Hub models downloaded by the store."""
    from samplemind_gen.catalog import resolve_model, spec_from_folder
    from samplemind_gen.store.importer import imported_models

    out = [model_status(ResolvedModel(spec)) for spec in CATALOG.values()]
    for name, imported in imported_models().items():
        if name in CATALOG:
            continue
        try:
            spec = spec_from_folder(imported.path, name)
        except Exception:  # the copy is gone or broken: still list it, so it can be removed
            spec = replace(
                CATALOG["musicgen-small"],
                name=name,
                repo_id=str(imported.path),
                description="imported (files missing or unreadable)",
            )
        out.append(model_status(ResolvedModel(spec, imported.path)))
    known = {s.repo_id for s in CATALOG.values()}
    for repo_id in cached_repo_ids():
        if repo_id in known:
            continue
        from samplemind_gen.store.cache import repo_folder

        if not (repo_folder(repo_id) / "samplemind").is_dir():
            continue  # cached by another tool (not necessarily an audio model)
        out.append(model_status(resolve_model(repo_id)))
    return out


def local_models_summary() -> str:
    """One phrase naming what is usable offline, for error messages."""
    try:
        statuses = list_models()
    except Exception:  # never let a broken registry hide the real error
        return "the local models could not be listed"
    cached = [s.name for s in statuses if s.state == "cached"]
    imported = [s.name for s in statuses if s.state == "imported"]
    parts = []
    if cached:
        parts.append("cached: " + ", ".join(cached))
    if imported:
        parts.append("imported: " + ", ".join(imported))
    return "; ".join(parts) if parts else "no model is downloaded or imported yet"


def remove_model(model: ResolvedModel) -> int:
    """Delete a model's cached files (all revisions) and its imported copy. Returns bytes freed."""
    from samplemind_gen.store.importer import imported_model, remove_imported

    spec = model.spec
    freed = 0
    found = False
    if imported_model(spec.name) is not None:
        freed += remove_imported(spec.name)
        found = True
    if model.local_path is None and (hub_cache_dir() / _folder_name(spec.repo_id)).exists():
        freed += remove_cached(spec.repo_id)
        found = True
    if not found:
        raise ModelNotCachedError(f"{spec.name} is not downloaded or imported; nothing to remove")
    return freed


def _folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def verify_model(
    model: ResolvedModel, on_progress: ByteProgressCallback | None = None
) -> VerifyReport:
    """Re-hash a model's files against the hashes recorded at download (or import) time."""
    from samplemind_gen.store.importer import imported_model, verify_imported
    from samplemind_gen.store.integrity import verify_snapshot

    spec = model.spec
    if model.local_path is None:
        cached = cached_model(spec.repo_id, spec.revision)
        imported = imported_model(spec.name)
        if cached is None and imported is not None:
            return verify_imported(imported, on_progress)
        return verify_snapshot(spec.repo_id, spec.revision, spec.name, on_progress)
    imported = imported_model(spec.name)
    if imported is not None:
        return verify_imported(imported, on_progress)
    raise ModelNotCachedError(
        f"{model.local_path} is a plain folder with no recorded hashes; import it with "
        f"`samplemind-gen models import {model.local_path} --as NAME` to verify it later"
    )
