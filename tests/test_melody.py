"""musicgen-melody: chroma from audio, melody conditioning on a tiny local checkpoint, --melody."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplemind_gen.catalog import resolve_model
from samplemind_gen.cli.main import main
from samplemind_gen.engines import LoadOptions, load_engine
from samplemind_gen.engines.musicgen_melody import MusicGenMelodyEngine, melody_chroma
from samplemind_gen.request import GenerationRequest

SR = 32000


def tone(freq: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_melody(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from samplemind_gen.testing.tiny_musicgen_melody import build_musicgen_melody

    return build_musicgen_melody(tmp_path_factory.mktemp("melody") / "musicgen-melody-tiny")


def test_chroma_finds_the_pitch_class():
    for freq, pitch in ((440.0, 9), (261.63, 0), (392.0, 7)):
        chroma = melody_chroma(tone(freq), SR)
        assert chroma.shape == (24, 12)
        assert (chroma.argmax(axis=1) == pitch).mean() > 0.9
        np.testing.assert_array_equal(chroma.sum(axis=1), 1.0)
    assert melody_chroma(tone(440.0, 40.0), SR).shape == (235, 12)  # capped at 30 s
    assert melody_chroma(tone(440.0, 1.0), 44100).shape[1] == 12


def test_melody_engine_conditions_on_the_melody(tiny_melody):
    engine = load_engine(resolve_model(str(tiny_melody)), LoadOptions(dtype="float32"))
    assert isinstance(engine, MusicGenMelodyEngine)
    req = GenerationRequest("lofi drums", duration=0.4, seed=3)
    a = melody_chroma(tone(440.0), SR)
    d = melody_chroma(tone(293.66), SR)
    x = engine.generate([req], melody=a, greedy=True)[0].audio
    assert x.shape == (1, int(0.4 * SR))
    np.testing.assert_array_equal(x, engine.generate([req], melody=a, greedy=True)[0].audio)
    assert not np.array_equal(x, engine.generate([req], melody=d, greedy=True)[0].audio)
    # Sampling is seeded per take and leaves the global RNG alone.
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    s1 = engine.generate([req], melody=a)[0].audio
    after = torch.rand(1)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(s1, engine.generate([req], melody=a)[0].audio)
    seen = []
    engine.generate([req], on_progress=seen.append)
    steps = [p.step for p in seen if p.stage == "generating"]
    assert steps[-1] == engine.steps_for(0.4)


def test_cli_melody(capsys, tiny_melody, tiny_musicgen, tmp_path):
    melody = tmp_path / "hum.wav"
    sf.write(melody, tone(440.0), SR)
    base = [
        "generate",
        "jazz piano",
        "--seed",
        "2",
        "--dtype",
        "float32",
        "--duration",
        "0.3",
        "--output",
        str(tmp_path),
        "--json",
    ]
    assert main([*base, "--model", str(tiny_melody), "--melody", str(melody)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["long_form"]["melody_sha256"]
    assert sf.info(data["path"]).frames == int(0.3 * SR)
    # Without --melody a melody checkpoint still makes text-only takes.
    assert main([*base, "--model", str(tiny_melody)]) == 0
    capsys.readouterr()
    assert main([*base, "--model", str(tiny_musicgen), "--melody", str(melody)]) == 2
    assert "musicgen-melody" in capsys.readouterr().err
