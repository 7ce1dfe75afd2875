"""Long-form MusicGen: windows, continuation of a file, prompt blending (tiny checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from samplemind_gen.cli.main import main
from samplemind_gen.engines.musicgen_windows import (
    LongForm,
    _encode_source,
    generate_windowed,
    plan_windows,
)
from samplemind_gen.errors import BadInputError
from samplemind_gen.request import GenerationRequest

PROMPTS = ["lofi hip hop drums", "dark ambient pad with rain and a warm deep bass"]


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_one_window_is_exactly_the_engine_take(musicgen_engine, guidance):
    reqs = [GenerationRequest(p, duration=0.4, guidance_scale=guidance, seed=1) for p in PROMPTS]
    for greedy in (True, False) if guidance > 1 else (True,):
        ours = generate_windowed(musicgen_engine, reqs, LongForm(), greedy=greedy)
        ref = musicgen_engine.generate(reqs, greedy=greedy)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a.audio, b.audio)


def test_plan_windows():
    assert plan_windows(250, 100, 40) == [(0, 100), (40, 60), (40, 60), (40, 30)]
    assert plan_windows(50, 100, 40) == [(0, 50)]
    assert plan_windows(100, 100, 40, prompt=25) == [(25, 75), (40, 25)]
    with pytest.raises(BadInputError):
        plan_windows(100, 100, 40, prompt=100)


def test_long_take_has_the_exact_length_and_no_seam(musicgen_engine):
    req = GenerationRequest(PROMPTS[0], duration=2.5, seed=3)
    long = LongForm(window=1.0, overlap=0.4)
    (take,) = generate_windowed(musicgen_engine, [req], long)
    assert take.audio.shape == (1, 80000)
    (again,) = generate_windowed(musicgen_engine, [req], long)
    np.testing.assert_array_equal(take.audio, again.audio)
    x = take.audio[0]
    steps = np.abs(np.diff(x))
    threshold = np.percentile(steps, 99.9)
    hop = 640
    made = 0
    for _context, new in plan_windows(125, 50, 20):
        made += new
        boundary = made * hop
        if boundary < len(x):
            assert abs(x[boundary] - x[boundary - 1]) <= threshold
            # Locally no louder or jumpier than elsewhere either.
            assert steps[boundary - 64 : boundary + 64].max() <= steps.max()


def test_continuation_matches_transformers_with_an_audio_prompt(musicgen_engine, tmp_path):
    src = (0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 32000)).astype(np.float32)
    path = tmp_path / "src.wav"
    sf.write(path, src, 32000, subtype="FLOAT")
    req = GenerationRequest(PROMPTS[0], duration=0.4, seed=1)
    long = LongForm(continue_from=str(path), continue_seconds=0.5)
    (take,) = generate_windowed(musicgen_engine, [req], long, greedy=True)
    assert take.audio.shape == (1, 32000 + 12800)
    # The file itself comes first, untouched up to the short join crossfade.
    np.testing.assert_array_equal(take.audio[0, :31000], src[:31000])
    _, codes = _encode_source(musicgen_engine, path, 0.5)
    inputs = musicgen_engine.processor(text=[PROMPTS[0]], padding=True, return_tensors="pt")
    ref = musicgen_engine.model.generate(
        **inputs,
        decoder_input_ids=codes.reshape(codes.shape[1], -1),
        do_sample=False,
        guidance_scale=3.0,
        max_new_tokens=musicgen_engine.steps_for(0.4),
    ).numpy()
    # EnCodec runs in windows (encodec_windows): equal to the one-shot decode up to float
    # summation order; a different code anywhere would differ by orders of magnitude more.
    np.testing.assert_allclose(take.audio[:, 32000:], ref[0][:, 16000 : 16000 + 12800], atol=1e-6)
    # The EnCodec encoder half the engine dropped is dropped again afterwards.
    assert musicgen_engine.model.audio_encoder.encoder is None


def test_blend_weight_moves_between_the_two_prompts(musicgen_engine):
    a, b = "lofi hip hop drums", "dark techno kick"

    def only(prompt: str) -> np.ndarray:
        req = GenerationRequest(prompt, duration=0.3, seed=2)
        return musicgen_engine.generate([req], greedy=True)[0].audio

    def blend(weight: float) -> np.ndarray:
        req = GenerationRequest(a, duration=0.3, seed=2)
        long = LongForm(blend_prompt=b, blend_weight=weight)
        return generate_windowed(musicgen_engine, [req], long, greedy=True)[0].audio

    np.testing.assert_allclose(blend(0.0), only(a), atol=1e-5)
    np.testing.assert_allclose(blend(1.0), only(b), atol=1e-5)
    mid = blend(0.5)
    assert not np.allclose(mid, only(a)) or not np.allclose(mid, only(b))


def test_cli_long_form_continue_and_errors(capsys, tiny_musicgen, tmp_path):
    base = [
        "generate",
        "warm pad",
        "--model",
        str(tiny_musicgen),
        "--seed",
        "8",
        "--dtype",
        "float32",
        "--output",
        str(tmp_path),
        "--json",
    ]
    assert main([*base, "--duration", "1.5", "--window", "1.0", "--overlap", "0.3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["duration"] == pytest.approx(1.5)
    assert data["params"]["long_form"]["window"] == 1.0
    assert sf.info(data["path"]).frames == 48000
    # Continue the take just made by half a second.
    assert (
        main([*base, "--duration", "0.5", "--continue", data["path"], "--continue-seconds", "0.5"])
        == 0
    )
    cont = json.loads(capsys.readouterr().out)
    assert sf.info(cont["path"]).frames == 48000 + 16000
    assert cont["params"]["long_form"]["continue_sha256"]
    assert any("continued" in n for n in cont["notes"])
    # The same long-form request again comes from the library.
    assert main([*base, "--duration", "1.5", "--window", "1.0", "--overlap", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == data["id"]
    assert main([*base, "--duration", "2", "--window", "1", "--overlap", "1"]) == 2
    assert "--overlap" in capsys.readouterr().err
    assert main([*base, "--continue", str(tmp_path / "missing.wav")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--duration", "700"]) == 2


@pytest.mark.parametrize("mode", ["bfloat16", "int8", "int4"])
def test_long_takes_run_in_the_packed_modes(tiny_musicgen, mode):
    """The packed CPU modes fuse each self-attention's q/k/v into one projection; the windows
    run transformers' own attention, which calls q, k and v one by one: they are slices of the
    fused projection (`QkvPart`), which runs once. The first window is the engine's own take,
    greedy, as in fp32."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    options = LoadOptions(dtype="bfloat16") if mode == "bfloat16" else LoadOptions(quantize=mode)
    engine = load_engine(resolve_model(str(tiny_musicgen)), options)
    attention = engine.model.decoder.model.decoder.layers[0].self_attn
    assert hasattr(attention, "qkv_proj") and hasattr(attention, "q_proj")
    req = [GenerationRequest(PROMPTS[0], duration=2.5, seed=3)]
    (take,) = generate_windowed(engine, req, LongForm(window=1.0, overlap=0.4))
    assert take.audio.shape == (1, 80000) and np.isfinite(take.audio).all()
    short = [GenerationRequest(PROMPTS[0], duration=0.4, seed=1)]
    (window,) = generate_windowed(engine, short, LongForm(), greedy=True)
    (ref,) = engine.generate(short, greedy=True)
    assert np.abs(window.audio - ref.audio).max() <= 0.05 * np.abs(ref.audio).max() + 1e-6


def test_long_takes_wait_their_turn_like_any_take(tiny_musicgen):
    """Long-form takes share the service's one-take-at-a-time lock: asked for while another take
    holds it, one says so and can be cancelled before it touches the engine."""
    import threading

    from samplemind_gen.engines import LoadOptions
    from samplemind_gen.errors import GenerationCancelled
    from samplemind_gen.longform import generate_long_blocking
    from samplemind_gen.service import AudioEngineWithGeneration

    service = AudioEngineWithGeneration(LoadOptions(dtype="float32"), analyze=False)
    request = GenerationRequest(PROMPTS[0], duration=0.6, seed=1)
    cancel, seen = threading.Event(), []

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        seen.append(p.message)
        if "waiting" in p.message:
            cancel.set()

    service.load(str(tiny_musicgen))
    with service.turn(), pytest.raises(GenerationCancelled):
        generate_long_blocking(
            service,
            [request],
            LongForm(),
            model=str(tiny_musicgen),
            on_progress=progress,
            cancel=cancel,
        )
    assert "waiting for the take in progress" in seen
    (take,) = generate_long_blocking(service, [request], LongForm(), model=str(tiny_musicgen))
    assert take.audio.shape[-1] == round(0.6 * take.sample_rate)
