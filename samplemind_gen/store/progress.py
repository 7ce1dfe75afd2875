"""Byte progress for the store's long jobs (download, verify, import): done/total, speed, ETA."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Task = Literal["download", "verify", "import"]


@dataclass(frozen=True)
class ByteProgress:
    """One report from a download, a verify or an import."""

    task: Task
    model: str
    done_bytes: int
    total_bytes: int
    speed: float = 0.0  # bytes per second over the last few seconds
    eta: float | None = None  # seconds left; None until the speed is known
    file: str = ""
    files_done: int = 0
    files_total: int = 0
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0


ByteProgressCallback = Callable[[ByteProgress], None]


def format_bytes(n: float) -> str:
    """'412.3 MB' style sizes, in the catalog's units (1 GB = 1024**3 bytes)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def describe_bytes(progress: ByteProgress) -> str:
    """One line for a progress bar or status line, the same in the CLI and the TUI."""
    parts = [f"{format_bytes(progress.done_bytes)}/{format_bytes(progress.total_bytes)}"]
    parts.append(f"{progress.fraction * 100:.0f}%")
    if progress.speed > 0:
        parts.append(f"{format_bytes(progress.speed)}/s")
    if progress.eta is not None:
        parts.append(f"ETA {format_duration(progress.eta)}")
    if progress.file and progress.files_total > 1:
        n = min(progress.files_done + 1, progress.files_total)
        parts.append(f"{progress.file} ({n}/{progress.files_total})")
    elif progress.file:
        parts.append(progress.file)
    return " · ".join(parts)


class Meter:
    """Counts bytes, works out speed and ETA, and calls back at most every `interval` seconds.

    Bytes found already on disk (resumed or cached) count towards `done` but not towards the
    speed, so the ETA of a resumed download is honest from the first report."""

    WINDOW = 5.0

    def __init__(
        self,
        task: Task,
        model: str,
        total_bytes: int,
        files_total: int,
        callback: ByteProgressCallback | None,
        *,
        interval: float = 0.1,
    ) -> None:
        self.task: Task = task
        self.model = model
        self.total = total_bytes
        self.files_total = files_total
        self.files_done = 0
        self.file = ""
        self.done = 0
        self._moved = 0
        self._file_moved = 0
        self._callback = callback
        self._interval = interval
        self._start = time.monotonic()
        self._last_emit = float("-inf")
        self._samples: deque[tuple[float, int]] = deque([(self._start, 0)])

    def start_file(self, name: str, already: int = 0) -> None:
        self.file = name
        self.done += already
        self._file_moved = 0
        self.emit(force=True)

    def end_file(self) -> None:
        self.files_done += 1
        self.emit(force=self.files_done >= self.files_total)

    def skip(self, nbytes: int) -> None:
        """Bytes that needed no work (already on disk)."""
        self.done += nbytes

    def rewind(self, nbytes: int) -> None:
        """Bytes thrown away (a partial file that had to start again)."""
        self.done = max(0, self.done - nbytes)

    def add(self, nbytes: int) -> None:
        first = self._file_moved == 0  # always report a file's first bytes
        self.done += nbytes
        self._moved += nbytes
        self._file_moved += nbytes
        now = time.monotonic()
        self._samples.append((now, self._moved))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
            self._samples.popleft()
        self.emit(force=first)

    def speed(self) -> float:
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def emit(self, *, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last_emit < self._interval:
            return
        self._last_emit = now
        speed = self.speed()
        left = max(0, self.total - self.done)
        eta = left / speed if speed > 0 else (0.0 if left == 0 else None)
        self._callback(
            ByteProgress(
                task=self.task,
                model=self.model,
                done_bytes=self.done,
                total_bytes=self.total,
                speed=speed,
                eta=eta,
                file=self.file,
                files_done=min(self.files_done, self.files_total),
                files_total=self.files_total,
                elapsed=now - self._start,
            )
        )
