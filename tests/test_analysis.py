"""The analyzer against signals whose answers are known: sines, click tracks, triads, noise."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import freqz

from samplemind_gen.analysis import AudioFeatures, analyze, estimate_key


def sine(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def click_track(bpm: float, sr: int = 22050, seconds: float = 8.0) -> np.ndarray:
    """Short decaying 1 kHz blips on every beat, like a metronome."""
    n = int(sr * seconds)
    y = np.zeros(n, np.float32)
    blip_len = int(0.01 * sr)
    k = np.arange(blip_len)
    blip = 0.8 * np.exp(-k / (0.002 * sr)) * np.sin(2 * np.pi * 1000 * k / sr)
    beat = 0
    while (start := round(beat * 60.0 / bpm * sr)) < n:
        end = min(n, start + blip_len)
        y[start:end] += blip[: end - start]
        beat += 1
    return y


def triads(chords: list[list[int]], sr: int = 22050, seconds_each: float = 1.0) -> np.ndarray:
    """Each chord as equal sines at the MIDI notes given, with short fades (no clicks)."""
    t = np.arange(int(sr * seconds_each)) / sr
    fade = np.minimum(1.0, np.minimum(t, seconds_each - t) / 0.02)
    parts = []
    for notes in chords:
        y = sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in notes) / len(notes)
        parts.append(0.5 * fade * y)
    return np.concatenate(parts).astype(np.float32)


def k_weighted_power_gain(sr: int = 48000) -> float:
    """Mean power gain of the BS.1770 K-weighting filter for white noise, from the published
    48 kHz coefficients: an independent reference for the loudness meter."""
    shelf = (
        [1.53512485958697, -2.69169618940638, 1.19839281085285],
        [1.0, -1.69065929318241, 0.73248077421585],
    )
    highpass = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])
    _, h1 = freqz(*shelf, worN=1 << 16, fs=sr)
    _, h2 = freqz(*highpass, worN=1 << 16, fs=sr)
    return float(np.mean(np.abs(h1 * h2) ** 2))


def assert_all_finite(features: AudioFeatures) -> dict:
    data = features.to_dict()
    json.dumps(data, allow_nan=False)  # raises on NaN or infinity anywhere
    for name, value in data.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            assert v is None or isinstance(v, (str, int)) or math.isfinite(v), (name, v)
    return data


# --- known answers -------------------------------------------------------------------------


def test_sine_440_levels_and_spectrum():
    sr = 44100
    f = analyze(sine(440.0, sr, 2.0, amplitude=0.5), sr)
    assert f.duration == pytest.approx(2.0)
    assert (f.sample_rate, f.channels) == (sr, 1)
    assert f.peak_dbfs == pytest.approx(-6.02, abs=0.05)
    assert f.rms_dbfs == pytest.approx(-9.03, abs=0.05)  # sine RMS is peak - 3.01 dB
    assert f.true_peak_dbfs is not None and f.true_peak_dbfs >= f.peak_dbfs
    assert f.true_peak_dbfs == pytest.approx(-6.02, abs=0.1)
    assert f.spectral_centroid == pytest.approx(440, rel=0.05)
    assert f.spectral_rolloff == pytest.approx(440, rel=0.1)
    assert f.spectral_bandwidth is not None and f.spectral_bandwidth < 200
    assert f.zero_crossing_rate == pytest.approx(2 * 440 / sr, rel=0.05)
    assert f.silence_ratio == 0.0
    assert f.mfcc_means is not None and len(f.mfcc_means) == 13
    assert f.tempo_bpm is None  # a steady tone has no pulse


def test_true_peak_catches_inter_sample_peaks():
    # A full-scale sine at fs/4 sampled at 45 degrees: every sample is at 0.707, the wave at 1.0.
    sr = 48000
    n = np.arange(sr)
    y = np.sin(2 * np.pi * (sr / 4) * n / sr + np.pi / 4).astype(np.float32)
    f = analyze(y, sr)
    assert f.peak_dbfs == pytest.approx(-3.01, abs=0.05)
    assert f.true_peak_dbfs == pytest.approx(0.0, abs=0.3)


@pytest.mark.parametrize("bpm", [90, 120, 140])
def test_click_track_tempo(bpm):
    f = analyze(click_track(bpm), 22050)
    assert f.tempo_bpm == pytest.approx(bpm, abs=1.0)
    assert f.tempo_confidence is not None and 0.3 < f.tempo_confidence <= 1.0
    assert f.beat_count >= 8 * bpm / 60 - 3
    assert f.onset_density == pytest.approx(bpm / 60, rel=0.15)


def test_click_track_tempo_at_44k_stereo():
    mono = click_track(120, sr=44100)
    f = analyze(np.stack([mono, mono]), 44100)
    assert f.channels == 2
    assert f.tempo_bpm == pytest.approx(120, abs=1.0)


def test_a_minor_progression_reads_a_minor():
    # Am - Dm - Em - Am
    audio = triads([[57, 60, 64], [62, 65, 69], [64, 67, 71], [57, 60, 64]])
    f = analyze(audio, 22050)
    assert (f.key, f.mode) == ("A", "minor")
    assert f.key_label == "A minor"
    assert f.key_confidence is not None and f.key_confidence > 0.5


def test_c_major_progression_reads_c_major():
    # C - F - G - C
    audio = triads([[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]], sr=32000)
    f = analyze(audio, 32000)
    assert f.key_label == "C major"


def test_key_profiles_find_every_tonic():
    from samplemind_gen.analysis import MINOR_PROFILE, PITCH_CLASSES

    for tonic, name in enumerate(PITCH_CLASSES):
        result = estimate_key(np.roll(MINOR_PROFILE, tonic))
        assert (result["key"], result["mode"]) == (name, "minor")
        assert result["key_confidence"] > 0.4
    assert estimate_key(np.ones(12)) == {}  # flat chroma: no tonal centre


def test_white_noise_at_minus_14_lufs():
    sr = 48000
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((2, sr * 4))
    # Scale so that -0.691 + 10 log10(2 channels * sigma^2 * K-gain) = -14 LUFS.
    sigma = math.sqrt(10 ** ((-14.0 + 0.691) / 10) / (2 * k_weighted_power_gain(sr)))
    f = analyze((noise * sigma).astype(np.float32), sr)
    assert f.lufs == pytest.approx(-14.0, abs=0.5)
    assert f.key is None  # noise has no key
    assert f.tempo_bpm is None  # nor a tempo


def test_ebu_sine_reference_minus_23_lufs():
    # EBU Tech 3341 case 1: stereo 1 kHz sine at -23 dBFS reads -23.0 LUFS.
    sr = 48000
    y = sine(1000.0, sr, 5.0, amplitude=10 ** (-23 / 20))
    f = analyze(np.stack([y, y]), sr)
    assert f.lufs == pytest.approx(-23.0, abs=0.1)


def test_silence_ratio_counts_quiet_parts():
    sr = 22050
    audio = np.concatenate([sine(220.0, sr, 1.0), np.zeros(sr, np.float32)])
    f = analyze(audio, sr)
    assert f.silence_ratio == pytest.approx(0.5, abs=0.03)


def test_opposite_phase_stereo_is_not_mistaken_for_silence():
    y = sine(440.0, 22050, 1.0)
    f = analyze(np.stack([y, -y]), 22050)
    assert f.spectral_centroid == pytest.approx(440, rel=0.05)
    assert f.key == "A"


# --- never crashes, never NaN --------------------------------------------------------------


@pytest.mark.parametrize("sr", [8000, 44100, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("kind", ["silence", "50ms", "noise"])
def test_odd_inputs_give_finite_features(sr, channels, kind):
    rng = np.random.default_rng(sr + channels)
    n = {"silence": sr, "50ms": int(sr * 0.05), "noise": sr}[kind]
    audio = np.zeros((channels, n), np.float32)
    if kind != "silence":
        audio = (0.2 * rng.standard_normal((channels, n))).astype(np.float32)
    if channels == 1 and kind == "noise":
        audio = audio[0]  # 1-D mono is accepted as well
    f = analyze(audio, sr)
    data = assert_all_finite(f)
    assert (f.sample_rate, f.channels) == (sr, channels)
    assert f.duration == pytest.approx(n / sr)
    if kind == "silence":
        assert f.peak_dbfs is None and f.lufs is None and f.key is None
        assert f.silence_ratio == 1.0 and f.beat_count == 0
    else:
        assert f.peak_dbfs is not None and f.rms_dbfs is not None
        assert f.silence_ratio == 0.0
    if kind == "50ms":
        assert f.lufs is None  # shorter than one 400 ms BS.1770 block
        assert f.tempo_bpm is None
    assert AudioFeatures.from_dict(json.loads(json.dumps(data))) == f


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(0, np.float32),
        np.zeros((2, 0), np.float32),
        np.array([np.nan, np.inf, -np.inf, 0.5], np.float32),
        np.ones(1, np.float32),
        (np.random.default_rng(0).standard_normal(4000) * 8000).astype(np.int16),
    ],
    ids=["empty", "empty-stereo", "nan-inf", "one-sample", "int16"],
)
def test_degenerate_arrays(audio):
    f = analyze(audio, 44100)
    assert_all_finite(f)
    if audio.dtype == np.int16:
        assert f.peak_dbfs is not None and f.peak_dbfs <= 0.0  # scaled to full scale


# --- the dataclass -------------------------------------------------------------------------


def test_features_round_trip_and_label():
    f = AudioFeatures(
        duration=2.0,
        sample_rate=32000,
        channels=2,
        tempo_bpm=120.0,
        key="F#",
        mode="major",
        mfcc_means=tuple(float(i) for i in range(13)),
    )
    data = f.to_dict()
    assert isinstance(data["mfcc_means"], list)
    assert AudioFeatures.from_dict({**data, "added_in_a_later_version": 1}) == f
    assert f.key_label == "F# major"
    assert AudioFeatures(duration=1.0, sample_rate=8000, channels=1).key_label is None


def test_importing_the_module_does_not_import_librosa():
    code = (
        "import sys, samplemind_gen.analysis; "
        "assert 'librosa' not in sys.modules and 'pyloudnorm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _onset_envelope(y: np.ndarray) -> np.ndarray:
    import librosa

    from samplemind_gen.analysis import ANALYSIS_RATE, HOP, _log_mel

    mel = _log_mel(y.astype(np.float32), ANALYSIS_RATE, 2048)
    return librosa.onset.onset_strength(S=mel, sr=ANALYSIS_RATE, n_fft=2048, hop_length=HOP)


def test_the_numpy_beat_tracker_is_librosas():
    """`beat_tracking.beat_track` (no librosa.beat import: 1.2 s of numba compiling saved per
    process) gives librosa's tempo and beat frames exactly: click tracks from 60 to 200 BPM,
    with and without timing jitter and noise, plain noise, and a silent envelope."""
    import librosa

    from samplemind_gen.analysis import ANALYSIS_RATE, HOP
    from samplemind_gen.beat_tracking import beat_track

    rng = np.random.default_rng(0)
    signals = [click_track(bpm, ANALYSIS_RATE, 10.0) for bpm in (60, 85, 100, 128, 174, 200)]
    for bpm in (72, 90, 140):  # humanised, in noise
        y = 0.01 * rng.standard_normal(ANALYSIS_RATE * 10)
        for k in range(int(10 * bpm / 60)):
            start = int((k * 60 / bpm + rng.normal(0, 0.01)) * ANALYSIS_RATE)
            if 0 <= start < len(y) - 500:
                y[start : start + 500] += np.hanning(1000)[500:] * rng.standard_normal(500)
        signals.append(y)
    signals += [0.1 * rng.standard_normal(ANALYSIS_RATE * 6) for _ in range(3)]
    for y in signals:
        envelope = _onset_envelope(y)
        expected_bpm, expected = librosa.beat.beat_track(
            onset_envelope=envelope, sr=ANALYSIS_RATE, hop_length=HOP
        )
        bpm, beats = beat_track(envelope, ANALYSIS_RATE, HOP)
        np.testing.assert_array_equal(np.atleast_1d(bpm), np.atleast_1d(expected_bpm))
        np.testing.assert_array_equal(beats, expected)
        assert len(beats) > 0
    silent = np.zeros(200, np.float32)
    assert beat_track(silent, ANALYSIS_RATE, HOP)[1].size == 0
    with pytest.raises(ValueError, match="1-D"):
        beat_track(np.ones((2, 10), np.float32), ANALYSIS_RATE, HOP)


def test_analysing_a_take_does_not_import_librosa_beat():
    """librosa.beat compiles a numba kernel on every import (1.2 s); the analyser never needs it."""
    code = (
        "import sys, numpy as np\n"
        "from samplemind_gen.analysis import analyze\n"
        "y = np.random.default_rng(0).standard_normal((1, 32000 * 6)).astype(np.float32)\n"
        "analyze(0.1 * y, 32000)\n"
        "print('librosa.beat' in sys.modules, 'librosa' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]
