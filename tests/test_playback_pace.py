"""Live play of a take made slower than it plays: playback waits for a lead instead of falling
silent before every chunk. The output device is left out (`_open` records the start instead):
what is tested is when the player starts and what it plays, against a simulated generation."""

from __future__ import annotations

import numpy as np
import pytest

from samplemind_gen.playback import (
    PACE_SAFETY,
    PACE_SLOWDOWN,
    GenerationPace,
    LivePlayback,
    StreamPlayer,
    counted_pace,
    lead_needed,
)
from samplemind_gen.request import Progress

RATE = 1000  # samples a second: small arrays, same arithmetic
FRAME_RATE = 50  # MusicGen's code frames a second
# As `ChunkedAudioDecoder` streams: 12 frames of audio once 18 are made (its look-ahead and halo
# held back), then 50 more at a time, the rest at the end.
FIRST_CHUNK, CHUNK, HELD_BACK = 18, 50, 6


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def no_device(monkeypatch):
    """StreamPlayer's output stream replaced by a marker: the test pulls audio with `_fill`."""

    class Stream:
        def stop(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr(StreamPlayer, "_open", lambda self: setattr(self, "_stream", Stream()))


def progress(step: int, seconds: float) -> Progress:
    audio = max(0, step - 3) / FRAME_RATE
    return Progress("generating", step, 0, min(audio, seconds), seconds, 0.0)


def simulate(seconds: float, pace, *, live: bool = True) -> dict:
    """A take of `seconds` whose step k (one frame) lands at `pace(k)` seconds of wall time,
    streamed in chunks as `ChunkedAudioDecoder` makes them, played in 10 ms blocks in real
    time. Returns when sound started, the gaps after it, and the wall time at the end."""
    clock = Clock()
    playback = LivePlayback(lambda: RATE, clock=clock)
    steps = int(seconds * FRAME_RATE) + 3
    block = np.zeros((RATE // 100, 1), dtype=np.float32)
    started = None
    gaps = 0
    sent = 0  # frames already sent as audio
    step = 0
    played_blocks = []
    predicted = None  # starts_in() when the first chunk was queued: (at, seconds)
    finished = False
    t = 0.0
    while True:
        # the generation: every step that has landed by now
        while step < steps and pace(step) <= t:
            step += 1
            clock.now = pace(step - 1)
            frames = max(0, step - 3)
            playback.on_progress(progress(step, seconds))
            last = frames >= seconds * FRAME_RATE
            due = FIRST_CHUNK if sent == 0 else sent + HELD_BACK + CHUNK
            if frames >= due or (last and frames > sent):
                audio_frames = frames if last else frames - HELD_BACK
                start = sent * RATE // FRAME_RATE
                end = audio_frames * RATE // FRAME_RATE
                chunk = np.full((1, 1, end - start), 1.0, dtype=np.float32)
                (playback.on_audio if live else _feed(playback))(chunk, start)
                if predicted is None and live:
                    predicted = (clock.now, playback.starts_in())
                sent = audio_frames
        if step >= steps and not finished:
            playback.done_feeding()
            finished = True
        clock.now = t
        player = playback.player
        if player is not None and player._stream is not None:
            if started is None:
                started = t
            before = player.underruns
            done = player._fill(block)
            played_blocks.append(float(block.mean()))
            gaps += player.underruns - before
            if done:
                break
        t = round(t + 0.01, 6)
    return {
        "started": started,
        "gaps": gaps,
        "ended": t,
        "played": sum(played_blocks) / 100,
        "predicted": predicted,
    }


def _feed(playback: LivePlayback):
    """The player as it was before pacing: every chunk played as soon as it lands."""

    def on_audio(chunk, start):
        if playback.player is None:
            playback.player = StreamPlayer(RATE, 1)
        playback.player.queue(chunk[0])
        playback.player.release()

    return on_audio


def test_no_lead_when_nothing_remains_or_the_pace_is_unknown():
    assert lead_needed(6.0, None, 1.0) == 0.0
    assert lead_needed(0.0, 0.2, 1.0) == 0.0


def test_the_pace_is_planned_with_a_margin_and_the_slowdown_of_what_remains():
    assert counted_pace(1.0, 0.0) == pytest.approx(PACE_SAFETY)
    assert counted_pace(1.0, 30.0) == pytest.approx(PACE_SAFETY / (1 + 30 * PACE_SLOWDOWN))
    assert counted_pace(1.0, 30.0) < counted_pace(1.0, 8.0) < counted_pace(1.0, 1.0)


def test_made_faster_than_it_plays_the_lead_is_one_chunks_making():
    fast = 2.0 / counted_pace(1.0, 6.0)  # counted: 2 s of audio a second
    assert lead_needed(6.0, fast, 1.0) == pytest.approx(0.5)
    short = 2.0 / counted_pace(1.0, 0.25)
    assert lead_needed(0.25, short, 1.0) == pytest.approx(0.125)  # a short last one


def test_made_slower_the_lead_covers_what_playback_would_overtake():
    # 8 s to come at half speed counted: playing from now outruns it by 8 / 0.5 - 8 s
    half = 0.5 / counted_pace(1.0, 8.0)
    assert lead_needed(8.0, half, 1.0) == pytest.approx(8.0 * (1 / 0.5 - 1) + 1)
    # the two cases meet at real time
    real_time = 1 / counted_pace(1.0, 8.0)
    assert lead_needed(8.0, real_time, 1.0) == pytest.approx(1.0)
    assert lead_needed(8.0, 0.999999 * real_time, 1.0) == pytest.approx(1.0, abs=1e-4)


def test_pace_is_audio_seconds_per_second_from_the_first_complete_frame():
    clock = Clock()
    pace = GenerationPace(clock)
    pace.observe(Progress("encoding"))  # not a decode step: ignored
    for step in range(40):
        clock.now = 5.0 + step * 0.025  # a step (1/50 s of audio) every 25 ms: 0.8x real time
        pace.observe(progress(step, 8.0))
    assert pace.total == 8.0
    assert pace.rate == pytest.approx(0.8)  # the first steps make no frame: not counted
    fresh = GenerationPace(clock)
    fresh.observe(progress(10, 8.0))
    assert fresh.rate is None  # one report says nothing about a pace


@pytest.mark.usefixtures("no_device")
@pytest.mark.parametrize("rtf", [0.25, 0.6])
def test_a_take_made_faster_than_it_plays_starts_once_a_full_chunk_is_covered(rtf):
    step = rtf / FRAME_RATE
    result = simulate(8.0, lambda k: 0.3 + k * step)
    first_chunk_at = 0.3 + (FIRST_CHUNK + 2) * step  # step k (from 0) makes frame k - 2
    second_chunk_at = 0.3 + (FIRST_CHUNK + CHUNK + 2) * step
    assert result["gaps"] == 0
    assert result["played"] == pytest.approx(8.0, abs=0.01)
    if rtf <= 0.24 * counted_pace(
        1.0, 7.76
    ):  # the first chunk (0.24 s) lasts while the next is made
        assert result["started"] == pytest.approx(first_chunk_at, abs=0.011)
    else:
        assert result["started"] == pytest.approx(second_chunk_at, abs=0.011)
    # played as it came, the first chunk ran out before the second was made
    before = simulate(8.0, lambda k: 0.3 + k * step, live=False)
    assert before["started"] == pytest.approx(first_chunk_at, abs=0.011)
    assert before["gaps"] == (0 if rtf <= 0.24 else 1)


@pytest.mark.usefixtures("no_device")
@pytest.mark.parametrize("rtf", [1.22, 2.0, 4.0])
def test_a_take_made_slower_than_it_plays_waits_once_then_plays_without_gaps(rtf):
    step = rtf / FRAME_RATE
    result = simulate(8.0, lambda k: 0.3 + k * step)
    made_at = 0.3 + (8.0 * FRAME_RATE + 3) * step
    assert result["gaps"] == 0
    assert result["played"] == pytest.approx(8.0, abs=0.01)
    assert result["started"] < made_at  # it still plays before the take is done
    # and ends soon after the take is made: the lead is not much longer than it needs to be
    assert result["ended"] - made_at < 2.0 + 8.0 * rtf * (1 / counted_pace(1.0, 8.0) - 1)
    before = simulate(8.0, lambda k: 0.3 + k * step, live=False)
    assert before["gaps"] > 0 and before["played"] == pytest.approx(8.0, abs=0.01)


@pytest.mark.usefixtures("no_device")
def test_a_generation_that_slows_down_midway_pauses_once_and_waits_for_a_new_lead():
    def pace(k: int) -> float:  # real time x 0.5 for 3 s, then 3x slower than real time
        return 0.3 + k * 0.01 if k < 150 else 0.3 + 1.5 + (k - 150) * 0.06

    result = simulate(8.0, pace)
    assert result["played"] == pytest.approx(8.0, abs=0.01)
    # it ran dry once (a stretch of 10 ms blocks), then held until the lead was there
    assert 1 <= result["gaps"] <= 3


@pytest.mark.usefixtures("no_device")
def test_a_take_that_ends_before_its_lead_plays_out_when_generation_is_done():
    playback = LivePlayback(lambda: RATE, clock=Clock())
    clock = playback.pace._clock
    for step in range(30):
        clock.now = step * 0.1  # 5x slower than real time
        playback.on_progress(progress(step, 8.0))
    playback.on_audio(np.ones((1, 1, 500), dtype=np.float32), 0)
    assert playback.waiting and playback.player is not None and playback.player._stream is None
    playback.done_feeding()
    assert playback.player._stream is not None and not playback.waiting


@pytest.mark.usefixtures("no_device")
def test_stream_player_plays_chunks_back_to_back_and_holds_after_running_dry():
    player = StreamPlayer(32000, 2)
    a = np.arange(10, dtype=np.float32).reshape(2, 5)
    player.queue(a)
    player.queue(a + 100)
    out = np.full((4, 2), -1.0, dtype=np.float32)
    assert player._fill(out) is False and (out == 0).all()  # queued, not yet released
    assert player.held and player.buffered == pytest.approx(10 / 32000)
    player.release()
    assert player._fill(out) is False
    np.testing.assert_array_equal(out, a.T[:4])
    out = np.full((8, 2), -1.0, dtype=np.float32)
    assert player._fill(out) is False  # more may come: the gap is silence, not the end
    np.testing.assert_array_equal(out[:6], np.concatenate([a.T[4:], (a + 100).T]))
    assert (out[6:] == 0).all() and player.underruns == 1 and player.held
    player.queue(a)
    assert player._fill(np.zeros((4, 2), dtype=np.float32)) is False and player.position == (
        pytest.approx(10 / 32000)
    )  # held until released again
    player.finish()  # the end: what is queued plays out, held or not
    assert player._fill(np.zeros((4, 2), dtype=np.float32)) is False
    assert player._fill(np.zeros((4, 2), dtype=np.float32)) is True
    assert player.position == pytest.approx(15 / 32000)
    player.stop()  # what the output's finished callback does on a device
    assert player.wait(timeout=1)


@pytest.mark.usefixtures("no_device")
@pytest.mark.parametrize("rtf", [0.6, 1.22, 2.0, 4.0])
def test_starts_in_tells_when_waiting_playback_will_start(rtf):
    step = rtf / FRAME_RATE
    result = simulate(8.0, lambda k: 0.3 + k * step)
    at, predicted = result["predicted"]
    assert predicted is not None and predicted > 0
    assert at + predicted == pytest.approx(result["started"], abs=0.05)  # at a steady pace


def test_starts_in_is_none_unless_waiting_on_a_known_pace():
    playback = LivePlayback(lambda: RATE, clock=Clock())
    assert playback.starts_in() is None
    playback.on_audio(np.ones((1, 1, 500), dtype=np.float32), 0)  # no progress seen: no pace
    assert playback.starts_in() is None


def test_status_says_when_sound_comes_only_while_waiting():
    clock = Clock()
    playback = LivePlayback(lambda: RATE, clock=clock)
    assert playback.status() == ""
    for step in range(4, 40):  # 2x slower than real time
        clock.now = step * 0.04
        playback.on_progress(progress(step, 8.0))
    assert playback.status() == ""  # nothing queued yet: not waiting
    playback.on_audio(np.ones((1, 1, 240), dtype=np.float32), 0)
    expected = playback.starts_in()
    assert expected is not None
    assert playback.status() == f"sound in ~{int(np.ceil(expected))} s"


def test_the_cli_progress_line_carries_live_plays_wait():
    import io

    from samplemind_gen.cli.progress import ProgressLine

    out = io.StringIO()
    line = ProgressLine(out, extra=lambda: "sound in ~3 s")
    line(Progress("generating", 10, 403, 0.14, 8.0, 0.5))
    assert "step 10/" in out.getvalue() and out.getvalue().rstrip().endswith("· sound in ~3 s")
