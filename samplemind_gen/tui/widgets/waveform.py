"""The waveform of the selected take: one lane per channel, a time ruler and a playhead.

The peak envelope is computed once per take, off the UI thread, with numpy (`compute_peaks`);
drawing is plain Python over those few hundred numbers, line by line (`render_line`), using
the eighth-block characters so each row has eight levels of resolution above and below the
centre line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

LOWER_BLOCKS = " ▁▂▃▄▅▆▇█"
RULER_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300)
MIN_LABEL_GAP = 8
DEFAULT_BUCKETS = 1024


@dataclass(frozen=True, eq=False)
class Peaks:
    """Absolute sample peaks (0..1) per channel, in equal time buckets, and the duration."""

    channels: tuple[tuple[float, ...], ...]
    duration: float


def compute_peaks(audio: np.ndarray, sample_rate: int, buckets: int = DEFAULT_BUCKETS) -> Peaks:
    """Peak envelope of (channels, samples) audio. Call it off the UI thread."""
    x = np.abs(np.atleast_2d(np.asarray(audio, dtype=np.float32)))
    n = x.shape[1]
    if n == 0:
        return Peaks(tuple(() for _ in range(x.shape[0])), 0.0)
    buckets = max(1, min(buckets, n))
    starts = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    peaks = np.clip(np.maximum.reduceat(x, starts, axis=1), 0.0, 1.0)
    return Peaks(tuple(tuple(row.tolist()) for row in peaks), n / sample_rate)


class GrowingPeaks:
    """The envelope of a take that is still being generated: audio chunks are written into a
    buffer of the take's full length (silence where nothing has come yet), so the waveform has
    its final time axis from the first chunk on. Use it off the UI thread."""

    def __init__(self, channels: int, total_samples: int, sample_rate: int) -> None:
        self.audio = np.zeros((channels, max(0, total_samples)), dtype=np.float32)
        self.sample_rate = sample_rate
        self.filled = 0

    def add(self, chunk: np.ndarray, start: int) -> Peaks:
        """Write (channels, n) audio at `start`; returns the envelope so far."""
        piece = np.atleast_2d(chunk)[:, : max(0, self.audio.shape[1] - start)]
        self.audio[: piece.shape[0], start : start + piece.shape[1]] = piece
        self.filled = max(self.filled, start + piece.shape[1])
        return compute_peaks(self.audio, self.sample_rate)


@lru_cache(maxsize=32)
def _columns(peaks: Peaks, width: int) -> tuple[tuple[float, ...], ...]:
    """The envelope resampled to `width` columns (max of the buckets under each column)."""
    out = []
    for channel in peaks.channels:
        n = len(channel)
        if n == 0:
            out.append((0.0,) * width)
            continue
        cols = []
        for c in range(width):
            lo = c * n // width
            hi = max(lo + 1, (c + 1) * n // width)
            cols.append(max(channel[lo:hi]))
        out.append(tuple(cols))
    return tuple(out)


@lru_cache(maxsize=32)
def ruler_text(duration: float, width: int) -> str:
    """A row of time labels ("▏0.5s") spaced at a round step that leaves room for the text."""
    if duration <= 0 or width <= 0:
        return " " * max(0, width)
    step = next((s for s in RULER_STEPS if s / duration * width >= _gap(s, duration)), None)
    if step is None:
        step = RULER_STEPS[-1]
    cells = [" "] * width
    for i in range(int(duration / step) + 1):
        t = i * step
        col = int(t / duration * width)
        label = f"▏{_seconds(t)}"
        if col + len(label) > width:
            break
        cells[col : col + len(label)] = label
    return "".join(cells)


def _gap(step: float, duration: float) -> int:
    """Columns a label at this step needs: its text plus some air."""
    longest = max(len(_seconds(i * step)) for i in range(int(duration / step) + 1))
    return max(MIN_LABEL_GAP, longest + 4)


def _seconds(t: float) -> str:
    if t >= 60:
        return f"{int(t // 60)}:{int(t % 60):02d}"
    return f"{t:.2f}".rstrip("0").rstrip(".") + "s"


def _fill(eighths: int, distance: int) -> int:
    """How many eighths of the cell `distance` rows from the centre line are filled."""
    return max(0, min(8, eighths - distance * 8))


class Waveform(Widget):
    """Draws `peaks` with a playhead at `playhead` seconds (None: not playing)."""

    COMPONENT_CLASSES = {
        "waveform--wave",
        "waveform--played",
        "waveform--playhead",
        "waveform--ruler",
        "waveform--hint",
    }
    DEFAULT_CSS = """
    Waveform { height: 1fr; min-height: 4; }
    Waveform > .waveform--wave { color: $accent; }
    Waveform > .waveform--played { color: $success; }
    Waveform > .waveform--playhead { background: $warning; color: $warning; }
    Waveform > .waveform--ruler { color: $text-muted; }
    Waveform > .waveform--hint { color: $text-muted; }
    """

    peaks: reactive[Peaks | None] = reactive(None)
    # Repainted by `watch_playhead`, and only where the playhead column moved: a full repaint
    # 20 times a second slowed a generation running at the same time (GIL).
    playhead: reactive[float | None] = reactive(None, repaint=False)
    hint = "no take yet: type a prompt and press Enter"

    def _playhead_column(self, seconds: float | None) -> int | None:
        peaks, width = self.peaks, self.size.width
        if seconds is None or peaks is None or peaks.duration <= 0 or width <= 0:
            return None
        return min(width - 1, int(seconds / peaks.duration * width))

    def watch_playhead(self, old: float | None, new: float | None) -> None:
        before, after = self._playhead_column(old), self._playhead_column(new)
        if before == after:
            return
        if before is None or after is None:
            self.refresh()  # playback started or stopped: the played colouring comes or goes
            return
        lo, hi = sorted((before, after))
        self.refresh(Region(lo, 0, hi - lo + 1, self.size.height))

    def render_line(self, y: int) -> Strip:
        width, height = self.size.width, self.size.height
        base = self.rich_style
        peaks = self.peaks
        if peaks is None or not peaks.channels or peaks.duration <= 0:
            if y != height // 2:
                return Strip.blank(width, base)
            text = self.hint[:width].center(width)
            return Strip([Segment(text, base + self.get_component_rich_style("waveform--hint"))])
        ruler_rows = 1 if height >= 3 else 0
        lanes_height = height - ruler_rows
        if y >= lanes_height:
            style = base + self.get_component_rich_style("waveform--ruler")
            return Strip([Segment(ruler_text(peaks.duration, width), style)])
        lane_height = max(1, lanes_height // len(peaks.channels))
        lane, row = divmod(y, lane_height)
        if lane >= len(peaks.channels):
            return Strip.blank(width, base)
        return self._lane_row(_columns(peaks, width)[lane], row, lane_height, base)

    def _lane_row(
        self,
        amplitudes: tuple[float, ...],
        row: int,
        lane_height: int,
        base: Style,
    ) -> Strip:
        # Rows above the centre line grow upwards (lower blocks); rows below grow downwards,
        # drawn as the complementary lower block in reverse video.
        above = math.ceil(lane_height / 2)
        below = lane_height - above
        upper_half = row < above
        distance = above - 1 - row if upper_half else row - above
        rows_in_half = above if upper_half else below
        styles = self._column_styles(len(amplitudes), base)
        segments: list[Segment] = []
        text: list[str] = []
        current: Style | None = None
        for amplitude, style in zip(amplitudes, styles, strict=True):
            eighths = round(amplitude * rows_in_half * 8)
            if amplitude > 0.002:
                eighths = max(1, eighths)
            fill = _fill(eighths, distance)
            if upper_half or fill in (0, 8):
                glyph = LOWER_BLOCKS[fill]
            else:
                glyph, style = LOWER_BLOCKS[8 - fill], style + Style(reverse=True)
            if style != current and text:
                segments.append(Segment("".join(text), current))
                text = []
            current = style
            text.append(glyph)
        if text:
            segments.append(Segment("".join(text), current))
        return Strip(segments, len(amplitudes))

    def _column_styles(self, width: int, base: Style) -> list[Style]:
        wave = base + self.get_component_rich_style("waveform--wave")
        col = self._playhead_column(self.playhead)
        if col is None:
            return [wave] * width
        played = base + self.get_component_rich_style("waveform--played")
        head = base + self.get_component_rich_style("waveform--playhead")
        return [played] * col + [head] + [wave] * (width - col - 1)
