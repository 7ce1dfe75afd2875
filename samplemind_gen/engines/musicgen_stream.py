"""Audio while MusicGen is still generating: EnCodec decodes the codes in chunks as they arrive.

The chunks come from `encodec_windows.DecoderStream`: the LSTM's state is carried from chunk to
chunk and the convolutions get the few frames of context and look-ahead they need, so the
streamed audio joined end to end equals the saved take (the windowed one-shot decode) up to float
summation order (~1e-7; tested). What you hear while it generates is what gets saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from samplemind_gen.engines.base import AudioCallback
from samplemind_gen.engines.encodec_windows import HALO_FRAMES, LOOKAHEAD_FRAMES

__all__ = ["AudioCallback", "ChunkedAudioDecoder", "complete_frames", "frame_columns"]

# push(codes, final) -> float32 (batch, channels, n) audio now final, or None
PushFunction = Callable[..., "np.ndarray | None"]


class ChunkedAudioDecoder:
    """Feeds complete code frames in, calls `on_audio` with decoded audio chunks.

    The first chunk is short (time-to-first-sound), later ones longer (less overhead)."""

    def __init__(
        self,
        push: PushFunction,
        on_audio: AudioCallback,
        *,
        hop: int,
        total_samples: int,
        first_chunk_frames: int = 12,
        chunk_frames: int = 50,
    ) -> None:
        self.push = push
        self.on_audio = on_audio
        self.hop = hop
        self.total_samples = total_samples
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.pushed_frames = 0
        self.emitted_samples = 0
        self.chunks = 0
        self.decode_seconds = 0.0
        self.first_audio_at: float | None = None  # perf_counter() when the first chunk went out
        self._lead: tuple[int, ...] | None = None  # (batch, channels) of the chunks

    @property
    def done(self) -> bool:
        return self.emitted_samples >= self.total_samples

    def frames_needed(self) -> int:
        """Complete frames needed before the next chunk is decoded."""
        size = self.first_chunk_frames if self.chunks == 0 else self.chunk_frames
        if self.chunks == 0:
            return size + LOOKAHEAD_FRAMES + HALO_FRAMES
        return self.pushed_frames + size

    def feed(self, codes: Any, *, final: bool = False) -> None:
        """`codes`: (batch, codebooks, n) all complete frames so far. Emits the audio that is
        final now; with `final`, emits the rest (padded with silence to the take's length)."""
        import time

        if self.done:
            return
        self.pushed_frames = int(codes.shape[-1])
        t0 = time.perf_counter()
        audio = self.push(codes, final=final)
        self.decode_seconds += time.perf_counter() - t0
        if audio is not None:
            self._emit(audio[..., : self.total_samples - self.emitted_samples])
        if final and not self.done and self._lead is not None:
            # Audio can run short of total_samples by part of a frame: pad with silence.
            missing = self.total_samples - self.emitted_samples
            self._emit(np.zeros((*self._lead, missing), dtype=np.float32))

    def _emit(self, piece: np.ndarray) -> None:
        import time

        if piece.shape[-1] == 0:
            return
        if self.first_audio_at is None:
            self.first_audio_at = time.perf_counter()
        self._lead = piece.shape[:-1]
        self.on_audio(np.ascontiguousarray(piece, dtype=np.float32), self.emitted_samples)
        self.emitted_samples += piece.shape[-1]
        self.chunks += 1


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
