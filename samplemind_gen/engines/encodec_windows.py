"""EnCodec decoding in windows: the same audio as a one-shot decode, in bounded memory, and
exact streaming.

A one-shot `EncodecModel.decode` of MusicGen's 32 kHz codec holds ~80 MB of activations per
second of audio (measured: +390 MB peak for 5 s, so a 30 s take would need 2.4 GB on top of the
model). Its decoder is a convolution and a unidirectional LSTM at the 50 Hz frame rate, then
transposed convolutions and residual blocks up to 32 kHz. Everything after the LSTM is
convolutional with a receptive field of a few frames, so it can run over windows of frames with
a halo of context on each side, keeping only each window's middle: the result equals the one-shot
decode (up to float summation order, ~1e-6). The LSTM is causal, so a stream carries its state
from chunk to chunk; the convolution before it needs a few frames of look-ahead.

`WindowedDecoder.decode` replaces the one-shot decode (peak memory now set by the window, not
the take's length); `WindowedDecoder.stream()` gives a `DecoderStream` that turns complete code
frames into audio as they arrive and whose concatenated output equals `decode` of all the codes.
"""

from __future__ import annotations

from typing import Any

WINDOW_FRAMES = 100  # 2 s of audio per window at 50 Hz: ~160 MB of activations at most
HALO_FRAMES = 2  # context each side of a window (the receptive field is 1 frame: measured)
LOOKAHEAD_FRAMES = 4  # future frames the pre-LSTM convolution needs (3 for its kernel of 7)


class WindowedDecoder:
    """Decodes (batch, codebooks, frames) codes with one EnCodec model, window by window."""

    def __init__(
        self,
        encodec: Any,
        *,
        window_frames: int = WINDOW_FRAMES,
        halo_frames: int = HALO_FRAMES,
        half_lstm: bool = False,
    ) -> None:
        """`half_lstm`: the LSTM's recurrent weights in fp16 on samplemind-gen's CPU kernel
        (`encodec_fast.HalfLstm`) where it is built; the packed CPU modes ask for it."""
        from samplemind_gen.engines.encodec_fast import HalfLstm, speed_up_decoder

        fold_weight_norm(encodec.decoder)
        speed_up_decoder(encodec.decoder)  # convolutions as matrix products: same audio, faster
        layers = list(encodec.decoder.layers)
        lstm = [i for i, layer in enumerate(layers) if type(layer).__name__ == "EncodecLSTM"]
        self.encodec = encodec
        self.window = window_frames
        self.halo = halo_frames
        if len(lstm) == 1:
            self.before = layers[: lstm[0]]
            self.lstm = layers[lstm[0]].lstm
            self.after = layers[lstm[0] + 1 :]
        else:  # not the layout this was written for: decode in one go
            self.before, self.lstm, self.after = layers, None, []
        if half_lstm and self.lstm is not None and HalfLstm.fits(self.lstm):
            from samplemind_gen.engines import native_kernels

            if native_kernels.available():  # a drop-in: swapped in for EnCodec's nn.LSTM
                self.lstm = layers[lstm[0]].lstm = HalfLstm(self.lstm)
        hop = 1
        for ratio in encodec.config.upsampling_ratios:
            hop *= int(ratio)
        self.hop = hop

    @property
    def half_lstm(self) -> Any:
        """The fp16 LSTM (`encodec_fast.HalfLstm`) this decoder runs, or None."""
        from samplemind_gen.engines.encodec_fast import HalfLstm

        return self.lstm if isinstance(self.lstm, HalfLstm) else None

    # ------------------------------------------------------------------ pieces
    def embed(self, codes: Any) -> Any:
        """(batch, codebooks, frames) -> (batch, dim, frames): the quantizer's sum of codewords."""
        return self.encodec.quantizer.decode(codes.transpose(0, 1))

    def run_before(self, x: Any) -> Any:
        for layer in self.before:
            x = layer(x)
        return x

    def run_lstm(self, x: Any, state: Any = None) -> tuple[Any, Any]:
        """EncodecLSTM's forward (residual around a unidirectional LSTM), with its state."""
        import torch

        if self.lstm is None:
            return x, None
        seq = x.permute(2, 0, 1)
        # nn.LSTM on PyTorch's own LSTM kernel, not oneDNN's (a HalfLstm does not care): oneDNN
        # reorders the LSTM weights (16 MB) on every call, which made a take streamed in
        # 50-frame chunks spend 0.55 s instead of 0.38 s in the LSTM per 8 s; the native kernel
        # costs the same chunked or not.
        enabled = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)
        try:
            y, state = self.lstm(seq, state)
        finally:
            torch._C._set_mkldnn_enabled(enabled)
        return (y + seq).permute(1, 2, 0), state

    def run_after(self, low: Any, start: int, stop: int) -> Any:
        """Audio for frames [start, stop) of the LSTM output `low` (batch, dim, n), window by
        window, each with `halo` frames of context on both sides (clipped at 0 and n)."""
        import torch

        n = int(low.shape[-1])
        pieces = []
        for s in range(start, stop, self.window):
            e = min(stop, s + self.window)
            a, b = max(0, s - self.halo), min(n, e + self.halo)
            y = low[..., a:b]
            for layer in self.after:
                y = layer(y)
            pieces.append(y[..., (s - a) * self.hop : (e - a) * self.hop])
        if not pieces:
            return low.new_zeros((low.shape[0], 1, 0))
        return torch.cat(pieces, dim=-1)

    # ------------------------------------------------------------------ whole takes
    def decode(self, codes: Any) -> Any:
        """(batch, codebooks, frames) -> (batch, 1, frames * hop) float audio."""
        n = int(codes.shape[-1])
        if self.lstm is None:
            return self.run_before(self.embed(codes))
        low, _ = self.run_lstm(self.run_before(self.embed(codes)))
        return self.run_after(low, 0, n)

    def stream(self) -> DecoderStream:
        return DecoderStream(self)


def fold_weight_norm(module: Any) -> int:
    """Compute each weight-normalised convolution's weight once and keep it as a plain weight.
    EnCodec's convolutions recompute `g * v / |v|` on every call: once per take for a one-shot
    decode, but once per chunk when streaming (6% of a streamed decode's time). The folded
    weight is what the parametrisation computes, so the audio is unchanged. Returns how many
    were folded."""
    from torch.nn.utils import parametrize

    folded = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
    return folded


class DecoderStream:
    """Incremental decode: `push(codes)` with all complete frames so far returns the audio that
    is now final; `push(codes, final=True)` returns the rest. The pieces joined equal
    `WindowedDecoder.decode(codes)` of the final codes (float summation order aside)."""

    def __init__(self, decoder: WindowedDecoder) -> None:
        self.d = decoder
        self.low: Any = None  # LSTM output for frames [offset, done)
        self.offset = 0  # frames of LSTM output already dropped (no longer needed as context)
        self.done = 0  # frames through the LSTM so far
        self.state: Any = None
        self.emitted = 0  # frames turned into audio

    def push(self, codes: Any, *, final: bool = False) -> Any:
        """Audio (batch, 1, samples) now final, or None when nothing new is."""
        import torch

        d = self.d
        n = int(codes.shape[-1])
        if d.lstm is None:  # no streaming structure: decode everything at the end
            return d.decode(codes) if final else None
        ready = n if final else n - LOOKAHEAD_FRAMES
        if ready > self.done:
            a = max(0, self.done - LOOKAHEAD_FRAMES)
            x = d.run_before(d.embed(codes[..., a:n]))[..., self.done - a : ready - a]
            y, self.state = d.run_lstm(x, self.state)
            self.low = y if self.low is None else torch.cat([self.low, y], dim=-1)
            self.done = ready
        stop = self.done if final else self.done - d.halo
        if stop <= self.emitted:
            return None
        audio = d.run_after(self.low, self.emitted - self.offset, stop - self.offset)
        self.emitted = stop
        drop = self.emitted - d.halo - self.offset  # keep only the context later windows need
        if drop > 0 and not final:
            self.low = self.low[..., drop:]
            self.offset += drop
        return audio
