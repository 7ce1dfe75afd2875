"""The library (F3) and queue (F4) screens, driven by keys against a real library database and
the tiny MusicGen checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from library_helpers import make_take, stored
from textual.widgets import DataTable, Input

from samplemind_gen.batch import BatchItemSpec, BatchQueue
from samplemind_gen.library import Library
from samplemind_gen.request import GenerationRequest
from samplemind_gen.service import AudioEngineWithGeneration
from samplemind_gen.settings import Settings
from samplemind_gen.tui.app import SampleMindApp
from samplemind_gen.tui.screens.library import LibraryScreen
from samplemind_gen.tui.screens.queue import QueueScreen
from samplemind_gen.tui.widgets.waveform import Waveform

SIZE = (140, 40)


@pytest.fixture(scope="module")
def service() -> AudioEngineWithGeneration:
    return AudioEngineWithGeneration(analyze=False)


@pytest.fixture
def app(tiny_musicgen: Path, service: AudioEngineWithGeneration) -> SampleMindApp:
    return SampleMindApp(model=str(tiny_musicgen), service=service, settings=Settings(duration=0.3))


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    for screen in pilot.app.screen_stack:
        await screen.workers.wait_for_complete()
    await pilot.pause()


def fill(folder: Path) -> list[str]:
    with Library() as lib:
        return [
            stored(lib, folder, make_take("dusty lofi drums", seed=1, bpm=88)),
            stored(lib, folder, make_take("dark techno kick", seed=2, bpm=130, key="F#")),
            stored(
                lib, folder, make_take("warm ambient pad", seed=3, bpm=None, key="C", mode="major")
            ),
        ]


async def test_library_browse_search_rate_delete_undo(app, tmp_path):
    a, b, c = fill(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, LibraryScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == 3 and screen.selected.id == c  # newest first
        await settle(pilot)
        assert screen.preview is not None and screen.query_one(Waveform).peaks is not None
        # Rate and favourite the selected take with single keys.
        await pilot.press("4")
        await pilot.press("f")
        with Library() as lib:
            assert lib.get(c).rating == 4 and lib.get(c).favourite
        # Search with filters.
        await pilot.press("ctrl+f")
        screen.query_one("#library-query", Input).value = ""
        await pilot.press(*"bpm:120..140")
        await pilot.press("enter")
        await settle(pilot)
        assert [e.id for e in screen.entries] == [b]
        await pilot.press("ctrl+f")
        screen.query_one("#library-query", Input).value = "stars:4 fav"
        await pilot.press("enter")
        await settle(pilot)
        assert [e.id for e in screen.entries] == [c]
        await pilot.press("ctrl+f")
        screen.query_one("#library-query", Input).value = ""
        await pilot.press("enter")
        await settle(pilot)
        # Delete moves the file to the trash; u brings it back.
        table.move_cursor(row=[e.id for e in screen.entries].index(a))
        await pilot.press("delete")
        await settle(pilot)
        assert a not in [e.id for e in screen.entries]
        with Library() as lib:
            assert lib.get(a).deleted and not Path(lib.get(a).path).exists()
        await pilot.press("u")
        await settle(pilot)
        assert a in [e.id for e in screen.entries]
        with Library() as lib:
            assert not lib.get(a).deleted and Path(lib.get(a).path).is_file()
        await pilot.press("f3")
        await pilot.pause()
        assert not isinstance(app.screen, LibraryScreen)


async def test_library_reroll_and_regenerate_exactly(app, tiny_musicgen, tmp_path):
    from samplemind_gen.cli.main import main

    assert (
        main(
            [
                "generate",
                "lofi drums",
                "--model",
                str(tiny_musicgen),
                "--duration",
                "0.3",
                "--seed",
                "5",
                "--dtype",
                "float32",
                "--output",
                str(tmp_path),
            ]
        )
        == 0
    )
    with Library() as lib:
        (original,) = lib.find()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        await pilot.press("R")  # same seed
        await settle(pilot)
        await pilot.press("r")  # new seed
        await settle(pilot)
        assert not screen.generating
    with Library() as lib:
        takes = lib.find(order="oldest")
    assert len(takes) == 3
    exact, reroll = takes[1], takes[2]
    assert exact.seed == 5 and exact.recipe.params == original.recipe.params
    assert exact.path.parent == original.path.parent
    assert reroll.seed != 5 and reroll.prompt == original.prompt


async def test_library_regenerate_warns_about_other_kernels(app, tiny_musicgen, tmp_path):
    """A take made on another CPU's kernels may not come out bit for bit: the app says so."""
    import json
    import sqlite3

    from samplemind_gen import paths
    from samplemind_gen.cli.main import main

    argv = ["generate", "lofi drums", "--model", str(tiny_musicgen), "--duration", "0.3"]
    assert main([*argv, "--seed", "5", "--dtype", "float32", "--output", str(tmp_path)]) == 0
    with sqlite3.connect(paths.library_db()) as db:
        take_id, text = db.execute("SELECT id, recipe_json FROM takes").fetchone()
        recipe = dict(json.loads(text), kernels="samplemind avx2")
        db.execute("UPDATE takes SET recipe_json = ? WHERE id = ?", (json.dumps(recipe), take_id))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("R")  # same seed
        await settle(pilot)
        toasts = [str(n.message) for n in app._notifications]
    assert any("made on samplemind avx2 kernels" in t for t in toasts), toasts


async def test_queue_add_reorder_cancel_and_run(app, tiny_musicgen, tmp_path):
    with Library() as lib:
        queue = BatchQueue(lib)
        specs = [BatchItemSpec(GenerationRequest(p, duration=0.3)) for p in ("one", "two", "three")]
        batch_id = queue.create(specs, default_model=str(tiny_musicgen), out_dir=tmp_path / "q")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, QueueScreen) and screen.batch_id == batch_id
        assert [i.request.prompt for i in screen.items] == ["one", "two", "three"]
        # Add a prompt, move it up, cancel "two".
        await pilot.press("a")
        await pilot.press(*"four")
        await pilot.press("enter")
        await pilot.pause()
        table = screen.query_one(DataTable)
        table.focus()
        table.move_cursor(row=3)
        await pilot.press("[")
        await pilot.pause()
        assert [i.request.prompt for i in screen.items] == ["one", "two", "four", "three"]
        table.move_cursor(row=1)
        await pilot.press("c")
        await pilot.pause()
        assert screen.items[1].status == "cancelled"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not screen.running
        statuses = {i.request.prompt: i.status for i in screen.items}
        assert statuses == {"one": "done", "two": "cancelled", "four": "done", "three": "done"}
    with Library() as lib:
        assert lib.count() == 3
        assert {t.prompt for t in lib.find()} == {"one", "four", "three"}
