"""Playback through sounddevice (PortAudio). Missing PortAudio or output device raises
`NoAudioDeviceError`; everything else in the app keeps working."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from samplemind_gen.errors import NoAudioDeviceError
from samplemind_gen.request import Progress

# Live play of a take that is made slower than it plays (a slow mode or CPU, a bigger model):
# instead of playing each chunk as it lands and falling silent until the next, playback waits
# until what is queued, topped up at the measured pace, lasts to the end of the take.
PACE_SAFETY = 0.9  # the pace counted at 90%: EnCodec's chunks and noise
# Later steps attend over longer caches, so the rest of a take is made slower than the part so
# far: an int8 step went from 11.1 to 17.4 ms between positions 0 and 1,450 (+55% over 30 s of
# audio), so the rest averages about half of its growth slower, in proportion to its length.
# Without this one of two 30 s bf16 takes on a 2-core EPYC started at 1.6 s and paused twice
# (3.5 s of silence); with it (0.01 a second of audio to come), two of two played through.
PACE_SLOWDOWN = 0.01
PACE_MIN_WINDOW = 0.05  # seconds of generation watched before its pace is trusted
# The audio in each streamed chunk after the first (MusicGen: 50 code frames at 50 a second;
# `ChunkedAudioDecoder`); the first is shorter (12 frames), so the queue must cover the wait for
# a full one even when the take is made faster than it plays.
STREAM_CHUNK_SECONDS = 1.0


class GenerationPace:
    """How fast a take's audio is being made, from its progress reports: seconds of audio per
    second of wall time since the first complete frame."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._first: tuple[float, float] | None = None  # (time, audio seconds) of the first step
        self._last: tuple[float, float] | None = None
        self.total = 0.0  # seconds of audio the take will have (0: not known)

    def observe(self, progress: Progress) -> None:
        if progress.stage != "generating" or not progress.total_audio_seconds:
            return
        now = self._clock()
        self.total = progress.total_audio_seconds
        if progress.audio_seconds <= 0:  # the delay pattern's first steps complete no frame
            return
        if self._first is None:
            self._first = (now, progress.audio_seconds)
        self._last = (now, progress.audio_seconds)

    @property
    def rate(self) -> float | None:
        """Seconds of audio made per second, or None before there is enough to tell."""
        if self._first is None or self._last is None:
            return None
        elapsed = self._last[0] - self._first[0]
        made = self._last[1] - self._first[1]
        if elapsed < PACE_MIN_WINDOW or made <= 0:
            return None
        return made / elapsed


def counted_pace(rate: float, remaining: float) -> float:
    """The pace planned with: the pace so far, less a margin, less the slowdown of the
    `remaining` seconds still to make."""
    return rate * PACE_SAFETY / (1.0 + PACE_SLOWDOWN * remaining)


def lead_needed(remaining: float, rate: float | None, chunk: float) -> float:
    """Seconds of audio to have queued before playing, so that playback never runs dry while
    the `remaining` seconds still to come arrive at `rate` (audio seconds per second so far;
    planned with `counted_pace`) in chunks of `chunk` seconds. Zero when nothing remains or the
    pace is not known yet (then each chunk plays as it comes).

    Chunk k + 1 of the rest lands (k + 1) * chunk / pace seconds from now, when the queue plus
    the k chunks before it must still last: queued >= chunk / pace + k * chunk * (1 / pace - 1)
    for every k. Made faster than it plays (pace >= 1), the first wait is the longest: one
    chunk's making. Made slower, the last: remaining * (1 / pace - 1) + chunk."""
    if remaining <= 0 or rate is None:
        return 0.0
    pace = counted_pace(rate, remaining)
    chunk = min(chunk, remaining)
    if pace >= 1.0:
        return chunk / pace
    return remaining * (1.0 / pace - 1.0) + chunk


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

    `queue(chunk)` from any thread, then `release()` when the queue may start playing (the
    output stream opens on the first release: that is the time-to-first-sound);
    `finish()` when no more will come; `wait()` blocks until it has all played. If the queue
    runs dry before the end, the player outputs silence, counts it in `underruns` and holds
    until the next `release()` (the caller waits for a lead, see `LivePlayback`)."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.underruns = 0
        self.started_at: float | None = None
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._offset = 0  # samples of _chunks[0] already played
        self._played = 0
        self._queued = 0  # samples queued and not played
        self._finished = False
        self._held = True  # queued audio waits for release()
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

    @property
    def buffered(self) -> float:
        """Seconds queued and not yet played."""
        return self._queued / self.sample_rate

    @property
    def held(self) -> bool:
        """True while queued audio waits for `release()` (before the start, after running dry)."""
        return self._held and not self._finished

    def queue(self, chunk: np.ndarray) -> None:
        """Queue audio without playing it (pre-buffering)."""
        frames = np.ascontiguousarray(np.atleast_2d(chunk).T, dtype=np.float32)
        with self._lock:
            self._chunks.append(frames)
            self._queued += len(frames)

    def release(self) -> None:
        """Play what is queued: opens the output the first time, resumes after running dry."""
        with self._lock:
            self._held = False
        if self._stream is None and not self._drained.is_set():
            self._open()

    def finish(self) -> None:
        """No more audio will come: what is queued plays out, held or not."""
        with self._lock:
            self._finished = True
            nothing = not self._chunks
        if self._stream is None:
            if nothing:
                self._drained.set()
            else:
                self.release()

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
            if self._held and not self._finished:
                out[:] = 0
                return False
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
            self._queued -= written
            out[written:] = 0
            if written < n and not self._finished:
                self.underruns += 1
                self._held = True  # ran dry: wait for the next release (a lead to play from)
            return self._finished and not self._chunks

    def _open(self) -> None:
        sd = _sounddevice()

        def callback(outdata: Any, n: int, _time: Any, _status: Any) -> None:
            underruns = self.underruns
            if self._fill(outdata):
                raise sd.CallbackStop
            if self.underruns != underruns or self.held:
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
    """Plays the first take of a generation while it is being generated: pass `on_audio` and
    `on_progress` to `AudioEngineWithGeneration.generate_blocking` (`on_progress` can be chained
    with the front end's own). Playback waits (`waiting`) until what is queued, topped up at the
    measured pace, lasts to the end of the take (`lead_needed`): when the take is made faster
    than it plays, until the queue covers the making of one full chunk (the short first chunk
    alone would run out: about a second in on a 2-core CPU); when slower, longer. If it ever
    runs dry it waits again: one pause, then the take without gaps, instead of a gap before
    every chunk. A missing audio device never stops the generation: it is kept in `error` for
    the caller to report once the take is safe.

    `sample_rate` is asked for on the first chunk (the model may still be loading when the job
    is set up)."""

    def __init__(
        self, sample_rate: Callable[[], int], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._sample_rate = sample_rate
        self.player: StreamPlayer | None = None
        self.error: NoAudioDeviceError | None = None
        self.pace = GenerationPace(clock)
        self._received = 0.0  # seconds of audio queued so far (the end of the last chunk)
        self._chunk = STREAM_CHUNK_SECONDS  # the longest chunk: how lumpy the arrivals are
        self._stopped = False

    def on_progress(self, progress: Progress) -> None:
        """A progress report of the generation: its pace decides when playback may start."""
        self.pace.observe(progress)
        self._release_when_ready()

    def chained(self, on_progress: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """A progress callback that tells this playback, then `on_progress`."""

        def both(progress: Progress) -> None:
            self.on_progress(progress)
            on_progress(progress)

        return both

    def on_audio(self, chunk: np.ndarray, start: int) -> None:
        """(batch, channels, n) audio starting at sample `start`; the first take is played."""
        if self.error is not None or self._stopped:
            return
        try:
            if self.player is None:
                self.player = StreamPlayer(self._sample_rate(), chunk.shape[1])
            player = self.player
            player.queue(chunk[0])
            self._chunk = max(self._chunk, chunk.shape[-1] / player.sample_rate)
            self._received = (start + chunk.shape[-1]) / player.sample_rate
            self._release_when_ready()
        except NoAudioDeviceError as exc:
            self.error = exc

    def lead(self) -> float:
        """Seconds of audio playback waits to have queued before it (re)starts, at the pace so
        far (0: it plays as it comes)."""
        return lead_needed(self._remaining(), self.pace.rate, self._chunk)

    def _remaining(self) -> float:
        """Seconds of the take still to come (0 when its length is not known)."""
        return max(0.0, self.pace.total - self._received) if self.pace.total else 0.0

    @property
    def waiting(self) -> bool:
        """True while queued audio waits for a lead before it plays."""
        return self.player is not None and self.player.held and not self._stopped

    def status(self) -> str:
        """A few words for a progress line while playback waits ("sound in ~3 s", or
        "buffering" before the pace is known); "" when it is not waiting."""
        if not self.waiting:
            return ""
        starts_in = self.starts_in()
        return f"sound in ~{math.ceil(starts_in)} s" if starts_in else "buffering"

    def starts_in(self) -> float | None:
        """About how many seconds until waiting playback starts, at the pace so far (None when
        it is not waiting or the pace is not known yet). Audio arrives at `rate` while nothing
        plays, and the lead it waits for shrinks as less remains: the time when the two meet,
        rounded up to the chunk that brings it."""
        rate = self.pace.rate
        player = self.player
        if not self.waiting or rate is None or player is None or not self.pace.total:
            return None
        remaining = self._remaining()
        if remaining <= 0:
            return 0.0
        # The audio still to arrive, a, meets the lead when buffered + a >= lead_needed(remaining
        # - a): made faster than it plays the lead stays put (a = lead - buffered); made slower
        # it shrinks by a * (1 / pace - 1) as well (a = (lead - buffered) * pace).
        pace = counted_pace(rate, remaining)
        short = (self.lead() - player.buffered) * min(1.0, pace)
        if short <= 0:
            return 0.0
        chunks = math.ceil(short / self._chunk - 1e-9)  # audio comes a chunk at a time
        return min(chunks * self._chunk, remaining) / rate

    def _release_when_ready(self) -> None:
        player = self.player
        if player is None or not player.held or self.error is not None or self._stopped:
            return
        if player.buffered > 0 and player.buffered >= self.lead():
            try:
                player.release()
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
            try:
                self.player.finish()  # opens the output if the take ended before its lead
            except NoAudioDeviceError as exc:
                self.error = exc

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
        if self.error is not None:  # the output could not open at the take's end
            raise self.error
        self.player.wait()
        return True


def play_blocking(audio: np.ndarray, sample_rate: int) -> None:
    player = Player()
    player.play(audio, sample_rate)
    while player.playing:
        time.sleep(0.05)
    player.stop()
