"""The library: round trips, filters, trash, the result cache and crash safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from library_helpers import make_take, stored

from samplemind_gen.errors import BadInputError
from samplemind_gen.library import Library, TakeFilter, parse_key, recipe_identity


def test_round_trip_keeps_recipe_path_hash_and_features(tmp_path):
    with Library() as lib:
        take = make_take()
        take_id = stored(lib, tmp_path, take, tags=["Drums", "lofi"])
        entry = lib.get(take_id)
        assert entry.recipe == take.recipe
        assert entry.path == take.path.resolve() and entry.path.is_file()
        assert entry.audio_sha256 and entry.file_is_intact()
        assert entry.features["tempo_bpm"] == 90.0 and entry.key_label == "A minor"
        assert entry.tags == ("drums", "lofi")
        assert entry.identity == recipe_identity(take.recipe)
        assert lib.get(take_id[:5]).id == take_id  # unique prefixes work
        loaded = entry.load()
        assert loaded.audio.shape == take.audio.shape
        np.testing.assert_allclose(loaded.audio, take.audio, atol=1e-4)
        summary = entry.summary()
        json.dumps(summary)
        assert summary["rating"] is None and summary["favourite"] is False
        # Adding the same take again is a no-op, not a duplicate.
        lib.add(take)
        assert lib.count() == 1
    # The database is in WAL mode in the data folder.
    db = sqlite3.connect(lib.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert lib.path.parent.name == "data"


def test_filters_text_model_key_bpm_lufs_rating_tags(tmp_path):
    with Library() as lib:
        a = stored(lib, tmp_path, make_take("dusty lofi drums", seed=1, bpm=85, lufs=-16))
        b = stored(
            lib,
            tmp_path,
            make_take("dark techno kick", seed=2, bpm=130, key="F#", mode="minor", lufs=-9),
            tags=["kick"],
        )
        c = stored(
            lib,
            tmp_path,
            make_take(
                "warm ambient pad",
                seed=3,
                model="cvssp/audioldm2",
                bpm=None,
                key="C",
                mode="major",
                lufs=-20,
            ),
        )
        lib.rate(b, 5)
        lib.rate(a, 3)
        lib.set_favourite(c)

        def ids(**kw) -> set[str]:  # type: ignore[no-untyped-def]
            return {e.id for e in lib.find(**kw)}

        assert ids() == {a, b, c}
        assert ids(text="techno") == {b}
        assert ids(text="KICK dark") == {b}
        assert ids(text="kick") == {b}  # tags match text too
        assert ids(model="audioldm") == {c}
        assert ids(key="F# minor") == {b} and ids(key="Gbm") == {b} and ids(key="C") == {c}
        assert ids(key="A minor") == {a}
        assert ids(bpm_min=80, bpm_max=100) == {a}
        assert ids(bpm_min=120) == {b}
        assert ids(lufs_min=-17, lufs_max=-8) == {a, b}
        assert ids(rating_min=4) == {b}
        assert ids(favourite=True) == {c}
        assert ids(tags=("kick",)) == {b}
        assert [e.id for e in lib.find(order="rating")][:2] == [b, a]
        assert len(lib.find(limit=2)) == 2
        assert lib.count(TakeFilter(text="pad")) == 1
        lib.tag(b, add=["909"], remove=["kick"])
        assert lib.get(b).tags == ("909",)
        lib.rate(b, None)
        assert lib.get(b).rating is None
        with pytest.raises(BadInputError):
            lib.rate(a, 6)
        with pytest.raises(BadInputError):
            lib.get("nope")


def test_parse_key_spellings():
    assert parse_key("Am") == ("A", "minor")
    assert parse_key("bb major") == ("A#", "major")
    assert parse_key("F#") == ("F#", None)
    assert parse_key("Cb") == ("B", None)
    with pytest.raises(BadInputError):
        parse_key("H minor")


def test_delete_moves_file_and_sidecar_to_trash_and_restore_brings_them_back(tmp_path):
    with Library() as lib:
        take_id = stored(lib, tmp_path, make_take())
        entry = lib.get(take_id)
        original = entry.path
        sidecar = original.with_name(original.name + ".json")
        assert sidecar.is_file()
        gone = lib.delete(take_id)
        assert gone.deleted and not original.exists() and not sidecar.exists()
        assert gone.trash_path.is_file() and gone.trash_path.is_relative_to(lib.trash_dir)
        assert lib.find() == [] and [e.id for e in lib.find(deleted=True)] == [take_id]
        back = lib.restore(take_id)
        assert not back.deleted and original.is_file() and sidecar.is_file()
        assert back.file_is_intact()
        # Deleting, then emptying the trash forgets it for good.
        lib.delete(take_id)
        assert lib.empty_trash() == 1
        assert lib.count(deleted=None) == 0


def test_restore_does_not_overwrite_a_new_file_with_the_same_name(tmp_path):
    with Library() as lib:
        take_id = stored(lib, tmp_path, make_take())
        original = lib.get(take_id).path
        lib.delete(take_id)
        original.write_bytes(b"something new")
        back = lib.restore(take_id)
        assert back.path != original and back.path.is_file()
        assert original.read_bytes() == b"something new"


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "lib.sqlite3"
    Library(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    from samplemind_gen.library import LibraryError

    with pytest.raises(LibraryError, match="newer"):
        Library(path)


WRITER = r"""
import sys, numpy as np
from samplemind_gen.library import Library
from samplemind_gen.recipe import Recipe
from samplemind_gen.take import Take
lib = Library(sys.argv[1])
i = 0
while True:
    recipe = Recipe(prompt=f"take {i}", model="m", revision=None, family="musicgen", seed=i,
                    params={"duration": 1.0}, device="cpu", dtype="float32", sample_rate=8000,
                    channels=1, duration=1.0)
    take = Take(audio=np.zeros((1, 8000), np.float32), sample_rate=8000, recipe=recipe)
    lib.add(take, tags=["a", "b", "c"])
    print(take.id, flush=True)
    i += 1
"""


def test_killed_mid_write_the_database_opens_and_holds_every_committed_take(tmp_path):
    path = tmp_path / "crash.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    committed: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(committed) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of its next write
    proc.wait()
    committed += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    assert len(committed) >= 40
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Library(path) as lib:
        ids = {e.id for e in lib.find()}
        assert set(committed) <= ids
        # Every recorded take is whole: its tags were written in the same transaction.
        for entry in lib.find():
            assert entry.tags == ("a", "b", "c")
