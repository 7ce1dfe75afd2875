"""MusicGen through transformers, with a decode loop of our own.

The loop runs the T5 text encoder once, then steps the decoder with a preallocated KV cache
(`CachedDecoder`), handling the codebook delay pattern and classifier-free guidance exactly as
`generate` does (fp32 greedy decoding gives identical codes; tested), with per-step progress,
cancellation within one step, one seeded generator per take, and optional streaming of audio
chunks while the take is still being generated (`on_audio`).

CPU modes: bf16 by default (memory-bound decode: about 3x faster than fp32 on the project's
CPU), `quantize="int8"` for the decoder's linear layers, fp32 for reference. On CUDA: fp16 by
default, and the decode step is captured in a CUDA graph. Numbers: docs/performance.md.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from samplemind_gen.catalog import ModelSpec
from samplemind_gen.devices import (
    cpu_supports_bf16,
    pick_device,
    pick_dtype,
    quantized_cpu_dtype,
    torch_dtype,
)
from samplemind_gen.engines.base import LoadOptions, ProgressCallback, check_cancel, fit_length
from samplemind_gen.engines.encodec_windows import WindowedDecoder
from samplemind_gen.engines.musicgen_decoder import CachedDecoder, CudaGraphStep
from samplemind_gen.engines.musicgen_sampling import next_tokens, sampling_settings
from samplemind_gen.engines.musicgen_stream import (
    AudioCallback,
    ChunkedAudioDecoder,
    complete_frames,
    frame_columns,
)
from samplemind_gen.errors import BadInputError, ModelFilesError
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress, validate_request

log = logging.getLogger(__name__)

# CUDA take graphs: how many steps the host may queue ahead of the GPU.
GRAPH_LOOKAHEAD = 4


def cpu_default_dtype() -> str:
    """What `--dtype auto` means for MusicGen on this CPU: bf16 where the CPU has native bf16
    matmul (AVX512-BF16 / AMX); elsewhere fp16 weights packed for fbgemm with fp32 math, which
    measured 2x faster than bf16 on an AVX2 CPU (docs/performance.md)."""
    return "bfloat16" if cpu_supports_bf16() else "float16"


class MusicGenEngine:
    """A loaded MusicGen checkpoint (mono, stereo or melody)."""

    streams_audio = True  # generate(..., on_audio=) hands out audio while generating

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        processor: Any,
        *,
        model_id: str,
        revision: str | None,
        device: str,
        dtype: str,
    ) -> None:
        self.spec = spec
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.dtype = dtype
        audio_config = model.config.audio_encoder
        self.sample_rate = int(audio_config.sampling_rate)
        self.channels = int(model.decoder.config.audio_channels)
        self.hop = int(np.prod(audio_config.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop
        self.num_codebooks = int(model.decoder.num_codebooks)
        self.pad_token_id = int(model.generation_config.pad_token_id or model.config.pad_token_id)
        self.start_token_id = int(
            model.generation_config.decoder_start_token_id or model.config.decoder_start_token_id
        )
        self.max_prompt_tokens = int(getattr(processor.tokenizer, "model_max_length", 512) or 512)
        if self.max_prompt_tokens > 100_000:  # tokenizers without a limit report a huge number
            self.max_prompt_tokens = 512
        self.max_duration = spec.max_duration
        # "cached": our CachedDecoder; "transformers": the decoder's own forward (reference).
        self.decode_with = "cached"
        self.use_cuda_graphs = device.startswith("cuda")
        # False: graph the decoder step alone (`CudaGraphStep`), sampling outside (benchmarks).
        self.graph_whole_step = True
        # CUDA: compile the decode step with Inductor before capture (LoadOptions.compile).
        self.compile_step = False
        # Run the graph's whole-step code eagerly (CPU test of what CUDA captures).
        self.static_take_step = False
        self._compiled_step: Any = None
        self.cached_decoder = CachedDecoder(model.decoder)
        if device == "cpu" and dtype != "float32" and cpu_supports_bf16():
            import torch

            if self.cached_decoder.dtype == torch.float32:  # int8 / fp16 packed: fp32 math
                self.cached_decoder.cache_dtype = torch.bfloat16
        if device == "cpu" and dtype != "float32" and self.cached_decoder.fused:
            from samplemind_gen.engines import native_kernels

            # Packed CPU modes step through samplemind-gen's step ops; the quantized modes keep
            # their attention caches in int8 (half of bf16's memory: 138 MB less on a 30 s take).
            self.cached_decoder.native_attention = native_kernels.available()
            self.cached_decoder.int8_cache = "+int" in dtype
        # The packed CPU modes also keep EnCodec's LSTM recurrent weights in fp16 (our kernel);
        # fp32 stays the exact reference.
        self.windowed = WindowedDecoder(
            model.audio_encoder, half_lstm=device == "cpu" and dtype != "float32"
        )
        # Grad mode is per thread: the front ends' and `asyncio.to_thread`'s workers may generate
        # in a thread other than the loading one, so no weight asks for gradients, those made
        # while building the engine included (EnCodec's folded weight norm).
        model.requires_grad_(False)
        self.last_stream: ChunkedAudioDecoder | None = None

    @cached_property
    def kernels(self) -> str:
        """The decoder's linear kernels, for the recipe (`musicgen_quant.kernel_label`); fixed
        once loaded, so looked up once, not per take."""
        if self.device != "cpu":
            return "pytorch"
        from samplemind_gen.engines.musicgen_quant import kernel_label, text_encoder_label

        return kernel_label(self.model.decoder) + text_encoder_label(self.model)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        path: Path,
        revision: str | None,
        options: LoadOptions,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> MusicGenEngine:
        import torch
        from safetensors import SafetensorError
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        started = time.perf_counter()
        device = pick_device(options.device)
        dtype = pick_dtype(device, options.dtype, cpu_default=cpu_default_dtype())
        if on_progress:
            on_progress(Progress(stage="loading", message=f"loading {spec.name} on {device}"))
        _check_files(path)
        on_cpu = not device.startswith(("cuda", "mps"))
        if on_cpu:
            from samplemind_gen.engines.musicgen_quant import (
                LOADING_MMAP_THRESHOLD,
                LOADING_TRIM_THRESHOLD,
                limit_heap_retention,
            )

            limit_heap_retention(LOADING_MMAP_THRESHOLD, LOADING_TRIM_THRESHOLD)
        # CPU packed modes (musicgen_quant): int8 or fp16 (fbgemm, fp32 activations) or bf16
        # (oneDNN, bf16 activations) decoder weights, fp16 text-encoder weights. Loaded in a
        # 16-bit dtype (lossless for fp16/bf16 packing, one rounding for int8), then packed one
        # layer at a time: never a full fp32 copy of the model.
        from samplemind_gen.engines.musicgen_quant import onednn_bf16_available

        packed: str | None = None
        if options.quantize:
            packed = options.quantize
            if on_cpu:
                dtype = quantized_cpu_dtype(options.quantize)
        elif on_cpu and dtype == "float16":
            packed = "float16"
        elif on_cpu and dtype == "bfloat16" and options.pack and onednn_bf16_available():
            packed = "bfloat16"
        try:
            model: Any = MusicgenForConditionalGeneration.from_pretrained(
                path,
                dtype=torch_dtype(dtype),
                use_safetensors=True,
                local_files_only=True,
            )
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise ModelFilesError(
                f"could not load the MusicGen checkpoint in {path}: {_short(exc)}; the files are "
                "missing or damaged: download the model again (`samplemind-gen models download`)"
            ) from exc
        # Text-to-music never encodes audio: drop EnCodec's encoder half.
        model.audio_encoder.encoder = None
        model.to(device).eval()
        torch.set_grad_enabled(False)
        if packed and on_cpu and on_progress:  # the step ops run in every packed mode
            from samplemind_gen.engines import native_kernels

            if native_kernels.will_compile():
                on_progress(
                    Progress(
                        stage="loading",
                        message="compiling CPU kernels (once, ~20 s)",
                    )
                )
        if packed:
            from samplemind_gen.engines.musicgen_quant import quantize_decoder

            quantize_decoder(model, packed, device)
        elif device.startswith("cuda"):
            from samplemind_gen.engines.musicgen_quant import fuse_qkv

            for layer in model.decoder.model.decoder.layers:  # one kernel instead of three
                fuse_qkv(layer.self_attn)
        if packed or device.startswith("cuda"):
            from samplemind_gen.engines.musicgen_quant import add_qkv_parts

            add_qkv_parts(model)  # transformers' forward (long-form windows) calls q, k, v
        # On CPU, EnCodec, the text projection and the text encoder run in fp32 (their weights
        # read back exactly from the checkpoint): they run once per take, T5 in bf16 measured
        # ~10x slower on a CPU without native bf16, and EnCodec in bf16 costs audible quality.
        if dtype != "float32" and on_cpu:
            _restore_fp32(model, path, ("text_encoder.", "audio_encoder.", "enc_to_dec_proj."))
        if packed and on_cpu:
            from samplemind_gen.engines.musicgen_quant import pack_text_encoder

            pack_text_encoder(model)  # fp16 weights, fp32 math: ~250 MB less than fp32 T5
        if options.quantize:
            dtype = f"{dtype}+{options.quantize}"
        engine = cls(
            spec,
            model,
            processor,
            model_id=spec.repo_id,
            revision=revision,
            device=device,
            dtype=dtype,
        )
        engine.compile_step = bool(options.compile) and device.startswith("cuda")
        from samplemind_gen.engines.musicgen_quant import limit_heap_retention, release_freed_memory

        release_freed_memory()  # what loading and the fp32 restore left on the heap
        if on_cpu:
            limit_heap_retention()  # generating: EnCodec's chunk buffers reused from the heap
        log.info("loaded %s in %.1fs", spec.name, time.perf_counter() - started)
        return engine

    def warm_up(self) -> None:
        """Make one short take and throw it away. The first take after loading otherwise pays
        for oneDNN's kernel set-up and first-touch allocations: 1.2 s more for musicgen-small in
        bf16 on the project's CPU, and its first sound came after 1.8 s instead of 1.0. The app
        calls this right after loading, while the producer is still typing."""
        self.generate([GenerationRequest("warm up", duration=0.4, seed=0)])

    def close(self) -> None:
        self.cached_decoder.end()
        self.model = None

    # ------------------------------------------------------------- generation
    def frames_for(self, duration: float) -> int:
        return max(1, math.ceil(duration * self.frame_rate - 1e-9))

    def steps_for(self, duration: float) -> int:
        return self.frames_for(duration) + self._channel_codebooks - 1

    @property
    def _channel_codebooks(self) -> int:
        return self.num_codebooks // 2 if self.channels == 2 else self.num_codebooks

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        greedy: bool = False,
        on_audio: AudioCallback | None = None,
    ) -> list[GeneratedAudio]:
        """Generate one take per request as one batch. `on_audio(chunk, start_sample)` gets the
        audio in chunks (float32 (batch, channels, n)) while it is being generated, so playback
        can start before the take is done; the returned takes are the one-shot decode."""
        import torch

        if not requests:
            return []
        requests = [r.resolved() for r in requests]
        first = requests[0]
        for r in requests:
            validate_request(r, max_duration=self.max_duration)
            if r.params() != first.params():
                raise BadInputError("takes in one batch must share all parameters but the prompt")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if on_progress:
            on_progress(Progress(stage="encoding", message="encoding the prompt"))
        prompts = [r.prompt.strip() for r in requests]
        notes = self._truncation_notes(prompts)
        inputs = self.processor(
            text=prompts,
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            return_tensors="pt",
        ).to(self.device)
        check_cancel(cancel)
        encoder_states, encoder_mask = self._encode(
            inputs["input_ids"], inputs["attention_mask"], first.guidance_scale
        )
        timings["text_encoder"] = time.perf_counter() - t0

        generators = [
            torch.Generator(device=self.device).manual_seed(int(r.seed or 0)) for r in requests
        ]
        samples = round(first.duration * self.sample_rate)
        # EnCodec runs chunk by chunk as frames complete (encodec_windows): memory bounded by the
        # window, not the take, and the same audio whether or not a listener streams it.
        batch = len(requests)
        audio = np.zeros((batch, self.channels, samples), dtype=np.float32)

        def collect(chunk: np.ndarray, start: int) -> None:
            audio[..., start : start + chunk.shape[-1]] = chunk
            if on_audio is not None:
                on_audio(chunk, start)

        stream = ChunkedAudioDecoder(
            self.audio_stream(), collect, hop=self.hop, total_samples=samples
        )
        self.last_stream = stream
        t1 = time.perf_counter()
        codes = self._decode_loop(
            encoder_states,
            encoder_mask,
            batch=batch,
            request=first,
            generators=generators,
            greedy=greedy,
            on_progress=on_progress,
            cancel=cancel,
            stream=stream,
        )
        timings["decode"] = time.perf_counter() - t1
        timings["stream_audio_decoder"] = stream.decode_seconds
        check_cancel(cancel)
        if on_progress:
            on_progress(Progress(stage="decoding", message="decoding audio (EnCodec)"))
        stream.feed(codes, final=True)
        timings["audio_decoder"] = stream.decode_seconds
        timings["total"] = time.perf_counter() - t0
        timings["first_audio"] = stream.first_audio_at - t0 if stream.first_audio_at else 0.0
        if self.device == "cpu":
            from samplemind_gen.engines.musicgen_quant import trim_heap

            trim_heap()  # the take's buffers, kept on the heap while it ran (limit_heap_retention)
        results = []
        for i, r in enumerate(requests):
            results.append(
                GeneratedAudio(
                    audio=fit_length(audio[i], samples),
                    sample_rate=self.sample_rate,
                    request=r,
                    seed=int(r.seed or 0),
                    timings=dict(timings),
                    notes=list(notes),
                )
            )
        return results

    def _truncation_notes(self, prompts: list[str]) -> list[str]:
        notes = []
        for prompt in prompts:
            n = len(self.processor.tokenizer(prompt)["input_ids"])
            if n > self.max_prompt_tokens:
                note = (
                    f"prompt is {n} tokens; the text encoder takes {self.max_prompt_tokens}, "
                    "so the rest was cut off"
                )
                log.warning(note)
                notes.append(note)
        return notes

    def _encode(
        self, input_ids: Any, attention_mask: Any, guidance_scale: float
    ) -> tuple[Any, Any]:
        import torch

        model = self.model
        states = model.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask
        if guidance_scale > 1:
            states = torch.cat([states, torch.zeros_like(states)], dim=0)
            mask = torch.cat([mask, torch.zeros_like(mask)], dim=0)
        if (
            model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
            and model.decoder.config.cross_attention_hidden_size is None
        ):
            states = model.enc_to_dec_proj(states.to(model.enc_to_dec_proj.weight.dtype))
        states = states * mask[..., None]
        return states.to(self.cached_decoder.dtype), mask

    def _decode_loop(
        self,
        encoder_states: Any,
        encoder_mask: Any,
        *,
        batch: int,
        request: GenerationRequest,
        generators: list[Any],
        greedy: bool,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        stream: ChunkedAudioDecoder | None = None,
    ) -> Any:
        import torch

        decoder = self.model.decoder
        k = self.num_codebooks
        steps = self.steps_for(request.duration)
        ids = torch.full((batch * k, 1), self.start_token_id, dtype=torch.long, device=self.device)
        ids, delay_mask = decoder.build_delay_pattern_mask(
            ids, pad_token_id=self.start_token_id, max_length=steps + 1
        )
        cfg = request.guidance_scale > 1
        first_column = frame_columns(delay_mask, k)
        first_frame_column = int(first_column.max())
        # Preallocated id buffer: column 0 is the start token, one column per step after it.
        current = torch.empty((batch * k, steps + 1), dtype=torch.long, device=self.device)
        current[:, :1] = ids
        sampling = sampling_settings(request, generators, greedy=greedy, rows_per_take=k)
        take_graph = self._take_graph(
            encoder_states, encoder_mask, steps, current, delay_mask, request, sampling
        )
        step_fn: Any = None
        if take_graph is None:
            step_fn = self._step_function(
                encoder_states, encoder_mask, steps, batch * k * (1 + cfg)
            )
        free = delay_mask == -1  # columns the decoder fills (the rest: pad / start ids)
        in_flight: deque[Any] = deque()
        on_cuda = self.device.startswith("cuda")
        started = time.perf_counter()
        try:
            for step in range(steps):
                check_cancel(cancel)
                if take_graph is not None:
                    take_graph.replay()
                    if on_cuda:
                        # Replays run ahead of the GPU by at most GRAPH_LOOKAHEAD steps: the GPU
                        # never waits for Python; progress and cancel stay within a few ms.
                        in_flight.append(torch.cuda.Event())
                        in_flight[-1].record()
                        if len(in_flight) > GRAPH_LOOKAHEAD:
                            in_flight.popleft().synchronize()
                else:
                    # The last column of `apply_delay_pattern_mask(current[:, : step + 1])`:
                    # the pattern's fixed ids where it has them, else the ids chosen so far.
                    step_ids = torch.where(
                        free[:, step : step + 1],
                        current[:, step : step + 1],
                        delay_mask[:, step : step + 1],
                    )
                    if cfg:
                        step_ids = step_ids.repeat((2, 1))
                    logits = step_fn(step_ids, step)
                    current[:, step + 1] = next_tokens(logits, request.guidance_scale, sampling)
                if stream is not None and not stream.done:
                    columns = step + 2
                    if columns - first_frame_column >= stream.frames_needed():
                        stream.feed(complete_frames(current[:, :columns], first_column, batch, k))
                if on_progress:
                    done = step + 1
                    audio_s = max(0, done - (self._channel_codebooks - 1)) / self.frame_rate
                    on_progress(
                        Progress(
                            stage="generating",
                            step=done,
                            total=steps,
                            audio_seconds=min(audio_s, request.duration),
                            total_audio_seconds=request.duration,
                            elapsed=time.perf_counter() - started,
                        )
                    )
        finally:
            self.cached_decoder.end()
        final = decoder.apply_delay_pattern_mask(current, delay_mask)
        return final[final != self.pad_token_id].reshape(batch, k, -1)

    def _take_graph(
        self,
        encoder_states: Any,
        encoder_mask: Any,
        steps: int,
        current: Any,
        delay_mask: Any,
        request: GenerationRequest,
        sampling: dict[str, Any],
    ) -> Any:
        """On CUDA, the whole step (decoder, guidance, sampling, id write) captured in one graph
        (`musicgen_cuda`); None elsewhere, or where this torch cannot capture it."""
        graphs = self.use_cuda_graphs and self.device.startswith("cuda") and self.graph_whole_step
        if self.decode_with != "cached" or not (graphs or self.static_take_step):
            return None
        from samplemind_gen.engines.musicgen_cuda import TakeStep, capture_take_graph, compile_step

        self.cached_decoder.begin(encoder_states, encoder_mask, steps, static=True)
        if self.compile_step and self._compiled_step is None:
            self._compiled_step = compile_step(self.cached_decoder)
        take_step = TakeStep(
            self.cached_decoder,
            current,
            delay_mask,
            guidance_scale=request.guidance_scale,
            sampling=sampling,
            step=self._compiled_step,
        )
        if not graphs:
            return take_step
        try:
            return capture_take_graph(take_step)
        except RuntimeError as exc:  # a torch/driver that cannot capture this step
            log.warning("CUDA graph of the whole step failed (%s); graphing the decoder only", exc)
            self.graph_whole_step = False  # not retried on this engine
            return None

    def _step_function(self, encoder_states: Any, encoder_mask: Any, steps: int, rows: int) -> Any:
        """`step(ids, position) -> logits (rows, vocab)` for the chosen decode path."""
        if self.decode_with == "transformers":
            if self.cached_decoder.fused:
                raise BadInputError(
                    "transformers' decoder step needs unpacked weights; packed CPU modes "
                    "(float16, int8) run on the cached decoder only"
                )
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            decoder = self.model.decoder

            def hf_step(step_ids: Any, _position: int) -> Any:
                out = decoder(
                    input_ids=step_ids,
                    encoder_hidden_states=encoder_states,
                    encoder_attention_mask=encoder_mask,
                    cache=cache,
                    use_cache=True,
                )
                return out.logits[:, -1, :]

            return hf_step
        graphs = self.use_cuda_graphs and self.device.startswith("cuda")
        self.cached_decoder.begin(encoder_states, encoder_mask, steps, static=graphs)
        if graphs:
            try:
                return CudaGraphStep(self.cached_decoder, rows, self.device).step
            except RuntimeError as exc:
                log.warning("CUDA graph of the decoder step failed (%s); running it eagerly", exc)
                self.use_cuda_graphs = False
                self.cached_decoder.begin(encoder_states, encoder_mask, steps)  # clean cache
        return self.cached_decoder.step

    def codes_to_audio(self, codes: Any) -> np.ndarray:
        """(batch, codebooks, frames) codes -> float32 (batch, channels, samples), decoded in
        windows (`encodec_windows`): equal to a one-shot EnCodec decode, in bounded memory."""
        frames = int(codes.shape[-1])
        audio = np.zeros((codes.shape[0], self.channels, frames * self.hop), dtype=np.float32)

        def collect(chunk: np.ndarray, start: int) -> None:
            audio[..., start : start + chunk.shape[-1]] = chunk

        # The chunk schedule `generate` uses, so a take decoded here is bit-identical to the same
        # codes decoded while generating (long-form windows rely on it).
        stream = ChunkedAudioDecoder(
            self.audio_stream(), collect, hop=self.hop, total_samples=audio.shape[-1]
        )
        while not stream.done and stream.frames_needed() <= frames:
            stream.feed(codes[..., : stream.frames_needed()])
        stream.feed(codes, final=True)
        return audio

    def audio_stream(self) -> Any:
        """A fresh `push(codes, final=False)` over (batch, codebooks, n) complete frames, returning
        the float32 (batch, channels, samples) audio that became final, or None. Stereo
        checkpoints interleave left/right codebooks; each side has its own EnCodec stream."""
        import torch

        streams = [self.windowed.stream() for _ in range(self.channels)]

        def push(codes: Any, final: bool = False) -> np.ndarray | None:
            if self.channels == 1:
                parts = [streams[0].push(codes, final=final)]
            else:
                parts = [
                    s.push(codes[:, c :: self.channels], final=final) for c, s in enumerate(streams)
                ]
            if any(p is None for p in parts):
                return None
            return torch.cat(parts, dim=1).to(torch.float32).cpu().numpy()

        return push


def _restore_fp32(model: Any, path: Path, prefixes: tuple[str, ...]) -> None:
    """Switch the sub-models under `prefixes` to fp32 and copy their weights from the
    safetensors files, so they are exactly the checkpoint's (not a bf16 round trip)."""
    import torch
    from safetensors import safe_open

    params: dict[str, Any] = {}
    for prefix in prefixes:
        module = getattr(model, prefix.rstrip("."), None)
        if module is None:
            continue
        module.to(torch.float32)
        # named_parameters/buffers, not state_dict: packed layers would unpack into new tensors.
        # remove_duplicate=False: a tied weight is found under every name the checkpoint uses.
        for name, tensor in module.named_parameters(remove_duplicate=False):
            params[prefix + name] = tensor
        for name, tensor in module.named_buffers(remove_duplicate=False):
            params[prefix + name] = tensor
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                target = params.get(name)
                if target is not None and target.dtype == torch.float32:
                    with torch.no_grad():
                        target.copy_(f.get_tensor(name).to(torch.float32))


def _check_files(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelFilesError(f"{path} has no config.json; it is not a MusicGen checkpoint folder")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")):
            raise ModelFilesError(
                f"{path} only has .bin (pickle) weights; samplemind-gen loads safetensors only. "
                "Download the safetensors weights of this model"
            )
        raise ModelFilesError(f"{path} has no .safetensors weights; download the model again")
    if not (path / "tokenizer.json").is_file() and not (path / "spiece.model").is_file():
        raise ModelFilesError(f"{path} has no tokenizer files; download the model again")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
