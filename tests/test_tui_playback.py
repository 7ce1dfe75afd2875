"""Playback through the real PortAudio path. Each case runs the app in a subprocess with its own
HOME, because PortAudio reads ~/.asoundrc once when it initialises: an ALSA `null` default gives
a working output device on a machine with no sound card, a missing card gives none."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("tui_playback_driver.py")
LIVE_DRIVER = Path(__file__).with_name("tui_live_driver.py")

NULL_DEVICE = """pcm.!default { type null }
ctl.!default { type hw card 0 }
"""
NO_DEVICE = """pcm.!default { type hw card 99 }
ctl.!default { type hw card 99 }
"""


def run_driver(tmp_path: Path, asoundrc: str, *args: str, driver: Path = DRIVER) -> dict:  # type: ignore[type-arg]
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(asoundrc)
    env = dict(os.environ, HOME=str(home), SAMPLEMIND_GEN_HOME=str(tmp_path / "smg"))
    proc = subprocess.run(
        [sys.executable, str(driver), *args], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def has_portaudio() -> bool:
    return ctypes.util.find_library("portaudio") is not None


@pytest.mark.skipif(not has_portaudio(), reason="libportaudio2 is not installed")
def test_space_plays_the_take_and_the_playhead_moves(tmp_path):
    result = run_driver(tmp_path, NULL_DEVICE)
    assert result["started"], result
    assert not any("no audio output device" in t for t in result["toasts"]), result
    assert result["positions"] and max(result["positions"]) > 0
    assert result["ended"]  # playback finished and the playhead went away


def test_without_an_output_device_play_says_so_and_the_app_carries_on(tmp_path):
    result = run_driver(tmp_path, NO_DEVICE)
    assert any("no audio output device" in t for t in result["toasts"]), result
    assert not result["positions"] and result["ended"]


@pytest.mark.skipif(not has_portaudio(), reason="libportaudio2 is not installed")
def test_the_take_plays_while_it_is_generated(tmp_path, tiny_musicgen):
    result = run_driver(tmp_path, NULL_DEVICE, str(tiny_musicgen), driver=LIVE_DRIVER)
    # The output opened on the first streamed chunk, before the take was finished and analysed.
    assert result["started_at"] is not None and result["ready_at"] is not None, result
    assert result["started_at"] < result["ready_at"], result
    # All of it played (1.5 s), then the output closed and the playhead went away.
    assert result["played_s"] >= 1.5 - 0.05, result
    assert result["ended"] and not result["toasts"], result
    # ALSA's null device takes audio as fast as it is given: while the player waits for the
    # generator it must not call back in a tight loop (it did, 300,000 times in 1.4 s, holding
    # the GIL and slowing the generation several-fold).
    assert result["underruns"] < 1000, result


@pytest.mark.skipif(not has_portaudio(), reason="libportaudio2 is not installed")
def test_escape_stops_the_live_take_with_the_generation(tmp_path, tiny_musicgen):
    result = run_driver(tmp_path, NULL_DEVICE, str(tiny_musicgen), "cancel", driver=LIVE_DRIVER)
    assert result["playing_before_escape"] and not result["playing_after_escape"], result


def test_live_play_without_an_output_device_says_so_once(tmp_path, tiny_musicgen):
    result = run_driver(tmp_path, NO_DEVICE, str(tiny_musicgen), driver=LIVE_DRIVER)
    assert result["started_at"] is None, result
    assert sum("no audio output device" in t for t in result["toasts"]) == 1, result


def run_cli_play(tmp_path: Path, asoundrc: str, model: Path) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(asoundrc)
    env = dict(os.environ, HOME=str(home), SAMPLEMIND_GEN_HOME=str(tmp_path / "smg"))
    env["HF_HUB_OFFLINE"] = "1"
    argv = ["generate", "lofi drums", "--model", str(model), "--duration", "1", "--play"]
    argv += ["--output", str(tmp_path / "out"), "--json"]
    code = "import sys; from samplemind_gen.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not has_portaudio(), reason="libportaudio2 is not installed")
def test_cli_play_streams_the_take_and_prints_it(tmp_path, tiny_musicgen):
    proc = run_cli_play(tmp_path, NULL_DEVICE, tiny_musicgen)
    assert proc.returncode == 0, proc.stderr[-2000:]
    take = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(take["path"]).is_file() and take["timings"]["first_audio"] > 0


def test_cli_play_without_a_device_keeps_the_take_and_says_why(tmp_path, tiny_musicgen):
    proc = run_cli_play(tmp_path, NO_DEVICE, tiny_musicgen)
    assert proc.returncode != 0 and "no audio output device" in proc.stderr
    # The take was saved and reported before playback was tried.
    take = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(take["path"]).is_file()
