"""MusicGen-Melody: text plus a melody (the chromagram of an audio file) to music.

`MusicgenMelodyForConditionalGeneration` puts the melody's chroma (one dominant pitch class per
~128 ms frame) in front of the text states as a prefix the decoder attends to. This engine runs
`transformers`' own `generate` (greedy-identical by construction), one take at a time with its
own seed (`torch.random.fork_rng`, so the global RNG is left alone), with progress and
cancellation through a stopping criterion that is called after every decode step.

The chroma is computed here (torch STFT + `transformers`' chroma filter bank, as the model's
feature extractor does), so neither torchaudio nor the melody feature extractor is needed.
Without a melody the model is conditioned on a "no melody" chroma, as `transformers` does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samplemind_gen.catalog import ModelSpec
from samplemind_gen.devices import pick_device, pick_dtype, torch_dtype
from samplemind_gen.engines.base import LoadOptions, ProgressCallback, check_cancel, fit_length
from samplemind_gen.errors import BadInputError, GenerationCancelled, ModelFilesError
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress, validate_request

log = logging.getLogger(__name__)

CHROMA_RATE = 32000
CHROMA_FFT = 16384
CHROMA_HOP = 4096


class MusicGenMelodyEngine:
    """A loaded musicgen-melody checkpoint."""

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        revision: str | None,
        device: str,
        dtype: str,
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.dtype = dtype
        audio_config = model.config.audio_encoder
        self.sample_rate = int(audio_config.sampling_rate)
        self.channels = int(model.decoder.config.audio_channels)
        self.frame_rate = self.sample_rate / int(np.prod(audio_config.upsampling_ratios))
        self.num_codebooks = int(model.decoder.num_codebooks)
        self.max_duration = spec.max_duration
        self.max_prompt_tokens = int(getattr(tokenizer, "model_max_length", 512) or 512)
        if self.max_prompt_tokens > 100_000:
            self.max_prompt_tokens = 512
        self.chroma_length = int(model.config.chroma_length)
        self.num_chroma = int(model.config.num_chroma)

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        path: Path,
        revision: str | None,
        options: LoadOptions,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> MusicGenMelodyEngine:
        import torch
        from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

        started = time.perf_counter()
        device = pick_device(options.device)
        dtype = pick_dtype(device, options.dtype)
        if on_progress:
            on_progress(Progress(stage="loading", message=f"loading {spec.name} on {device}"))
        if not (Path(path) / "config.json").is_file() or not any(Path(path).glob("*.safetensors")):
            raise ModelFilesError(f"{path} is not a complete musicgen-melody checkpoint folder")
        try:
            model: Any = MusicgenMelodyForConditionalGeneration.from_pretrained(
                path, dtype=torch_dtype(dtype), use_safetensors=True, local_files_only=True
            )
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelFilesError(
                f"could not load the musicgen-melody checkpoint in {path}: {exc}; download the "
                "model again"
            ) from exc
        if dtype != "float32" and not device.startswith("cuda"):
            model.audio_encoder.to(torch.float32)
        model.to(device).eval()
        torch.set_grad_enabled(False)
        log.info("loaded %s in %.1fs", spec.name, time.perf_counter() - started)
        return cls(
            spec,
            model,
            tokenizer,
            model_id=spec.repo_id,
            revision=revision,
            device=device,
            dtype=dtype,
        )

    def close(self) -> None:
        self.model = None

    def frames_for(self, duration: float) -> int:
        return max(1, math.ceil(duration * self.frame_rate - 1e-9))

    def steps_for(self, duration: float) -> int:
        return self.frames_for(duration) + self.num_codebooks - 1

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        melody: np.ndarray | None = None,
        greedy: bool = False,
        **_: Any,
    ) -> list[GeneratedAudio]:
        """One take per request. `melody` is a chroma from `melody_chroma` (frames, 12)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        results = []
        requests = [r.resolved() for r in requests]
        features = None
        if melody is not None:
            features = torch.from_numpy(np.asarray(melody, dtype=np.float32))[None].to(
                self.device, self.model.dtype
            )
        for r in requests:
            validate_request(r, max_duration=self.max_duration)
            steps = self.steps_for(r.duration)
            started = time.perf_counter()

            class Report(StoppingCriteria):  # called after every decode step
                def __init__(self, steps: int, duration: float, started: float) -> None:
                    self.step = 0
                    self.steps = steps
                    self.duration = duration
                    self.started = started

                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    self.step += 1
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled()
                    if on_progress is not None:
                        done = min(self.step, self.steps)
                        on_progress(
                            Progress(
                                stage="generating",
                                step=done,
                                total=self.steps,
                                audio_seconds=self.duration * done / self.steps,
                                total_audio_seconds=self.duration,
                                elapsed=time.perf_counter() - self.started,
                            )
                        )
                    return torch.zeros(
                        input_ids.shape[0], dtype=torch.bool, device=input_ids.device
                    )

            check_cancel(cancel)
            if on_progress:
                on_progress(Progress(stage="encoding", message="encoding the prompt"))
            inputs = self.tokenizer(
                [r.prompt.strip()],
                padding=True,
                truncation=True,
                max_length=self.max_prompt_tokens,
                return_tensors="pt",
            ).to(self.device)
            kwargs: dict[str, Any] = dict(
                do_sample=not greedy,
                guidance_scale=r.guidance_scale if r.guidance_scale > 1 else None,
                max_new_tokens=steps,
                stopping_criteria=StoppingCriteriaList([Report(steps, r.duration, started)]),
            )
            if not greedy:
                kwargs.update(temperature=r.temperature, top_k=r.top_k or 0)
                if r.top_p is not None:
                    kwargs["top_p"] = r.top_p
            if features is not None:
                kwargs["input_features"] = features
            devices = [self.device] if self.device.startswith("cuda") else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(int(r.seed or 0))
                audio = self.model.generate(**inputs, **kwargs)
            audio = audio.to(torch.float32).cpu().numpy()[0]
            results.append(
                GeneratedAudio(
                    audio=fit_length(audio, round(r.duration * self.sample_rate)),
                    sample_rate=self.sample_rate,
                    request=r,
                    seed=int(r.seed or 0),
                    timings={"total": time.perf_counter() - started},
                )
            )
        return results


def melody_chroma(audio: np.ndarray, sample_rate: int, *, max_frames: int = 235) -> np.ndarray:
    """One-hot chroma (frames, 12) of the dominant pitch class per frame, computed as
    musicgen-melody's feature extractor does (32 kHz, n_fft 16384, hop 4096, power 2)."""
    import torch
    from transformers.audio_utils import chroma_filter_bank

    from samplemind_gen.dsp import as_channels, resample

    x = as_channels(audio).mean(axis=0, keepdims=True)
    if sample_rate != CHROMA_RATE:
        x = resample(x, sample_rate, CHROMA_RATE)
    y = torch.from_numpy(np.ascontiguousarray(x[0], dtype=np.float32))
    y = y[: int(max_frames * CHROMA_HOP)]
    if y.shape[0] < CHROMA_FFT:
        pad = CHROMA_FFT - y.shape[0]
        y = torch.nn.functional.pad(y, (pad // 2, pad - pad // 2))
    window = torch.hann_window(CHROMA_FFT)
    spec = torch.stft(
        y,
        CHROMA_FFT,
        CHROMA_HOP,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = (spec.abs() ** 2) / window.pow(2).sum()  # torchaudio's normalized=True
    filters = torch.from_numpy(
        chroma_filter_bank(
            sampling_rate=CHROMA_RATE, num_frequency_bins=CHROMA_FFT, tuning=0, num_chroma=12
        )
    ).float()
    chroma = filters @ power  # (12, frames)
    if not torch.any(chroma > 0):
        raise BadInputError("the melody file is silent; give a recording with a melody in it")
    onehot = torch.zeros(chroma.shape[1], 12)
    onehot[torch.arange(chroma.shape[1]), chroma.argmax(dim=0)] = 1.0
    return onehot.numpy()[:max_frames]


def melody_from_file(path: Path) -> np.ndarray:
    from samplemind_gen.audio_io import read_audio

    audio, sr = read_audio(Path(path))
    return melody_chroma(audio, sr)
