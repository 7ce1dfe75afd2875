"""A one-line progress display on stderr, shared by the CLI commands."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from samplemind_gen.request import Progress, describe_progress


class ProgressLine:
    """Redraws one stderr line on a terminal (throttled); prints stage changes otherwise."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 0.1,
        extra: Callable[[], str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.extra = extra  # more words for the generating line (live play's wait)
        self.tty = self.stream.isatty()
        self.interval = interval
        self._last = 0.0
        self._stage = ""
        self._text = ""
        self._width = 0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.total and progress.step >= progress.total
        if progress.stage == self._stage and now - self._last < self.interval and not final:
            return
        self._last = now
        text = describe_progress(progress)
        if progress.stage == "generating" and progress.total:
            bar = _bar(progress.fraction)
            text = f"{bar} {text}"
            more = self.extra() if self.extra is not None else ""
            if more:
                text = f"{text} · {more}"
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        elif progress.stage != self._stage or (
            progress.stage != "generating" and text != self._text
        ):  # a new stage, or news within one (e.g. "compiling the CPU kernels" while loading)
            self.stream.write(text + "\n")
        self._text = text
        self.stream.flush()
        self._stage = progress.stage

    def done(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"
