"""Next-token choice for MusicGen: classifier-free guidance, temperature, top-k, top-p, with one
seeded generator per take so a take in a batch comes out the same as alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Candidates past top-k kept for ties at the k-th largest logit (bf16 logits tie often: in 2 of
# 3 steps of an int4 take one of the 4 rows had a tie there).
TIE_ROOM = 16


def sampling_settings(
    request: Any, generators: Sequence[Any], *, greedy: bool, rows_per_take: int
) -> dict[str, Any]:
    """`choose_tokens`' / `next_tokens`' keyword settings for a request's takes."""
    return {
        "greedy": greedy,
        "temperature": request.temperature,
        "top_k": request.top_k,
        "top_p": request.top_p,
        "generators": list(generators),
        "rows_per_take": rows_per_take,
    }


def apply_guidance(logits: Any, scale: float) -> Any:
    """Rows are [conditional; unconditional]; returns the guided conditional half."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + (cond - uncond) * scale


def filter_logits(logits: Any, *, temperature: float, top_k: int, top_p: float | None) -> Any:
    """Temperature, then top-k, then top-p, as transformers' warpers do (same order, same ties)."""
    import torch

    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k > 0:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k)[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    return logits


def choose_tokens(
    logits: Any,
    *,
    greedy: bool,
    temperature: float,
    top_k: int,
    top_p: float | None,
    generators: Sequence[Any],
    rows_per_take: int,
) -> Any:
    """Pick one token per row of `logits` (takes * rows_per_take, vocab)."""
    import torch

    if greedy:
        return logits.argmax(dim=-1)
    if top_p is None and 0 < top_k < logits.size(-1) and logits.device.type == "cpu":
        scaled = logits / temperature if temperature != 1.0 else logits
        picked = draw_top_k(scaled, top_k, generators, rows_per_take)
        if picked is not None:
            return picked
    logits = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    probs = logits.softmax(dim=-1)
    picks = [
        draw(probs[i * rows_per_take : (i + 1) * rows_per_take], g)
        for i, g in enumerate(generators)
    ]
    return torch.cat(picks, dim=0)


def next_tokens(logits: Any, guidance_scale: float, sampling: dict[str, Any]) -> Any:
    """The step's chosen ids from the decoder's logits (any dtype): in fp32, guided when
    `guidance_scale` > 1, then `choose_tokens(**sampling)`. The eager loop and the CUDA graph's
    step share it. Top-k sampling on a CPU runs in one native op (`sample_native`) where
    samplemind-gen's kernels are built."""
    import torch

    if _native_top_k(logits, sampling):
        return sample_native(logits, guidance_scale, sampling)
    logits = logits.to(torch.float32)
    if guidance_scale > 1:
        logits = apply_guidance(logits, guidance_scale)
    return choose_tokens(logits, **sampling)


def draw(probs: Any, generator: Any) -> Any:
    """One index per row of `probs`, as `torch.multinomial(probs, 1, generator=...)` draws it
    (its one-sample path: argmax of p / q with q ~ Exp(1); the same draws, tested), without
    multinomial's host-side validity check, so it runs inside a CUDA graph with no sync."""
    import torch

    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(dim=-1)


def draw_top_k(
    logits: Any, top_k: int, generators: Sequence[Any], rows_per_take: int
) -> Any | None:
    """`choose_tokens`' top-k sampling with the noise drawn for the candidates only: the same
    distribution (the softmax over every logit at or above the k-th largest, ties included, as
    transformers' top-k warper keeps them), but on a CPU 4 x ~266 exponential draws instead of
    4 x 2048 and an unsorted top-k: a step's sampling ~0.6 -> ~0.25 ms. The candidates are the
    k + TIE_ROOM largest; None (take the full path) when ties at the k-th value might reach past
    them. CPU only (that check reads a value back, which a CUDA graph cannot)."""
    import torch

    room = min(top_k + TIE_ROOM, logits.size(-1))
    values, indices = torch.topk(logits, room, sorted=False)
    kth = torch.topk(values, top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    if room < logits.size(-1) and bool((values.amin(dim=-1, keepdim=True) >= kth).any()):
        return None
    probs = values.masked_fill(values < kth, float("-inf")).softmax(dim=-1)
    picks = [
        draw(probs[i * rows_per_take : (i + 1) * rows_per_take], g)
        for i, g in enumerate(generators)
    ]
    return indices.gather(-1, torch.cat(picks, dim=0).unsqueeze(-1)).squeeze(-1)


def _native_top_k(logits: Any, sampling: dict[str, Any]) -> bool:
    """Whether `sample_native` takes this step: top-k sampling (no top-p) on a CPU, with
    samplemind-gen's kernels built."""
    if sampling["greedy"] or sampling["top_p"] is not None or logits.device.type != "cpu":
        return False
    if not 0 < sampling["top_k"] < logits.size(-1):
        return False
    from samplemind_gen.engines import native_kernels

    return native_kernels.available()


def sample_native(logits: Any, guidance_scale: float, sampling: dict[str, Any]) -> Any:
    """`next_tokens` for top-k sampling in one native op (kernels/sampling.cpp: guidance,
    temperature, the top-k candidates with their ties, and the pick, one pass per row): the
    softmax's distribution over the candidates, as `choose_tokens` draws from it, picked by
    inverse CDF from one uniform number a row of the take's generator (instead of one Exp(1)
    number a candidate): ~0.05 ms a step instead of ~0.45 in the decode loop. A take with a row
    that has nothing to weigh (NaN or all -inf logits) takes `choose_tokens`' path after its
    draw."""
    import torch

    per_take = sampling["rows_per_take"]
    draws = [torch.rand(per_take, dtype=torch.float64, generator=g) for g in sampling["generators"]]
    ids, broken, count = torch.ops.samplemind.sample_top_k(
        logits,
        float(guidance_scale),
        float(sampling["temperature"]),
        sampling["top_k"],
        draws[0] if len(draws) == 1 else torch.cat(draws),
    )
    if count:
        guided = logits.to(torch.float32)
        if guidance_scale > 1:
            guided = apply_guidance(guided, guidance_scale)
        for i, g in enumerate(sampling["generators"]):
            rows = slice(i * per_take, (i + 1) * per_take)
            if bool(broken[rows].any()):
                ids[rows] = choose_tokens(guided[rows], **{**sampling, "generators": [g]})
    return ids
