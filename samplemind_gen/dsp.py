"""The producer's toolkit: loudness, fades, silence trimming, resampling, dither and loops.

Every function takes and returns float32 audio shaped (channels, samples) and never changes its
input in place. `Processing` bundles the steps a user asked for and `process_take` applies them
in a fixed order (trim, resample, loop, normalise, fades, dither), so the same settings always
give the same file; the settings are stored with the take in the library and are part of its
identity in the result cache.

Loudness is ITU-R BS.1770 integrated loudness (pyloudnorm); true peak is measured on the 4x
oversampled signal. The true-peak ceiling is kept by a look-ahead limiter (a sliding minimum of
the gain each sample needs, smoothed by a box filter no longer than the look-ahead, so the gain
is always at or below what the peak needs), then the gain is corrected until the loudness is on
target.

scipy, soxr, pyloudnorm and librosa are imported inside the functions that need them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samplemind_gen.errors import BadInputError

if TYPE_CHECKING:
    from samplemind_gen.take import Take

OVERSAMPLE = 4
LIMITER_LOOKAHEAD = 0.005  # seconds
LOOP_CROSSFADE = 0.010  # seconds
RESAMPLE_RATES = (22050, 24000, 32000, 44100, 48000, 88200, 96000)


# --- levels ----------------------------------------------------------------------------------


def as_channels(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise BadInputError(f"audio must be shaped (channels, samples), got {x.shape}")
    return x


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness in LUFS, or None for audio too short (< 0.4 s) or silent."""
    import pyloudnorm

    x = as_channels(audio).astype(np.float64)
    meter = pyloudnorm.Meter(sample_rate)
    if x.shape[1] <= int(meter.block_size * sample_rate):
        return None
    data = x if x.shape[0] <= 5 else np.stack([x[0::2].mean(axis=0), x[1::2].mean(axis=0)])
    value = float(meter.integrated_loudness(data.T))
    return value if math.isfinite(value) else None


def true_peak_envelope(audio: np.ndarray) -> np.ndarray:
    """Per-sample true peak (max over channels of the 4x oversampled magnitude), shape (n,)."""
    from scipy.signal import resample_poly

    x = as_channels(audio)
    n = x.shape[1]
    if n < 2:
        return np.abs(x).max(axis=0)
    up = np.abs(resample_poly(x, OVERSAMPLE, 1, axis=-1))[:, : n * OVERSAMPLE]
    per_sample = up.reshape(x.shape[0], n, OVERSAMPLE).max(axis=2).max(axis=0)
    return np.maximum(per_sample, np.abs(x).max(axis=0)).astype(np.float32)


def true_peak_db(audio: np.ndarray) -> float:
    peak = float(true_peak_envelope(audio).max()) if as_channels(audio).shape[1] else 0.0
    return gain_to_db(peak)


def limit(audio: np.ndarray, sample_rate: int, ceiling_db: float = -1.0) -> np.ndarray:
    """Look-ahead peak limiter: the true peak ends at or below `ceiling_db`, quiet passages
    are untouched."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    x = as_channels(audio)
    ceiling = db_to_gain(ceiling_db)
    for _ in range(4):
        peaks = true_peak_envelope(x)
        if peaks.max() <= ceiling:
            return x
        need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
        width = max(3, int(LIMITER_LOOKAHEAD * sample_rate) | 1)
        held = minimum_filter1d(need, size=2 * width + 1, mode="nearest")
        gain = uniform_filter1d(held, size=width, mode="nearest")
        gain = np.minimum(gain, need)  # never more gain than a sample's own peak allows
        x = (x * gain[None, :]).astype(np.float32)
    # Inter-sample overshoot left after the limiter: a last, tiny static trim.
    peak = float(true_peak_envelope(x).max())
    if peak > ceiling:
        x = (x * (ceiling / peak)).astype(np.float32)
    return x


def normalize_loudness(
    audio: np.ndarray,
    sample_rate: int,
    target_lufs: float = -14.0,
    *,
    true_peak_ceiling: float | None = -1.0,
    tolerance: float = 0.1,
) -> np.ndarray:
    """Gain (and, when the peaks demand it, limiting) to `target_lufs` with the true peak at
    or below `true_peak_ceiling` dBTP (None = no ceiling); any DC offset is removed first.
    Audio shorter than 0.4 s or silent has no integrated loudness and comes back unchanged."""
    x = as_channels(audio)
    measured = integrated_loudness(x, sample_rate)
    if measured is None:
        return x.copy()
    # A DC offset is inaudible (K-weighting ignores it) but eats the peak headroom the gain
    # needs; removing the mean keeps loops seamless, unlike a high-pass filter.
    x = (x - x.mean(axis=1, keepdims=True)).astype(np.float32)
    if not -70.0 <= target_lufs <= 0.0:
        raise BadInputError(f"target loudness must be between -70 and 0 LUFS (got {target_lufs})")
    gain_db = target_lufs - measured
    out = x
    for _ in range(6):
        out = (x * db_to_gain(gain_db)).astype(np.float32)
        if true_peak_ceiling is not None:
            out = limit(out, sample_rate, true_peak_ceiling)
        now = integrated_loudness(out, sample_rate)
        if now is None:
            break
        error = target_lufs - now
        if abs(error) <= tolerance:
            break
        gain_db += error
        if gain_db > 60:  # the limiter cannot make it louder: stop where it is
            break
    return out


# --- edits -----------------------------------------------------------------------------------


def fade(
    audio: np.ndarray, sample_rate: int, fade_in: float = 0.0, fade_out: float = 0.0
) -> np.ndarray:
    """Raised-cosine fade in and out, `fade_in`/`fade_out` seconds long."""
    x = as_channels(audio).copy()
    n = x.shape[1]
    for seconds, at_start in ((fade_in, True), (fade_out, False)):
        if seconds < 0:
            raise BadInputError(f"a fade is 0 seconds or longer (got {seconds})")
        m = min(n, int(round(seconds * sample_rate)))
        if m <= 0:
            continue
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, m, dtype=np.float64))).astype(np.float32)
        if at_start:
            x[:, :m] *= ramp
        else:
            x[:, n - m :] *= ramp[::-1]
    return x


def trim_silence(
    audio: np.ndarray, sample_rate: int, threshold_db: float = -60.0, keep: float = 0.005
) -> np.ndarray:
    """Cut leading and trailing audio quieter than `threshold_db` dBFS (20 ms RMS frames of
    the loudest channel), keeping `keep` seconds before and after the sound."""
    x = as_channels(audio)
    n = x.shape[1]
    frame = max(1, int(sample_rate * 0.02))
    hop = max(1, frame // 4)
    if n <= frame:
        return x.copy()
    power = np.square(x.astype(np.float64)).max(axis=0)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.arange(0, n - frame + 1, hop)
    rms_db = 10 * np.log10(np.maximum((csum[starts + frame] - csum[starts]) / frame, 1e-20))
    loud = np.flatnonzero(rms_db > threshold_db)
    if len(loud) == 0:
        return x[:, :0].copy()
    pad = int(keep * sample_rate)
    # Within the first/last loud frame, cut at the first/last sample above the threshold.
    level = db_to_gain(threshold_db)
    first = int(starts[loud[0]])
    last = int(starts[loud[-1]]) + frame
    amp = np.abs(x).max(axis=0)
    above = np.flatnonzero(amp[first:last] > level)
    if len(above):
        last = first + int(above[-1]) + 1
        first = first + int(above[0])
    return x[:, max(0, first - pad) : min(n, last + pad)].copy()


def resample(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Very-high-quality resampling (soxr VHQ)."""
    import soxr

    x = as_channels(audio)
    if not 8000 <= int(target_rate) <= 192000:
        raise BadInputError(f"resample to 8000..192000 Hz, e.g. 44100 or 48000 (got {target_rate})")
    if int(target_rate) == int(sample_rate):
        return x.copy()
    y = soxr.resample(np.ascontiguousarray(x.T), int(sample_rate), int(target_rate), "VHQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).T).reshape(x.shape[0], -1)


def dither(audio: np.ndarray, bits: int, *, seed: int = 0) -> np.ndarray:
    """TPDF dither and quantise to `bits`-bit PCM, returned as floats on the exact PCM grid
    (k / 2**(bits-1)), which soundfile writes back as exactly those integers."""
    if bits not in (8, 16, 24):
        raise BadInputError(f"dither to 8, 16 or 24 bits (got {bits})")
    x = as_channels(audio).astype(np.float64)
    scale = float(2 ** (bits - 1))
    rng = np.random.default_rng(seed)
    noise = rng.random(x.shape) - rng.random(x.shape)  # triangular, +-1 LSB
    q = np.round(x * scale + noise)
    q = np.clip(q, -scale, scale - 1)
    return (q / scale).astype(np.float32)


# --- loops -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopInfo:
    """Where a loop sits in its file and what tempo it is, for the `smpl` and `acid` chunks."""

    start: int  # first sample of the loop
    end: int  # last sample of the loop (inclusive, as the smpl chunk has it)
    sample_rate: int
    bpm: float
    bars: int
    beats_per_bar: int = 4
    source_offset: float = 0.0  # seconds into the generated audio where the loop was cut
    stretched: float = 1.0  # time-stretch ratio applied to hit the tempo (1 = none)
    root_note: int = 60

    @property
    def beats(self) -> int:
        return self.bars * self.beats_per_bar

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def loop_seconds(bpm: float, bars: int, beats_per_bar: int = 4) -> float:
    return bars * beats_per_bar * 60.0 / bpm


def loop_source_seconds(bpm: float, bars: int, beats_per_bar: int = 4) -> float:
    """How much audio to generate for a loop: its length, a beat to find the grid, the seam
    crossfade, and a little headroom."""
    return loop_seconds(bpm, bars, beats_per_bar) + 60.0 / bpm + LOOP_CROSSFADE + 0.25


def beat_grid(audio: np.ndarray, sample_rate: int, bpm: float) -> np.ndarray:
    """Beat positions (samples) of a grid at `bpm`, its phase detected from the onsets: the
    phase whose grid points collect the most onset strength. Fine hops (2 ms at 32 kHz) and
    short frames keep the grid within a few milliseconds of the transients."""
    import warnings

    import librosa

    mono = as_channels(audio).mean(axis=0)
    hop = max(16, int(sample_rate * 0.002))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = librosa.onset.onset_strength(
            y=mono, sr=sample_rate, hop_length=hop, n_fft=4 * _pow2_at_most(hop * 4), n_mels=64
        )
    period = 60.0 / bpm * sample_rate / hop  # frames per beat
    if len(env) < 2 or period >= len(env):
        return np.array([0], dtype=np.int64)
    phases = np.arange(0.0, period, 0.25)
    beats = np.arange(0.0, len(env) - phases[-1], period)
    idx = np.clip(np.round(phases[:, None] + beats[None, :]).astype(np.int64), 0, len(env) - 1)
    best = float(phases[int(np.argmax(env[idx].mean(axis=1)))])
    grid = (best + np.arange(0.0, len(env), period)) * hop
    return np.round(grid[grid < mono.shape[0]]).astype(np.int64)


def _pow2_at_most(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def detected_tempo(audio: np.ndarray, sample_rate: int) -> float | None:
    from samplemind_gen.analysis import analyze

    return analyze(audio, sample_rate).tempo_bpm


def make_loop(
    audio: np.ndarray,
    sample_rate: int,
    *,
    bpm: float,
    bars: int,
    beats_per_bar: int = 4,
    crossfade: float = LOOP_CROSSFADE,
    fit_tempo: bool = True,
) -> tuple[np.ndarray, LoopInfo]:
    """Cut exactly `bars` bars at `bpm` out of `audio`, starting on a detected beat, and make
    the wrap seamless.

    The loop is [s, s + N); the `crossfade` seconds that follow its end in the source are
    blended into its first samples, so the sample after the loop's last one is, at the wrap,
    the very sample that followed it in the source: no click. With `fit_tempo`, audio whose
    detected tempo is within 8% of `bpm` (or of its half/double) is time-stretched onto it first.
    """
    if not 20 <= bpm <= 400:
        raise BadInputError(f"--bpm must be from 20 to 400 (got {bpm:g})")
    if not 1 <= bars <= 64:
        raise BadInputError(f"--loop-bars must be from 1 to 64 (got {bars})")
    x = as_channels(audio)
    stretched = 1.0
    if fit_tempo:
        found = detected_tempo(x, sample_rate)
        ratio = _tempo_ratio(found, bpm)
        if ratio is not None and abs(ratio - 1.0) > 0.002:
            x = _stretch(x, ratio)
            stretched = ratio
    n = int(round(loop_seconds(bpm, bars, beats_per_bar) * sample_rate))
    f = max(1, int(round(crossfade * sample_rate)))
    if x.shape[1] < n + f:
        have = x.shape[1] / sample_rate
        need = (n + f) / sample_rate
        raise BadInputError(
            f"{bars} bars at {bpm:g} BPM need {need:.2f} s of audio, the take has {have:.2f} s; "
            f"generate at least {loop_source_seconds(bpm, bars, beats_per_bar):.1f} s"
        )
    start = 0
    beats = beat_grid(x, sample_rate, bpm) if x.shape[1] >= 2 * sample_rate else np.array([])
    fitting = [int(b) for b in beats if b + n + f <= x.shape[1]]
    if fitting:
        start = fitting[0]
    loop = x[:, start : start + n].copy()
    tail = x[:, start + n : start + n + f]
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, f, dtype=np.float64))).astype(np.float32)
    # Equal-gain blend (the two sides are the same material, strongly correlated).
    loop[:, :f] = loop[:, :f] * ramp + tail * (1.0 - ramp)
    info = LoopInfo(
        start=0,
        end=n - 1,
        sample_rate=sample_rate,
        bpm=float(bpm),
        bars=int(bars),
        beats_per_bar=int(beats_per_bar),
        source_offset=start / sample_rate,
        stretched=stretched,
    )
    return loop, info


def seam_jump(audio: np.ndarray) -> float:
    """How much bigger the step across the wrap point (last sample -> first) is than the
    largest step inside the loop: 1.0 means the seam is as smooth as the audio itself."""
    x = as_channels(audio)
    inner = float(np.abs(np.diff(x, axis=1)).max()) if x.shape[1] > 1 else 0.0
    wrap = float(np.abs(x[:, 0] - x[:, -1]).max())
    return wrap / inner if inner > 0 else (0.0 if wrap == 0 else math.inf)


def _tempo_ratio(found: float | None, bpm: float) -> float | None:
    if not found:
        return None
    for candidate in (found, found * 2, found / 2):
        ratio = candidate / bpm
        if 0.92 <= ratio <= 1.08:
            return ratio
    return None


def _stretch(x: np.ndarray, ratio: float) -> np.ndarray:
    """Time-stretch by `ratio` (> 1 = faster, shorter): found tempo / wanted tempo."""
    import librosa

    # rate < 1 slows down: audio at `found` BPM played at rate bpm/found lands on `bpm`.
    rate = 1.0 / ratio
    return np.stack([librosa.effects.time_stretch(ch, rate=rate) for ch in x]).astype(np.float32)


def smpl_chunk(loop: LoopInfo) -> bytes:
    """A WAV `smpl` chunk with one forward loop that repeats forever."""
    from samplemind_gen import riff

    period_ns = int(round(1e9 / loop.sample_rate))
    header = struct.pack(
        "<9I", 0, 0, period_ns, loop.root_note, 0, 0, 0, 1, 0
    )  # manufacturer, product, period, unity note, pitch fraction, SMPTE fmt/offset, loops, data
    body = struct.pack("<6I", 0, 0, loop.start, loop.end, 0, 0)  # id, forward, start, end, ...
    return riff.encode_chunk(b"smpl", header + body)


def acid_chunk(loop: LoopInfo) -> bytes:
    """An ACID `acid` chunk: a stretchable loop with its root note, beat count, meter and tempo
    (read by Ableton Live, FL Studio, Reaper and ACID)."""
    from samplemind_gen import riff

    flags = 0x02 | 0x04  # root note set, stretch on (not a one-shot)
    payload = struct.pack(
        "<IHHfIHHf",
        flags,
        loop.root_note,
        0x8000,
        0.0,
        loop.beats,
        4,
        loop.beats_per_bar,
        float(loop.bpm),
    )
    return riff.encode_chunk(b"acid", payload)


def write_loop_chunks(path: Path, loop: LoopInfo) -> None:
    """Add (or replace) the `smpl` and `acid` chunks of an exported WAV."""
    from samplemind_gen import riff

    riff.set_chunks(path, [smpl_chunk(loop), acid_chunk(loop)])


def read_loop_chunks(path: Path) -> dict[str, Any]:
    """What `write_loop_chunks` wrote, decoded: loop start/end, bpm, beats, meter."""
    from samplemind_gen import riff

    out: dict[str, Any] = {}
    smpl = riff.find_chunk(path, b"smpl")
    if smpl is not None and len(smpl) >= 36:
        fields_ = struct.unpack_from("<9I", smpl)
        out["unity_note"] = fields_[3]
        loops = []
        for i in range(fields_[7]):
            _id, kind, start, end, _frac, count = struct.unpack_from("<6I", smpl, 36 + 24 * i)
            loops.append({"type": kind, "start": start, "end": end, "play_count": count})
        out["loops"] = loops
    acid = riff.find_chunk(path, b"acid")
    if acid is not None and len(acid) >= 24:
        flags, root, _u1, _u2, beats, denom, numer, tempo = struct.unpack_from("<IHHfIHHf", acid)
        out.update(
            acid_flags=flags, root_note=root, beats=beats, meter=f"{numer}/{denom}", bpm=tempo
        )
    return out


# --- the chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processing:
    """Post-processing applied before export. Defaults do nothing."""

    trim: bool = False
    trim_threshold_db: float = -60.0
    resample: int | None = None
    loop_bars: int | None = None
    bpm: float | None = None
    beats_per_bar: int = 4
    normalize_lufs: float | None = None
    true_peak_db: float = -1.0
    fade_in: float = 0.0
    fade_out: float = 0.0
    dither_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Only what differs from the defaults: `{}` means "no processing"."""
        defaults = Processing()
        data = asdict(self)
        out = {k: v for k, v in data.items() if v != getattr(defaults, k)}
        # The ceiling and the meter matter (only) with the step they belong to.
        if self.normalize_lufs is None:
            out.pop("true_peak_db", None)
        else:
            out["true_peak_db"] = self.true_peak_db
        if self.loop_bars is None:
            out.pop("beats_per_bar", None)
        else:
            out["beats_per_bar"] = self.beats_per_bar
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Processing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def is_empty(self) -> bool:
        return not self.to_dict()


def process(
    audio: np.ndarray, sample_rate: int, steps: Processing, *, seed: int = 0
) -> tuple[np.ndarray, int, LoopInfo | None, list[str]]:
    """Apply `steps`: (audio, sample rate, loop info or None, notes for the user)."""
    x = as_channels(audio)
    sr = int(sample_rate)
    notes: list[str] = []
    loop: LoopInfo | None = None
    if steps.trim:
        x = trim_silence(x, sr, steps.trim_threshold_db)
        if x.shape[1] == 0:
            raise BadInputError("the take is silent: --trim would leave nothing")
    if steps.resample:
        x = resample(x, sr, steps.resample)
        sr = int(steps.resample)
    if steps.loop_bars:
        bpm = steps.bpm or detected_tempo(x, sr)
        if not bpm:
            raise BadInputError("no tempo could be detected for the loop; give it with --bpm")
        if not steps.bpm:
            notes.append(f"loop cut at the detected tempo, {bpm:.1f} BPM")
        x, loop = make_loop(
            x, sr, bpm=float(bpm), bars=steps.loop_bars, beats_per_bar=steps.beats_per_bar
        )
        if loop.stretched != 1.0:
            notes.append(
                f"time-stretched by {100 * (1 / loop.stretched - 1):+.1f}% onto {bpm:g} BPM"
            )
    if steps.normalize_lufs is not None:
        x = normalize_loudness(x, sr, steps.normalize_lufs, true_peak_ceiling=steps.true_peak_db)
    if steps.fade_in or steps.fade_out:
        if loop is not None:
            notes.append("fades skipped: a loop has to stay seamless at its ends")
        else:
            x = fade(x, sr, steps.fade_in, steps.fade_out)
    if steps.dither_bits:
        x = dither(x, steps.dither_bits, seed=seed)
    return x, sr, loop, notes


def process_take(take: Take, steps: Processing) -> tuple[Take, LoopInfo | None]:
    """A new take with `steps` applied and its features measured again."""
    audio, sr, loop, notes = process(take.audio, take.sample_rate, steps, seed=take.seed)
    features = take.features
    if features is not None:
        from samplemind_gen.analysis import analyze

        features = analyze(audio, sr)
    new = replace(take, audio=audio, sample_rate=sr, features=features)
    new.notes = [*take.notes, *notes]
    new.timings = dict(take.timings)
    return new, loop
