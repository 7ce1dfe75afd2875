"""EnCodec's decoder convolutions as matrix products: the same audio, a streamed decode ~1.2-1.4x
faster.

MusicGen's 32 kHz EnCodec turns each second of codes into audio through four transposed
convolutions (kernel = 2 x stride, 1024 -> 64 channels, 50 Hz -> 32 kHz) and residual blocks of
1x1 and 3-tap convolutions. PyTorch runs them through oneDNN's convolution, which at these shapes
is far from the CPU's arithmetic speed: the 1024 -> 512 transposed convolution of a 1 s chunk
takes 17 ms for 0.9 GFLOP, the 64-channel 1x1 shortcut of the last block 12 ms for 0.3 GFLOP.
The same sums as matrix products (MKL's sgemm) take 6 ms and 1.5 ms:

- a transposed convolution whose kernel is twice its stride is one product,
  (out x kernel, in) @ (in, frames), then each frame's two halves added into consecutive output
  blocks (overlap-add) and EnCodec's fixed padding trimmed;
- a 1x1 convolution is a product over channels.

Everything stays fp32; only the order of the sums changes (~1e-6 relative, tested against the
modules they replace). `speed_up_decoder` swaps the modules in place; anything whose shape or
options differ from these cases is left as it is.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def _plain_conv(module: Any, wrapper: str, conv_type: Any) -> Any:
    """The convolution inside `module` when `module` is EnCodec's `wrapper` (by class name) with
    weight norm (already folded) around an unpadded, ungrouped, undilated `conv_type`; else
    None. Group norm, or anything else these forms do not compute, is left alone."""
    conv: Any = getattr(module, "conv", None)
    plain = (
        type(module).__name__ == wrapper
        and isinstance(conv, conv_type)
        and getattr(module, "norm_type", "") == "weight_norm"
        and conv.padding[0] == 0
        and conv.dilation[0] == 1
        and conv.groups == 1
        and not hasattr(conv, "parametrizations")  # weight norm folded
    )
    return conv if plain else None


class MatmulConvTranspose1d(nn.Module):
    """`EncodecConvTranspose1d` (kernel = 2 x stride, no group norm) as one matrix product and
    an overlap-add, with the same trimming."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        conv = module.conv
        cin, cout, k = conv.weight.shape
        self.stride = int(conv.stride[0])
        self.out_channels = int(cout)
        # rows ordered (out channel, kernel tap): the product gives each frame's 2 x stride taps
        self.weight = nn.Parameter(
            conv.weight.detach().permute(1, 2, 0).reshape(cout * k, cin).contiguous(),
            requires_grad=False,
        )
        bias = conv.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        padding_total = k - self.stride
        if module.causal:
            right = math.ceil(padding_total * module.trim_right_ratio)
        else:
            right = padding_total // 2
        self.trim_right = int(right)
        self.trim_left = int(padding_total - right)

    @staticmethod
    def fits(module: Any) -> bool:
        conv = _plain_conv(module, "EncodecConvTranspose1d", nn.ConvTranspose1d)
        return (
            conv is not None
            and conv.kernel_size[0] == 2 * conv.stride[0]
            and conv.output_padding[0] == 0
        )

    def forward(self, x: Any) -> Any:
        import torch

        batch, _, frames = x.shape
        s, cout = self.stride, self.out_channels
        taps = torch.matmul(self.weight, x).view(batch, cout, 2, s, frames)
        y = x.new_empty(batch, cout, frames + 1, s)
        y[:, :, :frames] = taps[:, :, 0].transpose(-1, -2)  # first half of each frame's taps
        y[:, :, frames] = 0
        y[:, :, 1:] += taps[:, :, 1].transpose(-1, -2)  # second half: into the next block
        if self.bias is not None:
            y += self.bias[:, None, None]
        y = y.view(batch, cout, (frames + 1) * s)
        return y[..., self.trim_left : y.shape[-1] - self.trim_right]


class MatmulPointwiseConv1d(nn.Module):
    """`EncodecConv1d` with a 1x1 kernel (no padding, no group norm) as a product over
    channels. (Wider kernels as one product for all taps plus shifted adds measured 10% slower
    than oneDNN's convolution, so they stay convolutions.)"""

    def __init__(self, module: Any) -> None:
        super().__init__()
        conv = module.conv
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0].contiguous(), requires_grad=False)
        bias = conv.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @staticmethod
    def fits(module: Any) -> bool:
        conv = _plain_conv(module, "EncodecConv1d", nn.Conv1d)
        return conv is not None and conv.kernel_size[0] == 1 and conv.stride[0] == 1

    def forward(self, x: Any) -> Any:
        import torch

        y = torch.matmul(self.weight, x)
        if self.bias is not None:
            y += self.bias[:, None]
        return y


FAST = (MatmulConvTranspose1d, MatmulPointwiseConv1d)


def speed_up_decoder(decoder: Any) -> int:
    """Swap `decoder`'s transposed and 1x1 convolutions (weight norm already folded) for their
    matrix-product forms, in place. Returns how many were swapped."""

    swapped = 0
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            for fast in FAST:
                if fast.fits(child):
                    setattr(parent, name, fast(child))
                    swapped += 1
                    break
    return swapped


class HalfLstm(nn.Module):
    """EnCodec's LSTM (unidirectional, several layers) with its recurrent weights in fp16, on
    samplemind-gen's `lstm_layer` kernel: each frame reads 8 MB per layer instead of 16. The input
    projections of a whole chunk are one fp32 product per layer; sums and states stay fp32, so
    the only change is the recurrent weights' rounding to fp16 (11 bits of mantissa, as the
    packed T5 and the fp16 decoder mode have). A drop-in for the `nn.LSTM` it is built from
    (called on (frames, batch, dim) with an optional (h, c) state); swapped in for it, the fp32
    recurrent weights (32 MB for MusicGen's codec) are freed."""

    def __init__(self, lstm: Any) -> None:
        import torch

        from samplemind_gen.engines.musicgen_quant import pad_inputs

        super().__init__()
        self.hidden = int(lstm.hidden_size)
        self.num_layers = int(lstm.num_layers)
        for layer in range(self.num_layers):
            w_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
            w_hh = getattr(lstm, f"weight_hh_l{layer}").detach()
            bias = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype)
            if lstm.bias:
                bias = bias + getattr(lstm, f"bias_ih_l{layer}").detach()
                bias = bias + getattr(lstm, f"bias_hh_l{layer}").detach()
            padded = pad_inputs(w_hh, torch.float16)
            self.register_buffer(f"w_ih_{layer}", w_ih, persistent=False)
            self.register_buffer(f"bias_{layer}", bias, persistent=False)
            self.register_buffer(f"w_hh_{layer}", padded, persistent=False)

    @staticmethod
    def fits(lstm: Any) -> bool:
        import torch

        return (
            isinstance(lstm, torch.nn.LSTM)
            and not lstm.bidirectional
            and not lstm.batch_first
            and lstm.proj_size == 0
            and lstm.weight_hh_l0.dtype == torch.float32
            and lstm.weight_hh_l0.device.type == "cpu"
        )

    def forward(self, seq: Any, state: Any = None) -> tuple[Any, Any]:
        import torch

        frames, batch, _ = seq.shape
        x = seq
        hs, cs = [], []
        for layer in range(self.num_layers):
            w_ih, bias = getattr(self, f"w_ih_{layer}"), getattr(self, f"bias_{layer}")
            if state is None:
                h0 = c0 = seq.new_zeros(batch, self.hidden)
            else:
                h0, c0 = state[0][layer], state[1][layer]
            gates = torch.addmm(bias, x.reshape(frames * batch, -1), w_ih.t())
            x, h, c = torch.ops.samplemind.lstm_layer(
                gates.view(frames, batch, -1),
                getattr(self, f"w_hh_{layer}"),
                h0.contiguous(),
                c0.contiguous(),
            )
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
