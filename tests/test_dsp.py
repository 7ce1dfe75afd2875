"""Producer DSP: loudness targets, true-peak ceiling, fades, trim, resampling, dither, loops."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from samplemind_gen import dsp
from samplemind_gen.errors import BadInputError

SR = 32000


def music(
    seconds: float = 3.0, sr: int = SR, bpm: float = 120.0, seed: int = 0, noise: float = 0.05
) -> np.ndarray:
    """A stereo 'track': decaying kicks on every beat, a bass tone and some noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * 57.3 * t) + noise * rng.standard_normal(n)
    beat = int(round(60 / bpm * sr))
    env = np.exp(-np.arange(beat) / (0.03 * sr))
    kick = 0.7 * env * np.sin(2 * np.pi * 60 * np.arange(beat) / sr * (1 + 2 * env))
    for start in range(int(0.1 * sr), n - beat, beat):
        x[start : start + beat] += kick
    right = np.roll(x, 7) * 0.9
    return np.stack([x, right]).astype(np.float32)


@pytest.mark.parametrize("target", [-23.0, -14.0, -9.0])
def test_normalize_hits_the_lufs_target_under_the_true_peak_ceiling(target):
    x = music()
    y = dsp.normalize_loudness(x, SR, target, true_peak_ceiling=-1.0)
    assert abs(dsp.integrated_loudness(y, SR) - target) <= 0.5
    assert dsp.true_peak_db(y) <= -1.0 + 0.05
    assert y.shape == x.shape and y.dtype == np.float32


def test_normalize_turns_a_clipping_take_down_and_leaves_short_audio_alone():
    x = music() * 4.0
    y = dsp.normalize_loudness(x, SR, -16.0)
    assert abs(dsp.integrated_loudness(y, SR) + 16.0) <= 0.5
    short = music(0.2)
    np.testing.assert_array_equal(dsp.normalize_loudness(short, SR, -14.0), short)
    with pytest.raises(BadInputError):
        dsp.normalize_loudness(x, SR, 5.0)


def test_limiter_leaves_quiet_audio_untouched():
    x = music() * 0.1
    np.testing.assert_array_equal(dsp.limit(x, SR, -1.0), x)


def test_fades_trim_and_resample():
    x = music(1.0)
    f = dsp.fade(x, SR, fade_in=0.1, fade_out=0.2)
    assert f[:, 0].max() == 0 and abs(f[:, -1]).max() < 1e-6
    np.testing.assert_array_equal(f[:, 4000:20000], x[:, 4000:20000])
    padded = np.concatenate(
        [np.zeros((2, 8000), np.float32), x, np.zeros((2, 16000), np.float32)], 1
    )
    trimmed = dsp.trim_silence(padded, SR)
    assert abs(trimmed.shape[1] - x.shape[1]) <= int(0.02 * SR)
    assert dsp.trim_silence(np.zeros((1, SR), np.float32), SR).shape[1] == 0
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None, :]
    for rate in (44100, 48000):
        up = dsp.resample(tone, SR, rate)
        assert abs(up.shape[1] - rate) <= 1
        spectrum = np.abs(np.fft.rfft(up[0]))
        assert abs(np.argmax(spectrum) * rate / up.shape[1] - 1000) < 2


@pytest.mark.parametrize("bits,subtype", [(16, "PCM_16"), (24, "PCM_24")])
def test_tpdf_dither_lands_on_the_pcm_grid_and_writes_exactly(tmp_path, bits, subtype):
    x = music(0.5) * 0.5
    d = dsp.dither(x, bits, seed=3)
    scale = 2 ** (bits - 1)
    k = d.astype(np.float64) * scale
    np.testing.assert_array_equal(k, np.round(k))
    error = k - x * scale
    assert np.abs(error).max() <= 1.5 + 1e-6  # TPDF: at most 1 LSB of noise + 0.5 rounding
    assert error.std() > 0.45  # noise, not plain rounding (which has std ~0.29 LSB)
    np.testing.assert_array_equal(d, dsp.dither(x, bits, seed=3))  # deterministic per seed
    path = tmp_path / "d.wav"
    sf.write(path, d.T, SR, subtype=subtype)
    back, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(back.T, d)


def test_loop_is_exact_length_on_the_beat_grid_with_a_seamless_wrap(tmp_path):
    x = music(5.0, bpm=120, noise=0.0)
    loop, info = dsp.make_loop(x, SR, bpm=120, bars=2, fit_tempo=False)
    assert loop.shape == (2, int(4.0 * SR))
    assert info.start == 0 and info.end == loop.shape[1] - 1 and info.beats == 8
    # The cut starts on a detected beat: the first kick is at 0.1 s.
    assert info.source_offset == pytest.approx(0.1, abs=0.01)
    assert dsp.seam_jump(loop) < 1.5
    # A plain cut of the same length has a click at the wrap.
    naive = x[:, 1000 : 1000 + loop.shape[1]]
    assert dsp.seam_jump(naive) > 5 * dsp.seam_jump(loop)

    from samplemind_gen.export import export_take

    path = export_take(loop, SR, tmp_path / "loop.wav", recipe={"prompt": "loop"}, fmt="wav24")
    dsp.write_loop_chunks(path, info)
    chunks = dsp.read_loop_chunks(path)
    assert chunks["loops"] == [{"type": 0, "start": 0, "end": loop.shape[1] - 1, "play_count": 0}]
    assert chunks["bpm"] == pytest.approx(120.0) and chunks["beats"] == 8
    assert chunks["meter"] == "4/4"
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR and audio.shape[0] == loop.shape[1]  # the chunks did not upset readers


def test_loop_stretches_a_slightly_off_tempo_onto_the_target():
    x = music(6.0, bpm=116)
    loop, info = dsp.make_loop(x, SR, bpm=120, bars=2)
    assert loop.shape[1] == int(4.0 * SR)
    assert info.stretched != 1.0
    assert dsp.seam_jump(loop) < 1.5


def test_loop_needs_enough_audio():
    with pytest.raises(BadInputError, match="generate at least"):
        dsp.make_loop(music(2.0), SR, bpm=120, bars=2, fit_tempo=False)


def test_processing_chain_records_only_what_was_asked():
    assert dsp.Processing().to_dict() == {}
    p = dsp.Processing(normalize_lufs=-14.0, fade_out=0.5)
    assert p.to_dict() == {"normalize_lufs": -14.0, "true_peak_db": -1.0, "fade_out": 0.5}
    assert dsp.Processing.from_dict(p.to_dict()) == p
    audio, sr, loop, notes = dsp.process(
        music(5.0),
        SR,
        dsp.Processing(
            resample=48000, loop_bars=1, bpm=120, normalize_lufs=-12, fade_in=0.1, dither_bits=16
        ),
    )
    assert sr == 48000 and loop is not None and audio.shape[1] == 96000
    assert abs(dsp.integrated_loudness(audio, sr) + 12) <= 0.5
    assert any("fades skipped" in n for n in notes)
