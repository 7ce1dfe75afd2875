"""A small Hugging Face Hub for tests, on 127.0.0.1, with fault injection.

It implements what `huggingface_hub` 2.x uses to download (read from its source):
- `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=True` adds sizes, blob ids and LFS sha256)
- `GET /api/models/{repo}/tree/{rev}` (`?recursive=True`), for `snapshot_download`
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: regular files answer 200 with `ETag` (git blob sha1)
  and `X-Repo-Commit`; LFS files answer 302 to a CDN on another origin (a second server, so
  the client must drop the token) with `X-Linked-Etag` (sha256) and `X-Linked-Size`
- `Range` requests (206 + `Content-Range`) on both servers
- errors as the Hub signals them: `X-Error-Code` RepoNotFound / RevisionNotFound /
  EntryNotFound / GatedRepo (401 without a token, 403 with a token lacking access)

Faults (`FakeHub.fault`): a connection cut after N body bytes, an HTTP status (5xx), a body
with one byte flipped, a server that ignores `Range`. Every request is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".onnx", ".model", ".pt")
POINTER_SIZE = 134


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        # For LFS files the git blob is the pointer file, as on the Hub.
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            return git_blob_sha1(pointer.encode())
        return git_blob_sha1(self.data)


@dataclass
class HubRepo:
    repo_id: str
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens with access to a gated repo


@dataclass
class Fault:
    kind: Literal["status", "cut", "corrupt", "ignore-range", "slow"]
    match: str  # substring of the file path (or of the URL path, e.g. "/api/")
    times: int | None = 1  # None: every time
    status: int = 503
    after: int = 0  # "cut": body bytes sent before the connection drops
    pace: float = 0.02  # "slow": seconds between 64 KB pieces of the body
    method: str | None = None  # only this method ("GET", "HEAD")


@dataclass(frozen=True)
class LoggedRequest:
    server: Literal["hub", "cdn"]
    method: str
    path: str
    file: str  # repo file path, "" for API calls
    headers: dict[str, str]


def files_from_folder(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class FakeHub:
    """Start with `FakeHub().start()`; `url` is the value for HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.faults: list[Fault] = []
        self.requests: list[LoggedRequest] = []
        self.served: dict[str, int] = {}  # body bytes sent, by file path
        # When set, any other token is refused everywhere, as the Hub does with a revoked one.
        self.valid_tokens: set[str] | None = None
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._conns: list[socket.socket] = []
        self.url = ""
        self.cdn_url = ""

    # --- content ------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        gated: bool = False,
        tokens: tuple[str, ...] = (),
        ref: str = "main",
    ) -> str:
        repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
        repo.gated = repo.gated or gated
        repo.tokens.update(tokens)
        return self.add_commit(repo_id, files, ref=ref)

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, ref: str = "main") -> str:
        repo = self.repos[repo_id]
        digest = hashlib.sha1(repo_id.encode() + str(len(repo.commits)).encode())
        for path, data in sorted(files.items()):
            digest.update(path.encode() + hashlib.sha256(data).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = {p: HubFile(p, d) for p, d in files.items()}
        repo.refs[ref] = sha
        return sha

    def fault(self, kind: str, match: str, **kwargs: object) -> Fault:
        f = Fault(kind, match, **kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(f)
        return f

    def file_requests(self, file: str, method: str = "GET") -> list[LoggedRequest]:
        return [r for r in self.requests if r.file == file and r.method == method]

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self._servers.append(server)
            url = f"http://127.0.0.1:{server.server_address[1]}"
            if role == "hub":
                self.url = url
            else:
                self.cdn_url = url
        return self

    def stop(self) -> None:
        """Stop listening and drop kept-alive connections too, like a server that went away."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------

    def take_fault(self, method: str, where: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.match in where and (f.method is None or f.method == method):
                    if f.times is None:
                        return f
                    if f.times > 0:
                        f.times -= 1
                        return f
        return None

    def find_blob(self, sha256: str) -> HubFile | None:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for f in files.values():
                    if f.lfs and f.sha256 == sha256:
                        return f
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.append(self.connection)

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined,no-any-return]

    @property
    def role(self) -> Literal["hub", "cdn"]:
        return self.server.role  # type: ignore[attr-defined,no-any-return]

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    # --- responses ----------------------------------------------------------------------

    def _log(self, file: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        self.hub.requests.append(LoggedRequest(self.role, self.command, path, file, headers))

    def _headers(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self._headers(status, headers, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(
        self, status: int, code: str | None, message: str, extra: dict | None = None
    ) -> None:
        headers = {"Content-Type": "application/json", **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send(status, headers, json.dumps({"error": message}).encode())

    def _handle(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        if self.role == "cdn":
            return self._cdn(path)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token and self.hub.valid_tokens is not None and token not in self.hub.valid_tokens:
            self._log("")
            return self._error(401, None, "Invalid credentials in Authorization header")
        if path.startswith("/api/models/"):
            self._log("")
            fault = self.hub.take_fault(self.command, path)
            if fault is not None and fault.kind == "status":
                return self._error(fault.status, None, f"fake {fault.status}")
            return self._api(path[len("/api/models/") :], query)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            return self._resolve(repo_id, parts[3], "/".join(parts[4:]))
        self._log("")
        self._error(404, None, "not found")

    def _repo(self, repo_id: str) -> HubRepo | None:
        return self.hub.repos.get(repo_id)

    def _commit(self, repo: HubRepo, rev: str) -> str | None:
        if rev in repo.commits:
            return rev
        return repo.refs.get(rev)

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        tail = parts[2:]
        if not tail:
            rev, kind = "main", "info"
        elif tail[0] == "revision" and len(tail) >= 2:
            rev, kind = "/".join(tail[1:]), "info"
        elif tail[0] == "tree" and len(tail) >= 2:
            rev, kind = tail[1], "tree"
        else:
            return self._error(404, None, "not found")
        sha = self._commit(repo, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = repo.commits[sha]
        if kind == "tree":
            listing = []
            folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
            for folder in folders:
                listing.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
            for f in sorted(files.values(), key=lambda f: f.path):
                entry: dict = {
                    "type": "file",
                    "oid": f.blob_id,
                    "size": len(f.data),
                    "path": f.path,
                }
                if f.lfs:
                    entry["lfs"] = {
                        "oid": f.sha256,
                        "size": len(f.data),
                        "pointerSize": POINTER_SIZE,
                    }
                listing.append(entry)
            return self._send(
                200, {"Content-Type": "application/json"}, json.dumps(listing).encode()
            )
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for f in sorted(files.values(), key=lambda f: f.path):
            sib: dict = {"rfilename": f.path}
            if blobs:
                sib["size"] = len(f.data)
                sib["blobId"] = f.blob_id
                if f.lfs:
                    sib["lfs"] = {
                        "size": len(f.data),
                        "sha256": f.sha256,
                        "pointerSize": POINTER_SIZE,
                    }
            siblings.append(sib)
        info = {
            "_id": sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["transformers", "musicgen"],
            "library_name": "transformers",
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": siblings,
        }
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())

    def _resolve(self, repo_id: str, rev: str, file: str) -> None:
        self._log(file)
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
            if not token:
                return self._error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                )
            if token not in repo.tokens:
                return self._error(
                    403,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    "list.",
                )
        sha = self._commit(repo, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        f = repo.commits[sha].get(file)
        if f is None:
            return self._error(
                404, "EntryNotFound", f"{file} does not exist", {"X-Repo-Commit": sha}
            )
        fault = self.hub.take_fault(self.command, file)
        if fault is not None and fault.kind == "status":
            return self._error(fault.status, None, f"fake {fault.status}")
        common = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if f.lfs:
            location = f"{self.hub.cdn_url}/lfs/{f.sha256}?X-Amz-Signature=fake-signature&file={quote(file)}"
            headers = {
                **common,
                "Location": location,
                "ETag": f'"{f.blob_id}"',
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(len(f.data)),
            }
            return self._send(302, headers)
        self._body(f, {**common, "ETag": f'"{f.blob_id}"'}, fault)

    def _cdn(self, path: str) -> None:
        sha = path.rsplit("/", 1)[-1]
        f = self.hub.find_blob(sha)
        self._log(f.path if f else "")
        if f is None:
            return self._error(404, None, "no such blob")
        fault = self.hub.take_fault(self.command, f.path)
        if fault is not None and fault.kind == "status":
            return self._error(fault.status, None, f"fake {fault.status}")
        self._body(f, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"}, fault)

    def _body(self, f: HubFile, headers: dict[str, str], fault: Fault | None) -> None:
        data = f.data
        start = 0
        status = 200
        range_header = self.headers.get("Range")
        if range_header and not (fault is not None and fault.kind == "ignore-range"):
            try:
                start = int(range_header.split("=", 1)[1].split("-", 1)[0])
            except (IndexError, ValueError):
                start = 0
            if start >= len(data):
                return self._error(
                    416, None, "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"}
                )
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        if fault is not None and fault.kind == "corrupt" and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        if self.command == "HEAD":
            self._headers(status, headers, len(body))
            return
        if fault is not None and fault.kind == "cut":
            self._headers(status, headers, len(body))
            sent = body[: fault.after]
            self.wfile.write(sent)
            self.wfile.flush()
            self._count(f.path, len(sent))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "slow":
            self._headers(status, headers, len(body))
            with contextlib.suppress(OSError):  # the client may hang up (cancel)
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i : i + (1 << 16)])
                    self.wfile.flush()
                    self._count(f.path, len(body[i : i + (1 << 16)]))
                    time.sleep(fault.pace)
            return
        self._send(status, headers, body)
        self._count(f.path, len(body))

    def _count(self, path: str, n: int) -> None:
        with self.hub._lock:
            self.hub.served[path] = self.hub.served.get(path, 0) + n


# --- test wiring ------------------------------------------------------------------------------

TINY_REPO = "tiny/musicgen-tiny"
# Files a real repo carries that the store must not fetch (duplicate weights, docs).
DECOYS = {
    "pytorch_model.bin": b"\x80\x02pickle" * 100,
    "flax_model.msgpack": b"msgpack" * 100,
    "tf_model.h5": b"h5" * 100,
    "onnx/model.onnx": b"onnx" * 100,
    "README.md": b"# tiny musicgen\n",
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
}


@contextlib.contextmanager
def use_fake_hub(monkeypatch, checkpoint: Path, repo_id: str = TINY_REPO):  # type: ignore[no-untyped-def]
    """Serve `checkpoint` as `repo_id` and point this process at the fake Hub: HF_ENDPOINT set,
    offline mode and tokens cleared, fast retries. HF_HOME is already a tmp dir (conftest)."""
    from huggingface_hub import constants

    from samplemind_gen.store import download

    hub = FakeHub().start()
    hub.add_repo(repo_id, {**files_from_folder(checkpoint), **DECOYS})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads these once at import (conftest had set HF_HUB_OFFLINE=1 by then).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(os.environ["HF_HOME"]) / "token"))
    monkeypatch.setattr(
        download, "DEFAULT_RETRY", download.RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    )
    try:
        yield hub
    finally:
        hub.stop()


def go_offline(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
