"""Typed messages that workers post to the UI. Workers never touch widgets: they post these
(`post_message` is thread-safe) and the screen updates itself when they arrive."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from textual.message import Message

from samplemind_gen.request import Progress
from samplemind_gen.take import Take

if TYPE_CHECKING:
    from samplemind_gen.store.progress import ByteProgress
    from samplemind_gen.tui.widgets.waveform import Peaks

P = TypeVar("P")


class ModelLoading(Message):
    """A model started loading (this is when torch gets imported, the first time), or says what
    its load is doing now (`detail`: "compiling CPU kernels (once, ~20 s)")."""

    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__()
        self.model = model
        self.detail = detail


class ModelLoaded(Message):
    """A model is in memory and ready to generate."""

    def __init__(self, model: str, device: str, dtype: str, seconds: float) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.dtype = dtype
        self.seconds = seconds


class ModelNotDownloaded(Message):
    """The chosen model is not in the local cache, so it was not preloaded."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model


class GenerationProgress(Message):
    """A (throttled) progress report from a running generation."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class TakeReady(Message):
    """A generation finished: its takes, analysed, with their waveform peaks computed."""

    def __init__(self, takes: list[Take], peaks: dict[str, Peaks]) -> None:
        super().__init__()
        self.takes = takes
        self.peaks = peaks


class LivePeaks(Message):
    """The waveform of the take being generated, so far (posted as its audio chunks arrive)."""

    def __init__(self, peaks: Peaks, seconds: float) -> None:
        super().__init__()
        self.peaks = peaks
        self.seconds = seconds  # how much of the take has arrived


class DownloadProgress(Message):
    """A (throttled) byte progress report from a model download."""

    def __init__(self, progress: ByteProgress) -> None:
        super().__init__()
        self.progress = progress


class Throttle(Generic[P]):
    """Calls `post` with a report at most every `interval` seconds, but never drops the first
    report of a stage or a complete one, so the display always ends on the true state."""

    def __init__(self, post: Callable[[P], None], interval: float = 0.25) -> None:
        self.post = post
        self.interval = interval
        self._last = float("-inf")
        self._stage: object = None

    def __call__(self, report: P) -> None:
        now = time.monotonic()
        stage = getattr(report, "stage", None)
        final = getattr(report, "fraction", 0.0) >= 1.0  # Progress and ByteProgress both have it
        if stage == self._stage and not final and now - self._last < self.interval:
            return
        self._stage = stage
        self._last = now
        self.post(report)
