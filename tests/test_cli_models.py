"""`samplemind-gen models ...` end to end, against the fake Hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fake_hub import TINY_REPO, FakeHub, files_from_folder, use_fake_hub

from samplemind_gen.cli.main import main

TOKEN = "hf_CLIsecretTOKEN0123456789abcdef"


@pytest.fixture
def hub(tiny_musicgen: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with use_fake_hub(monkeypatch, tiny_musicgen) as fake:
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_the_catalog_and_nothing_cached(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "musicgen-small" in out and "stable-audio-open-1.0" in out and "gated" in out
    code, out, _ = run(capsys, "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["musicgen-small"]["state"] == "missing"
    assert rows["musicgen-small"]["download_bytes"] > 10**9


def test_download_info_verify_remove(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    commit = hub.repos[TINY_REPO].refs["main"]
    code, out, err = run(capsys, "download", TINY_REPO)
    assert code == 0, err
    assert f"ready at commit {commit[:12]}" in out
    assert "download tiny/musicgen-tiny:" in err and "MB" in err  # progress on stderr

    code, out, _ = run(capsys, "list", "--json")
    listed = {r["name"]: r for r in json.loads(out)}
    assert listed[TINY_REPO]["state"] == "cached" and listed[TINY_REPO]["commit"] == commit

    code, out, _ = run(capsys, "info", TINY_REPO, "--json")
    info = json.loads(out)
    assert info["commit"] == commit and info["state"] == "cached"
    assert "model.safetensors" in info["files"] and info["damaged"] == []
    assert info["endpoint"] == hub.url and info["downloaded_at"]
    code, out, _ = run(capsys, "info", TINY_REPO)
    assert commit in out and "model.safetensors" in out

    code, out, _ = run(capsys, "verify", TINY_REPO)
    assert code == 0 and "6 files OK" in out

    path = Path(info["path"])
    (path / "tokenizer.json").resolve().write_text("{}")
    code, out, err = run(capsys, "verify", TINY_REPO)
    assert code == 2 and "damaged: tokenizer.json" in out
    last = err.strip().splitlines()[-1]  # after the progress lines: one error line
    assert last.startswith("error: ") and f"models download {TINY_REPO}" in last

    code, out, err = run(capsys, "download", TINY_REPO)  # fetches the damaged file again
    assert code == 0, err
    code, out, _ = run(capsys, "verify", TINY_REPO)
    assert code == 0

    code, out, _ = run(capsys, "remove", TINY_REPO)
    assert code == 0 and "removed" in out and "MB freed" in out
    assert not path.exists()
    code, out, err = run(capsys, "remove", TINY_REPO)
    assert code == 2 and "nothing to remove" in err


def test_import_then_use_by_name(tiny_musicgen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "import", str(tiny_musicgen), "--as", "my-loops")
    assert code == 0, err
    assert "use it with --model my-loops" in out
    code, out, _ = run(capsys, "info", "my-loops", "--json")
    info = json.loads(out)
    assert info["state"] == "imported" and info["imported_from"] == str(tiny_musicgen.resolve())
    code, out, _ = run(capsys, "list")
    assert "my-loops" in out and "imported" in out
    code, out, _ = run(capsys, "verify", "my-loops")
    assert code == 0


def test_errors_are_one_line_with_what_to_do(
    hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "download", "nobody/nothing-here")
    assert code == 2 and err.startswith("error: nobody/nothing-here does not exist on the Hub")
    assert err.count("\n") == 1
    code, _, err = run(capsys, "verify", "musicgen-small")
    assert code == 2 and "not downloaded" in err
    code, _, err = run(capsys, "import", "/no/such/folder", "--as", "x")
    assert code == 2 and "not a folder" in err


def test_gated_download_never_shows_the_token(
    hub: FakeHub,
    tiny_musicgen: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hub.add_repo("tiny/gated", files_from_folder(tiny_musicgen), gated=True, tokens=(TOKEN,))
    code, _, err = run(capsys, "download", "tiny/gated")
    assert code == 2 and "accept its licence" in err and "HF_TOKEN" in err

    monkeypatch.setenv("HF_TOKEN", TOKEN + "x")
    code, out1, err1 = run(capsys, "download", "tiny/gated")
    assert code == 2 and "has no access" in err1

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code = main(["-v", "models", "download", "tiny/gated"])
    out2, err2 = capsys.readouterr()
    assert code == 0, err2
    code = main(["-v", "models", "info", "tiny/gated", "--json"])
    out3, err3 = capsys.readouterr()
    for text in (err, out1, err1, out2, err2, out3, err3, caplog.text):
        assert TOKEN not in text
    for path in Path(json.loads(out3)["path"]).parents[2].rglob("*.json"):
        assert TOKEN not in path.read_text()  # nor in the manifest


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    import io

    from samplemind_gen.cli.models import ByteBar
    from samplemind_gen.store.progress import ByteProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ByteBar(stream)
    gb = 1024**3
    for done in (0, gb // 2, gb):
        bar(ByteProgress("download", "m", done, gb, speed=12.5 * 1024**2, eta=40.0, file="w"))
    bar.done()
    text = stream.getvalue()
    assert text.count("\r") >= 3 and "\n" not in text
    assert "512.0 MB/1.0 GB · 50% · 12.5 MB/s · ETA 40s · w" in text
    assert "[############------------]" in text
