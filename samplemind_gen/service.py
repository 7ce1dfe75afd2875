"""`AudioEngineWithGeneration`: the one entry point both front ends use.

It resolves and loads models (once per session), runs engines off the caller's thread, pipes
every result through the analyzer and hands back `Take`s with their full recipe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samplemind_gen.catalog import DEFAULT_MODEL, ResolvedModel, resolve_model
from samplemind_gen.engines.base import (
    AudioCallback,
    Engine,
    LoadOptions,
    ProgressCallback,
    as_streaming,
)
from samplemind_gen.recipe import Recipe
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress, validate_request
from samplemind_gen.take import Take

if TYPE_CHECKING:
    from samplemind_gen.analysis import AudioFeatures

log = logging.getLogger(__name__)

DEFAULT_SFX_MODEL = "audioldm-s-full-v2"


class AudioEngineWithGeneration:
    """Loads models on demand, keeps them for the session, and turns requests into takes."""

    def __init__(self, options: LoadOptions | None = None, *, analyze: bool = True) -> None:
        self.options = options or LoadOptions()
        self.analyze_takes = analyze
        self._engines: dict[tuple[str, LoadOptions], Engine] = {}
        self._lock = threading.Lock()
        # One take at a time: an engine keeps per-take state (caches, streams), and the front
        # ends' workers or `generate`'s pool threads may ask for takes side by side.
        self._turn = threading.Lock()
        self.load_count = 0
        self.analysis_warmed = False  # warm_up_analysis has run in this session

    # ---------------------------------------------------------------- models
    def resolve(self, model: str | ResolvedModel | None) -> ResolvedModel:
        if isinstance(model, ResolvedModel):
            return model
        return resolve_model(model or DEFAULT_MODEL)

    def is_loaded(self, model: str | ResolvedModel | None) -> bool:
        resolved = self.resolve(model)
        return (self._key(resolved), self.options) in self._engines

    def load(
        self,
        model: str | ResolvedModel | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        warm_up: bool = False,
    ) -> Engine:
        """Load (or reuse) the engine for `model`. Blocking; call it from a worker thread.
        `warm_up`: a newly loaded engine makes one short throw-away take first (engines that
        have `warm_up`), still under the lock, so no generation can start on it meanwhile; the
        first such load of a session that analyses its takes also warms the analyser up
        (`warm_up_analysis`) beside the loading, done before the lock is released."""
        from samplemind_gen.engines import load_engine

        resolved = self.resolve(model)
        key = (self._key(resolved), self.options)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                analysis = None
                if warm_up and self.analyze_takes and not self.analysis_warmed:
                    self.analysis_warmed = True
                    analysis = threading.Thread(
                        target=warm_up_analysis, name="analysis warm-up", daemon=True
                    )
                    analysis.start()
                try:
                    engine = load_engine(resolved, self.options, on_progress=on_progress)
                    if warm_up and hasattr(engine, "warm_up"):
                        engine.warm_up()
                finally:
                    if analysis is not None:  # never beside a take: it slows the take down
                        analysis.join()
                self._engines[key] = engine
                self.load_count += 1
        return engine

    def loaded_engine(self, model: str | ResolvedModel | None) -> Engine | None:
        """The engine for `model` if it is already loaded (never loads it)."""
        resolved = self.resolve(model)
        return self._engines.get((self._key(resolved), self.options))

    def unload(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()

    @staticmethod
    def _key(model: ResolvedModel) -> str:
        return str(model.local_path) if model.local_path else model.spec.repo_id

    # ------------------------------------------------------------ generation
    def generate_blocking(
        self,
        requests: GenerationRequest | Sequence[GenerationRequest],
        *,
        model: str | ResolvedModel | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        on_audio: AudioCallback | None = None,
    ) -> list[Take]:
        """Generate one take per request (as one batch), analysed and with its recipe.
        `on_audio(chunk, start_sample)` gets (batch, channels, n) audio while it is generated
        (streaming engines), or all of it at once when the batch is done (other engines)."""
        batch = [requests] if isinstance(requests, GenerationRequest) else list(requests)
        resolved = self.resolve(model)
        for request in batch:
            validate_request(request, max_duration=resolved.spec.max_duration)
        engine = self.load(resolved, on_progress=on_progress)
        streaming = as_streaming(engine) if on_audio is not None else None
        with self.turn(on_progress, cancel):
            if streaming is not None:
                outputs = streaming.generate(
                    batch, on_progress=on_progress, cancel=cancel, on_audio=on_audio
                )
            else:
                outputs = engine.generate(batch, on_progress=on_progress, cancel=cancel)
        if streaming is None and on_audio is not None and outputs:
            on_audio(np.stack([out.audio for out in outputs]), 0)
        takes = [self._to_take(engine, out) for out in outputs]
        if self.analyze_takes:
            if on_progress:
                on_progress(Progress(stage="analysing", message="analysing"))
            for take in takes:
                t0 = time.perf_counter()
                take.features = analyze_audio(take.audio, take.sample_rate)
                take.timings["analysis"] = time.perf_counter() - t0
        return takes

    @contextmanager
    def turn(
        self, on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> Iterator[None]:
        """Hold the one-take-at-a-time lock while an engine generates, saying so while another
        take holds it; a cancel while waiting raises `GenerationCancelled`. The take's memory
        goes back to the OS when its turn ends (`release_take_memory`)."""
        from samplemind_gen.engines.base import check_cancel

        if not self._turn.acquire(blocking=False):
            if on_progress:
                on_progress(Progress(stage="loading", message="waiting for the take in progress"))
            while not self._turn.acquire(timeout=0.05):
                check_cancel(cancel)
        try:
            yield
        finally:
            release_take_memory()
            self._turn.release()

    def variations(self, request: GenerationRequest, count: int) -> list[GenerationRequest]:
        """`count` takes of the same prompt with fresh random seeds (one batch)."""
        return [replace(request, seed=None).resolved() for _ in range(count)]

    def _to_take(self, engine: Engine, out: GeneratedAudio) -> Take:
        recipe = Recipe(
            prompt=out.request.prompt,
            model=engine.spec.name if engine.spec.repo_id != engine.model_id else engine.model_id,
            revision=engine.revision,
            family=engine.spec.family,
            seed=out.seed,
            params=out.request.params(),
            device=engine.device,
            dtype=engine.dtype,
            sample_rate=out.sample_rate,
            channels=out.channels,
            duration=out.request.duration,
            kernels=str(getattr(engine, "kernels", "pytorch")),
        )
        return Take(
            audio=out.audio,
            sample_rate=out.sample_rate,
            recipe=recipe,
            timings=dict(out.timings),
            notes=list(out.notes),
        )

    # ----------------------------------------------------------------- async
    async def generate(
        self,
        request: GenerationRequest | Sequence[GenerationRequest],
        *,
        model: str | ResolvedModel | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Take]:
        return await asyncio.to_thread(
            self.generate_blocking, request, model=model, on_progress=on_progress, cancel=cancel
        )

    async def generate_background_music(
        self, prompt: str, duration: float = 10.0, *, model: str | None = None, **params: Any
    ) -> Take:
        request = GenerationRequest(prompt=prompt, duration=duration, **params)
        return (await self.generate(request, model=model or DEFAULT_MODEL))[0]

    async def generate_sound_effect(
        self, prompt: str, duration: float = 5.0, *, model: str | None = None, **params: Any
    ) -> Take:
        request = GenerationRequest(prompt=prompt, duration=duration, **params)
        return (await self.generate(request, model=model or DEFAULT_SFX_MODEL))[0]

    async def analyze_audio_async(
        self, audio: np.ndarray | str | Path, sample_rate: int | None = None
    ) -> AudioFeatures:
        if isinstance(audio, (str, Path)):
            return await asyncio.to_thread(analyze_file, Path(audio))
        if sample_rate is None:
            raise ValueError("sample_rate is required with an array")
        return await asyncio.to_thread(analyze_audio, audio, sample_rate)

    # ---------------------------------------------------------------- export
    def export(
        self,
        take: Take,
        destination: Path | None = None,
        *,
        fmt: str | None = None,
        template: str = "{prompt_slug}_{seed}",
    ) -> Path:
        """Write the take with its recipe embedded; `destination` is a file or a folder."""
        return export_take_to(take, destination, fmt=fmt, template=template)


def release_take_memory() -> None:
    """Hand the heap's free pages back after any engine's take: a MusicGen load fixes glibc's
    thresholds for the whole process (`limit_heap_retention`: up to 256 MB kept at the heap's
    top while generating), and the diffusion engines do not trim after their takes themselves
    (MusicGen's does). Well under a millisecond."""
    import sys

    if "torch" in sys.modules:  # a take ran, so the engines' modules are loaded
        from samplemind_gen.engines.musicgen_quant import trim_heap

        trim_heap()


def analyze_audio(audio: np.ndarray, sample_rate: int) -> AudioFeatures:
    from samplemind_gen.analysis import analyze

    return analyze(audio, sample_rate)


def analyze_file(path: Path) -> AudioFeatures:
    from samplemind_gen.audio_io import read_audio

    audio, sr = read_audio(path)
    return analyze_audio(audio, sr)


def export_take_to(
    take: Take,
    destination: Path | None,
    *,
    fmt: str | None = None,
    template: str = "{prompt_slug}_{seed}",
) -> Path:
    from samplemind_gen import export, paths

    if destination is None:
        destination = paths.export_dir()
    destination = Path(destination).expanduser()
    if destination.suffix and not destination.is_dir():
        path = destination
        fmt = fmt or export.format_from_path(path)
    else:
        fmt = fmt or "wav24"
        name = export.default_filename(
            take.recipe, template=template, fmt=fmt, features=take.features
        )
        path = export.unique_path(destination / name)
    written = export.export_take(
        take.audio, take.sample_rate, path, recipe=take.recipe, features=take.features, fmt=fmt
    )
    take.path = written
    return written


def warm_up_analysis(sample_rate: int = 32000) -> None:
    """Analyse a few seconds of a pulsing tone once. The analyser's first call imports librosa,
    which compiles its numba kernels (beat tracking among them): 3-4 s of CPU, partly holding
    the GIL. After a model load it ran beside the first take and slowed it (an 8 s int8 take
    queued while the model loaded: 15.3 s instead of 9.6), and on the first take itself it
    stalled the UI for 1-2 s; `load(warm_up=True)` runs it beside the model's loading instead.
    Failures are logged, not raised: the real analysis reports them."""
    try:
        t = np.arange(4 * sample_rate) / sample_rate
        audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.cos(2 * np.pi * 2 * t))  # 120 BPM
        analyze_audio(audio[None, :].astype(np.float32), sample_rate)
    except Exception:  # noqa: BLE001 - a warm-up; the first real analysis reports the error
        log.warning("analysis warm-up failed", exc_info=True)
