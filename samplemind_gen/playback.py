"""Playback through sounddevice (PortAudio). Missing PortAudio or output device raises
`NoAudioDeviceError`; everything else in the app keeps working."""

from __future__ import annotations

import collections
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


class StreamPlayer:
    """Plays audio that arrives in chunks while a take is still being generated.

    `feed(chunk)` from any thread (the output stream opens on the first chunk: that is the
    time-to-first-sound); `finish()` when no more will come; `wait()` blocks until it has all
    played. If generation falls behind playback, the player outputs silence and the playhead
    waits (counted in `underruns`) rather than stopping."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.underruns = 0
        self.started_at: float | None = None
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._offset = 0  # samples of _chunks[0] already played
        self._played = 0
        self._finished = False
        self._drained = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    @property
    def position(self) -> float:
        """Seconds played so far."""
        return self._played / self.sample_rate

    @property
    def playing(self) -> bool:
        """True from the first chunk until everything has played (or `stop`)."""
        return self._stream is not None and not self._drained.is_set()

    def feed(self, chunk: np.ndarray) -> None:
        """Queue (channels, n) float audio; opens the output on the first call."""
        self.queue(chunk)
        if self._stream is None:
            self._open()

    def queue(self, chunk: np.ndarray) -> None:
        """Queue audio without opening the output (pre-buffering)."""
        frames = np.ascontiguousarray(np.atleast_2d(chunk).T, dtype=np.float32)
        with self._lock:
            self._chunks.append(frames)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            if self._stream is None:
                self._drained.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything fed has played (after `finish`). False on timeout."""
        done = self._drained.wait(timeout)
        if done:
            self.stop()
        return done

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        self._drained.set()
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:
                pass

    def _fill(self, out: np.ndarray) -> bool:
        """Write up to len(out) frames into `out`; True when everything has played."""
        n = len(out)
        written = 0
        with self._lock:
            while written < n and self._chunks:
                head = self._chunks[0]
                take = min(n - written, len(head) - self._offset)
                out[written : written + take] = head[self._offset : self._offset + take]
                written += take
                self._offset += take
                if self._offset >= len(head):
                    self._chunks.popleft()
                    self._offset = 0
            self._played += written
            out[written:] = 0
            if written < n and not self._finished:
                self.underruns += 1
            return self._finished and not self._chunks

    def _open(self) -> None:
        sd = _sounddevice()

        def callback(outdata: Any, n: int, _time: Any, _status: Any) -> None:
            underruns = self.underruns
            if self._fill(outdata):
                raise sd.CallbackStop
            if self.underruns != underruns:
                # Waiting for the generator. A device that takes audio faster than it plays
                # (ALSA's null device) would call back at once, over and over, holding the GIL
                # and starving the generation: rest for a fraction of a block (well within the
                # block's own duration, so a real device never glitches on it).
                time.sleep(min(0.005, n / self.sample_rate / 4))

        try:
            self._stream = sd.OutputStream(
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="float32",
                callback=callback,
                finished_callback=self._drained.set,
            )
            self._stream.start()
            self.started_at = time.perf_counter()
        except Exception as exc:
            self._stream = None
            raise NoAudioDeviceError(str(exc).splitlines()[0] if str(exc) else "") from exc


class LivePlayback:
    """Plays the first take of a generation while it is being generated: pass `on_audio` to
    `AudioEngineWithGeneration.generate_blocking`. The output opens on the first chunk, so the
    time to first sound is the engine's. A missing audio device never stops the generation: it
    is kept in `error` for the caller to report once the take is safe.

    `sample_rate` is asked for on the first chunk (the model may still be loading when the job
    is set up)."""

    def __init__(self, sample_rate: Callable[[], int]) -> None:
        self._sample_rate = sample_rate
        self.player: StreamPlayer | None = None
        self.error: NoAudioDeviceError | None = None
        self._stopped = False

    def on_audio(self, chunk: np.ndarray, start: int) -> None:
        """(batch, channels, n) audio starting at sample `start`; the first take is played."""
        if self.error is not None or self._stopped:
            return
        try:
            if self.player is None:
                self.player = StreamPlayer(self._sample_rate(), chunk.shape[1])
            self.player.feed(chunk[0])
        except NoAudioDeviceError as exc:
            self.error = exc

    @property
    def playing(self) -> bool:
        return self.player is not None and self.player.playing

    @property
    def position(self) -> float:
        return self.player.position if self.player is not None else 0.0

    def done_feeding(self) -> None:
        """No more audio will come: play out what is queued, then close the output."""
        if self.player is not None:
            self.player.finish()

    def stop(self) -> None:
        """Stop now and ignore any audio still to come."""
        self._stopped = True
        if self.player is not None:
            self.player.stop()

    def finish(self) -> bool:
        """Block until the streamed take has played out; True if a take was streamed. Raises
        the device error, if there was one."""
        if self.error is not None:
            raise self.error
        if self.player is None:
            return False
        self.done_feeding()
        self.player.wait()
        return True


def play_blocking(audio: np.ndarray, sample_rate: int) -> None:
    player = Player()
    player.play(audio, sample_rate)
    while player.playing:
        time.sleep(0.05)
    player.stop()
