"""Snapshots of every screen at 120x40 (pytest-textual-snapshot; `--snapshot-update` rewrites
them). For determinism the app starts on a catalog model that is not downloaded (so nothing
loads) and its takes are tones made by `samplemind_gen.testing.takes`, not a model."""

from __future__ import annotations

import pytest

from samplemind_gen.errors import ModelNotCachedError
from samplemind_gen.memory import FreeMemory
from samplemind_gen.settings import Settings
from samplemind_gen.testing.takes import tone_take
from samplemind_gen.tui.app import SampleMindApp
from samplemind_gen.tui.messages import TakeReady
from samplemind_gen.tui.widgets.waveform import compute_peaks

SIZE = (120, 40)
GB = 1024**3


def make_app(model: str = "musicgen-small") -> SampleMindApp:
    settings = Settings(duration=4.0, export_folder="/music/samplemind", prompt_history=["lofi"])
    return SampleMindApp(model=model, settings=settings)


async def with_takes(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.app.workers.wait_for_complete()
    takes = [
        tone_take("dusty lofi drums, 85 bpm", seed=11, duration=2.0, channels=2),
        tone_take("warm analog pad", seed=22, duration=2.0, frequency=330.0),
    ]
    peaks = {t.id: compute_peaks(t.audio, t.sample_rate) for t in takes}
    pilot.app.screen.post_message(TakeReady(takes, peaks))
    await pilot.pause()
    pilot.app.screen.query_one("#takes").move_cursor(row=0)
    await pilot.pause()


async def idle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch):  # type: ignore[no-untyped-def]
    from textual.widgets import Input

    monkeypatch.setattr(Input, "cursor_blink", False)


def test_generate_screen_empty(snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=idle)


def test_generate_screen_with_takes(snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=with_takes)


def test_generate_screen_for_a_diffusion_model(snap_compare):
    assert snap_compare(make_app("audioldm-s-full-v2"), terminal_size=SIZE, run_before=idle)


def test_export_dialog(snap_compare):
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await with_takes(pilot)
        await pilot.press("ctrl+e")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_model_picker(snap_compare):
    from samplemind_gen.tui.screens.model_picker import ModelPickerScreen

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await idle(pilot)
        pilot.app.push_screen(ModelPickerScreen("musicgen-small", FreeMemory(ram=6 * GB)))
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare):
    assert snap_compare(make_app(), press=["f1"], terminal_size=SIZE, run_before=idle)


def test_error_dialog(snap_compare):
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await idle(pilot)
        error = ModelNotCachedError(
            "musicgen-small is not downloaded and the Hub is offline; run "
            "`samplemind-gen models download musicgen-small` on a connected machine"
        )
        pilot.app.show_failure(error, "generation failed")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
