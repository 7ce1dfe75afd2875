"""Exporting takes: every format round-trips its audio and its recipe, and failures leave no
files behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import soundfile as sf

from samplemind_gen import __version__, riff
from samplemind_gen.analysis import AudioFeatures
from samplemind_gen.errors import BadInputError, DiskFullError, OutputNotWritableError
from samplemind_gen.export import (
    FORMATS,
    default_filename,
    export_take,
    format_from_path,
    parse_format,
    read_recipe,
    sidecar_path,
    slugify,
    unique_path,
)
from samplemind_gen.recipe import Recipe

TRICKY_PROMPT = "Crème brûlée <kick> & \"snare\" 'hats' 🥁 — 808 / ../ \\ データ"


def make_recipe(prompt: str = TRICKY_PROMPT, **overrides) -> Recipe:
    values = dict(
        prompt=prompt,
        model="facebook/musicgen-small",
        revision="abc123",
        family="musicgen",
        seed=1234,
        params={"duration": 1.0, "temperature": 1.0, "top_p": None},
        device="cpu",
        dtype="float32",
        sample_rate=32000,
        channels=2,
        duration=0.5,
        created="2026-03-04T05:06:07+00:00",
    )
    values.update(overrides)
    return Recipe(**values)


FEATURES = AudioFeatures(
    duration=0.5,
    sample_rate=32000,
    channels=2,
    peak_dbfs=-6.0,
    lufs=-14.2,
    tempo_bpm=122.5,
    tempo_confidence=0.8,
    beat_count=1,
    key="F#",
    mode="minor",
    key_confidence=0.7,
    mfcc_means=tuple(float(i) / 3 for i in range(13)),
)


def stereo(sr: int = 32000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right]).astype(np.float32)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- round trips ---------------------------------------------------------------------------

TOLERANCE = {"wav16": 1e-4, "wav24": 1e-6, "wav32f": 0.0, "flac": 1e-6, "ogg": None}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_round_trips_audio_and_recipe(tmp_path, fmt):
    audio = stereo()
    recipe = make_recipe()
    path = export_take(audio, 32000, tmp_path / "take", recipe=recipe, features=FEATURES, fmt=fmt)

    assert path == tmp_path / ("take" + FORMATS[fmt].extension)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (32000, 2, audio.shape[1])
    assert info.subtype == FORMATS[fmt].subtype
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    if TOLERANCE[fmt] is not None:
        np.testing.assert_allclose(data.T, audio, atol=TOLERANCE[fmt])

    side = sidecar_path(path)
    assert side.name == path.name + ".json"
    sidecar = json.loads(side.read_text("utf-8"))
    assert sidecar["recipe"] == recipe.to_dict()
    assert sidecar["features"] == FEATURES.to_dict()

    side.unlink()  # what follows must come from the audio file itself
    embedded = read_recipe(path)
    assert embedded["recipe"] == recipe.to_dict()
    assert embedded["recipe"]["prompt"] == TRICKY_PROMPT
    assert embedded["features"] == FEATURES.to_dict()
    assert AudioFeatures.from_dict(embedded["features"]) == FEATURES
    assert Recipe.from_dict(embedded["recipe"]) == recipe
    assert files_in(tmp_path) == [path.name]  # no temp files left


def test_mono_44k_from_a_1d_array(tmp_path):
    audio = stereo(44100)[0]
    path = export_take(audio, 44100, tmp_path / "mono.flac", recipe=make_recipe(), features=None)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, len(audio))
    assert read_recipe(path)["features"] is None


def test_wav_carries_info_and_ixml_chunks(tmp_path):
    recipe = make_recipe()
    path = export_take(stereo(), 32000, tmp_path / "a.wav", recipe=recipe, features=FEATURES)
    ids = [c.id for c in riff.read_chunks(path)]
    assert ids[:2] == [b"fmt ", b"data"] and b"LIST" in ids and b"iXML" in ids

    info = riff.decode_info(riff.find_chunk(path, b"LIST", b"INFO"))
    assert info["INAM"] == TRICKY_PROMPT
    assert info["ISFT"] == f"samplemind-gen {__version__}"
    assert info["ICRD"] == "2026-03-04"
    assert json.loads(info["ICMT"]) == recipe.to_dict()

    root = ElementTree.fromstring(riff.find_chunk(path, b"iXML"))
    assert root.tag == "BWFXML"
    assert root.findtext("NOTE") == TRICKY_PROMPT
    envelope = json.loads(root.findtext("SAMPLEMIND_GEN"))
    assert envelope["recipe"] == recipe.to_dict() and envelope["features"] == FEATURES.to_dict()


def test_vorbis_comments_for_other_apps(tmp_path):
    from mutagen.flac import FLAC

    path = export_take(
        stereo(), 32000, tmp_path / "a.flac", recipe=make_recipe(), features=FEATURES
    )
    tags = FLAC(path).tags
    assert tags["TITLE"] == [TRICKY_PROMPT]
    assert tags["BPM"] == ["122"] and tags["INITIALKEY"] == ["F#m"]
    assert tags["ENCODER"] == [f"samplemind-gen {__version__}"]


def test_xml_special_characters_cannot_break_out(tmp_path):
    nasty = "</NOTE></BWFXML><x>&amp;&#0;]]>\x01\x07 end"
    path = export_take(stereo(), 32000, tmp_path / "x.wav", recipe=make_recipe(nasty))
    assert read_recipe(path)["recipe"]["prompt"] == nasty


def test_dict_recipe_and_features_are_accepted(tmp_path):
    recipe = make_recipe().to_dict()
    path = export_take(
        stereo(), 32000, tmp_path / "d.ogg", recipe=recipe, features=FEATURES.to_dict()
    )
    assert read_recipe(path)["recipe"] == recipe


def test_exports_into_a_new_nested_folder(tmp_path):
    target = tmp_path / "new" / "deeper" / "kick.wav"
    path = export_take(stereo(), 32000, target, recipe=make_recipe(), sidecar=False)
    assert path == target and path.is_file()
    assert not sidecar_path(path).exists()


def test_overwriting_keeps_a_single_metadata_set(tmp_path):
    target = tmp_path / "same.wav"
    export_take(stereo(), 32000, target, recipe=make_recipe("first"))
    export_take(stereo(), 32000, target, recipe=make_recipe("second"))
    assert read_recipe(target)["recipe"]["prompt"] == "second"
    assert files_in(tmp_path) == ["same.wav", "same.wav.json"]


def test_out_of_range_samples_are_clipped_not_wrapped(tmp_path):
    audio = np.array([[0.0, 1.5, -1.5, 0.5, np.nan]], np.float32)
    path = export_take(audio, 8000, tmp_path / "c.wav", recipe=make_recipe(), fmt="wav16")
    data, _ = sf.read(str(path), dtype="float32")
    assert data[1] == pytest.approx(1.0, abs=1e-3) and data[2] == pytest.approx(-1.0, abs=1e-3)
    assert data[4] == 0.0


# --- failures leave nothing behind ---------------------------------------------------------


def test_failed_rename_leaves_no_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputNotWritableError, match="cannot write"):
        export_take(stereo(), 32000, tmp_path / "a.wav", recipe=make_recipe(), features=FEATURES)
    assert files_in(tmp_path) == []


def test_failed_sidecar_rename_removes_the_audio_too(tmp_path, monkeypatch):
    real_replace = os.replace

    def refuse_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_json)
    with pytest.raises(OutputNotWritableError):
        export_take(stereo(), 32000, tmp_path / "a.flac", recipe=make_recipe())
    assert files_in(tmp_path) == []


def test_disk_full_is_a_disk_full_error(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match="disk is full"):
        export_take(stereo(), 32000, tmp_path / "a.wav", recipe=make_recipe())
    assert files_in(tmp_path) == []


def test_folder_under_a_regular_file_is_not_writable(tmp_path):
    # Tests may run as root, which ignores permissions: a file in the way blocks even root.
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="file.txt is a file"):
        export_take(stereo(), 32000, blocker / "sub" / "a.wav", recipe=make_recipe())
    assert files_in(tmp_path) == ["file.txt"]


def test_target_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(OutputNotWritableError, match="is a folder"):
        export_take(stereo(), 32000, tmp_path / "taken.wav", recipe=make_recipe())


def test_bad_input_is_refused_before_writing(tmp_path):
    recipe = make_recipe()
    with pytest.raises(BadInputError, match="no audio"):
        export_take(np.zeros((2, 0), np.float32), 32000, tmp_path / "a.wav", recipe=recipe)
    with pytest.raises(BadInputError, match=r"\(samples, channels\)"):
        export_take(stereo().T, 32000, tmp_path / "a.wav", recipe=recipe)
    with pytest.raises(BadInputError, match="format is flac"):
        export_take(stereo(), 32000, tmp_path / "a.wav", recipe=recipe, fmt="flac")
    with pytest.raises(BadInputError, match="JSON"):
        export_take(
            stereo(), 32000, tmp_path / "a.wav", recipe=make_recipe(params={"x": float("nan")})
        )
    with pytest.raises(BadInputError, match="channel"):
        export_take(np.zeros((9, 100), np.float32), 32000, tmp_path / "a.flac", recipe=recipe)
    assert files_in(tmp_path) == []


def test_read_recipe_refuses_files_without_one(tmp_path):
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), np.zeros(100, np.float32), 8000)
    with pytest.raises(BadInputError, match="no samplemind-gen recipe"):
        read_recipe(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(BadInputError, match="not a WAV, FLAC or Ogg"):
        read_recipe(text)
    with pytest.raises(BadInputError, match="cannot read"):
        read_recipe(tmp_path / "missing.wav")


# --- formats and names ---------------------------------------------------------------------


def test_parse_format_aliases():
    assert parse_format("wav") == "wav24"
    assert parse_format("WAV-16") == "wav16"
    assert parse_format("float") == "wav32f"
    assert parse_format(".flac") == "flac"
    assert parse_format("vorbis") == "ogg"
    with pytest.raises(BadInputError, match="wav16, wav24, wav32f, flac, ogg"):
        parse_format("mp3")


def test_format_from_path():
    assert format_from_path("a/b/kick.WAV") == "wav24"
    assert format_from_path("x.flac") == "flac"
    assert format_from_path("x.ogg") == "ogg"
    with pytest.raises(BadInputError, match=".wav, .flac or .ogg"):
        format_from_path("x.mp3")


def test_default_filename_fields():
    recipe = make_recipe("Dark Techno Kick @ 130 BPM!")
    assert default_filename(recipe) == "dark-techno-kick-130-bpm_1234.wav"
    name = default_filename(
        recipe, "{model}_{date}_{time}_{bpm}_{key}_{seed}", fmt="flac", features=FEATURES
    )
    assert name == "musicgen-small_20260304_050607_122bpm_Fsm_1234.flac"
    # Unknown bpm/key leave no stray separators behind.
    assert (
        default_filename(recipe, "{prompt_slug}_{bpm}_{key}", fmt="ogg")
        == "dark-techno-kick-130-bpm.ogg"
    )
    with pytest.raises(BadInputError, match="unknown file name field"):
        default_filename(recipe, "{prompt}")


def test_default_filename_is_always_one_safe_name():
    for template in ("{prompt_slug}", "../../{seed}", "a/b\\c:{seed}", "{prompt_slug}/..", "CON"):
        name = default_filename(make_recipe(), template)
        assert "/" not in name and "\\" not in name and ":" not in name
        assert not name.startswith(".") and name.endswith(".wav")
        assert Path(name).name == name
    assert default_filename(make_recipe(""), "{prompt_slug}") == "take.wav"
    assert default_filename(make_recipe(), "CON") == "_CON.wav"


def test_slugify():
    assert slugify(TRICKY_PROMPT) == "creme-brulee-kick-snare-hats-808"
    long = slugify("warm analog bass " * 10)
    assert len(long) <= 48 and not long.endswith("-") and long.startswith("warm-analog-bass")
    assert slugify("ünïcödé") == "unicode"
    assert slugify("🥁🥁") == ""
    assert slugify("a" * 100) == "a" * 48


def test_unique_path(tmp_path):
    first = tmp_path / "kick_42.wav"
    assert unique_path(first) == first
    first.write_bytes(b"")
    assert unique_path(first) == tmp_path / "kick_42_2.wav"
    (tmp_path / "kick_42_2.wav").write_bytes(b"")
    assert unique_path(first) == tmp_path / "kick_42_3.wav"


# --- RIFF helpers --------------------------------------------------------------------------


def test_set_chunks_replaces_and_pads(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(101, np.float32), 8000, subtype="PCM_24")  # odd data size
    riff.set_chunks(path, [riff.encode_chunk(b"smpl", b"\x01\x02\x03")])
    riff.set_chunks(path, [riff.encode_info({"INAM": "one"})])
    riff.set_chunks(path, [riff.encode_info({"INAM": "two"}), riff.encode_chunk(b"smpl", b"xyz12")])
    chunks = riff.read_chunks(path)
    assert [c.id for c in chunks].count(b"LIST") == 1 and [c.id for c in chunks].count(b"smpl") == 1
    assert riff.decode_info(riff.find_chunk(path, b"LIST", b"INFO")) == {"INAM": "two"}
    assert riff.find_chunk(path, b"smpl") == b"xyz12"
    assert path.stat().st_size == chunks[-1].end
    with open(path, "rb") as f:
        assert int.from_bytes(f.read(8)[4:], "little") == path.stat().st_size - 8
    assert sf.info(str(path)).frames == 101


def test_riff_refuses_other_files(tmp_path):
    path = tmp_path / "x.flac"
    path.write_bytes(b"fLaC" + b"\x00" * 40)
    with pytest.raises(riff.RiffError):
        riff.read_chunks(path)


def test_importing_the_exporter_stays_light():
    # The CLI imports it for --help-level work; audio libraries load only when writing.
    code = (
        "import sys, samplemind_gen.export; "
        "assert not {'librosa', 'soundfile', 'mutagen'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
