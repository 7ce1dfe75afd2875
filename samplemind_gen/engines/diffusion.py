"""The diffusion engine: AudioLDM, AudioLDM 2 and Stable Audio Open through diffusers.

One `DiffusionEngine` runs all three families (`spec.family`), loaded from a local folder that
holds a diffusers pipeline (`model_index.json`), with safetensors weights only and never remote
code. Takes meet the same contract as MusicGen's: float32 (channels, samples) at the pipeline's
real sample rate and exactly the requested duration.

Per request batch: one CPU `torch.Generator` per take, seeded with the take's seed (a list, as
diffusers supports), so a take is reproducible on its own whatever it was batched with and on
whichever device it ran. Progress comes from the pipelines' legacy per-step `callback` (they offer
no `callback_on_step_end`), and cancellation raises `GenerationCancelled` from that callback,
which stops the run within one denoising step and leaves the pipeline usable.

`waveforms_per_prompt > 1` (AudioLDM 2 only, the one family with a CLAP audio tower to rank
with) generates that many candidates per take and returns the best-ranked one as the take.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplemind_gen.catalog import ModelSpec
from samplemind_gen.devices import pick_device, pick_dtype, torch_dtype
from samplemind_gen.engines.base import LoadOptions, ProgressCallback, check_cancel, fit_length
from samplemind_gen.errors import BadInputError, GenerationCancelled, ModelFilesError
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress, validate_request

log = logging.getLogger(__name__)

GB = 1024**3


@dataclass(frozen=True)
class DiffusionPreset:
    """Step counts and the guidance the model's authors recommend, per family."""

    fast_steps: int
    quality_steps: int
    guidance_scale: float


PRESETS: dict[str, DiffusionPreset] = {
    # "fast" = DPM-Solver++ 2M; "quality" = the checkpoint's own DDIM at the model card's steps.
    "audioldm": DiffusionPreset(fast_steps=25, quality_steps=200, guidance_scale=2.5),
    "audioldm2": DiffusionPreset(fast_steps=25, quality_steps=200, guidance_scale=3.5),
    # "fast" = DPM-Solver++ 2M (ODE); "quality" = the checkpoint's SDE sampler at 100 steps.
    "stable-audio": DiffusionPreset(fast_steps=30, quality_steps=100, guidance_scale=7.0),
}

_PIPELINE_CLASSES = {
    "audioldm": "AudioLDMPipeline",
    "audioldm2": "AudioLDM2Pipeline",
    "stable-audio": "StableAudioPipeline",
}

# Activations and workspace on top of the weights when the whole pipeline sits on the GPU.
_ACTIVATION_BYTES = {"audioldm": 1 * GB, "audioldm2": 1.5 * GB, "stable-audio": 2.5 * GB}


def plan_memory(
    weight_bytes: int, free_bytes: int, family: str, forced: bool | None = None
) -> tuple[bool, bool]:
    """(model CPU offload, attention slicing) for a pipeline of `weight_bytes` on a GPU with
    `free_bytes` free. `forced` True/False overrides the choice; offload implies slicing."""
    if forced is not None:
        return forced, forced
    needed = weight_bytes * 1.1 + _ACTIVATION_BYTES.get(family, 2 * GB)
    if free_bytes >= needed:
        return False, False
    # Offload keeps only the running component on the GPU: the largest one plus activations.
    return True, True


def load_diffusion_engine(
    spec: ModelSpec,
    path: Path,
    revision: str | None,
    options: LoadOptions,
    *,
    on_progress: ProgressCallback | None = None,
) -> DiffusionEngine:
    """Load the diffusers pipeline in `path` for `spec` (family audioldm/audioldm2/stable-audio)."""
    return DiffusionEngine.load(spec, path, revision, options, on_progress=on_progress)


class DiffusionEngine:
    """A loaded AudioLDM / AudioLDM 2 / Stable Audio pipeline. Not thread-safe: one `generate`
    at a time (the TUI runs them in an exclusive worker group)."""

    def __init__(
        self,
        spec: ModelSpec,
        pipe: Any,
        *,
        path: Path,
        revision: str | None,
        device: str,
        dtype: str,
        offload: bool = False,
        attention_slicing: bool = False,
        notes: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        self.pipe = pipe
        self.path = path
        self.model_id = spec.repo_id
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.attention_slicing = attention_slicing
        self.notes = list(notes)
        self.family = spec.family
        self.preset = PRESETS[spec.family]
        self._own_scheduler = pipe.scheduler
        self._fast_scheduler: Any = None
        if self.family == "stable-audio":
            self.sample_rate = int(pipe.vae.config.sampling_rate)
            self.channels = int(pipe.vae.config.audio_channels)
            self.max_duration = float(
                pipe.transformer.config.sample_size * pipe.vae.hop_length / self.sample_rate
            )
        else:
            vocoder = pipe.vocoder.config
            self.sample_rate = int(vocoder.sampling_rate)
            self.channels = 1
            self.hop_seconds = float(math.prod(vocoder.upsample_rates)) / self.sample_rate
            self.max_duration = float(spec.max_duration)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        path: Path,
        revision: str | None,
        options: LoadOptions,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> DiffusionEngine:
        if spec.family not in _PIPELINE_CLASSES:
            raise BadInputError(f"{spec.name} is a {spec.family} model, not a diffusion pipeline")
        started = time.perf_counter()

        def report(message: str) -> None:
            if on_progress is not None:
                on_progress(
                    Progress(
                        stage="loading", message=message, elapsed=time.perf_counter() - started
                    )
                )

        path = Path(path)
        index = _read_model_index(path)
        expected = _PIPELINE_CLASSES[spec.family]
        if index.get("_class_name") != expected:
            raise ModelFilesError(
                f"{path} holds a {index.get('_class_name')} pipeline, but {spec.name} needs a "
                f"{expected}; re-download the model or point --model at the right folder"
            )
        device = pick_device(options.device)
        dtype = pick_dtype(device, options.dtype)
        report(f"loading {spec.name} ({dtype} on {device})")

        import torch
        from safetensors import SafetensorError

        kwargs: dict[str, Any] = {}
        notes: list[str] = []
        pipeline_class: Any
        if spec.family == "audioldm":
            from diffusers import AudioLDMPipeline as pipeline_class
        elif spec.family == "audioldm2":
            from samplemind_gen.engines.diffusion_audioldm2 import (
                FixedAudioLDM2Pipeline as pipeline_class,
            )
        else:
            from diffusers import StableAudioPipeline as pipeline_class

            scheduler, note = _stable_audio_scheduler(path, index)
            if scheduler is not None:
                kwargs["scheduler"] = scheduler
            if note:
                notes.append(note)
                log.warning(note)
                report(note)
        if spec.family == "audioldm":
            _quiet_audioldm_deprecation()
        try:
            with _quiet_loading_bars():
                pipe = pipeline_class.from_pretrained(
                    str(path),
                    **{_dtype_argument(): torch_dtype(dtype)},
                    use_safetensors=True,
                    local_files_only=True,
                    **kwargs,
                )
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise ModelFilesError(
                f"{path} could not be loaded as a {expected} ({_first_line(exc)}); the folder "
                "needs every component's config and safetensors weights - re-download the model"
            ) from exc
        pipe.set_progress_bar_config(disable=True)

        offload = slicing = False
        if device.startswith("cuda"):
            weights = _weight_bytes(pipe)
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            offload, slicing = plan_memory(weights, free, spec.family, options.offload)
            if offload:
                report(
                    f"{free / GB:.1f} GB free on the GPU for {weights / GB:.1f} GB of weights: "
                    "model CPU offload and attention slicing on"
                )
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
            if slicing:
                _enable_attention_slicing(pipe)
        elif device != "cpu":
            pipe.to(device)
        report(f"{spec.name} ready")
        return cls(
            spec,
            pipe,
            path=path,
            revision=revision,
            device=device,
            dtype=dtype,
            offload=offload,
            attention_slicing=slicing,
            notes=notes,
        )

    # -- generation ------------------------------------------------------------------------

    def scheduler_for(self, preset: str) -> Any:
        """The scheduler a preset uses: "quality" keeps the checkpoint's own; "fast" is
        DPM-Solver++ (for Stable Audio, with its cosine timesteps, deterministic)."""
        if preset == "quality":
            return self._own_scheduler
        if self._fast_scheduler is None:
            if self.family == "stable-audio":
                from samplemind_gen.engines.diffusion_schedulers import stable_audio_sampler

                self._fast_scheduler = stable_audio_sampler(
                    self._own_scheduler.config, stochastic=False
                )
            else:
                from samplemind_gen.engines.diffusion_schedulers import fast_ldm_scheduler

                self._fast_scheduler = fast_ldm_scheduler(self._own_scheduler.config)
        return self._fast_scheduler

    def steps_for(self, request: GenerationRequest) -> int:
        if request.steps is not None:
            return int(request.steps)
        return (
            self.preset.quality_steps if request.scheduler == "quality" else self.preset.fast_steps
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GeneratedAudio]:
        """One take per request, generated as one batch. Requests must share every parameter
        but the prompt and seed. With `waveforms_per_prompt` n > 1, each take is the best of n
        candidates by CLAP score (AudioLDM 2 only)."""
        requests = [r.resolved() for r in requests]
        if not requests:
            return []
        first = requests[0]
        self._check(requests)
        check_cancel(cancel)

        import torch

        started = time.perf_counter()
        steps = self.steps_for(first)
        duration = float(first.duration)
        per_take = first.waveforms_per_prompt
        prompts = [r.prompt for r in requests]
        seeds = [int(r.seed) for r in requests]  # type: ignore[arg-type]
        # One generator per take, repeated for its candidates: they draw in turn from it.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        generator_list = [g for g in generators for _ in range(per_take)]
        negative = [first.negative_prompt] * len(prompts) if first.negative_prompt else None
        marks: dict[str, float] = {}

        def on_step(step: int, timestep: Any, latents: Any) -> None:
            done = min(step + 1, steps)
            now = time.perf_counter()
            marks.setdefault("first_step", now)
            marks["last_step"] = now
            if on_progress is not None:
                on_progress(
                    Progress(
                        stage="generating",
                        step=done,
                        total=steps,
                        audio_seconds=duration * done / steps,
                        total_audio_seconds=duration,
                        elapsed=now - started,
                    )
                )
                if done == steps:
                    on_progress(
                        Progress(stage="decoding", message="decoding audio", elapsed=now - started)
                    )
            check_cancel(cancel)

        call: dict[str, Any] = dict(
            prompt=prompts,
            negative_prompt=negative,
            num_inference_steps=steps,
            guidance_scale=float(first.guidance_scale),
            num_waveforms_per_prompt=per_take,
            generator=generator_list,
            callback=on_step,
            callback_steps=1,
            output_type="np",
        )
        if self.family == "stable-audio":
            # Half a sample more so the pipeline's int() crop never drops the last sample.
            call["audio_start_in_s"] = 0.0
            call["audio_end_in_s"] = min(duration + 0.5 / self.sample_rate, self.max_duration)
        else:
            # One extra mel frame (trimmed below): the pipeline truncates the frame count, so an
            # exact length could come back one hop short.
            minimum = self.hop_seconds * self.pipe.vae_scale_factor
            call["audio_length_in_s"] = max(duration + self.hop_seconds, minimum)

        if on_progress is not None:
            on_progress(Progress(stage="encoding", message="encoding the prompt"))
        self.pipe.scheduler = self.scheduler_for(first.scheduler)
        try:
            audios = self.pipe(**call).audios
        except GenerationCancelled:
            self._release_hooks()
            raise
        finally:
            self.pipe.scheduler = self._own_scheduler
        finished = time.perf_counter()

        samples = round(duration * self.sample_rate)
        takes: list[GeneratedAudio] = []
        timings = {"generate": finished - started}
        if "first_step" in marks:
            timings["denoise"] = marks["last_step"] - started
            timings["decode"] = finished - marks["last_step"]
        for i, request in enumerate(requests):
            audio = audios[i * per_take]  # best-ranked first (AudioLDM 2 ranks the candidates)
            audio = audio[None, :] if audio.ndim == 1 else audio
            audio = fit_length(audio.astype("float32", copy=False), samples)
            takes.append(
                GeneratedAudio(
                    audio=audio,
                    sample_rate=self.sample_rate,
                    request=request,
                    seed=seeds[i],
                    timings=dict(timings),
                    notes=[*self.notes, *self._truncation_notes(request.prompt)],
                )
            )
        return takes

    def _truncation_notes(self, prompt: str) -> list[str]:
        notes = []
        for name in ("tokenizer", "tokenizer_2"):
            tokenizer = getattr(self.pipe, name, None)
            limit = getattr(tokenizer, "model_max_length", None)
            if tokenizer is None or not isinstance(limit, int) or limit > 100_000:
                continue
            count = len(tokenizer(prompt)["input_ids"])
            if count > limit:
                note = (
                    f"prompt is {count} tokens; the text encoder takes {limit}, so the rest was "
                    "cut off"
                )
                log.warning(note)
                notes.append(note)
                break
        return notes

    def _check(self, requests: Sequence[GenerationRequest]) -> None:
        first = requests[0]
        for request in requests:
            validate_request(request, max_duration=self.max_duration)
            if request.params() != first.params():
                raise BadInputError(
                    "requests in one batch must share every parameter but the prompt and seed"
                )
        if first.waveforms_per_prompt > 1 and self.family != "audioldm2":
            raise BadInputError(
                f"{self.spec.name} cannot rank candidates (only AudioLDM 2 has a CLAP audio "
                "tower); use waveforms per prompt 1 and generate more takes instead"
            )

    def _release_hooks(self) -> None:
        # A cancelled run stops before the pipeline frees its offload hooks itself.
        free = getattr(self.pipe, "maybe_free_model_hooks", None)
        if free is not None and self.offload:
            free()

    def close(self) -> None:
        """Free the pipeline's memory (GPU memory too)."""
        pipe, self.pipe = self.pipe, None
        self._own_scheduler = self._fast_scheduler = None
        if pipe is None:
            return
        del pipe
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - freeing memory must never raise
            pass


def _dtype_argument() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (and warns on the old name); older releases
    only know `torch_dtype`."""
    try:
        from diffusers.pipelines.pipeline_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _read_model_index(path: Path) -> dict[str, Any]:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelFilesError(
            f"{path} has no model_index.json; a diffusion model folder holds a diffusers "
            "pipeline - re-download the model"
        )
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"{index} is not valid JSON ({exc}); re-download the model") from exc
    if not isinstance(data, dict):
        raise ModelFilesError(f"{index} is not a diffusers pipeline index; re-download the model")
    return data


def _stable_audio_scheduler(path: Path, index: dict[str, Any]) -> tuple[Any, str]:
    """The scheduler to load Stable Audio with (None = the folder's own) and a note for the user
    when the checkpoint's own sampler needs the missing `torchsde`."""
    from samplemind_gen.engines.diffusion_schedulers import (
        COSINE_SCHEDULER,
        stable_audio_sampler,
        torchsde_available,
    )

    declared = index.get("scheduler")
    declared_class = declared[1] if isinstance(declared, list) and len(declared) == 2 else None
    if declared_class != COSINE_SCHEDULER:
        return None, ""
    if torchsde_available():
        # torchsde's Brownian tree warns when asked about the final sigma (0), below its range.
        warnings.filterwarnings("ignore", message="Should have", module="torchsde")
        return None, ""
    from diffusers import EDMDPMSolverMultistepScheduler

    config_file = path / "scheduler" / "scheduler_config.json"
    try:
        config = EDMDPMSolverMultistepScheduler.load_config(str(config_file.parent))
    except (OSError, ValueError) as exc:
        raise ModelFilesError(
            f"{config_file} is missing or invalid; re-download the model"
        ) from exc
    note = (
        "torchsde is not installed, so Stable Audio's own sampler (CosineDPMSolverMultistep) is "
        "replaced by the same SDE DPM-Solver++ with torch noise; takes differ from ones made "
        "with it. `pip install torchsde` for the original"
    )
    return stable_audio_sampler(config, stochastic=True), note


@contextlib.contextmanager
def _quiet_loading_bars() -> Iterator[None]:
    """Hide diffusers' "Loading pipeline components" and transformers' "Loading weights" bars
    while a pipeline loads: the front ends show their own loading progress."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_on = diffusers_logging.is_progress_bar_enabled()
    transformers_on = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if diffusers_on:
            diffusers_logging.enable_progress_bar()
        if transformers_on:
            transformers_logging.enable_progress_bar()


class _DropAudioLDMDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "AudioLDMPipeline has been deprecated" not in record.getMessage()


def _quiet_audioldm_deprecation() -> None:
    """diffusers logs a deprecation warning on every AudioLDM load; the pipeline is still
    exported and works, and the user can do nothing about it, so keep it off their terminal."""
    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    if not any(isinstance(f, _DropAudioLDMDeprecation) for f in logger.filters):
        logger.addFilter(_DropAudioLDMDeprecation())


def _weight_bytes(pipe: Any) -> int:
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in component.parameters())
    return total


def _enable_attention_slicing(pipe: Any) -> None:
    try:
        pipe.enable_attention_slicing()
    except (AttributeError, NotImplementedError, ValueError) as exc:  # pragma: no cover
        log.info("attention slicing is not available for %s: %s", type(pipe).__name__, exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
