"""Playback through sounddevice (PortAudio). Missing PortAudio or output device raises
`NoAudioDeviceError`; everything else in the app keeps working."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from samplemind_gen.errors import NoAudioDeviceError


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:  # PortAudio library missing
        raise NoAudioDeviceError("PortAudio is not installed") from exc
    return sd


def output_available() -> bool:
    try:
        sd = _sounddevice()
        sd.query_devices(kind="output")
    except Exception:
        return False
    return True


class Player:
    """Plays one take at a time in a background stream; reports the playhead position."""

    def __init__(self) -> None:
        self._stream: Any = None
        self._audio: np.ndarray | None = None
        self._pos = 0
        self._lock = threading.Lock()
        self.sample_rate = 0
        self.loop = False
        self.on_finished: Callable[[], None] | None = None

    @property
    def playing(self) -> bool:
        return self._stream is not None and self._stream.active

    @property
    def position(self) -> float:
        """Seconds played so far."""
        return self._pos / self.sample_rate if self.sample_rate else 0.0

    def play(self, audio: np.ndarray, sample_rate: int, *, loop: bool = False) -> None:
        sd = _sounddevice()
        self.stop()
        frames = np.ascontiguousarray(np.atleast_2d(audio).T.astype(np.float32))
        self._audio = frames
        self._pos = 0
        self.sample_rate = sample_rate
        self.loop = loop

        def callback(outdata: Any, n: int, _time: Any, _status: Any) -> None:
            with self._lock:
                assert self._audio is not None
                chunk = self._audio[self._pos : self._pos + n]
                self._pos += len(chunk)
                if len(chunk) < n and self.loop:
                    rest = n - len(chunk)
                    self._pos = rest
                    chunk = np.concatenate([chunk, self._audio[:rest]])
                outdata[: len(chunk)] = chunk
                if len(chunk) < n:
                    outdata[len(chunk) :] = 0
                    raise sd.CallbackStop

        try:
            self._stream = sd.OutputStream(
                samplerate=sample_rate,
                channels=frames.shape[1],
                dtype="float32",
                callback=callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise NoAudioDeviceError(str(exc).splitlines()[0] if str(exc) else "") from exc

    def _finished(self) -> None:
        if self.on_finished is not None:
            self.on_finished()

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:
                pass


def play_blocking(audio: np.ndarray, sample_rate: int) -> None:
    player = Player()
    player.play(audio, sample_rate)
    while player.playing:
        time.sleep(0.05)
    player.stop()
