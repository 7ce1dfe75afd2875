"""Downloading a model into the Hugging Face cache: only the files the engines load, with byte
progress, cancellation, resume across runs, retries, a free-space check and hash verification.

Why not `snapshot_download`: in huggingface_hub 2.x a failed or cancelled file download deletes
its partial file (temporary names are unique per process), so a 2 GB download cut at 90 % starts
again from zero, and there is no byte callback or cancel. This module speaks the same protocol
through `huggingface_hub` (repo info with file metadata, HEAD `/resolve/` for ETag, commit and
CDN location, GET with `Range`) and writes the same cache layout (`blobs/<etag>`,
`snapshots/<commit>/<file>` links, `refs/<revision>`), so transformers, diffusers and
`huggingface_hub` read what it writes. It always uses plain HTTP(S), never hf_xet: every byte
is resumable with `Range`, and progress counts real bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplemind_gen import __version__
from samplemind_gen.catalog import ModelSpec
from samplemind_gen.errors import (
    DiskFullError,
    DownloadError,
    ModelFilesError,
    ModelNotCachedError,
    SampleMindError,
)
from samplemind_gen.store.cache import (
    ALLOW_PATTERNS,
    COMMIT_RE,
    DEFAULT_REVISION,
    cached_model,
    hub_cache_dir,
    hub_offline,
    repo_folder,
)
from samplemind_gen.store.hub import (
    RETRY_STATUS,
    HubClient,
    RetryPolicy,
    TransientError,
    gated_error,
    hub_endpoint,
    offline_message,
    safe_url,
    translate,
)
from samplemind_gen.store.integrity import (
    ContentHash,
    Manifest,
    ManifestFile,
    load_manifest,
    now_iso,
)
from samplemind_gen.store.progress import ByteProgressCallback, Meter, format_bytes

log = logging.getLogger(__name__)

DISK_MARGIN = 64 * 1024 * 1024  # keep this much free after a download
DEFAULT_RETRY = RetryPolicy()  # tests patch this for fast retries


@dataclass(frozen=True)
class DownloadPlan:
    """The files of one commit that the engines need, as the Hub reports them."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[ManifestFile, ...]
    gated: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def fetch_plan(
    spec: ModelSpec, *, retry: RetryPolicy | None = None, cancel: threading.Event | None = None
) -> DownloadPlan:
    """Ask the Hub which commit `spec` resolves to and which engine files it has (one call)."""
    try:
        return _fetch_plan(spec, HubClient(retry or DEFAULT_RETRY, cancel))
    except SampleMindError:
        raise
    except Exception as exc:
        raise translate(exc, spec, hub_endpoint()) from exc


def _fetch_plan(spec: ModelSpec, hub: HubClient) -> DownloadPlan:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(endpoint=hub.endpoint, library_name="samplemind-gen", library_version=__version__)
    info = hub.call(
        lambda: api.model_info(
            spec.repo_id, revision=spec.revision, files_metadata=True, timeout=30
        )
    )
    if not info.sha:
        raise DownloadError(f"the Hub did not say which commit {spec.repo_id} is at; try again")
    siblings = list(
        filter_repo_objects(
            info.siblings or [], allow_patterns=ALLOW_PATTERNS, key=lambda s: s.rfilename
        )
    )
    files = []
    for s in siblings:
        if s.lfs is not None:
            files.append(ManifestFile(s.rfilename, int(s.lfs.size), sha256=s.lfs.sha256))
        elif s.size is not None and s.blob_id:
            files.append(ManifestFile(s.rfilename, int(s.size), git_sha1=s.blob_id))
        else:
            raise DownloadError(f"the Hub gave no size or hash for {spec.repo_id}/{s.rfilename}")
    if not any(f.path.endswith(".safetensors") for f in files):
        raise ModelFilesError(
            f"{spec.repo_id} has no .safetensors weights on the Hub; samplemind-gen loads "
            "safetensors only (pick another repo, or convert it and use `models import`)"
        )
    return DownloadPlan(
        repo_id=spec.repo_id,
        revision=spec.revision or DEFAULT_REVISION,
        commit=info.sha,
        files=tuple(files),
        gated=bool(info.gated),
    )


def download_model(
    spec: ModelSpec,
    *,
    on_progress: ByteProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[Path, str]:
    """Make sure the engine files of `spec` (at its pinned revision, else main) are cached.

    Returns (snapshot folder, commit hash). Files already cached are not fetched again unless
    `verify` marked them damaged; a download interrupted in an earlier run resumes where it
    stopped. Raises `DownloadCancelled` within one chunk of `cancel` being set."""
    if hub_offline():
        cached = cached_model(spec.repo_id, spec.revision)
        if cached is not None and cached.complete:
            return cached.path, cached.commit
        raise ModelNotCachedError(offline_message(spec))
    hub = HubClient(retry or DEFAULT_RETRY, cancel)
    try:
        return _download(spec, hub, on_progress)
    except SampleMindError:
        raise
    except Exception as exc:
        raise translate(exc, spec, hub.endpoint) from exc


def _download(
    spec: ModelSpec, hub: HubClient, on_progress: ByteProgressCallback | None
) -> tuple[Path, str]:
    from huggingface_hub import get_token

    plan = _fetch_plan(spec, hub)
    if plan.gated and get_token() is None:
        raise gated_error(spec, hub.endpoint)
    storage = repo_folder(spec.repo_id)
    snapshot = storage / "snapshots" / plan.commit
    old = load_manifest(spec.repo_id, plan.commit)
    damaged = set(old.damaged) if old else set()
    todo = [f for f in plan.files if not _present(snapshot / f.path, f, damaged)]
    need = sum(f.size - _partial_size(storage, f) for f in todo)
    _check_disk(storage, need, spec)

    _write_ref(storage, plan.revision, plan.commit)
    manifest = Manifest(
        repo_id=spec.repo_id,
        commit=plan.commit,
        revision=plan.revision,
        files={f.path: f for f in plan.files},
        damaged=damaged & {f.path for f in plan.files},
        downloaded_at=old.downloaded_at if old else None,
        endpoint=safe_url(hub.endpoint),
    )
    manifest.save()

    meter = Meter("download", spec.name, plan.total_bytes, len(plan.files), on_progress)
    meter.skip(plan.total_bytes - sum(f.size for f in todo))
    meter.files_done = len(plan.files) - len(todo)
    if todo:
        log.info("downloading %d files (%s) of %s", len(todo), format_bytes(need), spec.repo_id)
    for record in todo:
        hub.check_cancel()
        meter.start_file(record.path)
        _fetch_file(hub, spec, storage, plan.commit, record, meter, record.path in damaged)
        manifest.damaged.discard(record.path)
        manifest.save()
        meter.end_file()
    manifest.downloaded_at = now_iso()
    manifest.save()
    meter.emit(force=True)
    return snapshot, plan.commit


def _present(pointer: Path, record: ManifestFile, damaged: set[str]) -> bool:
    if record.path in damaged:
        return False
    try:
        return pointer.stat().st_size == record.size
    except OSError:
        return False


def _partial_size(storage: Path, record: ManifestFile) -> int:
    try:
        return (storage / "blobs" / f"{record.expected}.incomplete").stat().st_size
    except OSError:
        return 0


def _check_disk(storage: Path, need: int, spec: ModelSpec) -> None:
    if need <= 0:
        return
    probe = storage
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need + DISK_MARGIN:
        raise DiskFullError(
            f"not enough free disk space for {spec.name}: it needs {format_bytes(need)} and "
            f"{probe} has {format_bytes(free)} free; free some space, or point HF_HUB_CACHE "
            "(or HF_HOME) at a bigger disk"
        )


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    if revision == commit or COMMIT_RE.fullmatch(revision):
        return
    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref.read_text() == commit:
            return
    except OSError:
        pass
    tmp = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


def _fetch_file(
    hub: HubClient,
    spec: ModelSpec,
    storage: Path,
    commit: str,
    record: ManifestFile,
    meter: Meter,
    damaged: bool,
) -> None:
    from filelock import FileLock
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(spec.repo_id, record.path, revision=commit, endpoint=hub.endpoint)
    meta = hub.call(lambda: get_hf_file_metadata(url, endpoint=hub.endpoint))
    etag = meta.etag or record.expected
    location = meta.location or url
    blob = storage / "blobs" / etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock_path = hub_cache_dir() / ".locks" / storage.name / f"{etag}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        if damaged:
            blob.unlink(missing_ok=True)
        if blob.is_file() and blob.stat().st_size == record.size:
            meter.skip(record.size)  # the same content is cached for another commit
        else:
            _download_blob(hub, location, blob, record, meter)
    _link(blob, storage / "snapshots" / commit / record.path)


class _Partial:
    """A `.incomplete` file being filled, with its running hash."""

    def __init__(self, path: Path, record: ManifestFile, meter: Meter) -> None:
        self.path = path
        self.record = record
        self.meter = meter
        self.hash = ContentHash(record.kind, record.size)
        self.offset = 0
        if path.exists() and path.stat().st_size <= record.size:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    self.hash.update(chunk)
                    self.offset += len(chunk)
            meter.skip(self.offset)
        self.file = path.open("r+b" if path.exists() else "wb")
        self.file.seek(self.offset)
        self.file.truncate()

    def restart(self) -> None:
        self.meter.rewind(self.offset)
        self.file.seek(0)
        self.file.truncate()
        self.offset = 0
        self.hash.reset()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.offset += len(chunk)
        self.meter.add(len(chunk))

    def close(self) -> None:
        self.file.close()

    @property
    def matches(self) -> bool:
        return self.offset == self.record.size and self.hash.hexdigest() == self.record.expected


def _download_blob(
    hub: HubClient, location: str, blob: Path, record: ManifestFile, meter: Meter
) -> None:
    partial = _Partial(blob.with_name(blob.name + ".incomplete"), record, meter)
    try:
        for attempt in (1, 2):
            _fill(hub, location, partial)
            if partial.matches:
                break
            log.warning("%s did not match its hash; fetching it again", record.path)
            partial.restart()
            if attempt == 2:
                partial.close()
                partial.path.unlink(missing_ok=True)
                raise DownloadError(
                    f"{record.path} arrived damaged twice ({record.kind} does not match the Hub's "
                    "record); the partial file was removed: check your connection or proxy, "
                    "then run the download again"
                )
        partial.close()
        os.replace(partial.path, blob)
    finally:
        partial.close()


def _fill(hub: HubClient, location: str, partial: _Partial) -> None:
    """GET the rest of the file into `partial`, resuming after dropped connections."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_session, hf_raise_for_status

    timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=10.0)
    failures = 0
    while partial.offset < partial.record.size:
        hub.check_cancel()
        start = partial.offset
        headers = hub.headers(location)
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            with get_session().stream(
                "GET", location, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                if response.status_code == 416:
                    partial.restart()
                    raise TransientError("range not satisfiable")
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                if start and (response.status_code != 206 or not _range_starts_at(response, start)):
                    partial.restart()  # the server ignored the Range: take the whole file
                # No chunk size: bytes are written as they arrive, so a dropped connection
                # loses none of what was received.
                for chunk in response.iter_bytes():
                    hub.check_cancel()
                    partial.write(chunk)
                    if partial.offset > partial.record.size:
                        return  # too long: the hash check rejects it
            if partial.offset < partial.record.size:
                raise TransientError("connection closed early")
        except TransientError as exc:
            failures = _count_failure(hub, failures, partial.offset > start, exc)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status not in RETRY_STATUS:
                raise
            failures = _count_failure(hub, failures, partial.offset > start, exc)
        except httpx2.ProxyError:
            raise
        except httpx2.TransportError as exc:
            failures = _count_failure(hub, failures, partial.offset > start, exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"the disk filled up while downloading {partial.record.path} into "
                    f"{hub_cache_dir()}; free some space and run the download again (it resumes)"
                ) from exc
            raise


def _count_failure(hub: HubClient, failures: int, progressed: bool, exc: BaseException) -> int:
    failures = 1 if progressed else failures + 1
    if failures >= hub.retry.attempts:
        raise exc
    log.info("download interrupted (%s); resuming, try %d", type(exc).__name__, failures)
    hub.sleep(hub.retry.delay(failures))
    return failures


def _range_starts_at(response: Any, start: int) -> bool:
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0]) == start
    except (IndexError, ValueError):
        return False


def _link(blob: Path, pointer: Path) -> None:
    """Point the snapshot entry at the blob (relative symlink, as huggingface_hub does)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:  # no symlinks here (some Windows setups): a hard link, else a copy
        try:
            os.link(blob, pointer)
        except OSError:
            shutil.copy2(blob, pointer)
