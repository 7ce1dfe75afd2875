"""Packed CPU weights for MusicGen: the decoder's linear layers in int8, 4-bit, bf16 or fp16,
the text encoder's in fp16.

Why packing: MusicGen decodes one frame at a time, so every decoder linear layer is a
(2 x K) x (K x N) product (two rows: the prompt and classifier-free guidance's empty prompt). That
is bound by how fast the weights stream from memory, so fewer bytes per weight and kernels that
keep the stream going are what make a step fast. Per mode (numbers: docs/performance.md):

- int8: `Int8Linear` on samplemind-gen's own kernel (`native_kernels`: AVX512-VNNI, AVX-VNNI or
  AVX2), 1.2-1.3x fbgemm's per layer; elsewhere fbgemm's per-channel dynamic int8 through
  `torch.ao.quantization.quantize_dynamic` (`pack_linears`). That API still works in torch 2.13
  but warns that it is deprecated; the warning is silenced here, on purpose, and this module is the
  one place to change when it goes away. torchao 0.18's int8 configs run eagerly at 0.45-0.54x of
  fp32 and `aten._weight_int8pack_mm` at 1.75x, so neither is used.
- int4: `Int4Linear`, our kernel or `aten._weight_int4pack_mm_for_cpu`.
- bf16 and fp16 (the CPU default with and without native bf16): with AVX512-BF16, bf16 weights
  stored losslessly in 12 bits (`CompactLinear`: a quarter fewer bytes to stream, the same
  weights); else `HalfLinear` on our kernel (weights widened to fp32 as they stream in; AVX-512
  or AVX2). Without our kernels: bf16 on oneDNN's blocked layout (`OneDNNLinear`, CPUs with
  native bf16), fp16 on fbgemm's fp16 packing.

Packing also fuses each self-attention's q/k/v projections into one `qkv_proj` (one kernel call
instead of three: 2.2 ms a step on musicgen-small), so a packed decoder is stepped only by
`CachedDecoder`, not by transformers' own forward.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from samplemind_gen.errors import BadInputError

PACKED = ("int8", "int4", "float16", "bfloat16")
INT4_GROUP = 32  # weights per scale/zero pair: 8% output error on Gaussian weights (128: 10%)
# bf16 / fp16 linear layers on oneDNN / fbgemm even where our kernel is built (the benchmark's
# "-lib" modes and tests compare the two).
library_half_kernels = False


def onednn_bf16_available() -> bool:
    """True when oneDNN can pack bf16 linear weights here (a CPU build with mkldnn and a CPU with
    native bf16: AVX512-BF16 or AMX)."""

    from samplemind_gen.devices import cpu_supports_bf16

    mkldnn = getattr(torch.backends, "mkldnn", None)
    return bool(
        mkldnn is not None
        and mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and cpu_supports_bf16()
    )


class OneDNNLinear:
    """A bf16 `nn.Linear` whose weight oneDNN has reordered into its blocked layout once, called
    through `mkldnn._linear_pointwise` (the kernel PyTorch's inductor uses on x86). On a CPU with
    AMX/AVX512-BF16 it reads the weights ~1.5x faster than `F.linear` in bf16 at decode shapes
    (2 rows). The packed tensor replaces the weight (same size), so memory does not grow."""

    def __init__(self, linear: Any) -> None:

        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        weight = linear.weight.detach().to(torch.bfloat16)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 2)
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)
        self._op = torch.ops.mkldnn._linear_pointwise

    def __call__(self, x: Any) -> Any:
        return self._op(x, self.packed, self.bias, "none", [], "")

    def with_gelu(self) -> Any:
        """A callable for gelu(self(x)) (erf GELU, as F.gelu), in one oneDNN call."""
        op, packed, bias = self._op, self.packed, self.bias
        return lambda x: op(x, packed, bias, "gelu", [], "none")


def quantize_decoder(model: Any, mode: str, device: str) -> None:
    """Pack every `nn.Linear` of `model.decoder` in place (`mode` "int8": per-channel int8
    weights; "float16": fp16 weights), one transformer layer at a time so peak memory stays at
    the loaded model plus one fp32 layer. The rest of the decoder (embeddings, layer norms) is
    switched to fp32, which the packed layers take and return."""

    if mode not in PACKED:
        raise BadInputError(f"unknown quantization '{mode}'; use int8 or int4")
    if mode in ("bfloat16", "int4") and device.startswith("cpu"):
        pack_bf16_decoder(model, mode)
        return
    if not device.startswith("cpu"):
        raise BadInputError(
            f"--quantize {mode} is a CPU mode; on a GPU use --dtype float16 or bfloat16 instead"
        )
    from samplemind_gen.engines import native_kernels

    decoder = model.decoder
    if native_kernels.available() and (mode == "int8" or not library_half_kernels):
        # Our kernels: packed straight from the loaded 16-bit weights, a layer at a time.
        def pack(linear: Any) -> PackedModule:
            return PackedModule(
                Int8Linear(linear) if mode == "int8" else HalfLinear(linear, torch.float16)
            )

        for layer in decoder.model.decoder.layers:
            fuse_qkv(layer.self_attn)
            for parent, name in _linears(layer):
                setattr(parent, name, pack(getattr(parent, name)))
            layer.to(torch.float32)
        for i in range(len(decoder.lm_heads)):
            decoder.lm_heads[i] = pack(decoder.lm_heads[i])
        decoder.to(torch.float32)
        trim_heap()  # the engine's load collects the garbage once, at its end
        return
    for layer in decoder.model.decoder.layers:
        layer.to(torch.float32)
        fuse_qkv(layer.self_attn)
        pack_linears(layer, mode)
    decoder.lm_heads.to(torch.float32)
    pack_linears(decoder.lm_heads, mode)
    decoder.to(torch.float32)
    trim_heap()  # the engine's load collects the garbage once, at its end


def _linears(layer: Any) -> list[tuple[Any, str]]:
    """(parent, attribute) of each linear layer of a fused decoder layer, in step order."""
    found = []
    for parent in (layer.self_attn, layer.encoder_attn):
        for name in ("qkv_proj", "q_proj", "k_proj", "v_proj", "out_proj"):
            if isinstance(getattr(parent, name, None), nn.Linear):
                found.append((parent, name))
    found += [(layer, "fc1"), (layer, "fc2")]
    return found


class Int4Linear:
    """A linear layer with 4-bit weights (asymmetric, one scale and minimum per `INT4_GROUP`
    input weights, rounded to nearest) and bf16 activations. A quarter of bf16's bytes. Lossy:
    per-layer output error is ~8% on random weights, so this is an opt-in mode to check by ear.

    Kernel: samplemind-gen's own (`native_kernels`: int8 activations, `vpdpbusd` or
    `vpmaddubsw`, fp16 scales) where it is built, 1.3-1.6x faster than
    `aten._weight_int4pack_mm_for_cpu` (bf16 scales and activations), used elsewhere."""

    def __init__(self, linear: Any, group: int = INT4_GROUP, native: bool | None = None) -> None:
        from samplemind_gen.engines import native_kernels

        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        self.group = group
        weight = linear.weight.detach()
        bias = linear.bias
        # native=None: ours where it is built; True: ours if it can be; False: aten's.
        self.native = native is not False and native_kernels.available()
        if self.native and group == 32:
            self.bias = None if bias is None else bias.detach().to(torch.float32)
            if weight.dtype not in (torch.float32, torch.bfloat16):
                weight = weight.to(torch.float32)
            # One native pass per row, `int4_levels` + `pack_nibbles` bit for bit: packing
            # musicgen-small's decoder 2.46 -> 1.3 s (the PyTorch version's temporaries were each
            # a fresh mapping under the loading mmap threshold).
            self.nibbles, self.scales, self.mins = torch.ops.samplemind.int4_pack(weight)
            self._op = torch.ops.samplemind.int4_linear
            return
        self.native = False
        q, scale, low = int4_levels(weight, group)
        n, k = q.shape
        # aten's kernel computes (q - 8) * scale + zero: the zero point is the value of level 8.
        zero = low + 8 * scale
        self.scales_and_zeros = (
            torch.cat([scale, zero], -1).reshape(n, k // group, 2).transpose(0, 1).contiguous()
        ).to(torch.bfloat16)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 2)
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)
        self._op = torch.ops.aten._weight_int4pack_mm_for_cpu

    @staticmethod
    def fits(linear: Any, group: int = INT4_GROUP) -> bool:
        """Whether a kernel here takes this layer's shape (aten's needs 16 | out_features)."""
        from samplemind_gen.engines import native_kernels

        if int(linear.in_features) % group:
            return False
        return native_kernels.available() or int(linear.out_features) % 16 == 0

    def with_gelu(self) -> Any:
        """A callable for gelu(self(x)) (erf GELU) applied inside the native kernel; None on
        aten's kernel."""
        if not self.native:
            return None
        op, nibbles, scales, mins, bias = self._op, self.nibbles, self.scales, self.mins, self.bias
        return lambda x: op(x, nibbles, scales, mins, bias, "gelu")

    def levels(self) -> tuple[Any, Any]:
        """(M, row scales) with the weights = diag(row scales) M: here the fp32 weights, no
        scales (`Int8Linear.levels`)."""
        return self.dense(), None

    def dense(self) -> Any:
        """The (out, in) fp32 weights the native kernel multiplies by: min + level * scale."""
        n = self.nibbles.shape[0]
        halves = self.nibbles.reshape(n, -1, 1, 64)
        levels = torch.cat([halves & 15, halves >> 4], dim=2).reshape(n, -1).to(torch.float32)
        scales = self.scales.to(torch.float32).repeat_interleave(32, dim=1)
        mins = self.mins.to(torch.float32).repeat_interleave(32, dim=1)
        return (mins + levels * scales)[:, : self.in_features]

    def __call__(self, x: Any) -> Any:
        if self.native:
            return self._op(x, self.nibbles, self.scales, self.mins, self.bias)
        lead = x.shape[:-1]
        y = self._op(
            x.reshape(-1, self.in_features), self.packed, self.group, self.scales_and_zeros
        )
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


def int4_levels(weight: Any, group: int = INT4_GROUP) -> tuple[Any, Any, Any]:
    """(out, in) weights -> 4-bit levels (N, K) uint8 and each group's scale and minimum
    (N, K/group, 1): asymmetric, rounded to nearest (ties to even)."""
    w = weight.to(torch.float32)
    n, k = w.shape
    grouped = w.reshape(n, k // group, group)
    low = grouped.amin(-1, keepdim=True)
    high = grouped.amax(-1, keepdim=True)
    scale = (high - low).clamp(min=1e-8) / 15
    q = torch.clamp(torch.round((grouped - low) / scale), 0, 15).to(torch.uint8).reshape(n, k)
    return q, scale, low


def pack_nibbles(q: Any, scale: Any, low: Any) -> tuple[Any, Any, Any]:
    """4-bit levels `q` (N, K) uint8 and per-group `scale`, `low` (N, K/32, 1) -> the native
    kernel's layout (kernels/vnni.cpp): K zero-padded to a multiple of 128, each 128 inputs in 64
    bytes (byte j: input j in the low nibble, input 64 + j in the high one), fp16 scales/mins."""
    n, k = q.shape
    kp = -(-k // 128) * 128
    padded = torch.zeros((n, kp), dtype=torch.uint8)
    padded[:, :k] = q
    halves = padded.reshape(n, kp // 128, 2, 64)
    nibbles = (halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(n, kp // 2).contiguous()
    scales = torch.zeros((n, kp // 32), dtype=torch.float16)
    mins = torch.zeros((n, kp // 32), dtype=torch.float16)
    scales[:, : k // 32] = scale.reshape(n, -1)
    mins[:, : k // 32] = low.reshape(n, -1)
    return nibbles, scales, mins


def require_kernels() -> None:
    """Raise unless samplemind-gen's CPU kernels are built here (and say why not)."""
    from samplemind_gen.engines import native_kernels

    if not native_kernels.available():
        raise RuntimeError(f"samplemind-gen's CPU kernels are not built: {native_kernels.reason()}")


def pad_inputs(weight: Any, dtype: Any, multiple: int = 64) -> Any:
    """`weight` (out, in) in `dtype` with its inputs zero-padded to a multiple of `multiple`, as
    the int8 and 16-bit kernels read them. Without padding to do, the weight itself when it has
    the dtype already (no copy)."""
    n, k = weight.shape
    if k % multiple == 0:
        return weight.to(dtype).contiguous()
    padded = torch.zeros((n, -(-k // multiple) * multiple), dtype=dtype)
    padded[:, :k] = weight
    return padded


def int8_pack(weight: Any) -> tuple[Any, Any, Any]:
    """(out, in) weights -> the int8 kernel's (levels with the inputs padded to a multiple of 64,
    one fp32 scale per output: max |w| / 127, each output's sum of levels). On the kernels' own
    op (one pass per row, no temporaries: musicgen-small's decoder 0.75 instead of 2.2 s of a
    load, whose every PyTorch temporary was a fresh mapping), else `int8_pack_reference`, which
    it equals bit for bit."""
    if weight.dtype in (torch.float32, torch.float16, torch.bfloat16) and weight.dim() == 2:
        from samplemind_gen.engines import native_kernels

        if native_kernels.available():
            return tuple(torch.ops.samplemind.int8_pack(weight))  # type: ignore[return-value]
    return int8_pack_reference(weight)


def int8_pack_reference(weight: Any) -> tuple[Any, Any, Any]:
    """`int8_pack` in PyTorch ops."""
    w = weight.to(torch.float32)
    scales = (w.abs().amax(1).clamp(min=1e-12) / 127).contiguous()
    q = torch.clamp(torch.round(w / scales[:, None]), -127, 127).to(torch.int8)
    return pad_inputs(q, torch.int8), scales, q.sum(1, dtype=torch.int32)


class Int8Linear:
    """A linear layer with int8 weights (symmetric, one scale per output channel, as
    `quantize_dynamic`'s per-channel config) through samplemind-gen's own kernel
    (`native_kernels`: activations quantized per row to uint8, VNNI or AVX2). fp32 or bf16 in and
    out. Reads 1.4x faster than fbgemm's dynamic int8 linear at decode shapes here."""

    def __init__(self, linear: Any) -> None:
        require_kernels()
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        self.weight, self.scales, self.wsum = int8_pack(linear.weight.detach())
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.float32)
        self._op = torch.ops.samplemind.int8_linear

    def __call__(self, x: Any) -> Any:
        return self._op(x, self.weight, self.scales, self.wsum, self.bias)

    def levels(self) -> tuple[Any, Any]:
        """(M, row scales) with the weights = diag(row scales) M: the levels in bf16 (exact:
        |level| <= 127) and the per-output scales, for products in bf16 (the fold's)."""
        return self.weight[:, : self.in_features].to(torch.bfloat16), self.scales

    def dense(self) -> Any:
        """The (out, in) fp32 weights: level * the channel's scale."""
        return self.weight[:, : self.in_features].to(torch.float32) * self.scales[:, None]

    def with_gelu(self) -> Any:
        """A callable for gelu(self(x)) (erf GELU, as F.gelu), applied inside the kernel."""
        op, weight, scales, wsum, bias = self._op, self.weight, self.scales, self.wsum, self.bias
        return lambda x: op(x, weight, scales, wsum, bias, "gelu")


class HalfLinear:
    """A linear layer with bf16 or fp16 weights through samplemind-gen's own kernel
    (`native_kernels` `half_linear`): fp32 or bf16 activations, every product and sum in fp32,
    weights widened as they stream in (AVX-512 or AVX2, no native bf16 needed). At decode shapes
    it reads the weights as fast as oneDNN's packed bf16 linear, and also runs where oneDNN has no
    bf16 kernel."""

    def __init__(self, linear: Any, dtype: Any = None) -> None:
        require_kernels()
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        self.weight = pad_inputs(linear.weight.detach(), dtype or torch.bfloat16)
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.float32)
        self._op = torch.ops.samplemind.half_linear

    def __call__(self, x: Any) -> Any:
        return self._op(x, self.weight, self.bias)

    def dense(self) -> Any:
        """The (out, in) weights as fp32."""
        return self.weight[:, : self.in_features].to(torch.float32)

    def levels(self) -> tuple[Any, Any]:
        """(M, row scales) with the weights = diag(row scales) M: bf16 weights as they are,
        fp16 ones widened to fp32 (bf16 would round them); no scales."""
        weight = self.weight[:, : self.in_features]
        return (weight if weight.dtype == torch.bfloat16 else weight.to(torch.float32)), None

    def with_gelu(self) -> Any:
        """A callable for gelu(self(x)) (erf GELU, as F.gelu), applied inside the kernel."""
        op, weight, bias = self._op, self.weight, self.bias
        return lambda x: op(x, weight, bias, "gelu")


class CompactLinear:
    """A bf16 linear layer with its weights stored losslessly in 12 bits (`native_kernels`
    `compact_linear`): each weight's low byte as it is and a 4-bit code into its row's table of
    high bytes (sign and exponent), the rare weights outside the table apart. A decode step reads
    every weight once and waits on memory, so a quarter fewer bytes is a faster step with the
    same bf16 weights, bit for bit (`unpacked()`). bf16 activations (fp32 is rounded to bf16);
    needs AVX512-BF16 (`available()`)."""

    def __init__(self, linear: Any) -> None:
        require_kernels()
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        weight = linear.weight.detach().to(torch.bfloat16)
        self.data, self.table, self.exceptions = torch.ops.samplemind.compact_bf16_pack(weight)
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.float32)
        self._op = torch.ops.samplemind.compact_linear

    @staticmethod
    def available() -> bool:
        """True where the compact kernel runs (our kernels built, AVX512-BF16) and
        SAMPLEMIND_GEN_COMPACT_BF16 is not "0"."""
        from samplemind_gen.engines import native_kernels

        if os.environ.get("SAMPLEMIND_GEN_COMPACT_BF16", "1") in ("0", "off"):
            return False
        return native_kernels.available() and bool(torch.ops.samplemind.compact_bf16_available())

    def __call__(self, x: Any) -> Any:
        return self._op(x, self.data, self.table, self.exceptions, self.bias)

    def with_gelu(self) -> Any:
        """A callable for gelu(self(x)) (erf GELU, as F.gelu), applied inside the kernel."""
        op, bias = self._op, self.bias
        data, table, exceptions = self.data, self.table, self.exceptions
        return lambda x: op(x, data, table, exceptions, bias, "gelu")

    def dense(self) -> Any:
        """The (out, in) weights as fp32."""
        return self.unpacked().to(torch.float32)

    def levels(self) -> tuple[Any, Any]:
        """(M, row scales) with the weights = diag(row scales) M: the bf16 weights, no scales."""
        return self.unpacked(), None

    def unpacked(self) -> Any:
        """The (out, in) bf16 weights, bit for bit the ones packed."""
        return torch.ops.samplemind.compact_bf16_unpack(
            self.data, self.table, self.exceptions, self.in_features
        )

    @property
    def nbytes(self) -> int:
        """Bytes the weights take (data, tables, exceptions)."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.table, self.exceptions))


def pack_bf16_decoder(model: Any, mode: str = "bfloat16") -> None:
    """The decoder in bf16 with fused q/k/v and packed linear layers: bf16 (`CompactLinear`
    with AVX512-BF16, else `HalfLinear`, or `OneDNNLinear` without our kernels; mode
    "bfloat16") or 4-bit (`Int4Linear`, mode "int4"; the LM heads stay bf16, and so does any
    layer whose shape the int4 kernel cannot take). Activations are bf16; embeddings and layer
    norms are untouched."""

    from samplemind_gen.engines import native_kernels

    onednn = onednn_bf16_available()
    ours = native_kernels.available() and not (library_half_kernels and onednn)
    compact = ours and CompactLinear.available()

    def bf16_kernel(linear: Any) -> Any:
        if compact:
            return CompactLinear(linear)
        if ours:
            return HalfLinear(linear, torch.bfloat16)
        return OneDNNLinear(linear) if onednn else None

    def kernel(linear: Any) -> Any:
        if mode == "int4" and Int4Linear.fits(linear):
            return Int4Linear(linear)
        return bf16_kernel(linear)

    def swap(parent: Any, name: str) -> None:
        packed = kernel(getattr(parent, name))
        if packed is not None:
            setattr(parent, name, PackedModule(packed))

    decoder = model.decoder
    decoder.to(torch.bfloat16)
    for layer in decoder.model.decoder.layers:
        fuse_qkv(layer.self_attn)
        for parent in (layer.self_attn, layer.encoder_attn):
            for name in ("qkv_proj", "out_proj", "q_proj"):
                if hasattr(parent, name):
                    swap(parent, name)
        swap(layer, "fc1")
        swap(layer, "fc2")
    for i, head in enumerate(decoder.lm_heads):  # bf16 in every mode
        packed = bf16_kernel(head)
        if packed is not None:
            decoder.lm_heads[i] = PackedModule(packed)
    trim_heap()  # the engine's load collects the garbage once, at its end


class PackedModule(nn.Module):
    """Holds a packed kernel (`OneDNNLinear`, `Int4Linear`) where an `nn.Linear` was, so module
    code (transformers' forward, `.to()`, repr) still works; `CachedDecoder` calls `kernel`."""

    # Not a tensor, as on PyTorch's dynamically quantized linears: T5's feed-forward casts its
    # input to `wo.weight.dtype` only when that weight is a tensor.
    weight = None

    def __init__(self, kernel: Any) -> None:
        super().__init__()
        self.kernel = kernel
        self.in_features = kernel.in_features
        self.out_features = kernel.out_features

    def forward(self, x: Any) -> Any:
        return self.kernel(x)

    def extra_repr(self) -> str:
        kind = type(self.kernel).__name__
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


def pack_text_encoder(model: Any) -> None:
    """fp16 weights for the T5 text encoder's linear layers (a quarter of the fp32 memory it
    would take: ~170 MB less for t5-base), computed in fp32. Everything else goes to fp32.

    On samplemind-gen's `half_linear` where the kernels are built: packing t5-base takes 0.03 s
    instead of fbgemm's 1.57 s (`linear_prepack_fp16`), a second and a half off every load, for
    +3.6 ms per prompt encoded (21.6 -> 25.2 ms; four prompts 45 -> 88 ms); the encoder's
    output 1e-6 from fbgemm's (the same fp16 weights, sums in another order)."""
    from samplemind_gen.engines import native_kernels

    encoder = model.text_encoder
    ours = native_kernels.available()
    for block in encoder.encoder.block:
        block.to(torch.float32)
        if not ours:
            pack_linears(block, "float16")
            continue
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedModule(HalfLinear(child, torch.float16)))
    encoder.to(torch.float32)
    _half_embeddings(encoder)
    trim_heap()  # the engine's load collects the garbage once, at its end


def _half_embeddings(encoder: Any) -> None:
    """The token embedding table in fp16 (t5-base: 32k x 768, 47 MB less), looked up and then
    widened to fp32, so the rest of the encoder sees what it saw before, up to fp16 rounding of
    the table (the same rounding its packed linear layers have)."""

    modules = [m for m in (getattr(encoder, "shared", None), encoder.encoder.embed_tokens) if m]
    if not modules:
        return
    half = nn.Parameter(modules[0].weight.detach().to(torch.float16), requires_grad=False)
    for module in {id(m): m for m in modules}.values():
        module.weight = half  # one table even where the checkpoint ties two modules to it
        module.register_forward_hook(lambda _m, _i, out: out.to(torch.float32))


def fuse_qkv(attention: Any) -> None:
    """Replace `q_proj`, `k_proj`, `v_proj` of an attention module by one `qkv_proj` whose output
    is their three outputs side by side."""

    q, k, v = attention.q_proj, attention.k_proj, attention.v_proj
    # Built on the meta device, then given the three weights side by side: a linear made on the
    # CPU would draw random weights first (kaiming init: 0.38 s of a load for musicgen-small's
    # 24 layers on a 2-core EPYC), only to have them overwritten.
    fused = nn.Linear(
        q.in_features,
        q.out_features + k.out_features + v.out_features,
        bias=q.bias is not None,
        device="meta",
    )
    with torch.no_grad():
        fused.weight = nn.Parameter(
            torch.cat([q.weight, k.weight, v.weight], dim=0), requires_grad=False
        )
        if q.bias is not None:
            fused.bias = nn.Parameter(
                torch.cat([q.bias, k.bias, v.bias], dim=0), requires_grad=False
            )
    attention.qkv_proj = fused
    del attention.q_proj, attention.k_proj, attention.v_proj


class QkvPart(nn.Module):
    """q, k or v of a fused `qkv_proj` (`fuse_qkv`), for code that calls the three one by one:
    transformers' attention forward, which long-form windows and melody conditioning run. The
    first of the three calls with an input projects it; the other two, given the same input
    tensor, take their slices of that output (so the fused kernel runs once, as in our step)."""

    def __init__(self, attention: Any, index: int) -> None:
        super().__init__()
        self.index = index
        # Not a submodule: the attention module owns this part, not the other way round.
        object.__setattr__(self, "_attention", attention)

    def forward(self, x: Any) -> Any:
        attention: Any = self.__dict__["_attention"]
        last = getattr(attention, "_qkv_last", None)
        if last is None or last[0] is not x:
            last = (x, attention.qkv_proj(x))
        out = last[1]
        width = out.shape[-1] // 3
        # Keep the projection until v has taken its slice, then let it go.
        object.__setattr__(attention, "_qkv_last", None if self.index == 2 else last)
        return out[..., self.index * width : (self.index + 1) * width]


def add_qkv_parts(model: Any) -> None:
    """Give every fused self-attention of `model`'s decoder its `q_proj`, `k_proj`, `v_proj`
    back, as `QkvPart`s of the fused projection (after packing, which looks for linears)."""
    for layer in model.decoder.model.decoder.layers:
        attention = layer.self_attn
        if hasattr(attention, "qkv_proj") and not hasattr(attention, "q_proj"):
            attention.q_proj = QkvPart(attention, 0)
            attention.k_proj = QkvPart(attention, 1)
            attention.v_proj = QkvPart(attention, 2)


def pack_linears(module: Any, mode: str) -> None:
    """`quantize_dynamic` every `nn.Linear` under `module`, in place."""
    from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if mode == "int8" else float16_dynamic_qconfig
    dtype = torch.qint8 if mode == "int8" else torch.float16
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecat.*")
        torch.ao.quantization.quantize_dynamic(
            module, {nn.Linear: qconfig}, dtype=dtype, inplace=True
        )
    # quantize_dynamic leaves a `qconfig` on every module whose observer factory closes over the
    # original float module: without this the fp32 weights (1.6 GB for musicgen-small) stay
    # alive next to the packed ones.
    for sub in module.modules():
        if hasattr(sub, "qconfig"):
            del sub.qconfig


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise,
    and peak RSS is what users see)."""
    import gc

    gc.collect()
    trim_heap()


# glibc's mmap threshold while a model loads: every tensor above 64 KB in its own mapping, so
# what loading frees goes back to the OS at once (at 16 MB the int8 loading peak was 4.7 GB
# instead of 4.1), and freed heap tops handed back at glibc's default 128 KB. Generation then
# runs at `limit_heap_retention`'s defaults.
LOADING_MMAP_THRESHOLD = 64 * 1024
LOADING_TRIM_THRESHOLD = 128 * 1024


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc `malloc_trim`; no garbage collection):
    after a take, what its EnCodec activations and caches used on the heap."""
    import contextlib
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_heap_retention(
    threshold: int = 16 * 1024 * 1024, trim_threshold: int = 256 * 1024 * 1024
) -> bool:
    """Serve allocations above `threshold` bytes with their own mmap, returned to the OS when
    freed, and smaller ones from the heap, which reuses them; keep up to `trim_threshold` bytes
    freed at the heap's top instead of handing them back on each free. glibc otherwise raises
    its mmap threshold after the first large free and keeps later big buffers (EnCodec's
    activations, the per-take KV cache) on the heap after use: measured +200 MB of peak RSS per
    take for musicgen-small in int8. A fixed threshold does not grow. At 64 KB (until
    2026-12-06) every EnCodec activation of a streamed chunk (1-8 MB) was a fresh mapping,
    faulted in page by page on each call: a quarter of EnCodec's time went to page faults, and a
    30 s take's EnCodec took 2.83 s in int8; at 16 MB 2.04 s, for +61 MiB of peak RSS (int8
    1423 -> 1484 MiB, bf16 1926 -> 1984). Setting the threshold also froze glibc's trim
    threshold at its 128 KB default, so each chunk's buffers still went back to the OS and came
    back page by page: 25-148 thousand page faults per 8 s int8 take (mostly 120-150), against
    26-29 thousand with a 256 MB trim threshold; streamed EnCodec 0.49-0.57 -> 0.45-0.49 s a
    take (2 processes of 4 takes each way; in the benchmark's interleaved rounds 0.475 -> 0.466
    s, within its noise), peak RSS the same within the benchmark's noise.
    `trim_heap` after each take hands the freed heap back. Linux/glibc only; a no-op elsewhere
    or when the user set MALLOC_MMAP_THRESHOLD_ themselves (MALLOC_TRIM_THRESHOLD_ likewise
    keeps the trim threshold the user's). True when applied."""
    import contextlib
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
            libc.mallopt(m_trim_threshold, trim_threshold)
        return bool(libc.mallopt(m_mmap_threshold, threshold))
    return False


def is_quantized(module: Any) -> bool:
    """True when `module` holds packed (dynamically quantized, or our int8) linear layers."""
    return _holds(module, Int8Linear) or any(
        "quantized" in type(m).__module__ for m in module.modules()
    )


def is_native_int8(module: Any) -> bool:
    """True when `module` holds int8 linear layers on samplemind-gen's own kernel."""
    return _holds(module, Int8Linear)


def is_onednn_packed(module: Any) -> bool:
    """True when `module` holds oneDNN-packed bf16 linear layers."""
    return _holds(module, OneDNNLinear)


def is_half_packed(module: Any) -> bool:
    """True when `module` holds bf16/fp16 linear layers on samplemind-gen's own kernel."""
    return _holds(module, HalfLinear)


def is_compact(module: Any) -> bool:
    """True when `module` holds bf16 linear layers stored in 12 bits (`CompactLinear`)."""
    return _holds(module, CompactLinear)


def is_int4(module: Any) -> bool:
    """True when `module` holds 4-bit linear layers."""
    return _holds(module, Int4Linear)


def kernel_label(module: Any) -> str:
    """Which linear kernels `module`'s layers run on, for a take's recipe: each rounds
    differently, so a recipe remade on a CPU with other kernels can differ. "samplemind <isa>"
    (plus "+amx" where bf16 products run on AMX tiles; int8 on tiles gives the same numbers),
    "onednn", "fbgemm", "aten" or "pytorch"."""
    from samplemind_gen.engines import native_kernels

    kernels = [m.kernel for m in module.modules() if isinstance(m, PackedModule)]
    ours = [
        k
        for k in kernels
        if isinstance(k, HalfLinear | Int8Linear | CompactLinear)
        or (isinstance(k, Int4Linear) and k.native)
    ]
    if ours:
        bf16 = any(isinstance(k, HalfLinear) and k.weight.dtype == torch.bfloat16 for k in ours)
        compact = any(isinstance(k, CompactLinear) for k in ours)
        return native_kernels.label(bf16=bf16 or compact, compact=compact)
    if any(isinstance(k, OneDNNLinear) for k in kernels):
        return "onednn"
    if is_quantized(module):
        return "fbgemm"
    return "aten" if kernels else "pytorch"


# The kernels label's mark for a text encoder on samplemind-gen's `half_linear`
# (`pack_text_encoder`; fbgemm's fp16 kernel rounds its sums otherwise).
T5_LABEL = "+t5"


def text_encoder_label(model: Any) -> str:
    """`T5_LABEL` when `model`'s text encoder runs its linears on our kernel, else ""."""
    return T5_LABEL if _holds(model.text_encoder, HalfLinear) else ""


def _holds(module: Any, kernel: type) -> bool:
    return any(
        isinstance(m, PackedModule) and isinstance(m.kernel, kernel) for m in module.modules()
    )


def is_fused(decoder: Any) -> bool:
    """True when a MusicGen decoder's self-attention q/k/v were fused by packing."""
    layers = decoder.model.decoder.layers
    return len(layers) > 0 and hasattr(layers[0].self_attn, "qkv_proj")
