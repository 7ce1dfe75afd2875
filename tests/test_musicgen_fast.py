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

PROMPT = "lofi hip hop drums"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def load(folder: Path, **options):  # type: ignore[no-untyped-def]
    return load_engine(resolve_model(str(folder)), LoadOptions(**options))


@pytest.fixture(scope="module")
def int8_engine(tiny_musicgen: Path):  # type: ignore[no-untyped-def]
    return load(tiny_musicgen, device="cpu", quantize="int8")


def test_cpu_default_is_bf16_and_encodec_encoder_is_dropped(tiny_musicgen: Path):
    engine = load(tiny_musicgen, device="cpu")
    assert engine.dtype == "bfloat16"
    assert engine.model.audio_encoder.encoder is None
    # T5 and EnCodec are the checkpoint's exact fp32 weights, not a bf16 round trip.
    from safetensors import safe_open

    with safe_open(str(tiny_musicgen / "model.safetensors"), framework="pt") as f:
        name = next(k for k in f.keys() if k.startswith("text_encoder.encoder.block.0"))  # noqa: SIM118
        expected = f.get_tensor(name)
    assert torch.equal(engine.model.state_dict()[name], expected)
    (take,) = engine.generate([GenerationRequest(PROMPT, duration=0.2, seed=1)])
    assert take.audio.shape == (1, 6400) and np.isfinite(take.audio).all()


def test_int8_quantizes_decoder_linears_and_is_deterministic(int8_engine):
    from samplemind_gen.engines.musicgen_quant import is_quantized

    assert int8_engine.dtype == "bfloat16+int8"
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


def test_bf16_is_deterministic_per_seed(tiny_musicgen: Path):
    engine = load(tiny_musicgen, device="cpu", dtype="bfloat16")
    reqs = [GenerationRequest(PROMPT, duration=0.3, seed=3)]
    np.testing.assert_array_equal(engine.generate(reqs)[0].audio, engine.generate(reqs)[0].audio)


def test_int8_on_a_gpu_is_refused_with_advice(tiny_musicgen: Path):
    from samplemind_gen.engines.musicgen_quant import quantize_decoder

    engine = load(tiny_musicgen, device="cpu", dtype="float32")
    with pytest.raises(BadInputError, match="float16"):
        quantize_decoder(engine.model, "int8", "cuda")
    with pytest.raises(BadInputError):
        quantize_decoder(engine.model, "int4", "cpu")


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
    err = np.sqrt(np.mean((streamed - take.audio) ** 2))
    rms = np.sqrt(np.mean(take.audio**2))
    assert err <= 0.05 * rms + 1e-6, (err, rms)
    if duration > 1:
        assert len(chunks) >= 3
        # The first chunk arrives long before the last decode step.
        assert steps_at_first_chunk[0] < musicgen_engine.steps_for(duration) // 2
    assert take.timings["first_audio"] > 0


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


@cuda
def test_cuda_fp16_graphs_match_eager(tiny_musicgen: Path):  # pragma: no cover - GPU only
    engine = load(tiny_musicgen, device="cuda")
    assert engine.dtype == "float16" and engine.use_cuda_graphs
    req = [GenerationRequest(PROMPT, duration=0.5, seed=1)]
    graphed = engine.generate(req, greedy=True)[0].audio
    engine.use_cuda_graphs = False
    eager = engine.generate(req, greedy=True)[0].audio
    assert graphed.shape == eager.shape == (1, 16000)
    assert np.isfinite(graphed).all()


@cuda
def test_cuda_bf16_streaming(tiny_musicgen: Path):  # pragma: no cover - GPU only
    engine = load(tiny_musicgen, device="cuda", dtype="bfloat16")
    chunks: list[np.ndarray] = []
    (take,) = engine.generate(
        [GenerationRequest(PROMPT, duration=0.5, seed=1)], on_audio=lambda c, s: chunks.append(c)
    )
    assert np.concatenate(chunks, axis=-1).shape[-1] == take.audio.shape[-1]


def test_stream_player_plays_chunks_back_to_back_and_pads_underruns():
    from samplemind_gen.playback import StreamPlayer

    player = StreamPlayer(32000, 2)
    a = np.arange(10, dtype=np.float32).reshape(2, 5)
    player.queue(a)
    player.queue(a + 100)
    out = np.full((4, 2), -1.0, dtype=np.float32)
    assert player._fill(out) is False
    np.testing.assert_array_equal(out, a.T[:4])
    out = np.full((8, 2), -1.0, dtype=np.float32)
    assert player._fill(out) is False  # more may come: the gap is silence, not the end
    np.testing.assert_array_equal(out[:6], np.concatenate([a.T[4:], (a + 100).T]))
    assert (out[6:] == 0).all() and player.underruns == 1
    player.finish()
    assert player._fill(np.zeros((4, 2), dtype=np.float32)) is True
    assert player.position == pytest.approx(10 / 32000)
    assert player.wait(timeout=1)


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
        assert next(engine.model.text_encoder.parameters()).dtype == torch.float32
        (take,) = engine.generate([GenerationRequest(PROMPT, duration=0.2, seed=1)])
        assert take.audio.shape == (1, 6400) and np.isfinite(take.audio).all()
