"""MusicGen's whole decode step in one CUDA graph.

On a GPU the decoder step is hundreds of tiny kernels, so the host (Python, kernel launches,
a sync to sample each token) is the bottleneck, not the GPU. `CudaTakeGraph` captures one
complete step after `CachedDecoder.begin`:

    ids of this column (delay pattern applied) -> decoder step (static shapes) -> guidance ->
    temperature / top-k / top-p -> one seeded draw per take -> ids written into the take's
    buffer -> position + 1

and the decode loop only replays it: one launch per step, no host sync per step. The take's
generators are registered with the graph, so each replay advances them exactly as the eager
step does (same seed, same take; tested on a GPU). Where the installed torch cannot register a
non-default generator, `capture_take_graph` returns None and the engine falls back to graphing
the decoder alone (`CudaGraphStep`).
"""

from __future__ import annotations

import logging
from typing import Any

from samplemind_gen.engines.musicgen_decoder import CachedDecoder
from samplemind_gen.engines.musicgen_sampling import next_tokens

log = logging.getLogger(__name__)


class TakeStep:
    """One full decode step with static shapes: reads column `position` of `current`
    (rows, steps + 1; column 0 the start token), writes the chosen ids into column
    `position + 1`, advances `position` (a 1-element device tensor). Runs eagerly anywhere (the
    CPU test of what the graph holds) and is what `CudaTakeGraph` captures."""

    def __init__(
        self,
        decoder: CachedDecoder,
        current: Any,
        delay_mask: Any,
        *,
        guidance_scale: float,
        sampling: dict[str, Any],
        step: Any = None,
    ) -> None:
        """`sampling`: `choose_tokens`' keyword arguments (greedy, temperature, top_k, top_p,
        generators, rows_per_take); `step`: the decoder step to call (default `step_static`)."""
        import torch

        self.current = current
        self.delay_mask = delay_mask
        self.cfg = guidance_scale > 1
        self.guidance_scale = guidance_scale
        self.sampling = sampling
        self.generators: list[Any] = list(sampling["generators"])
        self.step_fn = step or decoder.step_static
        self.position = torch.zeros(1, dtype=torch.long, device=current.device)

    def __call__(self) -> None:
        import torch

        pos = self.position
        column = self.delay_mask.index_select(1, pos)
        ids = torch.where(column == -1, self.current.index_select(1, pos), column)
        if self.cfg:
            ids = ids.repeat((2, 1))
        chosen = next_tokens(self.step_fn(ids, pos), self.guidance_scale, self.sampling)
        self.current.index_copy_(1, pos + 1, chosen.unsqueeze(1))
        pos.add_(1)

    replay = __call__


class CudaTakeGraph:
    """A `TakeStep` captured in a CUDA graph: `replay()` is one launch per decode step."""

    def __init__(self, take_step: TakeStep) -> None:
        import torch

        self.take_step = take_step
        generators = take_step.generators
        saved = [g.get_state() for g in generators]
        graph = torch.cuda.CUDAGraph()
        for g in generators:
            graph.register_generator_state(g)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
                for _ in range(2):
                    take_step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph):
                take_step()
            self.graph = graph
        finally:
            # Warm-up wrote junk ids into columns 1-2 and the cache's first slots, and drew from
            # the generators: rewind (also when capture failed and the caller falls back).
            # Step t writes column t + 1 before any step reads it.
            for g, state in zip(generators, saved, strict=True):
                g.set_state(state)
            take_step.position.zero_()

    def replay(self) -> None:
        self.graph.replay()


def capture_take_graph(take_step: TakeStep) -> Any:
    """`take_step` in a `CudaTakeGraph`, or None where this torch cannot put the take's
    generators in a graph (or the take is too short for capture's two warm-up steps)."""
    import torch

    if take_step.current.shape[1] < 3:
        return None
    if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        log.info("this torch cannot register generators with a CUDA graph: graphing the decoder")
        return None
    return CudaTakeGraph(take_step)


def compile_step(decoder: CachedDecoder) -> Any:
    """`decoder.step_static` compiled by Inductor (fused element-wise kernels), for capture in
    the take graph. The first take pays the compile (about a minute for musicgen-small)."""
    import torch

    return torch.compile(decoder.step_static, dynamic=False)
