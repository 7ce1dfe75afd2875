"""The MusicGen engine on tiny local checkpoints, loaded through the normal code path."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from samplemind_gen.catalog import resolve_model
from samplemind_gen.engines import LoadOptions, load_engine
from samplemind_gen.errors import BadInputError, GenerationCancelled
from samplemind_gen.request import GenerationRequest, Progress

PROMPTS = ["lofi hip hop drums", "dark ambient pad with rain and a warm deep bass"]


def reference_audio(engine, prompts, duration, guidance):  # type: ignore[no-untyped-def]
    """transformers' own `generate` with greedy decoding, for the same number of steps."""
    inputs = engine.processor(text=prompts, padding=True, return_tensors="pt")
    out = engine.model.generate(
        **inputs,
        do_sample=False,
        guidance_scale=guidance,
        max_new_tokens=engine.steps_for(duration),
    )
    return out.numpy()


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_greedy_matches_transformers_generate_batched_with_padding(musicgen_engine, guidance):
    requests = [
        GenerationRequest(p, duration=0.4, guidance_scale=guidance, seed=1) for p in PROMPTS
    ]
    ours = musicgen_engine.generate(requests, greedy=True)
    ref = reference_audio(musicgen_engine, PROMPTS, 0.4, guidance)
    for i, take in enumerate(ours):
        n = take.audio.shape[1]
        # Same codes; the audio differs only by float summation order, because EnCodec runs in
        # windows here (encodec_windows) and in one go in transformers. One different code
        # would differ by ~0.1.
        np.testing.assert_allclose(take.audio, ref[i][:, :n], rtol=0, atol=1e-6)


def test_stereo_greedy_matches_and_has_two_channels(tiny_musicgen_stereo: Path):
    engine = load_engine(resolve_model(str(tiny_musicgen_stereo)), LoadOptions(dtype="float32"))
    assert engine.channels == 2
    ours = engine.generate(
        [GenerationRequest(p, duration=0.3, seed=2) for p in PROMPTS], greedy=True
    )
    ref = reference_audio(engine, PROMPTS, 0.3, 3.0)
    for i, take in enumerate(ours):
        assert take.audio.shape[0] == 2
        np.testing.assert_allclose(take.audio, ref[i][:, : take.audio.shape[1]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("duration", [0.25, 0.33, 1.0])
def test_sample_count_is_exactly_duration_times_rate(musicgen_engine, duration):
    (take,) = musicgen_engine.generate([GenerationRequest(PROMPTS[0], duration=duration, seed=3)])
    assert take.audio.shape == (1, round(duration * 32000))
    assert take.audio.dtype == np.float32
    assert take.sample_rate == 32000
    assert np.isfinite(take.audio).all()


def test_same_seed_identical_different_seed_differs(musicgen_engine):
    def make(seed: int, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
        req = GenerationRequest(PROMPTS[0], duration=0.3, seed=seed, **kw)
        return musicgen_engine.generate([req])[0].audio

    np.testing.assert_array_equal(make(7), make(7))
    assert not np.array_equal(make(7), make(8))
    np.testing.assert_array_equal(make(9, top_p=0.9, top_k=0), make(9, top_p=0.9, top_k=0))
    np.testing.assert_array_equal(make(9, temperature=0.7), make(9, temperature=0.7))


def test_random_seed_is_resolved_and_recorded(musicgen_engine):
    (take,) = musicgen_engine.generate([GenerationRequest(PROMPTS[0], duration=0.2)])
    assert isinstance(take.seed, int)
    (again,) = musicgen_engine.generate(
        [GenerationRequest(PROMPTS[0], duration=0.2, seed=take.seed)]
    )
    np.testing.assert_array_equal(take.audio, again.audio)


def test_batch_repeats_exactly_with_one_generator_per_take(musicgen_engine):
    reqs = [GenerationRequest(p, duration=0.3, seed=11 + i) for i, p in enumerate(PROMPTS)]
    a = musicgen_engine.generate(reqs)
    b = musicgen_engine.generate(reqs)
    assert [t.seed for t in a] == [11, 12]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.audio, y.audio)
    assert not np.array_equal(a[0].audio, a[1].audio)


def test_progress_every_step(musicgen_engine):
    seen: list[Progress] = []
    musicgen_engine.generate(
        [GenerationRequest(PROMPTS[0], duration=0.2, seed=1)], on_progress=seen.append
    )
    steps = [p for p in seen if p.stage == "generating"]
    total = musicgen_engine.steps_for(0.2)
    assert [p.step for p in steps] == list(range(1, total + 1))
    assert steps[-1].audio_seconds == pytest.approx(0.2)
    assert all(p.total == total for p in steps)
    assert {"encoding", "decoding"} <= {p.stage for p in seen}


def test_cancel_stops_within_one_step(musicgen_engine):
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.stage == "generating":
            seen.append(p.step)
            if p.step == 5:
                cancel.set()

    with pytest.raises(GenerationCancelled):
        musicgen_engine.generate(
            [GenerationRequest(PROMPTS[0], duration=1.0, seed=1)],
            on_progress=on_progress,
            cancel=cancel,
        )
    assert max(seen) == 5
    # The engine stays usable after a cancel.
    (take,) = musicgen_engine.generate([GenerationRequest(PROMPTS[0], duration=0.1, seed=1)])
    assert take.audio.shape[1] == 3200


def test_long_prompt_is_truncated_with_a_note(musicgen_engine):
    long_prompt = " ".join(["warm dusty vinyl jazz chords"] * 200)
    (take,) = musicgen_engine.generate([GenerationRequest(long_prompt, duration=0.1, seed=1)])
    assert any("cut off" in n for n in take.notes)


def test_mixed_parameters_in_one_batch_are_refused(musicgen_engine):
    with pytest.raises(BadInputError):
        musicgen_engine.generate(
            [GenerationRequest("a", duration=0.1), GenerationRequest("b", duration=0.2)]
        )


def test_beyond_model_limit_is_refused(musicgen_engine):
    with pytest.raises(BadInputError, match="limit"):
        musicgen_engine.generate([GenerationRequest("a", duration=31)])


def test_bf16_load_keeps_encodec_in_fp32(tiny_musicgen: Path):
    engine = load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(dtype="bfloat16"))
    assert engine.dtype == "bfloat16"
    assert next(engine.model.decoder.parameters()).dtype == torch.bfloat16
    assert next(engine.model.audio_encoder.parameters()).dtype == torch.float32
    (take,) = engine.generate([GenerationRequest(PROMPTS[0], duration=0.2, seed=1)])
    assert take.audio.dtype == np.float32 and take.audio.shape == (1, 6400)


@pytest.mark.parametrize(
    "options",
    [LoadOptions(dtype="float32"), LoadOptions(dtype="bfloat16"), LoadOptions(quantize="int8")],
    ids=["fp32", "bf16", "int8"],
)
def test_a_take_generates_in_a_thread_other_than_the_one_that_loaded(tiny_musicgen, options):
    """Grad mode is per thread: `asyncio.to_thread` and the app's workers may generate in a
    fresh thread (grad on), which made every take fail at the audio's `.numpy()`. The same
    take comes out as in the loading thread."""
    import asyncio

    from samplemind_gen.service import AudioEngineWithGeneration

    engine = load_engine(resolve_model(str(tiny_musicgen)), options)
    request = GenerationRequest(PROMPTS[0], duration=0.3, seed=4)
    (here,) = engine.generate([request])
    out: dict[str, object] = {}

    def elsewhere() -> None:
        assert torch.is_grad_enabled()  # a fresh thread
        try:
            out["take"] = engine.generate([request])[0]
        except Exception as exc:  # reported below, with the thread's error
            out["error"] = exc

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert "error" not in out, out.get("error")
    np.testing.assert_array_equal(out["take"].audio, here.audio)  # type: ignore[attr-defined]
    # The async API: each call in a pool thread.
    service = AudioEngineWithGeneration(options, analyze=False)

    async def twice() -> list:  # type: ignore[type-arg]
        first = await service.generate(request, model=str(tiny_musicgen))
        second = await asyncio.gather(
            *(service.generate(request, model=str(tiny_musicgen)) for _ in range(2))
        )
        return [first[0], *(takes[0] for takes in second)]

    takes = asyncio.run(twice())
    for take in takes:
        np.testing.assert_array_equal(take.audio, here.audio)


def test_the_service_makes_one_take_at_a_time(tiny_musicgen):
    """A second take asked for while one is generating waits its turn (and says so), then comes
    out as it would alone; cancelled while it waits, it stops without touching the engine."""
    from samplemind_gen.service import AudioEngineWithGeneration

    service = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
    model = str(tiny_musicgen)
    first, second = (GenerationRequest(p, duration=0.5, seed=2) for p in PROMPTS)
    (alone,) = service.generate_blocking(second, model=model)
    started, release = threading.Event(), threading.Event()

    def hold(progress: Progress) -> None:  # the first take pauses at its first step
        if progress.stage == "generating" and not started.is_set():
            started.set()
            release.wait(10)

    out: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: out.update(
            first=service.generate_blocking(first, model=model, on_progress=hold)
        )
    )
    runner.start()
    assert started.wait(10)
    cancel = threading.Event()
    seen: list[str] = []

    def waiting(progress: Progress) -> None:
        seen.append(progress.message)
        if "waiting" in progress.message:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        service.generate_blocking(second, model=model, on_progress=waiting, cancel=cancel)
    assert seen == ["waiting for the take in progress"]
    waiter = threading.Thread(
        target=lambda: out.update(second=service.generate_blocking(second, model=model))
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # its turn has not come
    release.set()
    runner.join(30)
    waiter.join(30)
    np.testing.assert_array_equal(out["second"][0].audio, alone.audio)  # type: ignore[index]
    assert out["first"][0].prompt == PROMPTS[0]  # type: ignore[index]
