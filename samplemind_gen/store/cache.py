"""What is in the Hugging Face cache: which models, which commit, how big, and removing them.

Everything here reads the disk only: no network call, ever. The cache location follows the
Hugging Face rules (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), read at
call time so a changed environment (or a test) takes effect at once.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
DEFAULT_REVISION = "main"

# Only what the engines load: safetensors weights, configs, tokenizer/processor files. No .bin,
# .msgpack, .h5 or .onnx duplicates of the weights.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "spiece.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.json",
]


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set: never touch the network."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder for this environment."""
    value = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if value:
        return Path(os.path.expandvars(value)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> Path:
    """`models--owner--name` inside the cache (the layout `huggingface_hub` uses)."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def repo_id_from_folder(folder: Path) -> str | None:
    name = folder.name
    if not name.startswith("models--"):
        return None
    return name[len("models--") :].replace("--", "/")


def resolve_commit(repo_id: str, revision: str | None) -> str | None:
    """The cached commit for `revision` (a branch, tag or commit hash), from `refs/`, offline."""
    revision = revision or DEFAULT_REVISION
    if COMMIT_RE.fullmatch(revision):
        return revision
    ref = repo_folder(repo_id) / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT_RE.fullmatch(commit) else None


@dataclass(frozen=True)
class CachedModel:
    """One cached snapshot of a repo."""

    repo_id: str
    revision: str  # what was asked for: a branch, tag or commit
    commit: str
    path: Path
    files: tuple[str, ...]
    size_bytes: int
    complete: bool  # every file the engines load is present (and none is marked damaged)
    missing: tuple[str, ...] = ()
    damaged: tuple[str, ...] = ()


def snapshot_files(snapshot: Path) -> list[str]:
    """Files of a snapshot folder, as repo paths ('unet/config.json')."""
    if not snapshot.is_dir():
        return []
    return sorted(
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if (p.is_file() or p.is_symlink()) and not p.name.endswith(".incomplete")
    )


def folder_size(folder: Path) -> int:
    """Bytes on disk under `folder`, following snapshot symlinks and counting each blob once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in folder.rglob("*"):
        try:
            st = p.stat()
        except OSError:
            continue
        if not p.is_file() or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


def cached_model(repo_id: str, revision: str | None = None) -> CachedModel | None:
    """The cached snapshot of `repo_id` at `revision` (default: main), or None. Offline."""
    from samplemind_gen.store.integrity import load_manifest

    commit = resolve_commit(repo_id, revision)
    if commit is None:
        return None
    snapshot = repo_folder(repo_id) / "snapshots" / commit
    files = snapshot_files(snapshot)
    if not files:
        return None
    present = set(files)
    manifest = load_manifest(repo_id, commit)
    if manifest is not None:
        expected = list(manifest.files)
        damaged = tuple(sorted(set(manifest.damaged) & present))
    else:
        expected = _expected_from_hub_tree(repo_id, commit, ALLOW_PATTERNS)
        damaged = ()
    missing = tuple(p for p in expected if p not in present)
    has_config = "config.json" in present or "model_index.json" in present
    return CachedModel(
        repo_id=repo_id,
        revision=revision or DEFAULT_REVISION,
        commit=commit,
        path=snapshot,
        files=tuple(files),
        size_bytes=folder_size(snapshot),
        complete=has_config and not missing and not damaged,
        missing=missing,
        damaged=damaged,
    )


def _expected_from_hub_tree(repo_id: str, commit: str, patterns: list[str]) -> list[str]:
    """Files a snapshot should hold, from the tree listing `huggingface_hub` caches (if any)."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.utils import filter_repo_objects

    try:
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=hub_cache_dir())
    except Exception:  # no tree cached (older huggingface_hub, or another tool): trust the folder
        return []
    return list(filter_repo_objects([f.path for f in tree], allow_patterns=patterns))


def cached_repo_ids() -> list[str]:
    """Every model repo with at least one snapshot in the cache."""
    root = hub_cache_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        repo_id = repo_id_from_folder(folder)
        if repo_id and (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir()):
            out.append(repo_id)
    return out


def partial_bytes(repo_id: str) -> int:
    """Bytes of interrupted downloads waiting to be resumed."""
    blobs = repo_folder(repo_id) / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.glob("*.incomplete"))


def remove_cached(repo_id: str) -> int:
    """Delete every cached revision of `repo_id`; returns the bytes freed (0 if not cached)."""
    folder = repo_folder(repo_id)
    if not folder.exists():
        return 0
    freed = folder_size(folder)
    shutil.rmtree(folder)
    locks = hub_cache_dir() / ".locks" / folder.name
    shutil.rmtree(locks, ignore_errors=True)
    return freed
