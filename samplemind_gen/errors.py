"""Errors a user can cause or meet, each with a message that says what to do next.

Front ends show `str(error)` as is: the CLI prints it as one line and exits with `exit_code`,
the TUI shows it in a dialog or toast.
"""

from __future__ import annotations


class SampleMindError(Exception):
    """Base class: an expected failure with a user-facing, actionable message."""

    exit_code = 1


class BadInputError(SampleMindError):
    """The user asked for something invalid (bad parameter, unknown model, bad path)."""

    exit_code = 2


class UnknownModelError(BadInputError):
    """A model name that is neither in the catalog, a Hub repo id, nor a local folder."""


class ModelFilesError(BadInputError):
    """A model folder with missing files or corrupt weights."""


class ModelNotCachedError(BadInputError):
    """The model is not in the local cache and cannot be downloaded (offline or Hub unreachable)."""


class GatedModelError(BadInputError):
    """The Hub repo is gated and this machine has no access token for it."""


class OutputNotWritableError(BadInputError):
    """The export folder or file cannot be written."""


class DownloadError(SampleMindError):
    """A download failed after retries (network, server or integrity)."""


class DiskFullError(SampleMindError):
    """Not enough free disk space for a download or an export."""


class NoAudioDeviceError(SampleMindError):
    """PortAudio or an output device is missing."""

    def __init__(self, detail: str = "") -> None:
        message = "no audio output device"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class GenerationCancelled(SampleMindError):
    """The user cancelled a running job; raised from inside the step loop."""

    exit_code = 130

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class DownloadCancelled(GenerationCancelled):
    """The user cancelled a model download; what was fetched is kept and the next run resumes."""

    def __init__(self, message: str = "download cancelled; run it again to resume") -> None:
        super().__init__(message)
