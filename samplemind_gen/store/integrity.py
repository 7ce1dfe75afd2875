"""Are the cached files exactly what the Hub published?

At download time the store records, per commit, each file's size and the hash the Hub reports:
the sha256 of LFS files (weights) and the git blob sha1 of the others (configs, tokenizers).
The record is a small JSON manifest in the repo's cache folder
(`models--owner--name/samplemind/<commit>.json`), so it moves and disappears with the cache.
`verify_model` re-hashes the files against it and marks damaged ones; the next download fetches
marked files again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from samplemind_gen.errors import ModelNotCachedError
from samplemind_gen.store.cache import COMMIT_RE, cached_model, repo_folder
from samplemind_gen.store.progress import ByteProgressCallback, Meter

HashKind = Literal["sha256", "git-sha1"]
MANIFEST_FORMAT = 1
READ_CHUNK = 1 << 20


class ContentHash:
    """The hash the Hub records for a file, computed incrementally."""

    def __init__(self, kind: HashKind, size: int) -> None:
        self.kind: HashKind = kind
        self.size = size
        self.reset()

    def reset(self) -> None:
        if self.kind == "sha256":
            self._h = hashlib.sha256()
        else:
            # git's blob id: sha1 over "blob <size>\0" + content
            self._h = hashlib.sha1(f"blob {self.size}\0".encode())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def hash_file(
    path: Path, kind: HashKind, meter: Meter | None = None, limit: int | None = None
) -> str:
    """Hash a file (or its first `limit` bytes) the way the Hub does."""
    size = path.stat().st_size if limit is None else limit
    h = ContentHash(kind, size)
    left = size
    with path.open("rb") as f:
        while left > 0:
            chunk = f.read(min(READ_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            if meter is not None:
                meter.add(len(chunk))
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestFile:
    """One file as the Hub published it."""

    path: str
    size: int
    sha256: str | None = None  # LFS files
    git_sha1: str | None = None  # everything else

    @property
    def kind(self) -> HashKind:
        return "sha256" if self.sha256 else "git-sha1"

    @property
    def expected(self) -> str:
        return self.sha256 or self.git_sha1 or ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"size": self.size}
        if self.sha256:
            data["sha256"] = self.sha256
        if self.git_sha1:
            data["git_sha1"] = self.git_sha1
        return data


@dataclass
class Manifest:
    """What one cached commit of a repo should contain."""

    repo_id: str
    commit: str
    revision: str
    files: dict[str, ManifestFile]
    damaged: set[str] = field(default_factory=set)
    downloaded_at: str | None = None
    endpoint: str | None = None

    @property
    def path(self) -> Path:
        return manifest_path(self.repo_id, self.commit)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "repo_id": self.repo_id,
            "commit": self.commit,
            "revision": self.revision,
            "endpoint": self.endpoint,
            "downloaded_at": self.downloaded_at,
            "files": {p: f.to_json() for p, f in sorted(self.files.items())},
            "damaged": sorted(self.damaged),
        }

    def save(self) -> None:
        write_json_atomic(self.path, self.to_json())


def manifest_path(repo_id: str, commit: str) -> Path:
    return repo_folder(repo_id) / "samplemind" / f"{commit}.json"


def load_manifest(repo_id: str, commit: str) -> Manifest | None:
    try:
        data = json.loads(manifest_path(repo_id, commit).read_text())
        if data.get("format") != MANIFEST_FORMAT:
            return None
        files = {
            p: ManifestFile(p, int(v["size"]), v.get("sha256"), v.get("git_sha1"))
            for p, v in data["files"].items()
        }
        return Manifest(
            repo_id=repo_id,
            commit=commit,
            revision=str(data.get("revision") or commit),
            files=files,
            damaged=set(data.get("damaged", [])),
            downloaded_at=data.get("downloaded_at"),
            endpoint=data.get("endpoint"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_from_blob_name(snapshot: Path, path: str) -> ManifestFile | None:
    """For files cached by other tools: the cache names each blob after its Hub hash."""
    link = snapshot / path
    if not link.is_symlink():
        return None
    blob = Path(os.readlink(link)).name
    try:
        size = link.stat().st_size
    except OSError:
        return None
    if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
        return ManifestFile(path, size, sha256=blob)
    if COMMIT_RE.fullmatch(blob):
        return ManifestFile(path, size, git_sha1=blob)
    return None


@dataclass(frozen=True)
class DamagedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_model` found."""

    name: str
    commit: str | None
    path: Path
    ok: tuple[str, ...]
    damaged: tuple[DamagedFile, ...]
    missing: tuple[str, ...]
    unchecked: tuple[str, ...]  # files with no recorded hash
    bytes_checked: int
    source: Literal["cache", "imported"] = "cache"

    @property
    def healthy(self) -> bool:
        return not self.damaged and not self.missing


def check_file(file: Path, expected: ManifestFile, meter: Meter | None = None) -> str | None:
    """None if `file` matches the record, else why not."""
    try:
        size = file.stat().st_size
    except OSError:
        return "missing"
    if size != expected.size:
        if meter is not None:
            meter.skip(expected.size)
        return f"size {size} bytes, expected {expected.size}"
    actual = hash_file(file, expected.kind, meter)
    if actual != expected.expected:
        return f"{expected.kind} {actual[:12]}… differs from the Hub's {expected.expected[:12]}…"
    return None


def verify_snapshot(
    repo_id: str, revision: str | None, name: str, on_progress: ByteProgressCallback | None = None
) -> VerifyReport:
    """Re-hash a cached snapshot against its manifest; record damaged files in the manifest."""
    cached = cached_model(repo_id, revision)
    if cached is None:
        raise ModelNotCachedError(
            f"{name} is not downloaded, so there is nothing to verify; run "
            f"`samplemind-gen models download {name}`"
        )
    manifest = load_manifest(repo_id, cached.commit)
    if manifest is None:
        records = {
            p: rec
            for p in cached.files
            if (rec := _file_from_blob_name(cached.path, p)) is not None
        }
        manifest = Manifest(repo_id, cached.commit, cached.revision, records)
    present = set(cached.files)
    expected = [f for p, f in sorted(manifest.files.items()) if p in present]
    missing = tuple(sorted(p for p in manifest.files if p not in present))
    unchecked = tuple(p for p in cached.files if p not in manifest.files)
    meter = Meter("verify", name, sum(f.size for f in expected), len(expected), on_progress)
    ok: list[str] = []
    damaged: list[DamagedFile] = []
    for record in expected:
        meter.start_file(record.path)
        reason = check_file(cached.path / record.path, record, meter)
        if reason is None:
            ok.append(record.path)
        else:
            damaged.append(DamagedFile(record.path, reason))
        meter.end_file()
    manifest.damaged = {d.path for d in damaged}
    manifest.save()
    return VerifyReport(
        name=name,
        commit=cached.commit,
        path=cached.path,
        ok=tuple(ok),
        damaged=tuple(damaged),
        missing=missing,
        unchecked=unchecked,
        bytes_checked=meter.done,
    )
