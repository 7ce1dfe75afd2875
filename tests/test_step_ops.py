"""samplemind-gen's step ops (kernels/step_ops.cpp): one op per attention of MusicGen's decode
step (fp32, bf16 or int8 caches), the residual add fused with the layer norm after it, and GELU
inside the linear kernels. Checked against PyTorch's sdpa, layer norm and GELU over the same
inputs, on every instruction-set path, on any number of threads, and in the engine's step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from samplemind_gen.engines import native_kernels

needs_kernels = pytest.mark.skipif(
    not native_kernels.available(), reason=f"no native kernels here: {native_kernels.reason()}"
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def run_self_attention(
    rows: int, heads: int, dim: int, steps: int, cache: torch.dtype, act: torch.dtype, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor | None]]:
    """`steps` decode steps through the op; returns each step's output, its qkv input, and the
    caches (with their scales for int8)."""
    gen = torch.Generator().manual_seed(seed)
    capacity = steps + 3
    shape = (rows, heads, capacity, dim)
    keys, values = torch.zeros(shape, dtype=cache), torch.zeros(shape, dtype=cache)
    scales = (
        (torch.zeros(shape[:3]), torch.zeros(shape[:3])) if cache == torch.int8 else (None, None)
    )
    outs, inputs = [], []
    for position in range(steps):
        qkv = (2 * torch.randn(rows, 1, 3 * heads * dim, generator=gen)).to(act)
        out = torch.ops.samplemind.self_attention(
            qkv, keys, values, scales[0], scales[1], position, dim**-0.5
        )
        outs.append(out)
        inputs.append(qkv)
    return outs, inputs, {"keys": keys, "values": values, "ks": scales[0], "vs": scales[1]}


def dequantized(cache: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    return cache.float() * scales[..., None] if scales is not None else cache.float()


@needs_kernels
@pytest.mark.parametrize("cache", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("act", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [16, 64])
def test_self_attention_writes_the_cache_and_matches_sdpa(cache, act, dim):
    rows, heads, steps = 2, 3, 21
    outs, inputs, c = run_self_attention(rows, heads, dim, steps, cache, act)
    width = heads * dim
    keys, values = dequantized(c["keys"], c["ks"]), dequantized(c["values"], c["vs"])
    for position, (out, qkv) in enumerate(zip(outs, inputs, strict=True)):
        assert out.shape == (rows, 1, width) and out.dtype == act
        k_new = qkv[..., width : 2 * width].float().view(rows, heads, dim)
        v_new = qkv[..., 2 * width :].float().view(rows, heads, dim)
        if cache == torch.int8:  # within half a quantization step of its row
            step = c["ks"][:, :, position, None]
            assert ((keys[:, :, position] - k_new).abs() <= step / 2 + 1e-6).all()
            assert rel_err(values[:, :, position], v_new) < 0.01
        else:  # exactly what PyTorch's conversion gives
            assert torch.equal(c["keys"][:, :, position], k_new.to(cache))
            assert torch.equal(c["values"][:, :, position], v_new.to(cache))
        q = qkv[..., :width].float().view(rows, 1, heads, dim).transpose(1, 2)
        end = position + 1
        ref = F.scaled_dot_product_attention(
            q, keys[:, :, :end], values[:, :, :end], scale=dim**-0.5
        )
        ref = ref.transpose(1, 2).reshape(rows, 1, width)
        tolerance = 1e-5 if act == torch.float32 else 8e-3  # bf16 output rounding
        assert rel_err(out, ref) < tolerance
    assert not c["keys"][:, :, steps:].any()  # nothing written past the last step


@needs_kernels
@pytest.mark.parametrize("cache", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("position", [510, 511, 513, 1030])
def test_self_attention_over_long_caches_matches_sdpa(cache, position):
    """From 512 cached frames the op reads the cache as several stretches side by side (and
    sums their values separately): the same attention, whatever the remainder."""
    gen = torch.Generator().manual_seed(position)
    rows, heads, dim = 2, 3, 64
    shape = (rows, heads, position + 4, dim)
    if cache == torch.int8:
        keys = torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
        values = torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
        ks, vs = (
            torch.rand(shape[:3], generator=gen) / 100,
            torch.rand(shape[:3], generator=gen) / 100,
        )
    else:
        keys = torch.randn(shape, generator=gen).to(cache)
        values = torch.randn(shape, generator=gen).to(cache)
        ks = vs = None
    qkv = 2 * torch.randn(rows, 1, 3 * heads * dim, generator=gen)
    out = torch.ops.samplemind.self_attention(qkv, keys, values, ks, vs, position, dim**-0.5)
    end = position + 1
    k, v = dequantized(keys, ks)[:, :, :end], dequantized(values, vs)[:, :, :end]
    q = qkv[..., : heads * dim].view(rows, 1, heads, dim).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k, v, scale=dim**-0.5)
    assert rel_err(out, ref.transpose(1, 2).reshape(rows, 1, heads * dim)) < 1e-5


@needs_kernels
@pytest.mark.parametrize("cache", [torch.float32, torch.bfloat16])
def test_cross_attention_matches_sdpa_with_the_prompt_mask(cache):
    torch.manual_seed(1)
    rows, heads, dim, tokens = 4, 2, 32, 13
    q = torch.randn(rows, 1, heads * dim)
    keys = torch.randn(rows, heads, tokens, dim).to(cache)
    values = torch.randn(rows, heads, tokens, dim).to(cache)
    mask = torch.zeros(rows, tokens)
    mask[1, 9:] = float("-inf")  # a shorter prompt
    mask[3] = float("-inf")  # a fully masked row: zeros, as sdpa gives
    out = torch.ops.samplemind.cross_attention(q, keys, values, mask, 0.2)
    ref = F.scaled_dot_product_attention(
        q.view(rows, 1, heads, dim).transpose(1, 2),
        keys.float(),
        values.float(),
        attn_mask=mask[:, None, None, :],
        scale=0.2,
    ).transpose(1, 2)
    ref = ref.reshape(rows, 1, heads * dim)
    assert rel_err(out, ref) < 1e-5
    assert (out[3] == 0).all()
    shared = torch.ops.samplemind.cross_attention(q, keys, values, mask[1].contiguous(), 0.2)
    ref_shared = F.scaled_dot_product_attention(
        q.view(rows, 1, heads, dim).transpose(1, 2),
        keys.float(),
        values.float(),
        attn_mask=mask[1].view(1, 1, 1, tokens),
        scale=0.2,
    ).transpose(1, 2)
    assert rel_err(shared, ref_shared.reshape(rows, 1, heads * dim)) < 1e-5
    unmasked = torch.ops.samplemind.cross_attention(q, keys, values, None, 0.2)
    assert rel_err(unmasked[1], out[1]) > 1e-3  # the mask did something


@needs_kernels
def test_bad_shapes_are_refused_with_a_message():
    keys = torch.zeros(1, 2, 4, 16)
    with pytest.raises(RuntimeError, match="position past the cache"):
        torch.ops.samplemind.self_attention(
            torch.zeros(1, 1, 96), keys, keys.clone(), None, None, 4, 1.0
        )
    with pytest.raises(RuntimeError, match="int8 caches need fp32 scales"):
        k8 = keys.to(torch.int8)
        torch.ops.samplemind.self_attention(
            torch.zeros(1, 1, 96), k8, k8.clone(), None, None, 0, 1.0
        )
    with pytest.raises(RuntimeError, match="unsupported head size"):
        odd = torch.zeros(1, 2, 4, 24)
        torch.ops.samplemind.self_attention(
            torch.zeros(1, 1, 144), odd, odd.clone(), None, None, 0, 1.0
        )


@needs_kernels
def test_attention_gives_the_same_result_on_any_number_of_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _, _ = run_self_attention(2, 16, 64, 40, torch.int8, torch.float32)
        torch.set_num_threads(2)
        two, _, _ = run_self_attention(2, 16, 64, 40, torch.int8, torch.float32)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


ISA_CHECK = """
import json, torch, torch.nn.functional as F
from samplemind_gen.engines import native_kernels
torch.manual_seed(0)
out = {"isa": native_kernels.isa()}
rows, heads, dim, cap = 2, 4, 64, 50
for cache in (torch.bfloat16, torch.int8):
    keys, values = torch.zeros(rows, heads, cap, dim, dtype=cache), torch.zeros(rows, heads, cap, dim, dtype=cache)
    ks = vs = None
    if cache == torch.int8:
        ks, vs = torch.zeros(rows, heads, cap), torch.zeros(rows, heads, cap)
    for p in range(37):  # 37: the vector loops' tails too
        qkv = torch.randn(rows, 1, 3 * heads * dim)
        a = torch.ops.samplemind.self_attention(qkv, keys, values, ks, vs, p, 0.125)
    k = keys.float() * (ks[..., None] if ks is not None else 1)
    v = values.float() * (vs[..., None] if vs is not None else 1)
    q = qkv[..., : heads * dim].view(rows, 1, heads, dim).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k[:, :, :37], v[:, :, :37], scale=0.125)
    ref = ref.transpose(1, 2).reshape(rows, 1, heads * dim)
    out[str(cache)] = float((a - ref).norm() / ref.norm())
# a long cache (601 frames: read in stretches side by side, with a remainder)
keys, values = torch.randn(rows, heads, 610, dim), torch.randn(rows, heads, 610, dim)
qkv = torch.randn(rows, 1, 3 * heads * dim)
a = torch.ops.samplemind.self_attention(qkv, keys, values, None, None, 600, 0.125)
q = qkv[..., : heads * dim].view(rows, 1, heads, dim).transpose(1, 2)
ref = F.scaled_dot_product_attention(q, keys[:, :, :601], values[:, :, :601], scale=0.125)
ref = ref.transpose(1, 2).reshape(rows, 1, heads * dim)
out["long"] = float((a - ref).norm() / ref.norm())
x, d, w, b = (torch.randn(2, 1, 1024) for _ in range(4))
total, normed = torch.ops.samplemind.add_layer_norm(x, d, w[0, 0], b[0, 0], 1e-5)
ref = F.layer_norm(x + d, (1024,), w[0, 0], b[0, 0], 1e-5)
out["add_layer_norm"] = float((normed - ref).abs().max())
from samplemind_gen.engines.musicgen_quant import Int8Linear
lin = Int8Linear(torch.nn.Linear(1024, 1000))
y = lin.with_gelu()(x)
out["gelu"] = float((y - F.gelu(lin(x))).abs().max())
tables = [torch.randn(30, 1024).to(torch.bfloat16) for _ in range(4)]
ids = torch.randint(0, 30, (8, 1))
pos = torch.randn(5, 1024)
ex, _ = torch.ops.samplemind.embed_frame(ids, tables, pos, 3, w[0, 0], b[0, 0], 1e-5)
ref = sum(F.embedding(ids.view(2, 4)[:, c], tables[c]) for c in range(4)) + pos[3].to(torch.bfloat16)
out["embed_frame"] = bool(torch.equal(ex.view(2, 1024), ref))
print(json.dumps(out))
"""


@needs_kernels
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_every_instruction_set_path_computes_the_step_ops_alike(isa: str):
    """AVX-512 (16 lanes) and AVX2 (8 lanes; AVX-VNNI CPUs use it too) give sdpa's result over
    the same cache contents, PyTorch's add + layer norm and F.gelu."""
    from samplemind_gen.testing.kernel_paths import ISA_NAME, has_path, run_on_path

    if not has_path(isa):
        pytest.skip(f"this CPU has no {isa}")
    out = run_on_path(ISA_CHECK, isa)
    assert out["isa"] == ISA_NAME[isa]
    assert out["torch.bfloat16"] < 1e-5 and out["torch.int8"] < 1e-5 and out["long"] < 1e-5
    assert out["add_layer_norm"] < 1e-5 and out["gelu"] < 1e-5
    assert out["embed_frame"]  # bf16 adds rounded as PyTorch rounds them, on either path


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_the_engine_attends_through_the_kernel_in_packed_modes(tiny_musicgen: Path, mode: str):
    """Packed CPU modes run each attention as one kernel op (int8 caches in the quantized modes);
    takes are reproducible, and close to the same mode on PyTorch's sdpa."""
    import numpy as np

    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine
    from samplemind_gen.request import GenerationRequest

    options = LoadOptions(dtype="bfloat16") if mode == "bf16" else LoadOptions(quantize="int8")
    engine = load_engine(resolve_model(str(tiny_musicgen)), options)
    decoder = engine.cached_decoder
    assert decoder.native_attention and decoder.int8_cache == (mode == "int8")
    seen: list[tuple[bool, torch.dtype]] = []
    step = decoder.step

    def spy(ids, position):  # type: ignore[no-untyped-def]
        seen.append((decoder._native, decoder._keys[0].dtype))
        return step(ids, position)

    decoder.step = spy  # type: ignore[method-assign]
    request = [GenerationRequest("dub techno chords", duration=0.5, seed=4, top_k=0)]
    a = engine.generate(request)[0].audio
    assert engine.generate(request)[0].audio.tobytes() == a.tobytes()
    cache = torch.int8 if mode == "int8" else torch.bfloat16
    assert seen and set(seen) == {(True, cache)}
    decoder.native_attention = False
    seen.clear()
    b = engine.generate(request)[0].audio
    assert set(seen) == {(False, torch.bfloat16)}
    assert a.shape == b.shape and np.isfinite(a).all()


@needs_kernels
@pytest.mark.parametrize(
    ("act", "param"),
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
        (torch.bfloat16, torch.float32),
    ],
)
def test_add_layer_norm_is_the_add_then_the_norm(act, param):
    torch.manual_seed(3)
    x = (3 * torch.randn(3, 1, 1024) + 1).to(act)
    delta = torch.randn(3, 1, 1024).to(act)
    weight, bias = torch.randn(1024).to(param), torch.randn(1024).to(param)
    total, normed = torch.ops.samplemind.add_layer_norm(x, delta, weight, bias, 1e-5)
    assert torch.equal(total, x + delta)  # rounded to the activations' dtype, as PyTorch adds
    expected = F.layer_norm(total.float(), (1024,), weight.float(), bias.float(), 1e-5)
    assert normed.dtype == act and normed.shape == x.shape
    assert float((normed.float() - expected).abs().max()) < (1e-5 if act == torch.float32 else 0.04)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        short = x[..., :24].contiguous(), delta[..., :24].contiguous()
        torch.ops.samplemind.add_layer_norm(*short, weight[:24], bias[:24], 1e-5)


@needs_kernels
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_linear_kernels_apply_gelu_to_their_outputs(kind):
    """fc1's GELU inside the int8/int4 kernel: F.gelu (erf) of the plain output, over outputs
    from -12 to 12 (both tails and the bend)."""
    from torch import nn

    from samplemind_gen.engines.musicgen_quant import Int4Linear, Int8Linear

    torch.manual_seed(5)
    linear = nn.Linear(256, 4096)
    with torch.no_grad():
        linear.weight.mul_(4.0)
    packed = Int8Linear(linear) if kind == "int8" else Int4Linear(linear)
    x = torch.randn(2, 1, 256)
    plain = packed(x)
    assert float(plain.abs().max()) > 8
    fused = packed.with_gelu()(x)
    expected = F.gelu(plain.float())
    assert float((fused.float() - expected).abs().max()) < (1e-5 if kind == "int8" else 0.05)
    with pytest.raises(RuntimeError, match="activation must be"):
        torch.ops.samplemind.int8_linear(
            x,
            torch.zeros(8, 256, dtype=torch.int8),
            torch.ones(8),
            torch.zeros(8, dtype=torch.int32),
            None,
            "relu",
        )


def _packed_decoder_and_inputs(checkpoint: Path, mode: str):  # type: ignore[no-untyped-def]
    """A packed mode's CachedDecoder on the tiny model, and a take's inputs for it: prompt
    states for 2 rows (the second's last 2 tokens masked) and 40 steps of ids."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    options = {
        "bf16": LoadOptions(dtype="bfloat16"),
        "fp16": LoadOptions(dtype="float16"),  # fp16 weights, fp32 math (half_linear)
        "int8": LoadOptions(quantize="int8"),
        "int4": LoadOptions(quantize="int4"),
    }[mode]
    decoder = load_engine(resolve_model(str(checkpoint)), options).cached_decoder
    torch.manual_seed(0)
    states = torch.randn(2, 7, decoder.hidden)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ids = torch.randint(0, 64, (40, 2 * decoder.codebooks, 1))
    return decoder, states, mask, ids


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "fp16", "int8", "int4"])
def test_the_fused_step_gives_the_unfused_steps_logits(tiny_musicgen: Path, mode: str):
    """CachedDecoder.step on the step ops against the same step on PyTorch's ops, position by
    position over one take, with the same caches' dtype (bf16); then with int8 caches."""
    decoder, states, mask, ids = _packed_decoder_and_inputs(tiny_musicgen, mode)

    def logits(native: bool, int8_cache: bool) -> list[torch.Tensor]:
        decoder.native_attention, decoder.int8_cache = native, int8_cache
        decoder.begin(states, mask, 40)
        assert decoder._native == native
        out = [decoder.step(ids[p], p).float() for p in range(40)]
        decoder.end()
        return out

    unfused = logits(False, False)
    fused = logits(True, False)
    # bf16 activations round at different points; int8/int4: the unfused step rounds q to bf16
    tolerance = 0.03 if mode == "bf16" else 0.01
    for a, b in zip(fused, unfused, strict=True):
        assert rel_err(a, b) < tolerance
    for a, b in zip(logits(True, True), unfused, strict=True):
        assert rel_err(a, b) < 0.05  # int8 caches


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "bf16-16bit", "fp16", "int8", "int4"])
def test_the_one_call_step_gives_the_per_op_steps_logits_exactly(
    tiny_musicgen: Path, mode: str, monkeypatch: pytest.MonkeyPatch
):
    """`decoder_layers` runs every layer of a step in one call: the same kernels in the same
    order as the step ops called one by one from Python, so the same logits bit for bit, with
    bf16 and int8 caches and the prompt mask. bf16 is compact (12-bit) weights where the CPU
    has AVX512-BF16, "bf16-16bit" the same weights in 16 bits."""
    if mode == "bf16-16bit":
        monkeypatch.setenv("SAMPLEMIND_GEN_COMPACT_BF16", "0")
    decoder, states, mask, ids = _packed_decoder_and_inputs(tiny_musicgen, mode.split("-")[0])
    decoder.fold_cross = False  # the per-op step attends; the folded step: test_folded_cross.py

    def logits(one_call: bool, int8_cache: bool) -> list[torch.Tensor]:
        decoder.one_call, decoder.int8_cache = one_call, int8_cache
        decoder.begin(states, mask, 40)
        assert (decoder._layers_call is not None) == one_call
        out = [decoder.step(ids[p], p) for p in range(40)]
        decoder.end()
        return out

    for int8_cache in (False, True):
        one = logits(True, int8_cache)
        per_op = logits(False, int8_cache)
        for a, b in zip(one, per_op, strict=True):
            assert torch.equal(a, b)


@needs_kernels
def test_the_one_call_step_is_left_for_kernels_it_does_not_run(tiny_musicgen: Path):
    """bf16 on oneDNN's linear layers (no samplemind-gen kernel to call from C++): the step ops
    run one by one."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine, musicgen_quant

    musicgen_quant.library_half_kernels = True
    try:
        engine = load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(dtype="bfloat16"))
    finally:
        musicgen_quant.library_half_kernels = False
    decoder = engine.cached_decoder
    decoder.begin(torch.randn(2, 3, decoder.hidden), torch.ones(2, 3, dtype=torch.long), 4)
    assert decoder._native and decoder._layers_call is None
    decoder.end()


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embed_frame_is_the_codebooks_sum_plus_position_and_its_norm(dtype):
    """x: each row's 4 token embeddings added in codebook order, then the position (rounded to
    the tables' dtype), bit for bit as PyTorch adds them; y: its layer norm. Non-contiguous ids
    are read as they are; an id past its table is refused."""
    gen = torch.Generator().manual_seed(5)
    books, vocab, hidden, rows = 4, 37, 64, 3
    tables = [torch.randn(vocab, hidden, generator=gen).to(dtype) for _ in range(books)]
    positions = torch.randn(20, hidden, generator=gen)
    weight, bias = torch.randn(hidden, generator=gen).to(dtype), torch.randn(hidden).to(dtype)
    wide = torch.randint(0, vocab, (rows * books, 5), generator=gen)
    ids = wide[:, -1:]  # a column of a wider buffer, as the decode loop slices it
    x, y = torch.ops.samplemind.embed_frame(ids, tables, positions, 7, weight, bias, 1e-5)
    grouped = ids.reshape(rows, books, 1)
    expected = sum(F.embedding(grouped[:, c], tables[c]) for c in range(books))
    expected = expected + positions[7:8].to(dtype)
    assert x.dtype == y.dtype == dtype and x.shape == (rows, 1, hidden)
    assert torch.equal(x, expected)
    normed = F.layer_norm(x.float(), (hidden,), weight.float(), bias.float(), 1e-5)
    assert float((y.float() - normed).abs().max()) < (1e-5 if dtype == torch.float32 else 0.04)
    with pytest.raises(RuntimeError, match="id out of range"):
        torch.ops.samplemind.embed_frame(ids + vocab, tables, positions, 7, weight, bias, 1e-5)
    with pytest.raises(RuntimeError, match="position past"):
        torch.ops.samplemind.embed_frame(ids, tables, positions, 20, weight, bias, 1e-5)


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "int8", "int4"])
def test_the_step_embeds_and_runs_the_heads_natively_with_the_same_logits(
    tiny_musicgen: Path, mode: str
):
    """In the packed modes the frame's embeddings + first norm (`embed_frame`) and the LM heads
    (`lm_heads`) are one op each: the heads give the per-head kernels' logits exactly, and the
    step's logits stay those of the Python embedding + F.layer_norm within rounding."""
    decoder, states, mask, ids = _packed_decoder_and_inputs(tiny_musicgen, mode)
    decoder.begin(states, mask, 12)
    assert decoder._embed_tables is not None and decoder._heads_call is not None
    y = torch.randn(ids[0].shape[0] // decoder.codebooks, 1, decoder.hidden).to(decoder.dtype)
    per_head = [head(y) for head in decoder._heads]
    stacked = torch.stack(per_head, dim=1).reshape(-1, per_head[0].shape[-1])
    assert torch.equal(decoder._head_logits(y), stacked)
    native = [decoder.step(ids[p], p).float() for p in range(12)]
    decoder.end()
    decoder.begin(states, mask, 12)
    decoder._embed_tables = decoder._heads_call = None
    python = [decoder.step(ids[p], p).float() for p in range(12)]
    decoder.end()
    for a, b in zip(native, python, strict=True):
        assert rel_err(a, b) < (0.03 if mode == "bf16" else 1e-4)
