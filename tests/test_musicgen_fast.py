"""MusicGen speed modes (bf16, int8, static-shape step, CUDA graphs) and streaming, on the tiny
checkpoints through the normal load path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samplemind_gen.catalog import resolve_model
from samplemind_gen.engines import LoadOptions, load_engine
from samplemind_gen.errors import BadInputError
from samplemind_gen.request import GenerationRequest, Progress
from samplemind_gen.testing.musicgen_steps import stepped_logits

PROMPT = "lofi hip hop drums"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def load(folder: Path, **options):  # type: ignore[no-untyped-def]
    return load_engine(resolve_model(str(folder)), LoadOptions(**options))


@pytest.fixture(scope="module")
def int8_engine(tiny_musicgen: Path):  # type: ignore[no-untyped-def]
    return load(tiny_musicgen, device="cpu", quantize="int8")


def test_cpu_default_dtype_and_encodec_encoder_is_dropped(tiny_musicgen: Path):
    from samplemind_gen.devices import cpu_supports_bf16
    from samplemind_gen.engines.musicgen import cpu_default_dtype

    engine = load(tiny_musicgen, device="cpu")
    assert engine.dtype == cpu_default_dtype() == ("bfloat16" if cpu_supports_bf16() else "float16")
    assert engine.model.audio_encoder.encoder is None
    # What is not packed (T5's norms and embedding, EnCodec) is the checkpoint's exact fp32
    # weights, not a half-precision round trip.
    from safetensors import safe_open

    params = dict(engine.model.named_parameters(remove_duplicate=False))
    with safe_open(str(tiny_musicgen / "model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118
            if name.startswith(("text_encoder.", "audio_encoder.decoder")) and name in params:
                if "shared" in name or "embed_tokens" in name:  # the T5 table: fp16 by design
                    assert params[name].dtype == torch.float16, name
                    assert torch.equal(params[name], f.get_tensor(name).half()), name
                    continue
                assert params[name].dtype == torch.float32, name
                assert torch.equal(params[name], f.get_tensor(name)), name
    (take,) = engine.generate([GenerationRequest(PROMPT, duration=0.2, seed=1)])
    assert take.audio.shape == (1, 6400) and np.isfinite(take.audio).all()


def test_int8_quantizes_decoder_linears_and_is_deterministic(int8_engine):
    from samplemind_gen.engines.musicgen_quant import is_quantized

    assert int8_engine.dtype == "float16+int8"
    assert is_quantized(int8_engine.model.decoder)
    assert not any(type(m) is torch.nn.Linear for m in int8_engine.model.decoder.modules())

    def make(seed: int) -> np.ndarray:
        return int8_engine.generate([GenerationRequest(PROMPT, duration=0.3, seed=seed)])[0].audio

    a = make(5)
    assert a.shape == (1, 9600) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, make(5))
    assert not np.array_equal(a, make(6))


def test_int8_stereo_batch_shapes(tiny_musicgen_stereo: Path):
    engine = load(tiny_musicgen_stereo, device="cpu", quantize="int8")
    takes = engine.generate(
        [
            GenerationRequest(PROMPT, duration=0.25, seed=1),
            GenerationRequest("dark pad", duration=0.25, seed=2),
        ]
    )
    assert [t.audio.shape for t in takes] == [(2, 8000), (2, 8000)]


def test_fp16_packed_mode_is_close_to_fp32_and_deterministic(tiny_musicgen: Path, musicgen_engine):
    from samplemind_gen.engines.musicgen_quant import is_fused, is_half_packed, is_quantized

    engine = load(tiny_musicgen, device="cpu", dtype="float16")
    assert engine.dtype == "float16" and is_fused(engine.model.decoder)
    # fp16 weights on our kernel where it is built, else fbgemm's fp16 packing (T5's too).
    packed = is_half_packed if ours_built() else is_quantized
    assert packed(engine.model.decoder) and packed(engine.model.text_encoder)
    assert not any(type(m) is torch.nn.Linear for m in engine.model.decoder.modules())
    # Same logits as fp32 up to fp16 weight rounding.
    half, full = stepped_logits((engine, musicgen_engine), 4)
    torch.testing.assert_close(half, full, rtol=2e-2, atol=2e-2)
    reqs = [GenerationRequest(PROMPT, duration=0.3, seed=3)]
    np.testing.assert_array_equal(engine.generate(reqs)[0].audio, engine.generate(reqs)[0].audio)
    # transformers' own decoder forward cannot step fused q/k/v: a clear refusal.
    engine.decode_with = "transformers"
    with pytest.raises(BadInputError, match="packed"):
        engine.generate(reqs)


def test_packed_text_encoder_is_fp32_t5_with_fp16_weights(int8_engine, musicgen_engine):
    """The packed modes' T5: on our half kernel where it is built ("+t5" in the recipe), fp16
    weights and fp32 sums: fbgemm's fp16 packing up to the order of the sums, and fp32's T5 up
    to the weights' rounding."""
    import copy

    from samplemind_gen.engines.musicgen_quant import (
        _half_embeddings,
        is_half_packed,
        pack_linears,
    )

    packed = int8_engine.model.text_encoder
    reference = musicgen_engine.model.text_encoder  # fp32, unpacked
    fbgemm = copy.deepcopy(reference)
    for block in fbgemm.encoder.block:
        pack_linears(block, "float16")
    _half_embeddings(fbgemm)  # as pack_text_encoder does
    inputs = int8_engine.processor(
        text=[PROMPT, "dark ambient pad"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ours = packed(**inputs).last_hidden_state
        theirs = fbgemm(**inputs).last_hidden_state
        full = reference(**inputs).last_hidden_state
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert float((ours - full).norm() / full.norm()) < 2e-3
    assert is_half_packed(packed) is ours_built()
    assert int8_engine.kernels.endswith("+t5") is ours_built()


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_packed_kernels_called_directly_match_the_modules(mode: str):
    from torch import nn

    from samplemind_gen.engines.musicgen_decoder import direct
    from samplemind_gen.engines.musicgen_quant import fuse_qkv, pack_linears

    torch.manual_seed(0)
    attn = nn.Module()
    attn.q_proj, attn.k_proj, attn.v_proj = (nn.Linear(32, 32, bias=False) for _ in range(3))
    x = torch.randn(2, 1, 32)
    separate = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1)
    fuse_qkv(attn)
    assert not hasattr(attn, "q_proj")
    torch.testing.assert_close(attn.qkv_proj(x), separate)
    pack_linears(attn, mode)
    assert not any(hasattr(m, "qconfig") for m in attn.modules())
    torch.testing.assert_close(attn.qkv_proj(x), separate, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(direct(attn.qkv_proj)(x), attn.qkv_proj(x), rtol=0, atol=0)
    plain = nn.Linear(4, 4)
    assert direct(plain) is plain


def onednn_bf16() -> bool:
    from samplemind_gen.engines.musicgen_quant import onednn_bf16_available

    return onednn_bf16_available()


def ours_built() -> bool:
    from samplemind_gen.engines import native_kernels

    return native_kernels.available()


def compact_bf16() -> bool:
    from samplemind_gen.engines.musicgen_quant import CompactLinear

    return ours_built() and CompactLinear.available()


@pytest.mark.parametrize(
    "kernel",
    [
        pytest.param(
            "samplemind", marks=pytest.mark.skipif(not ours_built(), reason="no CPU kernels")
        ),
        pytest.param(
            "compact",
            marks=pytest.mark.skipif(not compact_bf16(), reason="needs AVX512-BF16 kernels"),
        ),
        pytest.param(
            "onednn",
            marks=pytest.mark.skipif(
                not onednn_bf16(), reason="needs a CPU with native bf16 (AVX512-BF16/AMX)"
            ),
        ),
    ],
)
def test_bf16_packed_mode_is_close_to_fp32(
    tiny_musicgen: Path, musicgen_engine, monkeypatch, kernel: str
):
    from samplemind_gen.engines import musicgen_quant
    from samplemind_gen.engines.musicgen_decoder import direct
    from samplemind_gen.engines.musicgen_quant import (
        CompactLinear,
        HalfLinear,
        OneDNNLinear,
        is_compact,
        is_fused,
        is_half_packed,
        is_onednn_packed,
    )

    monkeypatch.setattr(musicgen_quant, "library_half_kernels", kernel == "onednn")
    if kernel == "samplemind":  # bf16 weights as they are (`half_linear`), not compact
        monkeypatch.setenv("SAMPLEMIND_GEN_COMPACT_BF16", "0")
    engine = load(tiny_musicgen, device="cpu", dtype="bfloat16")
    decoder = engine.model.decoder
    packed = {"onednn": is_onednn_packed, "samplemind": is_half_packed, "compact": is_compact}
    assert engine.dtype == "bfloat16" and is_fused(decoder) and packed[kernel](decoder)
    assert not any(
        type(m) is torch.nn.Linear for m in decoder.model.decoder.layers[0].self_attn.modules()
    )
    head = direct(decoder.lm_heads[0])
    kinds = {"onednn": OneDNNLinear, "samplemind": HalfLinear, "compact": CompactLinear}
    assert isinstance(head, kinds[kernel])
    # Cross-attention keys/values stay plain (computed once per take in `begin`).
    assert type(decoder.model.decoder.layers[0].encoder_attn.k_proj) is torch.nn.Linear
    half, full = stepped_logits((engine, musicgen_engine), 4)
    torch.testing.assert_close(half, full, rtol=5e-2, atol=5e-2)
    # Batched takes (more rows than the packing hint) come out as they do alone.
    one = engine.generate([GenerationRequest(PROMPT, duration=0.3, seed=3)])[0].audio
    two = engine.generate(
        [GenerationRequest(PROMPT, duration=0.3, seed=3), GenerationRequest("pad", 0.3, seed=4)]
    )
    assert two[0].audio.shape == one.shape and np.isfinite(two[1].audio).all()
    # pack=False keeps plain bf16 modules, which transformers' own forward can step.
    plain = load(tiny_musicgen, device="cpu", dtype="bfloat16", pack=False)
    assert not is_onednn_packed(plain.model.decoder) and not is_fused(plain.model.decoder)
    plain.decode_with = "transformers"
    assert plain.generate([GenerationRequest(PROMPT, duration=0.2, seed=1)])[0].audio.shape == (
        1,
        6400,
    )


def test_int4_mode_packs_4_bit_weights_and_is_deterministic(tiny_musicgen: Path, musicgen_engine):
    from samplemind_gen.engines.musicgen_quant import Int4Linear, is_fused, is_int4

    engine = load(tiny_musicgen, device="cpu", quantize="int4")
    decoder = engine.model.decoder
    assert engine.dtype == "bfloat16+int4" and is_int4(decoder) and is_fused(decoder)
    layer = decoder.model.decoder.layers[0]
    for module in (layer.self_attn.qkv_proj, layer.fc1, layer.fc2, layer.encoder_attn.q_proj):
        assert isinstance(module.kernel, Int4Linear)
    assert not isinstance(getattr(decoder.lm_heads[0], "kernel", None), Int4Linear)
    # Close to fp32 within 4-bit rounding (loose: this is the lossy mode).
    (four, *_), (full, *_) = stepped_logits((engine, musicgen_engine), 2)
    assert ((four - full).norm() / full.norm()).item() < 0.2
    reqs = [GenerationRequest(PROMPT, duration=0.3, seed=3)]
    a = engine.generate(reqs)[0].audio
    assert a.shape == (1, 9600) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, engine.generate(reqs)[0].audio)


def test_int4_linear_matches_its_own_dequantized_weights():
    """aten's int4 kernel (where samplemind-gen's own is not built; that one is checked in
    test_native_kernels.py)."""
    from torch import nn

    from samplemind_gen.engines.musicgen_quant import Int4Linear

    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    packed = Int4Linear(linear, group=32, native=False)
    x = torch.randn(3, 1, 64).to(torch.bfloat16)
    # Dequantize by hand: round-to-nearest on 16 levels between each group's min and max.
    w = linear.weight.detach().reshape(48, 2, 32)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    deq = (torch.round((w - low) / scale) * scale + low).reshape(48, 64)
    expected = nn.functional.linear(x.float(), deq, linear.bias.detach())
    torch.testing.assert_close(packed(x).float(), expected, rtol=3e-2, atol=3e-2)
    assert packed(x).shape == (3, 1, 48)
    assert Int4Linear.fits(linear, 32) and not Int4Linear.fits(nn.Linear(40, 48), 32)


def test_bf16_is_deterministic_per_seed(tiny_musicgen: Path):
    engine = load(tiny_musicgen, device="cpu", dtype="bfloat16")
    reqs = [GenerationRequest(PROMPT, duration=0.3, seed=3)]
    np.testing.assert_array_equal(engine.generate(reqs)[0].audio, engine.generate(reqs)[0].audio)


def test_int8_on_a_gpu_is_refused_with_advice(tiny_musicgen: Path):
    from samplemind_gen.engines.musicgen_quant import quantize_decoder

    engine = load(tiny_musicgen, device="cpu", dtype="float32")
    for mode in ("int8", "int4"):
        with pytest.raises(BadInputError, match="float16"):
            quantize_decoder(engine.model, mode, "cuda")
    with pytest.raises(BadInputError, match="int8 or int4"):
        quantize_decoder(engine.model, "int3", "cpu")


def test_cached_decoder_matches_transformers_decoder_sampling(musicgen_engine):
    """Our decode path and the decoder's own forward give the same takes (fp32, sampling)."""
    req = [GenerationRequest(PROMPT, duration=0.3, seed=4)]
    ours = musicgen_engine.generate(req)[0].audio
    musicgen_engine.decode_with = "transformers"
    try:
        ref = musicgen_engine.generate(req)[0].audio
    finally:
        musicgen_engine.decode_with = "cached"
    np.testing.assert_array_equal(ours, ref)


def test_static_shape_step_matches_dynamic_step(musicgen_engine):
    """The fixed-shape step that CUDA graphs capture computes the same logits (CPU check)."""
    engine = musicgen_engine
    inputs = engine.processor(text=[PROMPT], return_tensors="pt")
    states, mask = engine._encode(inputs["input_ids"], inputs["attention_mask"], 3.0)
    dec = engine.cached_decoder
    rows = 2 * engine.num_codebooks
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 64, (rows, 1), generator=gen) for _ in range(6)]
    dec.begin(states, mask, 6)
    dynamic = [dec.step(x, t) for t, x in enumerate(ids)]
    dec.begin(states, mask, 6)
    static = [dec.step_static(x, torch.tensor([t])) for t, x in enumerate(ids)]
    dec.end()
    for a, b in zip(dynamic, static, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("duration", [0.3, 1.7])
def test_streamed_chunks_match_one_shot_decode(musicgen_engine, duration):
    chunks: list[tuple[int, np.ndarray]] = []
    steps_at_first_chunk: list[int] = []
    last_step = [0]

    def on_progress(p: Progress) -> None:
        if p.stage == "generating":
            last_step[0] = p.step

    def on_audio(chunk: np.ndarray, start: int) -> None:
        if not chunks:
            steps_at_first_chunk.append(last_step[0])
        chunks.append((start, chunk))

    (take,) = musicgen_engine.generate(
        [GenerationRequest(PROMPT, duration=duration, seed=8)],
        on_audio=on_audio,
        on_progress=on_progress,
    )
    starts = [s for s, _ in chunks]
    sizes = [c.shape[-1] for _, c in chunks]
    assert starts == [sum(sizes[:i]) for i in range(len(sizes))]  # back to back, in order
    streamed = np.concatenate([c for _, c in chunks], axis=-1)[0]
    assert streamed.shape == take.audio.shape
    # What was heard while generating is exactly the saved take (encodec_windows).
    np.testing.assert_array_equal(streamed, take.audio)
    if duration > 1:
        assert len(chunks) >= 3
        # The first chunk arrives long before the last decode step.
        assert steps_at_first_chunk[0] < musicgen_engine.steps_for(duration) // 2
    assert take.timings["first_audio"] > 0


def test_windowed_encodec_equals_one_shot_decode_and_streams_exactly(musicgen_engine):
    """encodec_windows against transformers' own one-shot `EncodecModel.decode`, including
    windows much shorter than the take, and a stream pushed in uneven steps."""
    from samplemind_gen.engines.encodec_windows import WindowedDecoder

    encodec = musicgen_engine.model.audio_encoder
    codes = torch.randint(
        0, 64, (2, musicgen_engine.num_codebooks, 93), generator=torch.Generator().manual_seed(1)
    )
    ref = encodec.decode(codes[None], audio_scales=[None]).audio_values
    for window in (7, 40, 500):
        decoder = WindowedDecoder(encodec, window_frames=window)
        assert decoder.lstm is not None
        torch.testing.assert_close(decoder.decode(codes), ref, rtol=0, atol=1e-6)
        stream, pieces = decoder.stream(), []
        for n in [*range(3, 93, 11), 93]:
            piece = stream.push(codes[..., :n], final=n == 93)
            if piece is not None:
                pieces.append(piece)
        assert len(pieces) >= 5
        torch.testing.assert_close(torch.cat(pieces, dim=-1), ref, rtol=0, atol=1e-6)
        assert stream.low.shape[-1] < 93  # the stream keeps only the context it still needs


def test_streaming_a_stereo_batch(tiny_musicgen_stereo: Path):
    engine = load(tiny_musicgen_stereo, device="cpu", dtype="float32")
    chunks: list[np.ndarray] = []
    takes = engine.generate(
        [
            GenerationRequest(PROMPT, duration=0.6, seed=1),
            GenerationRequest("pad", duration=0.6, seed=2),
        ],
        on_audio=lambda c, s: chunks.append(c),
    )
    streamed = np.concatenate(chunks, axis=-1)
    assert streamed.shape == (2, 2, 19200)
    for i, take in enumerate(takes):
        err = np.sqrt(np.mean((streamed[i] - take.audio) ** 2))
        assert err <= 0.05 * np.sqrt(np.mean(take.audio**2)) + 1e-6


def test_draw_is_torch_multinomial_without_the_sync():
    """The graph-safe sampler picks exactly what torch.multinomial picks for the same seed."""
    from samplemind_gen.engines.musicgen_sampling import draw, filter_logits

    for seed in range(50):
        logits = torch.randn(4, 2048, generator=torch.Generator().manual_seed(1000 + seed)) * 3
        probs = filter_logits(logits, temperature=1.0, top_k=250, top_p=0.9).softmax(-1)
        expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(draw(probs, torch.Generator().manual_seed(seed)), expected[:, 0])


def test_top_k_sampling_draws_from_the_k_largest_with_their_softmax_weights():
    """On CPU, top-k sampling draws noise for the candidates only: every pick is one of the k
    largest logits or tied with the k-th (as transformers' top-k keeps them), picked as often as
    the softmax over them says (20,000 draws), the same picks for the same seed; with more ties
    than its room it takes the full path."""
    from samplemind_gen.engines.musicgen_sampling import choose_tokens, draw_top_k

    def sample(logits: torch.Tensor, top_k: int, seed: int, draws: int) -> torch.Tensor:
        return choose_tokens(
            logits.repeat(draws, 1),
            greedy=False,
            temperature=1.0,
            top_k=top_k,
            top_p=None,
            generators=[torch.Generator().manual_seed(seed)],
            rows_per_take=draws,
        )

    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 3.0, -2.0, 0.0, 1.5]])
    picks = sample(logits, 3, 0, 20000)
    assert torch.equal(picks, sample(logits, 3, 0, 20000))
    assert set(picks.tolist()) == {4, 0, 7}  # the three largest
    expected = torch.tensor([3.0, 2.0, 1.5]).softmax(-1)
    counts = torch.bincount(picks, minlength=8)[[4, 0, 7]].float() / len(picks)
    assert torch.allclose(counts, expected, atol=0.015)
    tied = torch.tensor([[2.0, 1.0, 1.0, 0.0]])  # the 2nd largest value twice: top-2 keeps 3
    assert draw_top_k(tied, 2, [torch.Generator().manual_seed(1)], 1) is not None
    assert set(sample(tied, 2, 1, 3000).tolist()) == {0, 1, 2}
    many = torch.cat([torch.tensor([[5.0]]), torch.ones(1, 40), torch.zeros(1, 10)], dim=1)
    assert draw_top_k(many, 3, [torch.Generator().manual_seed(1)], 1) is None  # 40 ties: full path
    assert set(sample(many, 3, 2, 2000).tolist()) == set(range(41))


@pytest.mark.parametrize(
    "settings", [{}, {"top_p": 0.8, "temperature": 0.7}, {"guidance_scale": 1}]
)
def test_whole_step_that_cuda_graphs_capture_gives_the_same_take(musicgen_engine, settings):
    """`TakeStep` (delay pattern, static decoder step, guidance, sampling and the id write, all on
    device tensors: what `CudaTakeGraph` captures), run eagerly on the CPU, makes the same take
    as the normal loop, seed for seed; a batch of two takes too."""
    engine = musicgen_engine
    reqs = [
        GenerationRequest(PROMPT, duration=0.4, seed=9, **settings),
        GenerationRequest("dub techno chords", duration=0.4, seed=10, **settings),
    ]
    expected = engine.generate(reqs)
    engine.static_take_step = True
    try:
        takes = engine.generate(reqs)
    finally:
        engine.static_take_step = False
    for a, b in zip(expected, takes, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)


@cuda
def test_cuda_fp16_graphs_match_eager(tiny_musicgen: Path):  # pragma: no cover - GPU only
    """The whole-step graph replays exactly what the same step computes eagerly on the GPU,
    sampling included (the take's generators are registered with the graph)."""
    engine = load(tiny_musicgen, device="cuda")
    assert engine.dtype == "float16" and engine.use_cuda_graphs
    assert engine.cached_decoder.fused  # q/k/v in one projection on CUDA
    req = [GenerationRequest(PROMPT, duration=0.5, seed=1)]
    graphed = engine.generate(req)[0].audio
    assert np.array_equal(engine.generate(req)[0].audio, graphed)  # same seed, same take
    engine.use_cuda_graphs = False
    engine.static_take_step = True
    eager = engine.generate(req)[0].audio
    assert graphed.shape == eager.shape == (1, 16000)
    assert np.isfinite(graphed).all()
    np.testing.assert_array_equal(graphed, eager)
    engine.static_take_step = False
    greedy = engine.generate(req, greedy=True)[0].audio  # the dynamic-shape eager step
    engine.use_cuda_graphs = True
    assert np.abs(engine.generate(req, greedy=True)[0].audio - greedy).max() < 0.05


@cuda
def test_cuda_bf16_streaming_and_cancel(tiny_musicgen: Path):  # pragma: no cover - GPU only
    import threading

    from samplemind_gen.errors import GenerationCancelled

    engine = load(tiny_musicgen, device="cuda", dtype="bfloat16")
    chunks: list[np.ndarray] = []
    (take,) = engine.generate(
        [GenerationRequest(PROMPT, duration=0.5, seed=1)], on_audio=lambda c, s: chunks.append(c)
    )
    assert np.concatenate(chunks, axis=-1).shape[-1] == take.audio.shape[-1]
    cancel = threading.Event()
    seen: list[int] = []

    def progress(p: Progress) -> None:
        if p.step:
            seen.append(p.step)
            if p.step == 5:
                cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(
            [GenerationRequest(PROMPT, duration=2.0, seed=1)], on_progress=progress, cancel=cancel
        )
    assert max(seen) == 5


@cuda
def test_cuda_capture_failure_falls_back(tiny_musicgen: Path, monkeypatch):  # pragma: no cover
    """A torch or driver that cannot capture the whole step: the take is still made (decoder-only
    graph), the same as the eager static step, and the engine stops retrying."""
    from samplemind_gen.engines import musicgen_cuda

    def refuse(take_step):  # type: ignore[no-untyped-def]
        raise RuntimeError("capture not supported (injected)")

    engine = load(tiny_musicgen, device="cuda")
    req = [GenerationRequest(PROMPT, duration=0.5, seed=1)]
    expected = engine.generate(req, greedy=True)[0].audio
    monkeypatch.setattr(musicgen_cuda, "capture_take_graph", refuse)
    engine2 = load(tiny_musicgen, device="cuda")
    fallback = engine2.generate(req, greedy=True)[0].audio
    assert engine2.graph_whole_step is False and fallback.shape == expected.shape
    assert np.isfinite(fallback).all()


@cuda
def test_cuda_compiled_step(tiny_musicgen: Path):  # pragma: no cover - GPU only
    engine = load(tiny_musicgen, device="cuda", compile=True)
    req = [GenerationRequest(PROMPT, duration=0.5, seed=1)]
    compiled = engine.generate(req)[0].audio
    assert compiled.shape == (1, 16000) and np.isfinite(compiled).all()
    assert np.array_equal(engine.generate(req)[0].audio, compiled)


def test_service_passes_streamed_audio_through(tiny_musicgen: Path):
    from samplemind_gen.service import AudioEngineWithGeneration

    service = AudioEngineWithGeneration(LoadOptions(device="cpu", dtype="float32"), analyze=False)
    chunks: list[np.ndarray] = []
    (take,) = service.generate_blocking(
        GenerationRequest(PROMPT, duration=0.5, seed=1),
        model=str(tiny_musicgen),
        on_audio=lambda c, s: chunks.append(c),
    )
    assert len(chunks) >= 2
    assert np.concatenate(chunks, axis=-1).shape == (1, *take.audio.shape)


def test_bf16_and_int8_with_a_text_projection(tmp_path: Path):
    """musicgen-small's T5 (768) is narrower than its decoder (1024): the projection between
    them runs in the decoder's dtype while T5 stays fp32 on CPU."""
    from samplemind_gen.testing.tiny_musicgen import MusicGenSize, build_musicgen

    folder = build_musicgen(tmp_path / "proj", size=MusicGenSize(t5_d_model=24, t5_heads=2))
    for options in ({"dtype": "bfloat16"}, {"quantize": "int8"}):
        engine = load(folder, device="cpu", **options)
        norm = engine.model.text_encoder.encoder.final_layer_norm
        assert norm.weight.dtype == torch.float32
        (take,) = engine.generate([GenerationRequest(PROMPT, duration=0.2, seed=1)])
        assert take.audio.shape == (1, 6400) and np.isfinite(take.audio).all()


def test_folding_encodec_weight_norm_leaves_the_audio_unchanged(tiny_musicgen: Path):
    from transformers import MusicgenForConditionalGeneration

    from samplemind_gen.engines.encodec_windows import fold_weight_norm

    model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen, dtype=torch.float32)
    codes = torch.randint(0, 64, (1, 1, 4, 30), generator=torch.Generator().manual_seed(0))
    before = model.audio_encoder.decode(codes, audio_scales=[None]).audio_values
    assert fold_weight_norm(model.audio_encoder.decoder) > 0
    assert fold_weight_norm(model.audio_encoder.decoder) == 0  # nothing left to fold
    after = model.audio_encoder.decode(codes, audio_scales=[None]).audio_values
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_a_warm_up_take_leaves_later_takes_unchanged(tiny_musicgen: Path):
    from samplemind_gen.service import AudioEngineWithGeneration

    service = AudioEngineWithGeneration(LoadOptions(device="cpu", dtype="float32"), analyze=False)
    engine = service.load(str(tiny_musicgen), warm_up=True)
    assert engine.last_stream is not None  # the throw-away take went all the way through
    assert service.load(str(tiny_musicgen), warm_up=True) is engine and service.load_count == 1
    fresh = load(tiny_musicgen, device="cpu", dtype="float32")
    req = [GenerationRequest(PROMPT, duration=0.3, seed=2)]
    np.testing.assert_array_equal(engine.generate(req)[0].audio, fresh.generate(req)[0].audio)


def test_the_analyser_warms_up_beside_the_load_and_is_done_before_a_take(
    tiny_musicgen: Path, monkeypatch
):
    """The analyser's first-call cost (librosa's numba kernels) is paid while the model loads,
    once per session, and finished before the load lock is released, so it never runs beside
    the first take (it made a queued 8 s take 60% slower)."""
    import threading

    from samplemind_gen import service as service_module
    from samplemind_gen.service import AudioEngineWithGeneration

    calls: list[tuple[str, bool]] = []
    real = service_module.warm_up_analysis

    def watched(sample_rate: int = 32000) -> None:
        calls.append((threading.current_thread().name, True))
        real(sample_rate)

    monkeypatch.setattr(service_module, "warm_up_analysis", watched)
    service = AudioEngineWithGeneration(LoadOptions(device="cpu", dtype="float32"))
    service.load(str(tiny_musicgen), warm_up=True)
    assert calls == [("analysis warm-up", True)] and service.analysis_warmed
    assert not any(t.name == "analysis warm-up" for t in threading.enumerate())
    service.unload()
    service.load(str(tiny_musicgen), warm_up=True)  # a second load: already warm
    assert len(calls) == 1
    quiet = AudioEngineWithGeneration(LoadOptions(device="cpu", dtype="float32"), analyze=False)
    quiet.load(str(tiny_musicgen), warm_up=True)
    assert len(calls) == 1 and not quiet.analysis_warmed


def test_the_recipe_names_the_kernels_that_made_the_take(tiny_musicgen: Path):
    """Kernels round differently (our instruction-set paths, AMX, oneDNN, PyTorch), so the recipe
    says which made the take."""
    from samplemind_gen.devices import cpu_supports_bf16
    from samplemind_gen.engines import native_kernels
    from samplemind_gen.service import AudioEngineWithGeneration

    request = GenerationRequest("lofi hip hop drums", duration=0.2, seed=3)
    labels = {}
    for name, options in (
        ("fp32", LoadOptions(dtype="float32")),
        ("bf16", LoadOptions(dtype="bfloat16")),
        ("int8", LoadOptions(quantize="int8")),
    ):
        service = AudioEngineWithGeneration(options, analyze=False)
        (take,) = service.generate_blocking(request, model=str(tiny_musicgen))
        labels[name] = take.recipe.kernels
    assert labels["fp32"] == "pytorch"
    if native_kernels.available():
        isa = native_kernels.isa()
        amx = "bf16" in torch.ops.samplemind.amx_kinds().split(",")
        if cpu_supports_bf16() or labels["bf16"].startswith("samplemind"):
            from samplemind_gen.engines.musicgen_quant import CompactLinear

            compact = "+compact" if CompactLinear.available() else ""  # 12-bit bf16 weights
            bf16_label = f"samplemind {isa}" + ("+amx" if amx else "") + compact + "+fold"
            assert labels["bf16"] == bf16_label + "+t5"  # T5's linears on our kernel too
        # int8 on tiles: the same numbers
        assert labels["int8"] == f"samplemind {isa}+fold+t5"
    else:
        assert labels["int8"] == "fbgemm"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_take_is_the_same_alone_and_in_a_batch(tiny_musicgen: Path, quantize):
    """Packed modes: each row's products do not depend on the other rows (bf16 on AMX tiles or
    `vdpbf16ps`, int8 on tiles or VNNI: the same numbers), so a take made alone and in a batch
    gets the same codes; the audio differs only by EnCodec's batched convolutions."""
    from samplemind_gen.engines import native_kernels

    if not native_kernels.available():
        pytest.skip("oneDNN's and fbgemm's kernels may block rows differently")
    engine = load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(quantize=quantize))
    take = GenerationRequest("lofi drums", duration=0.5, seed=3)
    other = GenerationRequest("deep dub bass line", duration=0.5, seed=4)
    alone = engine.generate([take])[0].audio
    batched = engine.generate([take, other, other])[0].audio
    np.testing.assert_allclose(alone, batched, atol=1e-5)
