"""The HTTP side of the store: the Hub endpoint, retries, cancellation, auth headers, and
`huggingface_hub`/httpx failures told as our typed errors (saying what to do next).

Tokens: `huggingface_hub` reads `HF_TOKEN` (or the saved login) when it builds headers. Nothing
here puts a token, a header or a signed URL's query string into a message or a log line.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from samplemind_gen import __version__
from samplemind_gen.catalog import ModelSpec
from samplemind_gen.errors import (
    DiskFullError,
    DownloadCancelled,
    DownloadError,
    GatedModelError,
    ModelNotCachedError,
    SampleMindError,
    UnknownModelError,
)
from samplemind_gen.store.cache import cached_model, hub_cache_dir, partial_bytes
from samplemind_gen.store.progress import format_bytes

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures (5xx, dropped connections)."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 8.0
    connect_attempts: int = 2  # a Hub that refuses connections is unreachable: fail fast

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1)))


def hub_endpoint() -> str:
    """`HF_ENDPOINT` (read now, not at import), else the Hub."""
    value = os.environ.get("HF_ENDPOINT")
    if value:
        return value.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def safe_url(url: str) -> str:
    """A URL fit to print: no user:password part, no query (signed CDN URLs carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class HubClient:
    """The HTTP side of one download: retries, cancellation, headers."""

    def __init__(self, retry: RetryPolicy, cancel: threading.Event | None) -> None:
        self.endpoint = hub_endpoint()
        self.retry = retry
        self.cancel = cancel

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled()

    def sleep(self, seconds: float) -> None:
        if self.cancel is not None:
            if self.cancel.wait(seconds):
                raise DownloadCancelled()
        else:
            time.sleep(seconds)

    def headers(self, url: str) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        headers = dict(build_hf_headers(library_name="samplemind-gen", library_version=__version__))
        headers["Accept-Encoding"] = "identity"  # sizes and Range offsets are raw bytes
        if _origin(url) != _origin(self.endpoint):
            # A signed CDN URL: the token must not leave the Hub.
            headers.pop("authorization", None)
        return headers

    def call(self, fn: Callable[[], T]) -> T:
        """Run one request, retrying 5xx answers and dropped connections."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        failures = 0
        while True:
            self.check_cancel()
            try:
                return fn()
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status not in RETRY_STATUS:
                    raise
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                log.info("HTTP %s from the Hub; retry %d", status, failures)
            except httpx2.ProxyError:
                raise
            except (httpx2.ConnectError, httpx2.ConnectTimeout):
                failures += 1
                if failures >= min(self.retry.attempts, self.retry.connect_attempts):
                    raise
            except httpx2.TransportError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                log.info("%s talking to the Hub; retry %d", type(exc).__name__, failures)
            self.sleep(self.retry.delay(failures))


class TransientError(Exception):
    """A transient failure found by our own checks."""


def offline_message(spec: ModelSpec) -> str:
    from samplemind_gen.store import local_models_summary

    return (
        f"{spec.name} is not downloaded and HF_HUB_OFFLINE is set; on this machine "
        f"{local_models_summary()}. Unset HF_HUB_OFFLINE and run "
        f"`samplemind-gen models download {spec.name}`, or copy the model from a connected "
        "machine with `samplemind-gen models import PATH --as NAME`"
    )


def gated_error(spec: ModelSpec, endpoint: str, *, has_token: bool = False) -> GatedModelError:
    page = f"{safe_url(endpoint)}/{spec.repo_id}"
    message = (
        f"{spec.name} is gated: open {page}, log in and accept its licence, then create a read "
        f"token at {safe_url(endpoint)}/settings/tokens and set HF_TOKEN to it"
    )
    if has_token:
        message = (
            f"{spec.name} is gated and the token in HF_TOKEN has no access to it: open {page}, "
            "log in with that account and accept its licence (or use a token of an account "
            "that has)"
        )
    return GatedModelError(message)


def _unreachable_error(spec: ModelSpec, endpoint: str, reason: str) -> ModelNotCachedError:
    from samplemind_gen.store import local_models_summary

    cached = cached_model(spec.repo_id, spec.revision)
    if cached is not None and cached.complete:
        state = f"{spec.name} is cached (commit {cached.commit[:12]}) and keeps working offline"
    else:
        partial = partial_bytes(spec.repo_id)
        state = f"{spec.name} is not downloaded"
        if partial:
            state += f" ({format_bytes(partial)} fetched so far; the download resumes)"
    return ModelNotCachedError(
        f"cannot reach the Hub at {safe_url(endpoint)} ({reason}); {state}. On this machine "
        f"{local_models_summary()}. Connect and retry, set HF_ENDPOINT to a mirror you can "
        "reach, or copy the model from a connected machine with "
        "`samplemind-gen models import PATH --as NAME`"
    )


def translate(exc: BaseException, spec: ModelSpec, endpoint: str) -> SampleMindError:
    """A `huggingface_hub`/httpx failure as one of our errors, saying what to do next."""
    import httpx2
    from huggingface_hub import get_token
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    has_token = get_token() is not None
    where = safe_url(endpoint)
    if isinstance(exc, GatedRepoError):
        return gated_error(spec, endpoint, has_token=has_token)
    if isinstance(exc, RepositoryNotFoundError):
        hint = (
            "; if it is private, the token in HF_TOKEN has no access to it"
            if has_token
            else "; if it is private or gated, set HF_TOKEN to a token with access"
        )
        return UnknownModelError(
            f"{spec.repo_id} does not exist on the Hub at {where}{hint}; check the name, or "
            "pick one from `samplemind-gen models list`"
        )
    if isinstance(exc, RevisionNotFoundError):
        return UnknownModelError(
            f"revision '{spec.revision}' of {spec.repo_id} does not exist on the Hub at {where}"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadError(
            f"a file of {spec.repo_id} disappeared from the Hub while downloading; run the "
            "download again"
        )
    if isinstance(exc, OfflineModeIsEnabled):
        return ModelNotCachedError(offline_message(spec))
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401 and has_token:
            return GatedModelError(
                f"the Hub at {where} did not accept the token in HF_TOKEN (expired, revoked or "
                "mistyped?); create a new read token in your Hub settings and set HF_TOKEN to it"
            )
        if status in (401, 403):
            return GatedModelError(
                f"the Hub at {where} refused access to {spec.repo_id} (HTTP {status}); if it is "
                f"gated, open {where}/{spec.repo_id}, log in and accept its licence, and set "
                "HF_TOKEN to a read token of that account"
            )
        if status in RETRY_STATUS:
            return DownloadError(
                f"the Hub at {where} answered HTTP {status} for {spec.repo_id}, several times; it "
                "may be busy or down: try again later (files fetched so far are kept and the "
                "download resumes)"
            )
        return DownloadError(f"the Hub at {where} answered HTTP {status} for {spec.repo_id}")
    if isinstance(exc, TransientError):
        return _unreachable_error(spec, endpoint, f"connection lost: {exc}")
    if isinstance(exc, httpx2.ProxyError):
        return _unreachable_error(spec, endpoint, "the proxy refused the connection")
    if isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        return _unreachable_error(spec, endpoint, "no connection")
    if isinstance(exc, httpx2.TransportError):
        return _unreachable_error(spec, endpoint, f"connection lost: {type(exc).__name__}")
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return DiskFullError(
                f"the disk filled up while downloading {spec.name}; free some space and run the "
                "download again (it resumes)"
            )
        return DownloadError(
            f"could not write {spec.name} into the cache at {hub_cache_dir()}: "
            f"{exc.strerror or type(exc).__name__}"
        )
    return DownloadError(f"downloading {spec.repo_id} failed: {type(exc).__name__}")
