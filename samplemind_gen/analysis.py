"""What a take sounds like, in numbers a producer uses: loudness, peaks, tempo, key, brightness.

`analyze(audio, sample_rate)` never raises on odd input (silence, a 50 ms blip, 8 kHz or 96 kHz,
mono or stereo) and never returns NaN or infinity: a value it cannot know is `None`.

Levels (peak, true peak, RMS, LUFS, silence) are measured on the audio as given. Tempo, key,
onsets and MFCCs are measured on a mono mix resampled to 22 050 Hz, which is what librosa's
defaults are tuned for and keeps analysis fast. Spectral shape (centroid, bandwidth, rolloff,
zero-crossing rate) is measured on the mono mix at its own rate (capped at 48 kHz), so bright
material above 11 kHz is not cut off.

librosa, scipy and pyloudnorm are imported inside the functions that need them, so importing
this module is cheap.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")

ANALYSIS_RATE = 22050
SPECTRAL_MAX_RATE = 48000
HOP = 512
CHROMA_HOP = 2048
N_MFCC = 13
SILENCE_DBFS = -60.0
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# Below these lengths a measurement means nothing, so it is reported as unknown.
MIN_TEMPO_SECONDS = 2.0
MIN_KEY_SECONDS = 0.25
MIN_BEATS = 4
# A tempo whose pulse is this unclear (noise, drones) is reported as unknown rather than guessed.
MIN_TEMPO_CONFIDENCE = 0.1
# A chroma profile flatter than this (coefficient of variation) has no tonal centre: noise,
# unpitched drums. At TONAL_FULL and above the profile counts as fully tonal.
MIN_TONAL = 0.1
TONAL_FULL = 0.6


@dataclass(frozen=True)
class AudioFeatures:
    """Measurements of one take. `None` means "could not be measured" (e.g. tempo of silence).

    Levels are in dBFS (0 = full scale), loudness in LUFS (ITU-R BS.1770), spectral values in Hz,
    `zero_crossing_rate` as a fraction of samples (0..1), `onset_density` in onsets per second,
    `silence_ratio` as the fraction of the take quieter than -60 dBFS.
    """

    duration: float
    sample_rate: int
    channels: int
    peak_dbfs: float | None = None
    true_peak_dbfs: float | None = None
    rms_dbfs: float | None = None
    lufs: float | None = None
    tempo_bpm: float | None = None
    tempo_confidence: float | None = None
    beat_count: int = 0
    key: str | None = None
    mode: str | None = None
    key_confidence: float | None = None
    spectral_centroid: float | None = None
    spectral_bandwidth: float | None = None
    spectral_rolloff: float | None = None
    zero_crossing_rate: float | None = None
    onset_density: float | None = None
    mfcc_means: tuple[float, ...] | None = None
    silence_ratio: float | None = None

    @property
    def key_label(self) -> str | None:
        """The key as a producer writes it, e.g. "A minor"; None when unknown."""
        if self.key is None:
            return None
        return f"{self.key} {self.mode}" if self.mode else self.key

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the MFCC tuple becomes a list)."""
        data = asdict(self)
        if data["mfcc_means"] is not None:
            data["mfcc_means"] = list(data["mfcc_means"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioFeatures:
        """Inverse of `to_dict`; unknown keys are ignored so older/newer files still load."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("mfcc_means") is not None:
            values["mfcc_means"] = tuple(float(v) for v in values["mfcc_means"])
        return cls(**values)


def analyze(audio: np.ndarray, sample_rate: int) -> AudioFeatures:
    """Measure `audio`: float samples shaped (channels, samples), or 1-D for mono."""
    sr = int(sample_rate)
    x = _as_channels(audio)
    channels, n = x.shape
    duration = n / sr if sr > 0 else 0.0
    if sr <= 0 or n == 0:
        return AudioFeatures(duration=_finite(duration) or 0.0, sample_rate=sr, channels=channels)

    values: dict[str, Any] = {}
    values.update(_attempt(_levels, x, sr) or {})
    mono = _mono(x)
    if not np.any(mono):
        # Digital silence: nothing rhythmic, tonal or spectral to measure.
        return AudioFeatures(
            duration=duration,
            sample_rate=sr,
            channels=channels,
            beat_count=0,
            onset_density=0.0,
            **values,
        )

    values.update(_attempt(_spectral_shape, mono, sr) or {})
    y = _attempt(_resample, mono, sr, ANALYSIS_RATE)
    if y is not None and len(y):
        n_fft = 2048 if len(y) >= 2048 else _pow2_at_least(max(len(y) // 2, 64))
        # One log-mel spectrogram feeds both the onset envelope and the MFCCs.
        mel_db = _attempt(_log_mel, y, ANALYSIS_RATE, n_fft)
        if mel_db is not None:
            values.update(_attempt(_rhythm, mel_db, len(y) / ANALYSIS_RATE, n_fft) or {})
            values.update(_attempt(_mfcc, mel_db) or {})
        values.update(_attempt(_key, y, ANALYSIS_RATE) or {})
    return AudioFeatures(duration=duration, sample_rate=sr, channels=channels, **values)


# --- input ---------------------------------------------------------------------------------


def _as_channels(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 0:
        x = x.reshape(1, 1)
    elif x.ndim == 1:
        x = x[np.newaxis, :]
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    if np.issubdtype(x.dtype, np.integer):
        # PCM integers (e.g. int16 straight from a file): scale to -1..1 full scale.
        x = x / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float64, copy=True)
    # NaN/inf samples would poison every measurement; treat them as silence.
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _mono(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 1:
        return x[0]
    mono = x.mean(axis=0)
    # Channels in opposite phase cancel in the mix; measure the loudest channel instead.
    channel_power = np.mean(np.square(x), axis=1)
    if float(np.mean(np.square(mono))) < 1e-3 * float(channel_power.mean()):
        return x[int(np.argmax(channel_power))]
    return mono


def _resample(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return y.astype(np.float32)
    import soxr

    return np.asarray(soxr.resample(y.astype(np.float32), sr, target, quality="HQ"))


# --- levels --------------------------------------------------------------------------------


def _levels(x: np.ndarray, sr: int) -> dict[str, Any]:
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(np.square(x))))
    return {
        "peak_dbfs": _db(peak),
        "true_peak_dbfs": _db(max(peak, _true_peak(x))),
        "rms_dbfs": _db(rms),
        "lufs": _lufs(x, sr),
        "silence_ratio": _silence_ratio(x, sr),
    }


def _true_peak(x: np.ndarray, block: int = 4096, context: int = 64) -> float:
    """Peak of the 4x oversampled signal (ITU-R BS.1770 annex 2 inter-sample peak).

    Only blocks whose sample peak is within 6 dB of the overall peak can hold the true peak,
    so only those are oversampled, each with some context either side so the interpolation
    filter sees real neighbours instead of zeros.
    """
    n = x.shape[1]
    if n < 2:
        return 0.0
    from scipy.signal import firwin, resample_poly

    magnitude = np.max(np.abs(x), axis=0)
    peak = float(magnitude.max())
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = magnitude
    block_peaks = padded.reshape(n_blocks, block).max(axis=1)
    candidates = np.flatnonzero(block_peaks >= 0.5 * peak)
    if len(candidates) > n_blocks // 2:
        # Dense material (noise, limited masters): one pass over everything is cheaper.
        return float(np.max(np.abs(resample_poly(x.astype(np.float32), 4, 1, axis=-1))))
    # resample_poly's own filter (Kaiser, 10 taps per phase), designed once for all blocks.
    taps = firwin(81, 1 / 4, window=("kaiser", 5.0))
    true_peak = peak
    for b in candidates:
        start, end = int(b) * block, min(n, (int(b) + 1) * block)
        lo, hi = max(0, start - context), min(n, end + context)
        up = resample_poly(x[:, lo:hi].astype(np.float32), 4, 1, axis=-1, window=taps)
        core = up[:, (start - lo) * 4 : (end - lo) * 4]
        true_peak = max(true_peak, float(np.max(np.abs(core))))
    return true_peak


def _lufs(x: np.ndarray, sr: int) -> float | None:
    import pyloudnorm

    meter = pyloudnorm.Meter(sr)
    if x.shape[1] <= int(meter.block_size * sr):
        return None  # BS.1770 gates 400 ms blocks: shorter audio has no integrated loudness
    # pyloudnorm knows channel weights for up to 5 channels; fold anything wider to stereo.
    data = x if x.shape[0] <= 5 else np.stack([x[0::2].mean(axis=0), x[1::2].mean(axis=0)])
    try:
        value = float(meter.integrated_loudness(data.T))
    except ValueError:
        return None
    return _finite(round(value, 2))


def _silence_ratio(x: np.ndarray, sr: int) -> float:
    """Fraction of ~20 ms frames whose RMS (loudest channel) is below -60 dBFS."""
    frame = max(1, int(round(sr * 0.02)))
    n_frames = max(1, x.shape[1] // frame)
    usable = x[:, : n_frames * frame] if x.shape[1] >= frame else x
    if usable.shape[1] < frame:
        power = np.mean(np.square(usable), axis=1, keepdims=True)
    else:
        power = np.mean(np.square(usable.reshape(x.shape[0], n_frames, frame)), axis=2)
    loudest = np.max(power, axis=0)
    threshold = 10.0 ** (SILENCE_DBFS / 10.0)
    return float(np.mean(loudest < threshold))


# --- spectral shape ------------------------------------------------------------------------


def _spectral_shape(mono: np.ndarray, sr: int) -> dict[str, Any]:
    import librosa

    rate = sr
    if sr > SPECTRAL_MAX_RATE:
        mono, rate = _resample(mono, sr, SPECTRAL_MAX_RATE), SPECTRAL_MAX_RATE
    y = mono.astype(np.float32)
    # ~46 ms windows at any rate, so resolution in Hz does not depend on the sample rate.
    n_fft = _pow2_at_least(int(rate * 0.046))
    hop = n_fft // 2
    spectrum = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    frame_energy = spectrum.sum(axis=0)
    if not np.any(frame_energy > 0):
        return {}
    # Weight frames by energy so silent gaps do not drag brightness towards zero.
    weights = frame_energy / frame_energy.sum()
    centroid = librosa.feature.spectral_centroid(S=spectrum, sr=rate, n_fft=n_fft)[0]
    bandwidth = librosa.feature.spectral_bandwidth(S=spectrum, sr=rate, n_fft=n_fft)[0]
    rolloff = librosa.feature.spectral_rolloff(S=spectrum, sr=rate, n_fft=n_fft)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)[0]
    m = min(len(zcr), len(weights))
    return {
        "spectral_centroid": _weighted(centroid, weights),
        "spectral_bandwidth": _weighted(bandwidth, weights),
        "spectral_rolloff": _weighted(rolloff, weights),
        "zero_crossing_rate": _weighted(zcr[:m], weights[:m], digits=5),
    }


# --- rhythm --------------------------------------------------------------------------------


def _log_mel(y: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """librosa's default onset/MFCC front end: 128-band mel power in dB."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=HOP)
    return np.asarray(librosa.power_to_db(mel))


def _rhythm(mel_db: np.ndarray, duration: float, n_fft: int) -> dict[str, Any]:
    import librosa

    from samplemind_gen.beat_tracking import beat_track

    sr = ANALYSIS_RATE
    envelope = librosa.onset.onset_strength(S=mel_db, sr=sr, n_fft=n_fft, hop_length=HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=HOP)
    result: dict[str, Any] = {"onset_density": round(len(onsets) / duration, 3)}
    if duration < MIN_TEMPO_SECONDS or not np.any(envelope > 0):
        return result
    # librosa's tracker in NumPy: importing librosa.beat costs 1.2 s of numba compiling.
    coarse, beats = beat_track(envelope, sr, HOP)
    beats = np.asarray(beats, dtype=int)
    coarse_bpm = float(np.atleast_1d(coarse)[0])
    result["beat_count"] = len(beats)
    if len(beats) < MIN_BEATS or not coarse_bpm > 0:
        return result
    bpm = _refine_tempo(envelope, beats, coarse_bpm, sr)
    confidence = _tempo_confidence(envelope, beats, bpm, sr)
    if confidence >= MIN_TEMPO_CONFIDENCE:
        result["tempo_bpm"] = _finite(round(bpm, 2))
        result["tempo_confidence"] = confidence
    return result


def _refine_tempo(envelope: np.ndarray, beats: np.ndarray, coarse_bpm: float, sr: int) -> float:
    """Sub-frame tempo from the beat times.

    librosa's tempo estimate is quantised to whole-frame autocorrelation lags (117.5 or 123.0
    BPM either side of 120 at hop 512), so the period is re-measured from the tracked beats,
    each placed at the parabola through its onset peak, and averaged over the steady runs.
    """
    frames = beats.astype(np.float64)
    for i, b in enumerate(beats):
        if 0 < b < len(envelope) - 1:
            a, c, d = envelope[b - 1], envelope[b], envelope[b + 1]
            denom = a - 2 * c + d
            if denom < 0:
                frames[i] = b + float(np.clip(0.5 * (a - d) / denom, -0.5, 0.5))
    intervals = np.diff(frames)
    expected = 60.0 * sr / HOP / coarse_bpm
    median = float(np.median(intervals))
    # Trust the beat grid only when it agrees with the tempogram (no half/double confusion).
    if not 0.9 * expected <= median <= 1.1 * expected:
        return coarse_bpm
    steady = intervals[np.abs(intervals - median) <= 0.1 * median]
    if len(steady) < MIN_BEATS - 1:
        return coarse_bpm
    period_frames = float(np.mean(steady))
    return 60.0 * sr / HOP / period_frames


def _tempo_confidence(envelope: np.ndarray, beats: np.ndarray, bpm: float, sr: int) -> float:
    """0..1: how strongly the onsets repeat at the beat period (pulse clarity) times how steady
    the tracked beats are."""
    env = envelope - envelope.mean()
    energy = float(np.dot(env, env))
    if energy <= 0:
        return 0.0
    lag = 60.0 * sr / HOP / bpm
    lo = int(math.floor(lag))
    if lo + 1 >= len(env):
        return 0.0

    def acf(k: int) -> float:
        return float(np.dot(env[:-k], env[k:])) / energy if k > 0 else 1.0

    frac = lag - lo
    clarity = (1 - frac) * acf(lo) + frac * acf(lo + 1)
    intervals = np.diff(beats.astype(np.float64))
    steadiness = 1.0 - min(1.0, float(np.std(intervals)) / max(float(np.mean(intervals)), 1e-9))
    return round(float(np.clip(clarity, 0.0, 1.0) * steadiness), 3)


# --- key -----------------------------------------------------------------------------------


def _key(y: np.ndarray, sr: int) -> dict[str, Any]:
    import librosa

    if len(y) / sr < MIN_KEY_SECONDS:
        return {}
    # Only the average chroma matters for the key, so a coarse hop (~93 ms) is plenty and
    # makes the constant-Q transform several times cheaper.
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=CHROMA_HOP)
    return estimate_key(chroma.mean(axis=1))


def estimate_key(chroma_profile: np.ndarray) -> dict[str, Any]:
    """Krumhansl-Schmuckler: correlate a 12-bin pitch-class profile (C first) with the 24 major
    and minor key profiles. The best match is the key; its correlation, scaled down for flat
    (barely tonal) profiles, is the confidence. Returns {} when there is no tonal centre."""
    profile = np.asarray(chroma_profile, dtype=np.float64)
    mean = float(profile.mean()) if profile.size == 12 else 0.0
    if not np.all(np.isfinite(profile)) or not mean > 0:
        return {}
    tonalness = float(profile.std()) / mean
    if tonalness < MIN_TONAL:
        return {}
    best: tuple[float, int, str] = (-2.0, 0, "major")
    for mode, template in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if math.isfinite(r) and r > best[0]:
                best = (r, tonic, mode)
    r, tonic, mode = best
    if r <= -1.0:
        return {}
    return {
        "key": PITCH_CLASSES[tonic],
        "mode": mode,
        "key_confidence": round(float(np.clip(r * min(1.0, tonalness / TONAL_FULL), 0, 1)), 3),
    }


# --- timbre --------------------------------------------------------------------------------


def _mfcc(mel_db: np.ndarray) -> dict[str, Any]:
    import librosa

    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    means = np.nan_to_num(mfcc.mean(axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    return {"mfcc_means": tuple(round(float(v), 4) for v in means)}


# --- helpers -------------------------------------------------------------------------------


def _attempt(fn: Callable[..., T], *args: Any) -> T | None:
    """Run one measurement; a failure loses that measurement (None), never the whole analysis."""
    try:
        with warnings.catch_warnings():
            # librosa warns about short inputs (n_fft larger than the signal); results stay valid.
            warnings.simplefilter("ignore")
            return fn(*args)
    except Exception:  # noqa: BLE001 - analysis must not take the app down
        log.warning("analysis step %s failed", fn.__name__, exc_info=True)
        return None


def _db(amplitude: float) -> float | None:
    if not amplitude > 0 or not math.isfinite(amplitude):
        return None
    return round(20.0 * math.log10(amplitude), 2)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _weighted(values: np.ndarray, weights: np.ndarray, digits: int = 2) -> float | None:
    value = float(np.sum(np.nan_to_num(values) * weights))
    return _finite(round(value, digits))


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
