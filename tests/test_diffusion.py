"""The diffusion engine (AudioLDM, AudioLDM 2, Stable Audio) on tiny random pipelines built
locally, loaded from their folders through `resolve_model` + `load_engine` with the Hub offline:
the take contract, seeds, progress, cancellation, presets, and each transformers 5 / diffusers
0.42 trap the engine works around."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from samplemind_gen.catalog import CATALOG, resolve_model
from samplemind_gen.engines import LoadOptions, load_engine
from samplemind_gen.engines.diffusion import PRESETS, load_diffusion_engine, plan_memory
from samplemind_gen.errors import (
    BadInputError,
    GatedModelError,
    GenerationCancelled,
    ModelFilesError,
    ModelNotCachedError,
)
from samplemind_gen.request import GenerationRequest, Progress

FAMILIES = ("audioldm", "audioldm2", "stable-audio")
RATES = {"audioldm": 16000, "audioldm2": 16000, "stable-audio": 44100}
CHANNELS = {"audioldm": 1, "audioldm2": 1, "stable-audio": 2}


def request(prompt: str = "door slam", **kwargs) -> GenerationRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("duration", 0.5)
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("seed", 1)
    return GenerationRequest(prompt, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core CI machine OpenMP's
    spin-waiting makes them 10-40x slower; restored after this module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from samplemind_gen.testing.tiny_diffusion import (
        build_audioldm,
        build_audioldm2,
        build_stable_audio,
    )

    root = tmp_path_factory.mktemp("tiny-diffusion")
    return {
        "audioldm": build_audioldm(root / "audioldm-tiny"),
        "audioldm2": build_audioldm2(root / "audioldm2-tiny"),
        "stable-audio": build_stable_audio(root / "stable-audio-tiny"),
    }


@pytest.fixture(scope="session")
def engines(tiny_folders: dict[str, Path]):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        loaded = {f: load_engine(resolve_model(str(p))) for f, p in tiny_folders.items()}
    yield loaded
    for engine in loaded.values():
        engine.close()


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the take contract ---------------------------------------------------------------------


def test_folder_resolves_to_its_family_and_loads_with_the_real_attributes(
    engines, tiny_folders, family
) -> None:
    engine = engines[family]
    assert engine.spec.family == family and engine.family == family
    assert engine.sample_rate == RATES[family] and engine.channels == CHANNELS[family]
    assert engine.device == "cpu" and engine.dtype == "float32"
    assert engine.model_id == str(tiny_folders[family]) and engine.revision is None
    assert not engine.offload and not engine.attention_slicing  # never on CPU


def test_a_batch_of_two_prompts_meets_the_take_contract(engines, family) -> None:
    engine = engines[family]
    takes = engine.generate(
        [
            request("door slam", seed=1, duration=1.0),
            request("rain on a tin roof", seed=2, duration=1.0),
        ]
    )
    assert [t.request.prompt for t in takes] == ["door slam", "rain on a tin roof"]
    assert [t.seed for t in takes] == [1, 2]
    assert takes[0].request == request("door slam", seed=1, duration=1.0)
    for take in takes:
        assert take.audio.dtype == np.float32 and take.audio.flags.c_contiguous
        assert take.audio.shape == (CHANNELS[family], RATES[family])
        assert take.sample_rate == RATES[family] and take.duration == pytest.approx(1.0)
        assert np.isfinite(take.audio).all() and 0.01 < np.abs(take.audio).max() <= 1.5
        assert take.timings["generate"] > 0 and "denoise" in take.timings
    assert not np.array_equal(takes[0].audio, takes[1].audio)


def test_length_is_exactly_the_requested_duration(engines, family) -> None:
    duration = 0.73
    (take,) = engines[family].generate([request(duration=duration)])
    assert take.audio.shape[1] == round(duration * RATES[family])


def test_same_seed_same_take_other_seed_other_take(engines, family) -> None:
    engine = engines[family]
    a = engine.generate([request(seed=7)])[0].audio
    b = engine.generate([request(seed=7)])[0].audio
    c = engine.generate([request(seed=8)])[0].audio
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.01 * np.abs(a).max()


def test_a_take_is_reproducible_on_its_own_whatever_it_was_batched_with(engines, family) -> None:
    engine = engines[family]
    alone = engine.generate([request("dog barking", seed=11)])[0].audio
    batched = engine.generate([request("thunder", seed=3), request("dog barking", seed=11)])
    # Same noise from the take's own generator; only float rounding of batched kernels differs.
    np.testing.assert_allclose(batched[1].audio, alone, atol=1e-4 * max(1.0, np.abs(alone).max()))


def test_a_random_seed_is_recorded_and_reproduces_the_take(engines) -> None:
    engine = engines["audioldm"]
    (first,) = engine.generate([request(seed=None)])
    (again,) = engine.generate([request(seed=first.seed)])
    assert first.request.seed == first.seed and np.array_equal(first.audio, again.audio)


# -- progress, cancellation, steps ---------------------------------------------------------


def test_progress_reports_every_denoising_step(engines, family) -> None:
    events: list[Progress] = []
    engines[family].generate([request(duration=1.0, steps=3)], on_progress=events.append)
    steps = [e for e in events if e.stage == "generating"]
    assert [e.step for e in steps] == [1, 2, 3] and {e.total for e in steps} == {3}
    assert [e.audio_seconds for e in steps] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert {e.total_audio_seconds for e in steps} == {1.0}
    assert all(a.elapsed <= b.elapsed for a, b in zip(steps, steps[1:], strict=False))
    stages = [e.stage for e in events]
    assert stages[0] == "encoding" and stages[-1] == "decoding"


def test_cancel_stops_within_one_step_and_the_engine_stays_usable(engines, family) -> None:
    engine = engines[family]
    cancel = threading.Event()
    events: list[Progress] = []

    def on_progress(p: Progress) -> None:
        events.append(p)
        if p.stage == "generating" and p.step == 1:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate([request(steps=5)], on_progress=on_progress, cancel=cancel)
    assert [e.step for e in events if e.stage == "generating"] == [1]
    assert engine.pipe.scheduler is engine.scheduler_for("quality")  # restored
    (take,) = engine.generate([request(steps=2)])
    assert take.audio.shape[1] == RATES[family] // 2


def test_cancel_set_before_the_start_runs_no_step(engines) -> None:
    cancel = threading.Event()
    cancel.set()
    events: list[Progress] = []
    with pytest.raises(GenerationCancelled):
        engines["audioldm"].generate([request()], on_progress=events.append, cancel=cancel)
    assert events == []


def test_steps_are_respected_and_presets_fill_them_in(engines, family) -> None:
    engine = engines[family]
    events: list[Progress] = []
    engine.generate([request(steps=4)], on_progress=events.append)
    assert len([e for e in events if e.stage == "generating"]) == 4
    preset = PRESETS[family]
    assert engine.steps_for(request(steps=None)) == preset.fast_steps
    assert engine.steps_for(request(steps=None, scheduler="quality")) == preset.quality_steps
    assert engine.steps_for(request(steps=9, scheduler="quality")) == 9


def test_fast_and_quality_schedulers(engines, family) -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from samplemind_gen.engines.diffusion_schedulers import CosineEDMDPMSolverScheduler

    engine = engines[family]
    fast, own = engine.scheduler_for("fast"), engine.scheduler_for("quality")
    if family == "stable-audio":
        assert isinstance(fast, CosineEDMDPMSolverScheduler)
        assert fast.config.algorithm_type == "dpmsolver++"  # deterministic ODE
        # Same sigmas and cosine timesteps as the checkpoint's own sampler.
        own.set_timesteps(6)
        fast.set_timesteps(6)
        np.testing.assert_allclose(fast.timesteps.numpy(), own.timesteps.numpy(), rtol=1e-6)
    else:
        assert isinstance(fast, DPMSolverMultistepScheduler) and isinstance(own, DDIMScheduler)
    quality = engine.generate([request(scheduler="quality", seed=4)])[0].audio
    quick = engine.generate([request(scheduler="fast", seed=4)])[0].audio
    assert quality.shape == quick.shape and not np.array_equal(quality, quick)
    assert engine.pipe.scheduler is own


def test_negative_prompt_is_accepted_and_steers_the_take(engines, family) -> None:
    engine = engines[family]
    plain = engine.generate([request(guidance_scale=4.0, seed=5)])[0].audio
    steered = engine.generate(
        [request(guidance_scale=4.0, seed=5, negative_prompt="low quality, distorted")] * 2
    )
    assert steered[0].audio.shape == plain.shape
    assert not np.array_equal(steered[0].audio, plain)


def test_guidance_off_runs_without_the_unconditional_pass(engines, family) -> None:
    (take,) = engines[family].generate([request(guidance_scale=1.0)])
    assert take.audio.shape == (CHANNELS[family], RATES[family] // 2)


# -- bad input -------------------------------------------------------------------------------


def test_batch_requests_must_share_their_parameters(engines) -> None:
    with pytest.raises(BadInputError, match="share"):
        engines["audioldm"].generate([request(duration=1.0), request(duration=2.0)])


def test_bad_requests_are_refused_before_any_work(engines) -> None:
    engine = engines["audioldm2"]
    with pytest.raises(BadInputError, match="prompt is empty"):
        engine.generate([request("  ")])
    with pytest.raises(BadInputError, match="steps"):
        engine.generate([request(steps=0)])


def test_stable_audio_refuses_more_than_its_window(engines) -> None:
    engine = engines["stable-audio"]
    assert engine.max_duration == pytest.approx(65 * 2048 / 44100)
    with pytest.raises(BadInputError, match="limit"):
        engine.generate([request(duration=engine.max_duration + 0.5)])


def test_candidates_need_a_model_that_can_rank_them(engines) -> None:
    for family in ("audioldm", "stable-audio"):
        with pytest.raises(BadInputError, match="rank"):
            engines[family].generate([request(waveforms_per_prompt=2)])


def test_a_folder_of_another_pipeline_is_a_model_files_error(tiny_folders) -> None:
    spec = CATALOG["audioldm-s-full-v2"]
    with pytest.raises(ModelFilesError, match="StableAudioPipeline"):
        load_diffusion_engine(spec, tiny_folders["stable-audio"], None, LoadOptions())


def test_missing_weights_are_a_model_files_error(tiny_folders, tmp_path) -> None:
    broken = shutil.copytree(tiny_folders["audioldm"], tmp_path / "broken")
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match="re-download"):
        load_engine(resolve_model(str(broken)))


def test_damaged_weights_are_a_model_files_error(tiny_folders, tmp_path) -> None:
    broken = shutil.copytree(tiny_folders["stable-audio"], tmp_path / "damaged")
    weights = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFilesError, match="re-download"):
        load_engine(resolve_model(str(broken)))


def test_pickle_only_weights_are_refused(tiny_folders, tmp_path) -> None:
    # use_safetensors=True: a component with only a .bin (pickle) file is never loaded.
    broken = shutil.copytree(tiny_folders["audioldm"], tmp_path / "pickled")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelFilesError):
        load_engine(resolve_model(str(broken)))


# -- memory -----------------------------------------------------------------------------------


def test_offload_and_slicing_follow_free_memory_unless_forced() -> None:
    gb = 1024**3
    assert plan_memory(2 * gb, 16 * gb, "audioldm2") == (False, False)
    assert plan_memory(2 * gb, 3 * gb, "audioldm2") == (True, True)
    assert plan_memory(2 * gb, 3 * gb, "audioldm2", forced=False) == (False, False)
    assert plan_memory(2 * gb, 64 * gb, "stable-audio", forced=True) == (True, True)


def test_bf16_on_cpu_when_asked(tiny_folders) -> None:
    engine = load_engine(
        resolve_model(str(tiny_folders["audioldm"])), LoadOptions(dtype="bfloat16")
    )
    try:
        assert engine.dtype == "bfloat16"
        (take,) = engine.generate([request()])
        assert take.audio.dtype == np.float32 and take.audio.shape == (1, 8000)
    finally:
        engine.close()


# -- AudioLDM 2: GPT-2 language model and ranking ---------------------------------------------


def test_audioldm2_folder_declares_gpt2model_like_the_hub(engines, tiny_folders) -> None:
    from transformers import GPT2Model

    index = json.loads((tiny_folders["audioldm2"] / "model_index.json").read_text())
    assert index["language_model"] == ["transformers", "GPT2Model"]
    lm = engines["audioldm2"].pipe.language_model
    assert type(lm) is GPT2Model
    # The trap: no generation mixin, so the stock pipeline's GPT-2 loop cannot run on it.
    assert not hasattr(lm, "_update_model_kwargs_for_generation")


def test_our_gpt2_loop_matches_the_stock_one_on_gpt2lmheadmodel(engines, tiny_folders) -> None:
    import torch
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    pipe = engines["audioldm2"].pipe
    head = GPT2LMHeadModel.from_pretrained(tiny_folders["audioldm2"] / "language_model").eval()
    torch.manual_seed(0)
    embeds = torch.randn(2, 7, pipe.language_model.config.n_embd)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    stock_self = types.SimpleNamespace(language_model=head, device=torch.device("cpu"))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = AudioLDM2Pipeline.generate_language_model(
            stock_self, embeds, attention_mask=mask, max_new_tokens=8
        )
        ours = pipe.generate_language_model(embeds, attention_mask=mask, max_new_tokens=8)
        ours_on_head = type(pipe).generate_language_model(
            types.SimpleNamespace(language_model=head), embeds, attention_mask=mask
        )
    assert ours.shape == (2, 8, pipe.language_model.config.n_embd)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_on_head, stock, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_declaring_gpt2lmheadmodel_loads_too(tmp_path) -> None:
    from samplemind_gen.testing.tiny_diffusion import build_audioldm2

    folder = build_audioldm2(tmp_path / "lmhead", language_model_class="GPT2LMHeadModel")
    engine = load_engine(resolve_model(str(folder)))
    try:
        assert type(engine.pipe.language_model).__name__ == "GPT2LMHeadModel"
        (take,) = engine.generate([request()])
        assert take.audio.shape == (1, 8000)
    finally:
        engine.close()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_audioldm2_never_takes_the_deprecated_past_key_values_path(engines) -> None:
    collect = _Collect()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engines["audioldm2"].generate([request(), request("glass breaking", seed=2)])
    finally:
        transformers_logger.removeHandler(collect)
    texts = [str(w.message) for w in caught] + collect.messages
    assert not [t for t in texts if "past_key_values" in t], texts


def test_ranking_keeps_each_prompts_own_candidates() -> None:
    import torch

    from samplemind_gen.engines.diffusion_audioldm2 import rank_within_prompts

    # Prompt 0's best candidate overall is prompt 1's second one (column 3): the stock ranking
    # would hand it prompt 1's audio.
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.3, 0.0, 0.4, 0.8]])
    assert rank_within_prompts(logits, 2).tolist() == [1, 0, 3, 2]


def test_score_waveforms_returns_each_prompts_candidates_best_first(engines) -> None:
    import torch

    pipe = engines["audioldm2"].pipe
    torch.manual_seed(0)
    audio = torch.randn(4, 16000) * 0.1
    ranked = pipe.score_waveforms(
        text=["door slam", "birds in a forest"],
        audio=audio,
        num_waveforms_per_prompt=2,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    rows = [next(i for i in range(4) if torch.equal(r, audio[i])) for r in ranked]
    assert sorted(rows[:2]) == [0, 1] and sorted(rows[2:]) == [2, 3]


def test_waveforms_per_prompt_returns_one_best_take_per_request(engines) -> None:
    engine = engines["audioldm2"]
    batch = [
        request("door slam", seed=1, waveforms_per_prompt=2),
        request("rain", seed=2, waveforms_per_prompt=2),
    ]
    takes = engine.generate(batch)
    again = engine.generate(batch)
    assert [t.audio.shape for t in takes] == [(1, 8000), (1, 8000)]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(takes, again, strict=True))


def test_long_prompts_come_back_with_a_truncation_note(engines) -> None:
    long_prompt = " ".join(["thunder rolling over distant hills"] * 40)
    (take,) = engines["audioldm"].generate([request(long_prompt)])
    assert any("cut off" in note for note in take.notes)
    (short,) = engines["audioldm"].generate([request("thunder")])
    assert short.notes == []


# -- Stable Audio: its own scheduler needs torchsde --------------------------------------------


def test_stable_audio_uses_its_own_scheduler_when_torchsde_is_there(engines) -> None:
    pytest.importorskip("torchsde")
    engine = engines["stable-audio"]
    assert type(engine.scheduler_for("quality")).__name__ == "CosineDPMSolverMultistepScheduler"
    assert engine.notes == []
    a = engine.generate([request(scheduler="quality", steps=3, seed=9)])[0].audio
    b = engine.generate([request(scheduler="quality", steps=3, seed=9)])[0].audio
    assert np.array_equal(a, b)  # the Brownian tree is seeded from the take's generator


def test_stable_audio_without_torchsde_falls_back_and_says_so(
    tiny_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers.utils.import_utils as import_utils

    from samplemind_gen.engines.diffusion_schedulers import (
        CosineEDMDPMSolverScheduler,
        torchsde_available,
    )

    # What a machine without torchsde looks like to diffusers and to an import.
    monkeypatch.setitem(sys.modules, "torchsde", None)
    monkeypatch.setattr(import_utils, "_torchsde_available", False)
    assert not torchsde_available()

    events: list[Progress] = []
    engine = load_engine(
        resolve_model(str(tiny_folders["stable-audio"])), on_progress=events.append
    )
    try:
        own = engine.scheduler_for("quality")
        assert isinstance(own, CosineEDMDPMSolverScheduler)
        assert own.config.algorithm_type == "sde-dpmsolver++"
        assert any("torchsde" in e.message for e in events if e.stage == "loading")
        a = engine.generate([request(scheduler="quality", steps=3, seed=9)])
        b = engine.generate([request(scheduler="quality", steps=3, seed=9)])
        assert a[0].audio.shape == (2, 22050) and np.array_equal(a[0].audio, b[0].audio)
        assert any("torchsde" in note for note in a[0].notes)
        (fast,) = engine.generate([request(scheduler="fast")])
        assert fast.audio.shape == (2, 22050)
    finally:
        engine.close()


# -- gated models ------------------------------------------------------------------------------


def test_gated_catalog_model_not_cached_offline_gets_a_typed_error() -> None:
    with pytest.raises(ModelNotCachedError, match="stable-audio-open-1.0"):
        load_engine(resolve_model("stable-audio-open-1.0"))


def test_gated_stable_audio_download_needs_a_token_then_generates(
    tiny_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_hub import files_from_folder, use_fake_hub

    token = "hf_tinyStableAudioToken0123456789"
    repo = "tiny/stable-audio-open-gated"
    with use_fake_hub(monkeypatch, tiny_folders["stable-audio"], repo_id="tiny/plain") as hub:
        hub.add_repo(
            repo, files_from_folder(tiny_folders["stable-audio"]), gated=True, tokens=(token,)
        )
        model = resolve_model(repo)
        assert model.spec.family == "stable-audio"
        with pytest.raises(GatedModelError) as info:
            load_engine(model)
        assert "accept its licence" in str(info.value) and "HF_TOKEN" in str(info.value)

        monkeypatch.setenv("HF_TOKEN", token)
        engine = load_engine(model)
    try:
        assert engine.revision is not None and len(engine.revision) == 40
        (take,) = engine.generate([request()])
        assert take.audio.shape == (2, 22050)
    finally:
        engine.close()


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_generates_a_sound_effect_from_a_tiny_folder(tiny_folders, tmp_path, capsys) -> None:
    from samplemind_gen.cli.main import main

    out = tmp_path / "sfx"
    code = main(
        [
            "generate", "door slam", "--model", str(tiny_folders["audioldm"]), "--steps", "2",
            "--duration", "1", "--seed", "3", "--negative-prompt", "hiss", "--json",
            "--output", str(out),
        ]
    )  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["sample_rate"] == 16000 and data["channels"] == 1 and data["seed"] == 3
    assert data["duration"] == pytest.approx(1.0)
    assert data["params"]["steps"] == 2 and data["params"]["negative_prompt"] == "hiss"
    assert Path(data["path"]).is_file() and Path(data["path"]).parent == out


def test_cli_quality_scheduler_stereo_stable_audio(tiny_folders, tmp_path, capsys) -> None:
    import soundfile as sf

    from samplemind_gen.cli.main import main

    target = tmp_path / "riser.wav"
    code = main(
        [
            "generate", "cinematic riser", "--model", str(tiny_folders["stable-audio"]),
            "--steps", "2", "--duration", "1.5", "--scheduler", "quality", "--seed", "1",
            "--json", "--output", str(target),
        ]
    )  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["params"]["scheduler"] == "quality"
    audio, rate = sf.read(data["path"])
    assert rate == 44100 and audio.shape == (round(1.5 * 44100), 2)


def test_cli_refuses_a_duration_beyond_the_stable_audio_window(tiny_folders, capsys) -> None:
    from samplemind_gen.cli.main import main

    code = main(
        ["generate", "drone", "--model", str(tiny_folders["stable-audio"]), "--duration", "10"]
    )
    _, stderr = capsys.readouterr()
    assert code == 2 and "limit" in stderr


def test_the_service_hands_the_heap_back_after_any_engines_take(tiny_folders, monkeypatch):
    """A MusicGen load fixes glibc's heap thresholds for the whole process; MusicGen trims after
    its takes itself, the diffusion engines do not, so the service trims after every take."""
    from samplemind_gen.engines import musicgen_quant
    from samplemind_gen.request import GenerationRequest
    from samplemind_gen.service import AudioEngineWithGeneration

    calls: list[int] = []
    real = musicgen_quant.trim_heap
    monkeypatch.setattr(musicgen_quant, "trim_heap", lambda: (calls.append(1), real())[1])
    service = AudioEngineWithGeneration(analyze=False)
    request = GenerationRequest("rain on a tin roof", duration=1.0, seed=3, steps=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        (take,) = service.generate_blocking(request, model=str(tiny_folders["audioldm"]))
    assert take.audio.shape[-1] > 0 and calls == [1]
