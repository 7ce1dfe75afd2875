"""Downloading a model into the Hugging Face cache."""

from __future__ import annotations

from pathlib import Path

from samplemind_gen.catalog import ModelSpec
from samplemind_gen.errors import DownloadError, GatedModelError, ModelNotCachedError


def download_model(spec: ModelSpec) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from samplemind_gen.store import ALLOW_PATTERNS, folder_revision

    try:
        path = Path(
            snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=ALLOW_PATTERNS)
        )
    except GatedRepoError as exc:
        raise GatedModelError(
            f"{spec.repo_id} is gated: accept its licence on the Hub, then set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotCachedError(f"{spec.repo_id} does not exist on the Hub") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotCachedError(
            f"{spec.name} is not downloaded and the Hub is unreachable ({type(exc).__name__}); "
            "connect and retry, download it on a connected machine, or pass --model PATH"
        ) from exc
    except Exception as exc:  # pragma: no cover - unexpected hub failures
        raise DownloadError(f"downloading {spec.repo_id} failed: {exc}") from exc
    return path, folder_revision(path)
