"""The TUI's pure parts, without a model: peaks and drawing, settings, memory fit, the failure
policy, progress throttling, help and palette generated from the bindings."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from samplemind_gen.catalog import CATALOG
from samplemind_gen.errors import (
    BadInputError,
    DownloadCancelled,
    GenerationCancelled,
    ModelNotCachedError,
    NoAudioDeviceError,
)
from samplemind_gen.memory import FreeMemory, fits, recommend
from samplemind_gen.request import Progress
from samplemind_gen.settings import Settings
from samplemind_gen.testing.takes import tone_take
from samplemind_gen.tui.app import SampleMindApp, failure_message, is_toast
from samplemind_gen.tui.messages import TakeReady, Throttle
from samplemind_gen.tui.widgets.key_bar import KeyBar
from samplemind_gen.tui.widgets.waveform import Peaks, Waveform, compute_peaks, ruler_text

GB = 1024**3


# ---------------------------------------------------------------- waveform
def test_peaks_are_per_channel_absolute_maxima_of_equal_buckets():
    audio = np.zeros((2, 1000), dtype=np.float32)
    audio[0, 10] = -0.9
    audio[1, 990] = 0.5
    peaks = compute_peaks(audio, 1000, buckets=10)
    assert len(peaks.channels) == 2 and all(len(c) == 10 for c in peaks.channels)
    assert peaks.channels[0][0] == pytest.approx(0.9) and max(peaks.channels[0][1:]) == 0
    assert peaks.channels[1][9] == pytest.approx(0.5)
    assert peaks.duration == pytest.approx(1.0)


def test_peaks_of_tiny_and_empty_audio():
    assert compute_peaks(np.ones((1, 3), np.float32) * 2, 8000).channels == ((1.0, 1.0, 1.0),)
    assert compute_peaks(np.zeros((1, 0), np.float32), 8000).duration == 0


def test_ruler_labels_fit_and_start_at_zero():
    text = ruler_text(2.0, 80)
    assert len(text) == 80 and text.startswith("▏0s")
    assert "▏1s" in text
    labels = text.split("▏")[1:]
    assert all(label.endswith("  ") for label in labels[:-1])  # never run into each other
    assert ruler_text(90.0, 60).count("▏") >= 2  # minute:second labels
    assert "1:00" in ruler_text(90.0, 60)


async def test_waveform_draws_one_lane_per_channel_with_a_ruler_and_a_playhead():
    from textual.app import App, ComposeResult

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield Waveform()

    take = tone_take(channels=2, duration=1.0, analyze=False)
    async with Host().run_test(size=(60, 13)) as pilot:
        waveform = pilot.app.query_one(Waveform)
        assert "no take yet" in "".join(waveform.render_line(6).text for _ in [0])
        waveform.peaks = compute_peaks(take.audio, take.sample_rate)
        await pilot.pause()
        rows = [waveform.render_line(y).text for y in range(13)]
        assert rows[-1].startswith("▏0s")  # the time ruler
        lane = 12 // 2  # two channels share the 12 rows above the ruler
        assert rows[lane // 2 - 1][0] == "█" and rows[lane + lane // 2 - 1][0] == "█"
        assert all(len(r) == 60 for r in rows)
        waveform.playhead = 0.5
        await pilot.pause()
        strip = waveform.render_line(2)
        head = [seg for seg in strip if seg.style and seg.style.bgcolor is not None]
        assert head, "the playhead column has its own background"


def test_peaks_are_plain_python_so_drawing_needs_no_numpy():
    peaks = compute_peaks(
        np.random.default_rng(0).standard_normal((1, 5000)).astype(np.float32), 100
    )
    assert isinstance(peaks, Peaks) and isinstance(peaks.channels[0][0], float)


# ---------------------------------------------------------------- settings
def test_settings_round_trip_and_atomic_write(tmp_path: Path):
    path = tmp_path / "cfg" / "settings.toml"
    s = Settings(model="musicgen-small", duration=2.5, top_p=0.9, seed=7, seed_locked=True)
    s.remember_prompt("a")
    s.remember_prompt("b")
    s.remember_prompt("a")
    s.save(path)
    loaded = Settings.load(path)
    assert loaded == s and loaded.prompt_history == ["b", "a"]
    assert not [p for p in path.parent.iterdir() if p.name != "settings.toml"]  # no temp left


def test_settings_survive_a_bad_file(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text("duration = 'long'\ntop_k = 40\nseed = true\nprompt_history = [1, 2]\n")
    s = Settings.load(path)
    assert s.duration == 8.0 and s.top_k == 40 and s.seed is None and s.prompt_history == []
    path.write_text("this is [not toml")
    assert Settings.load(path) == Settings()
    assert Settings.load(tmp_path / "missing.toml") == Settings()


def test_settings_default_path_is_under_the_config_folder(isolated_home: Path):
    written = Settings(duration=1.0).save()
    assert written == isolated_home / "config" / "settings.toml"
    assert Settings.load().duration == 1.0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_settings_save_fails_cleanly_on_a_read_only_folder(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(OSError):
        Settings().save(folder / "settings.toml")


# ------------------------------------------------------------------ memory
def test_recommendation_on_a_cpu_is_musicgen_small():
    small = CATALOG["musicgen-small"]
    assert recommend(CATALOG.values(), FreeMemory(ram=64 * GB)) == small
    assert recommend(CATALOG.values(), FreeMemory(ram=GB // 2)) is None
    assert fits(CATALOG["musicgen-large"], FreeMemory(ram=4 * GB)) is False
    assert fits(small, FreeMemory(ram=None)) is None


def test_recommendation_on_a_gpu_is_the_largest_musicgen_that_fits():
    assert (
        recommend(CATALOG.values(), FreeMemory(ram=8 * GB, vram=40 * GB)).name == "musicgen-large"
    )
    assert (
        recommend(CATALOG.values(), FreeMemory(ram=8 * GB, vram=5 * GB)).name == "musicgen-medium"
    )


# ---------------------------------------------------------- failure policy
def test_only_cancel_no_device_and_bad_fields_are_toasts():
    assert is_toast(GenerationCancelled()) and is_toast(DownloadCancelled())
    assert is_toast(NoAudioDeviceError("x")) and is_toast(BadInputError("the prompt is empty"))
    assert not is_toast(ModelNotCachedError("not downloaded"))
    assert not is_toast(RuntimeError("boom")) and not is_toast(MemoryError())


def test_failure_messages_say_what_to_do():
    assert failure_message(ModelNotCachedError("x is not downloaded")) == "x is not downloaded"
    assert "smaller model" in failure_message(RuntimeError("CUDA out of memory. Tried ..."))
    assert failure_message(ValueError("bad\nmore")) == "unexpected ValueError: bad"


# ---------------------------------------------------------------- throttle
def test_throttle_keeps_stage_changes_and_the_last_step():
    sent: list[Progress] = []
    throttle = Throttle(sent.append, interval=60)
    throttle(Progress(stage="encoding"))
    for step in range(1, 101):
        throttle(Progress(stage="generating", step=step, total=100))
    throttle(Progress(stage="decoding"))
    assert [p.stage for p in sent] == ["encoding", "generating", "generating", "decoding"]
    assert sent[1].step == 1 and sent[2].step == 100


# ----------------------------------------------------- help and palette
async def test_help_and_palette_are_generated_from_the_bindings():
    from samplemind_gen.tui.commands import screen_commands
    from samplemind_gen.tui.screens.help import HelpScreen, help_rows

    app = SampleMindApp(model="musicgen-small", settings=Settings())
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        screen = app.screen
        rows = help_rows(app, screen)
        described = {what for _where, _key, what in rows}
        for what in (
            "Generate",
            "Roll again",
            "4 takes",
            "Cancel",
            "Export",
            "Model",
            "Play",
            "Next take",
            "Earlier prompt",
            "Help",
            "Quit",
            "Command palette",
        ):
            assert what in described, what
        assert ("Anywhere", "f1", "Help") in rows
        names = {name for name, _key, _action in screen_commands(screen)}
        assert {"Generate", "Roll again", "4 takes", "Model"} <= names
        assert "Export" not in names and "Cancel" not in names  # nothing to export or cancel yet
        bar = screen.query_one(KeyBar)
        assert "Generate" in str(bar.render()) and "Export" not in str(bar.render())
        take = tone_take()
        screen.post_message(TakeReady([take], {take.id: compute_peaks(take.audio, 32000)}))
        await pilot.pause()
        names = {name for name, _key, _action in screen_commands(screen)}
        assert {"Export", "Play"} <= names
        assert "^e Export" in str(bar.render()) and "Cancel" not in str(bar.render())
        screen.generating = True
        assert "esc Cancel" in str(bar.render())
        screen.generating = False
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


class ClockPlayer:
    """Plays nothing, but reports a position that advances with the wall clock, like a sound
    card does (the ALSA null sink of the playback test swallows a take at once)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.duration = 0.0
        self.plays: list[int] = []

    def play(self, audio, sample_rate, *, loop=False):  # type: ignore[no-untyped-def]
        import time

        self.started, self.duration = time.monotonic(), audio.shape[1] / sample_rate
        self.plays.append(id(audio))

    @property
    def position(self) -> float:
        import time

        return 0.0 if self.started is None else min(self.duration, time.monotonic() - self.started)

    @property
    def playing(self) -> bool:
        return self.started is not None and self.position < self.duration

    def stop(self) -> None:
        self.started = None


async def test_playhead_follows_playback_and_moving_while_playing_plays_the_next_take():
    from samplemind_gen.tui.widgets.take_list import TakeList

    app = SampleMindApp(model="musicgen-small", settings=Settings())
    app.player = ClockPlayer()  # type: ignore[assignment]
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        takes = [tone_take(seed=1, duration=2.0), tone_take(seed=2, duration=1.0)]
        app.screen.post_message(
            TakeReady(takes, {t.id: compute_peaks(t.audio, 32000) for t in takes})
        )
        await pilot.pause()
        waveform = app.screen.query_one(Waveform)
        seen: list[float] = []
        app.screen.watch(
            waveform, "playhead", lambda v: v is not None and seen.append(v), init=False
        )
        app.screen.query_one(TakeList).focus()
        await pilot.press("space")
        while len(seen) < 3:
            await pilot.pause(0.02)
        assert app.player.playing and 0 < waveform.playhead < 2.0
        await pilot.press("j")  # A/B: the next take starts playing at once
        assert len(app.player.plays) == 2 and app.player.plays[1] == id(takes[1].audio)
        deadline = time.monotonic() + 10
        while app.player.playing and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        assert not app.player.playing and waveform.playhead is None
        restarts = [i for i in range(1, len(seen)) if seen[i] < seen[i - 1]]
        assert len(seen) >= 6 and len(restarts) == 1  # rose, restarted with take 2, rose again
        await pilot.press("space")
        await pilot.press("space")  # stop
        assert not app.player.playing and waveform.playhead is None
