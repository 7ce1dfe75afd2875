"""Ctrl-C in the command line front end, never lost.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is; when that is inside a
C callback (numba compiling librosa's kernels while a take is analysed calls back into Python
through ctypes), the exception is printed as "ignored" and the work goes on: the take would be
exported although Ctrl-C was pressed. The handler here also remembers the press, and the
commands ask `raise_if_pressed` before they write anything."""

from __future__ import annotations

import signal
import threading
from types import FrameType

_pressed = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pressed.set()
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT in this (main) thread: remember it, then raise KeyboardInterrupt."""
    _pressed.clear()
    signal.signal(signal.SIGINT, _on_sigint)


def raise_if_pressed() -> None:
    """KeyboardInterrupt if Ctrl-C was pressed, even if its exception was swallowed."""
    if _pressed.is_set():
        raise KeyboardInterrupt
