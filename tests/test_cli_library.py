"""`samplemind-gen library ...` and sample packs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import soundfile as sf
from library_helpers import make_take, stored

from samplemind_gen.cli.main import main
from samplemind_gen.library import Library


def run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fill(tmp_path: Path) -> list[str]:
    with Library() as lib:
        return [
            stored(lib, tmp_path / "takes", make_take("dusty lofi drums", seed=1, bpm=88)),
            stored(
                lib,
                tmp_path / "takes",
                make_take("dark techno kick", seed=2, bpm=130, key="F#", lufs=-9),
            ),
            stored(
                lib,
                tmp_path / "takes",
                make_take("warm ambient pad", seed=3, bpm=None, key="C", mode="major", lufs=-20),
            ),
        ]


def test_list_show_rate_fav_tag(capsys, tmp_path):
    a, b, c = fill(tmp_path)
    code, out, _ = run(capsys, "library", "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total"] == 3 and [t["id"] for t in data["takes"]] == [c, b, a]
    code, out, _ = run(capsys, "library", "list", "--bpm", "120:140", "--json")
    assert [t["id"] for t in json.loads(out)["takes"]] == [b]
    code, out, _ = run(capsys, "library", "list", "--lufs", ":-15", "--key", "C major", "--json")
    assert [t["id"] for t in json.loads(out)["takes"]] == [c]
    code, out, _ = run(capsys, "library", "list", "-s", "techno")
    assert code == 0 and b in out and a not in out
    assert run(capsys, "library", "rate", b[:6], "4")[0] == 0
    assert run(capsys, "library", "fav", a)[0] == 0
    assert run(capsys, "library", "tag", c, "Pads", "keeper")[0] == 0
    code, out, _ = run(capsys, "library", "show", b, "--json")
    assert json.loads(out)["rating"] == 4
    code, out, _ = run(capsys, "library", "list", "--min-rating", "3", "--json")
    assert [t["id"] for t in json.loads(out)["takes"]] == [b]
    code, out, _ = run(capsys, "library", "list", "--favourites", "--json")
    assert [t["id"] for t in json.loads(out)["takes"]] == [a]
    code, out, _ = run(capsys, "library", "list", "--tag", "pads", "--json")
    assert [t["id"] for t in json.loads(out)["takes"]] == [c]
    code, out, _ = run(capsys, "library", "show", c)
    assert code == 0 and "warm ambient pad" in out and "keeper, pads" in out
    code, _, err = run(capsys, "library", "rate", b, "9")
    assert code == 2 and "1 to 5" in err
    code, _, err = run(capsys, "library", "show", "zzzz")
    assert code == 2 and "library list" in err
    code, _, err = run(capsys, "library", "list", "--bpm", "fast")
    assert code == 2


def test_delete_and_restore(capsys, tmp_path):
    a, _b, _c = fill(tmp_path)
    path = Path(json.loads(run(capsys, "library", "show", a, "--json")[1])["path"])
    code, out, _ = run(capsys, "library", "delete", a, "--json")
    assert code == 0 and json.loads(out)["deleted"][0]["deleted"] is True
    assert not path.exists()
    assert a not in run(capsys, "library", "list")[1]
    assert a in run(capsys, "library", "trash")[1]
    code, out, _ = run(capsys, "library", "restore", a, "--json")
    assert code == 0 and path.is_file()
    assert json.loads(out)["restored"][0]["path"] == str(path)


def test_export_sample_pack_with_playlist_and_index(capsys, tmp_path):
    a, b, c = fill(tmp_path)
    pack = tmp_path / "pack"
    code, out, err = run(capsys, "library", "export", a, c, "--to", str(pack), "--json")
    assert code == 0, err
    data = json.loads(out)
    files = [Path(p) for p in data["files"]]
    assert [p.name for p in files] == ["01_dusty-lofi-drums_1.wav", "02_warm-ambient-pad_3.wav"]
    for p in files:
        assert sf.info(str(p)).frames > 0
    m3u = (pack / "playlist.m3u").read_text().splitlines()
    assert m3u[0] == "#EXTM3U" and m3u[2] == files[0].name and m3u[4] == files[1].name
    with open(pack / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [a, c]
    assert float(rows[0]["bpm"]) == 88.0 and rows[1]["key"] == "C major"
    index = json.loads((pack / "index.json").read_text())
    assert index["takes"][1]["recipe"]["seed"] == 3
    assert index["takes"][0]["features"]["tempo_bpm"] == 88.0
    # Filters pick the takes when no ids are given; --format converts.
    code, out, err = run(
        capsys,
        "library",
        "export",
        "--bpm",
        "100:",
        "--to",
        str(tmp_path / "p2"),
        "--format",
        "flac",
        "--no-number",
        "--json",
    )
    assert code == 0, err
    names = [Path(p).name for p in json.loads(out)["files"]]
    assert names == ["dark-techno-kick_2.flac"]
    from samplemind_gen.export import read_recipe

    assert read_recipe(tmp_path / "p2" / names[0])["recipe"]["seed"] == 2
    code, _, err = run(
        capsys, "library", "export", "--search", "nothing", "--to", str(tmp_path / "x")
    )
    assert code == 2 and "no takes match" in err
    assert b


def test_reroll_and_regenerate(capsys, tiny_musicgen, tmp_path):
    import numpy as np

    base = [
        "generate",
        "lofi drums",
        "--model",
        str(tiny_musicgen),
        "--duration",
        "0.3",
        "--seed",
        "11",
        "--dtype",
        "float32",
        "--format",
        "wav32f",
        "--output",
        str(tmp_path),
        "--json",
    ]
    assert main(base) == 0
    first = json.loads(capsys.readouterr().out)
    code, out, err = run(capsys, "library", "regenerate", first["id"][:6], "--json")
    assert code == 0, err
    exact = json.loads(out)
    assert exact["id"] != first["id"] and exact["seed"] == 11
    a, _ = sf.read(first["path"], dtype="float32")
    b, _ = sf.read(exact["path"], dtype="float32")
    np.testing.assert_array_equal(a, b)  # bit for bit
    assert "warning" not in err  # same kernels, same version: nothing to say
    code, out, err = run(capsys, "library", "reroll", first["id"], "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["seed"] != 11 and again["prompt"] == "lofi drums"
    assert Path(again["path"]).parent == Path(first["path"]).parent


def test_regenerate_warns_when_the_take_was_made_on_other_kernels(capsys, tiny_musicgen, tmp_path):
    """A recipe made on another CPU's kernels (or another version) may not come out bit for bit:
    `regenerate` says so."""
    import sqlite3

    from samplemind_gen import paths

    argv = ["generate", "lofi drums", "--model", str(tiny_musicgen), "--duration", "0.3"]
    assert (
        main([*argv, "--seed", "4", "--dtype", "float32", "--output", str(tmp_path), "--json"]) == 0
    )
    first = json.loads(capsys.readouterr().out)
    with sqlite3.connect(paths.library_db()) as db:
        (text,) = db.execute(
            "SELECT recipe_json FROM takes WHERE id = ?", (first["id"],)
        ).fetchone()
        recipe = json.loads(text)
        assert recipe["kernels"] == "pytorch"
        recipe.update(kernels="samplemind avx2", app_version="0.0.9")
        db.execute(
            "UPDATE takes SET recipe_json = ? WHERE id = ?", (json.dumps(recipe), first["id"])
        )
    code, out, err = run(capsys, "library", "regenerate", first["id"], "--json")
    assert code == 0, err
    assert "made on samplemind avx2 kernels and this machine runs pytorch" in err
    assert "made by samplemind-gen 0.0.9" in err
