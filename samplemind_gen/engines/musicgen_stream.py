"""Audio while MusicGen is still generating: EnCodec decodes the codes in chunks as they arrive.

EnCodec's decoder is convolutional with an LSTM, so a chunk decoded alone differs at its edges from
the same stretch of a one-shot decode. Each chunk is therefore decoded with some frames of past
context (warming the LSTM and the convolutions) and a few frames of look-ahead (the convolutions
see a little into the future), and only its middle is emitted. Concatenated chunks match the
one-shot decode closely (tested); the take that is saved is always the one-shot decode, so a
recipe reproduces the same file whether or not it was streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from samplemind_gen.engines.base import AudioCallback

__all__ = ["AudioCallback", "ChunkedAudioDecoder", "complete_frames", "frame_columns"]


class ChunkedAudioDecoder:
    """Feeds complete code frames in, calls `on_audio` with decoded audio chunks.

    The first chunk is short (time-to-first-sound), later ones longer (less overhead)."""

    def __init__(
        self,
        decode: Callable[[Any], np.ndarray],
        on_audio: AudioCallback,
        *,
        hop: int,
        total_samples: int,
        first_chunk_frames: int = 12,
        chunk_frames: int = 50,
        context_frames: int = 25,
        lookahead_frames: int = 4,
    ) -> None:
        self.decode = decode
        self.on_audio = on_audio
        self.hop = hop
        self.total_samples = total_samples
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.context_frames = context_frames
        self.lookahead_frames = lookahead_frames
        self.emitted_frames = 0
        self.emitted_samples = 0
        self.chunks = 0
        self.decode_seconds = 0.0
        self.first_audio_at: float | None = None  # perf_counter() when the first chunk went out

    @property
    def done(self) -> bool:
        return self.emitted_samples >= self.total_samples

    def frames_needed(self) -> int:
        """Complete frames needed before the next chunk can be decoded."""
        size = self.first_chunk_frames if self.chunks == 0 else self.chunk_frames
        return self.emitted_frames + size + self.lookahead_frames

    def feed(self, codes: Any, *, final: bool = False) -> None:
        """`codes`: (batch, codebooks, n) all complete frames so far. Emits every chunk that is
        due; with `final`, emits the rest."""
        import time

        n = int(codes.shape[-1])
        while not self.done:
            if final:
                end = n
            elif n >= self.frames_needed():
                size = self.first_chunk_frames if self.chunks == 0 else self.chunk_frames
                end = self.emitted_frames + size
            else:
                return
            if end <= self.emitted_frames:
                return
            start = max(0, self.emitted_frames - self.context_frames)
            stop = n if final else min(n, end + self.lookahead_frames)
            t0 = time.perf_counter()
            audio = self.decode(codes[..., start:stop])
            self.decode_seconds += time.perf_counter() - t0
            lo = (self.emitted_frames - start) * self.hop
            hi = (end - start) * self.hop
            piece = audio[..., lo:hi]
            piece = piece[..., : self.total_samples - self.emitted_samples]
            if piece.shape[-1] == 0:
                return
            if self.first_audio_at is None:
                self.first_audio_at = time.perf_counter()
            self.on_audio(np.ascontiguousarray(piece, dtype=np.float32), self.emitted_samples)
            self.emitted_samples += piece.shape[-1]
            self.emitted_frames = end
            self.chunks += 1
            if final and end >= n:
                # Audio can run short of total_samples by part of a frame: pad with silence.
                missing = self.total_samples - self.emitted_samples
                if missing > 0:
                    pad = np.zeros((*piece.shape[:-1], missing), dtype=np.float32)
                    self.on_audio(pad, self.emitted_samples)
                    self.emitted_samples += missing
                return


def frame_columns(delay_mask: Any, rows: int) -> Any:
    """For each codebook row of the delay pattern, the column holding its frame 0."""
    return (delay_mask[:rows] == -1).int().argmax(dim=1)


def complete_frames(current: Any, first_column: Any, batch: int, codebooks: int) -> Any:
    """(batch * codebooks, columns) delay-pattern ids -> (batch, codebooks, n) complete frames."""
    import torch

    columns = current.shape[-1]
    n = int(columns - int(first_column.max()))
    if n <= 0:
        return current.new_zeros((batch, codebooks, 0))
    index = first_column[:, None] + torch.arange(n, device=current.device)[None, :]
    index = index.repeat(batch, 1)
    return current.gather(1, index).reshape(batch, codebooks, n)
