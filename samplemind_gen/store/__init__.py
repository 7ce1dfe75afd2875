"""The model store: finds a model's files in the Hugging Face cache (offline first) and
downloads them when allowed.

This is the minimal core used by the engines; `locate_model` is the one entry point they call.
"""

from __future__ import annotations

import os
from pathlib import Path

from samplemind_gen.catalog import ResolvedModel
from samplemind_gen.errors import ModelNotCachedError

# Only what the engines load: safetensors weights, configs, tokenizer/processor files.
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
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of a cached repo, without any network call."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, local_files_only=True, allow_patterns=ALLOW_PATTERNS
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None


def folder_revision(path: Path) -> str | None:
    """The commit hash of a Hub cache snapshot folder, or None for a plain folder."""
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return path.name
    return None


def locate_model(model: ResolvedModel, *, allow_download: bool = True) -> tuple[Path, str | None]:
    """(local folder, resolved revision) for `model`: cache first, then the Hub if allowed."""
    if model.local_path is not None:
        return model.local_path, folder_revision(model.local_path)
    spec = model.spec
    path = cached_snapshot(spec.repo_id, spec.revision)
    if path is not None:
        return path, folder_revision(path)
    if hub_offline() or not allow_download:
        raise ModelNotCachedError(
            f"{spec.name} is not downloaded and the Hub is offline; run "
            f"`samplemind-gen models download {spec.name}` on a connected machine, or pass "
            "--model PATH to a local checkpoint folder"
        )
    from samplemind_gen.store.download import download_model

    return download_model(spec)
