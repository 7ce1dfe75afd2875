"""Post-processing flags on `generate`: loops with smpl/acid chunks, loudness, fades, dither."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from samplemind_gen import dsp
from samplemind_gen.cli.main import main
from samplemind_gen.library import Library


def test_generate_loop_normalised_with_loop_points(capsys, tiny_musicgen, tmp_path):
    argv = [
        "generate",
        "techno drums loop",
        "--model",
        str(tiny_musicgen),
        "--seed",
        "4",
        "--dtype",
        "float32",
        "--loop-bars",
        "1",
        "--bpm",
        "240",
        "--normalize",
        "-14",
        "--output",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    path = Path(data["path"])
    # 1 bar of 4/4 at 240 BPM is exactly one second; the model made a little more to cut from.
    assert data["params"]["duration"] == pytest.approx(dsp.loop_source_seconds(240, 1))
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == 32000 and audio.shape[0] == 32000
    assert abs(dsp.integrated_loudness(audio.T, sr) + 14) <= 0.5
    assert dsp.true_peak_db(audio.T) <= -0.9
    chunks = dsp.read_loop_chunks(path)
    assert chunks["loops"][0]["start"] == 0 and chunks["loops"][0]["end"] == 31999
    assert chunks["bpm"] == pytest.approx(240) and chunks["beats"] == 4
    with Library() as lib:
        entry = lib.get(data["id"])
        assert entry.processing["loop_bars"] == 1 and entry.processing["normalize_lufs"] == -14
        assert entry.features["lufs"] == pytest.approx(-14, abs=0.5)
    # The same request again, processing included, comes straight from the library.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["id"] == data["id"]


def test_generate_wav16_is_dithered_and_faded(capsys, tiny_musicgen, tmp_path):
    argv = [
        "generate",
        "warm pad",
        "--model",
        str(tiny_musicgen),
        "--seed",
        "5",
        "--dtype",
        "float32",
        "--duration",
        "0.6",
        "--format",
        "wav16",
        "--fade-in",
        "0.05",
        "--fade-out",
        "0.1",
        "--trim",
        "--resample",
        "48000",
        "--output",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    info = sf.info(data["path"])
    assert info.subtype == "PCM_16" and info.samplerate == 48000
    with Library() as lib:
        entry = lib.get(data["id"])
    assert entry.processing == {
        "trim": True,
        "resample": 48000,
        "fade_in": 0.05,
        "fade_out": 0.1,
        "dither_bits": 16,
    }


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--bpm", "120"], "--loop-bars"),
        (["--loop-bars", "8", "--bpm", "60"], "beyond this model"),
        (["--normalize", "3"], "LUFS"),
        (["--resample", "100"], "8000"),
    ],
)
def test_bad_processing_flags_are_refused_before_loading(capsys, tiny_musicgen, flags, message):
    code = main(["generate", "x", "--model", str(tiny_musicgen), *flags])
    _out, err = capsys.readouterr()
    assert code == 2 and message in err
