"""MusicGen beyond one window: long-form takes, continuing an audio file, and prompt blending.

MusicGen attends over at most ~30 s of codes. A longer take is made window by window: each new
window is prompted with the last `overlap` seconds of codes of the one before (as audiocraft's
`extend` does) and adds `window - overlap` seconds. The codes of all windows are joined and
decoded by EnCodec in one pass, so there is no audio seam to hide: the music is continuous
wherever the model kept it so.

Continuation (`continue_from`) encodes the tail of an audio file with EnCodec and uses it as the
first window's prompt; the take is the original file followed by what the model added, joined
with a short crossfade.

Blending conditions one take on two prompts: classifier-free guidance with a weighted mix of
the two conditional logits, `uncond + scale * ((1 - w) * cond_a + w * cond_b - uncond)`.

The decode loop here mirrors `MusicGenEngine._decode_loop` (same delay pattern, guidance and
sampling code), plus a prefill of the code prompt; with no prompt and greedy decoding it gives
the engine's own codes (tested).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samplemind_gen.engines.base import ProgressCallback, check_cancel, fit_length
from samplemind_gen.engines.musicgen_sampling import next_tokens, sampling_settings
from samplemind_gen.errors import BadInputError
from samplemind_gen.request import GeneratedAudio, GenerationRequest, Progress, validate_request

MAX_LONG_DURATION = 600.0
JOIN_CROSSFADE = 0.02  # seconds, where a continuation meets its source file


@dataclass(frozen=True)
class LongForm:
    """How to go beyond one window. All times in seconds."""

    window: float = 30.0
    overlap: float = 10.0
    continue_from: str | None = None
    continue_seconds: float = 10.0  # how much of the file's end prompts the model
    blend_prompt: str | None = None
    blend_weight: float = 0.5  # 0 = only the main prompt, 1 = only the blend prompt
    melody: str | None = None  # an audio file whose melody conditions a musicgen-melody model

    @property
    def is_plain(self) -> bool:
        return self.continue_from is None and self.blend_prompt is None and self.melody is None

    def params(self) -> dict[str, Any]:
        """What a recipe records: enough to make the take again (the source file by hash)."""
        data = asdict(self)
        if self.continue_from is None:
            data.pop("continue_seconds")
        else:
            data["continue_sha256"] = _file_sha256(Path(self.continue_from))
        if self.blend_prompt is None:
            data.pop("blend_weight")
        if self.melody is None:
            data.pop("melody")
        else:
            data["melody_sha256"] = _file_sha256(Path(self.melody))
        return data

    def validate(self, max_window: float) -> None:
        if not 1.0 <= self.window <= max_window + 1e-9:
            raise BadInputError(
                f"--window must be from 1 to {max_window:g} s (got {self.window:g})"
            )
        if not 0.0 <= self.overlap <= self.window - 0.5:
            raise BadInputError(
                f"--overlap must be from 0 to {self.window - 0.5:g} s, less than the window "
                f"(got {self.overlap:g}); 10 s of a 30 s window is a good default"
            )
        if not 0.0 <= self.blend_weight <= 1.0:
            raise BadInputError(f"--blend-weight must be from 0 to 1 (got {self.blend_weight:g})")
        if self.blend_prompt is not None and not self.blend_prompt.strip():
            raise BadInputError("--blend needs a second prompt to blend with")
        if self.melody is not None and not Path(self.melody).is_file():
            raise BadInputError(f"{self.melody} does not exist; give an audio file with a melody")
        if self.continue_from is not None:
            if not Path(self.continue_from).is_file():
                raise BadInputError(f"{self.continue_from} does not exist; give an audio file")
            if not 0.5 <= self.continue_seconds <= self.window - 0.5:
                raise BadInputError(
                    f"--continue-seconds must be from 0.5 to {self.window - 0.5:g} s"
                )


def generate_windowed(
    engine: Any,
    requests: Sequence[GenerationRequest],
    long: LongForm,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    greedy: bool = False,
) -> list[GeneratedAudio]:
    """Generate `requests` (one batch, shared parameters) of any duration up to 10 minutes."""
    import torch

    with torch.no_grad():  # grad mode is per thread; callers may run us in a fresh one
        return _generate_windowed(
            engine, requests, long, on_progress=on_progress, cancel=cancel, greedy=greedy
        )


def _generate_windowed(
    engine: Any,
    requests: Sequence[GenerationRequest],
    long: LongForm,
    *,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    greedy: bool,
) -> list[GeneratedAudio]:
    import torch

    if not requests:
        return []
    requests = [r.resolved() for r in requests]
    first = requests[0]
    max_window = float(engine.max_duration or 30.0)
    long.validate(max_window)
    for r in requests:
        validate_request(r, max_duration=MAX_LONG_DURATION)
        if r.params() != first.params():
            raise BadInputError("takes in one batch must share all parameters but the prompt")
    batch = len(requests)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if on_progress:
        on_progress(Progress(stage="encoding", message="encoding the prompt"))

    prompts = [r.prompt.strip() for r in requests]
    weights = [1.0]
    if long.blend_prompt is not None:
        prompts += [long.blend_prompt.strip()] * batch
        weights = [1.0 - long.blend_weight, long.blend_weight]
    inputs = engine.processor(
        text=prompts,
        padding=True,
        truncation=True,
        max_length=engine.max_prompt_tokens,
        return_tensors="pt",
    ).to(engine.device)
    states, mask = engine._encode(
        inputs["input_ids"], inputs["attention_mask"], first.guidance_scale
    )
    cfg = first.guidance_scale > 1
    conditions = len(weights)
    if cfg:  # conditions first, then one unconditional half (all zero rows are identical)
        states = states[: (conditions + 1) * batch]
        mask = mask[: (conditions + 1) * batch]
    timings["text_encoder"] = time.perf_counter() - t0

    source: np.ndarray | None = None
    prefix: Any = None
    if long.continue_from is not None:
        source, prefix = _encode_source(engine, Path(long.continue_from), long.continue_seconds)
        prefix = prefix.repeat(batch, 1, 1)
    generators = [
        torch.Generator(device=engine.device).manual_seed(int(r.seed or 0)) for r in requests
    ]
    window = engine.frames_for(long.window)
    overlap = engine.frames_for(long.overlap) if long.overlap > 0 else 0
    wanted = engine.frames_for(first.duration)
    plan = plan_windows(wanted, window, overlap, prompt=0 if prefix is None else prefix.shape[-1])
    k_delay = engine._channel_codebooks - 1
    total_steps = sum(new + k_delay for _, new in plan)
    done_steps = 0
    started = time.perf_counter()
    t1 = started
    codes: Any = prefix  # (batch, codebooks, frames) so far, the file's tail first
    for context, new in plan:
        check_cancel(cancel)
        context_codes = codes[..., codes.shape[-1] - context :] if context else None
        offset = done_steps

        def report(step: int, total: int, offset: int = offset) -> None:
            if on_progress is None:
                return
            made = offset + step
            on_progress(
                Progress(
                    stage="generating",
                    step=made,
                    total=total_steps,
                    audio_seconds=min(first.duration, made / total_steps * first.duration),
                    total_audio_seconds=first.duration,
                    elapsed=time.perf_counter() - started,
                )
            )

        fresh = decode_frames(
            engine,
            states,
            mask,
            prefix=context_codes,
            frames=new,
            request=first,
            weights=weights,
            batch=batch,
            generators=generators,
            greedy=greedy,
            report=report,
            cancel=cancel,
        )
        codes = fresh if codes is None else torch.cat([codes, fresh], dim=-1)
        done_steps += new + k_delay
    timings["decode"] = time.perf_counter() - t1
    check_cancel(cancel)
    if on_progress:
        on_progress(Progress(stage="decoding", message="decoding audio (EnCodec)"))
    t2 = time.perf_counter()
    audio = engine.codes_to_audio(codes)
    timings["audio_decoder"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    samples = round(first.duration * engine.sample_rate)
    results = []
    for i, r in enumerate(requests):
        take = audio[i]
        notes = []
        if source is not None:
            p = round(prefix.shape[-1] * engine.sample_rate / engine.frame_rate)
            take = join_continuation(source, take[:, p:], take[:, :p], engine.sample_rate)
            samples_i = source.shape[1] + samples
            notes.append(f"continued {Path(str(long.continue_from)).name} by {r.duration:g} s")
        else:
            samples_i = samples
        results.append(
            GeneratedAudio(
                audio=fit_length(take.astype(np.float32), samples_i),
                sample_rate=engine.sample_rate,
                request=r,
                seed=int(r.seed or 0),
                timings=dict(timings),
                notes=notes,
            )
        )
    return results


def plan_windows(
    wanted: int, window: int, overlap: int, *, prompt: int = 0
) -> list[tuple[int, int]]:
    """(context frames, new frames) per window, so that `wanted` new frames are made with at
    most `window` frames in view: the first window sees the `prompt` frames of a source file
    (if any), every later one the last `overlap` frames made so far."""
    if prompt >= window:
        raise BadInputError("the audio prompt fills the whole window; continue from less audio")
    plan = []
    made = 0
    while made < wanted:
        context = prompt if made == 0 else min(overlap, prompt + made)
        new = min(window - context, wanted - made)
        if new <= 0:
            raise BadInputError("the overlap leaves no room for new audio; use a smaller overlap")
        plan.append((context, new))
        made += new
    return plan


def decode_frames(
    engine: Any,
    states: Any,
    mask: Any,
    *,
    prefix: Any,
    frames: int,
    request: GenerationRequest,
    weights: Sequence[float],
    batch: int,
    generators: list[Any],
    greedy: bool,
    report: Any,
    cancel: threading.Event | None,
) -> Any:
    """`frames` new frames of codes (batch, codebooks, frames), continuing `prefix` (codes of
    the same shape, or None). The loop of `MusicGenEngine._decode_loop` with a prefill."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    decoder = engine.model.decoder
    k = engine.num_codebooks
    start = engine.start_token_id
    head = torch.full((batch * k, 1), start, dtype=torch.long, device=engine.device)
    prompt_len = 0
    if prefix is not None:
        prompt_len = int(prefix.shape[-1])
        head = torch.cat([head, prefix.reshape(batch * k, prompt_len).to(engine.device)], dim=-1)
    steps = frames + engine._channel_codebooks - 1
    ids, delay_mask = decoder.build_delay_pattern_mask(
        head, pad_token_id=start, max_length=prompt_len + 1 + steps
    )
    cfg = request.guidance_scale > 1
    copies = len(weights) + (1 if cfg else 0)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    current = ids
    sampling = sampling_settings(request, generators, greedy=greedy, rows_per_take=k)
    for step in range(steps):
        check_cancel(cancel)
        # First step: the whole code prompt at once (prefill); then one column at a time.
        masked = decoder.apply_delay_pattern_mask(current, delay_mask)
        step_ids = masked if step == 0 else masked[:, -1:]
        if copies > 1:
            step_ids = step_ids.repeat((copies, 1))
        out = decoder(
            input_ids=step_ids,
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].to(dtype=torch.float32)
        logits = _guide(logits, weights, request.guidance_scale if cfg else None)
        next_ids = next_tokens(logits, 1.0, sampling)  # guided above: no guidance here
        current = torch.cat([current, next_ids[:, None]], dim=-1)
        report(step + 1, steps)
    final = decoder.apply_delay_pattern_mask(current, delay_mask)
    codes = final[final != engine.pad_token_id].reshape(batch, k, -1)
    return codes[..., prompt_len:]


def _guide(logits: Any, weights: Sequence[float], scale: float | None) -> Any:
    """Rows are [condition 1; condition 2; ...; unconditional] (the last only with CFG)."""
    parts = logits.chunk(len(weights) + (1 if scale is not None else 0), dim=0)
    cond = parts[0] * weights[0] if len(weights) > 1 else parts[0]
    for part, w in zip(parts[1 : len(weights)], weights[1:], strict=True):
        cond = cond + part * w
    if scale is None:
        return cond
    uncond = parts[-1]
    return uncond + (cond - uncond) * scale


def _encode_source(engine: Any, path: Path, seconds: float) -> tuple[np.ndarray, Any]:
    """The file as the engine's rate and channels, and the EnCodec codes (1, K, frames) of its
    last `seconds`."""
    import torch

    from samplemind_gen.audio_io import read_audio
    from samplemind_gen.dsp import resample

    audio, sr = read_audio(path)
    if sr != engine.sample_rate:
        audio = resample(audio, sr, engine.sample_rate)
    if audio.shape[0] != engine.channels:
        audio = (
            np.repeat(audio.mean(axis=0, keepdims=True), engine.channels, axis=0)
            if engine.channels > 1
            else audio.mean(axis=0, keepdims=True)
        )
    audio = audio.astype(np.float32)
    hop = round(engine.sample_rate / engine.frame_rate)
    tail = min(audio.shape[1], int(seconds * engine.sample_rate))
    tail -= tail % hop
    if tail < hop:
        raise BadInputError(
            f"{path} is too short to continue (under {hop / engine.sample_rate:.2f} s)"
        )
    clip = audio[:, audio.shape[1] - tail :]
    encodec = engine.model.audio_encoder
    dtype = next(encodec.decoder.parameters()).dtype
    rows = []
    dropped = encodec.encoder is None
    if dropped:  # the engine keeps only EnCodec's decoder half; bring the encoder back a moment
        encodec.encoder = _load_audio_encoder(engine).to(engine.device, dtype)
    try:
        for ch in range(engine.channels):
            values = torch.from_numpy(clip[ch][None, None, :]).to(engine.device, dtype)
            encoded = encodec.encode(values, bandwidth=None)
            # (1, codebooks per channel, frames); residual VQ: the first ones are the coarse
            # codebooks MusicGen predicts, whatever bandwidth the codec defaults to.
            rows.append(encoded.audio_codes[0][:, : engine._channel_codebooks])
    finally:
        if dropped:
            encodec.encoder = None
    if engine.channels == 1:
        codes = rows[0]
    else:  # left/right interleaved, as MusicGen's stereo decoder expects
        left, right = rows
        codes = left.new_empty((1, left.shape[1] * 2, left.shape[2]))
        codes[:, ::2] = left
        codes[:, 1::2] = right
    return audio, codes


def _load_audio_encoder(engine: Any) -> Any:
    """EnCodec's encoder half, read from the checkpoint's safetensors files."""
    from safetensors.torch import load_file
    from transformers.models.encodec.modeling_encodec import EncodecEncoder

    folder = Path(str(getattr(engine.model, "name_or_path", "") or ""))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    prefix = "audio_encoder.encoder."
    state: dict[str, Any] = {}
    for file in files:
        for key, value in load_file(str(file)).items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                # Checkpoints saved before weight-norm parametrizations use weight_g/weight_v.
                name = name.replace("weight_g", "parametrizations.weight.original0")
                name = name.replace("weight_v", "parametrizations.weight.original1")
                state[name] = value
    if not state:
        raise BadInputError(
            f"the checkpoint in {folder} has no EnCodec encoder weights, which --continue needs"
        )
    encoder = EncodecEncoder(engine.model.config.audio_encoder)
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def join_continuation(
    source: np.ndarray, new: np.ndarray, decoded_prompt: np.ndarray, sample_rate: int
) -> np.ndarray:
    """The source file, then the new audio; the last few ms of the source crossfade into the
    model's own rendering of them, so the join has no step."""
    f = min(int(JOIN_CROSSFADE * sample_rate), source.shape[1], decoded_prompt.shape[1])
    if f == 0:
        return np.concatenate([source, new], axis=1)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, f))).astype(np.float32)
    blended = source[:, -f:] * (1 - ramp) + decoded_prompt[:, -f:] * ramp
    return np.concatenate([source[:, :-f], blended, new], axis=1).astype(np.float32)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "LongForm",
    "decode_frames",
    "generate_windowed",
    "join_continuation",
    "plan_windows",
]
