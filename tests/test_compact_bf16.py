"""bf16 weights stored in 12 bits (`CompactLinear`; kernels/vnni.cpp `compact_bf16_pack`,
`compact_linear`): the packing gives back every bit of every weight, and the kernel computes the
bf16 product of those weights: the same outputs as the 16-bit kernel, any row count, with the
rare weights outside a row's table of high bytes summed apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from samplemind_gen.engines import native_kernels
from samplemind_gen.testing.kernel_paths import AmxRows


def _compact() -> bool:
    from samplemind_gen.engines.musicgen_quant import CompactLinear

    return native_kernels.available() and CompactLinear.available()


needs_compact = pytest.mark.skipif(not _compact(), reason="needs the kernels and AVX512-BF16")


def weights(n: int, k: int, seed: int, *, specials: bool = True) -> torch.Tensor:
    """Normal weights (std 0.02, as MusicGen initializes them) with, when `specials`, row 0
    holding zeros, negative zero, subnormals and large values, and row 1 spread over 2^-60..2^60
    (far more high bytes than a table holds: many exceptions)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.02
    if specials and n >= 2 and k >= 8:
        w[0, :8] = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3e-39, 40.0, -1e4, 1e-30])
        exponents = torch.randint(-60, 61, (k,), generator=g).float()
        signs = torch.where(torch.rand(k, generator=g) < 0.5, -1.0, 1.0)
        w[1] = signs * torch.exp2(exponents) * (1 + torch.rand(k, generator=g))
    return w.to(torch.bfloat16)


def exception_count(exceptions: torch.Tensor, n: int) -> int:
    return (exceptions.numel() - n - 1) // 2


@needs_compact
@pytest.mark.parametrize("shape", [(37, 200), (64, 96), (1024, 1024), (256, 4096), (3, 1)])
def test_packing_is_lossless_and_a_quarter_smaller(shape):
    n, k = shape
    w = weights(n, k, seed=n + k)
    if n >= 3 and k >= 8:  # inf, NaN and the largest finite bf16 survive too
        w[2, :4] = torch.tensor([float("inf"), float("-inf"), float("nan"), 3.3895e38])
    data, table, exceptions = torch.ops.samplemind.compact_bf16_pack(w)
    back = torch.ops.samplemind.compact_bf16_unpack(data, table, exceptions, k)
    assert back.dtype == torch.bfloat16 and back.shape == (n, k)
    assert torch.equal(back.view(torch.int16), w.view(torch.int16))
    padded = -(-k // 128) * 128
    assert data.shape == (n, padded // 2 * 3) and table.shape == (n, 16)
    assert table[:, 0].eq(0).all()  # code 0: high byte 0x00 (zero and tiny positives)
    if n >= 2 and k >= 128:
        assert exception_count(exceptions, n) > 0  # row 1 needs them
        offsets = exceptions[: n + 1]
        assert offsets[2] - offsets[1] >= k - 15 * 200  # most of row 1
    normal = torch.ops.samplemind.compact_bf16_pack(weights(n, k, seed=1, specials=False))
    # Normal rows: at most a few weights a row outside the table (~2e-5 of them).
    assert exception_count(normal[2], n) <= max(1, n * k // 10_000)


@needs_compact
@pytest.mark.parametrize("tiles", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 9, 17])
@pytest.mark.parametrize("shape", [(1024, 3072), (4096, 1024), (200, 37), (96, 16)])
def test_compact_kernel_is_the_bf16_product(rows, shape, tiles):
    from samplemind_gen.engines.musicgen_quant import CompactLinear, HalfLinear

    k, n = shape
    linear = nn.Linear(k, n)
    linear.weight.data = weights(n, k, seed=rows).float()
    compact, half = CompactLinear(linear), HalfLinear(linear, torch.bfloat16)
    assert torch.equal(compact.unpacked().view(torch.int16), half.weight[:, :k].view(torch.int16))
    assert compact.nbytes < 0.8 * n * k * 2 + n * 16 + 8 * 4096
    x = torch.randn(rows, 1, k)
    for dtype in (torch.bfloat16, torch.float32):  # fp32 activations are rounded to bf16
        xd = x.to(dtype)
        with AmxRows(-1 if tiles else 1 << 30):
            y, gelu = compact(xd), compact.with_gelu()(xd)
        assert y.shape == (rows, 1, n) and y.dtype == dtype
        xb = x.to(torch.bfloat16).double()
        wb = linear.weight.detach().to(torch.bfloat16).double()
        exact = xb @ wb.T + linear.bias.double()
        # fp32 sums (error within 1e-5 of the sum of |terms|), then the output's own rounding.
        bound = 1e-5 * (xb.abs() @ wb.abs().T + linear.bias.double().abs()) + 1e-30
        rounding = 2**-8 if dtype == torch.bfloat16 else 0.0
        assert ((y.double() - exact).abs() <= rounding * exact.abs() + bound).all()
        gelu_exact = nn.functional.gelu(exact)
        assert ((gelu.double() - gelu_exact).abs() <= rounding * gelu_exact.abs() + bound).all()
    # The 16-bit kernel on the same weights: the same numbers up to the output's rounding.
    xb16 = x.to(torch.bfloat16)
    diff = (compact(xb16).float() - half(xb16).float()).abs()
    assert (diff <= half(xb16).float().abs() * 2**-7 + 1e-6).all()


@needs_compact
@pytest.mark.parametrize("rows", [2, 4, 9])
def test_compact_on_tiles_gives_the_16_bit_tiles_outputs_and_is_batch_independent(rows):
    """Rows without exceptions decode to exactly the A tiles the 16-bit kernel loads, so on AMX
    their outputs are that kernel's bit for bit; and every row is what it is alone."""
    from samplemind_gen.engines.musicgen_quant import CompactLinear, HalfLinear

    if "bf16" not in torch.ops.samplemind.amx_kinds().split(","):
        pytest.skip("no AMX-BF16 here")
    linear = nn.Linear(1024, 2048)
    linear.weight.data = weights(2048, 1024, seed=rows).float()
    compact, half = CompactLinear(linear), HalfLinear(linear, torch.bfloat16)
    offsets = compact.exceptions[:2049]
    plain = (offsets[1:] == offsets[:-1]).nonzero().flatten()
    assert 1900 < plain.numel() < 2048  # row 1 (and a few others) has exceptions
    x = torch.randn(rows, 1, 1024).to(torch.bfloat16)
    y = compact(x)
    assert torch.equal(y[..., plain], half(x)[..., plain])
    alone = torch.cat([compact(x[i : i + 1]) for i in range(rows)])
    assert torch.equal(y, alone)


@needs_compact
def test_compact_kernel_gives_the_same_result_on_any_number_of_threads():
    from samplemind_gen.engines.musicgen_quant import CompactLinear

    linear = nn.Linear(1024, 1000)  # not a multiple of 16: the vector kernel's blocks of four
    linear.weight.data = weights(1000, 1024, seed=5).float()
    kernel = CompactLinear(linear)
    xs = [torch.randn(r, 1, 1024).to(torch.bfloat16) for r in (2, 8)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [kernel(x) for x in xs]
        torch.set_num_threads(2)
        two = [kernel(x) for x in xs]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@needs_compact
def test_compact_kernel_refuses_what_it_cannot_take():
    data, table, exceptions = torch.ops.samplemind.compact_bf16_pack(weights(8, 256, seed=0))
    with pytest.raises(RuntimeError, match="Kp / 2 \\* 3"):
        torch.ops.samplemind.compact_linear(torch.zeros(1, 512), data, table, exceptions, None)
    with pytest.raises(RuntimeError, match="gelu"):
        torch.ops.samplemind.compact_linear(
            torch.zeros(1, 256), data, table, exceptions, None, "relu"
        )
    with pytest.raises(RuntimeError, match="2-D bf16"):
        torch.ops.samplemind.compact_bf16_pack(torch.zeros(8, 64))


@needs_compact
def test_bf16_musicgen_holds_compact_weights_and_names_them(tiny_musicgen: Path, monkeypatch):
    """The default CPU mode packs the decoder's linears (and LM heads) compact where it can,
    steps them in one call a step, and says so in the take's recipe; with
    SAMPLEMIND_GEN_COMPACT_BF16=0 the same weights run in 16 bits, with logits within fp32
    rounding."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine
    from samplemind_gen.engines.musicgen_quant import CompactLinear, is_compact, is_half_packed
    from samplemind_gen.testing.musicgen_steps import stepped_logits

    def load(folder: Path, **options):  # type: ignore[no-untyped-def]
        return load_engine(resolve_model(str(folder)), LoadOptions(**options))

    engine = load(tiny_musicgen, device="cpu", dtype="bfloat16")
    decoder = engine.model.decoder
    assert is_compact(decoder) and not is_half_packed(decoder)
    assert all(isinstance(h.kernel, CompactLinear) for h in decoder.lm_heads)
    assert "+compact" in engine.kernels
    monkeypatch.setenv("SAMPLEMIND_GEN_COMPACT_BF16", "0")
    wide = load(tiny_musicgen, device="cpu", dtype="bfloat16")
    assert is_half_packed(wide.model.decoder) and not is_compact(wide.model.decoder)
    assert "+compact" not in wide.kernels
    compact_logits, wide_logits = stepped_logits((engine, wide), 4)
    torch.testing.assert_close(compact_logits, wide_logits, rtol=2e-2, atol=2e-2)
