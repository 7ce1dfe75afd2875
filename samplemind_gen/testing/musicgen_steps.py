"""The decode steps of loaded MusicGen engines, side by side, for tests that compare modes."""

from __future__ import annotations

from typing import Any


def stepped_logits(engines: Any, steps: int, prompt: str = "lofi hip hop drums") -> list[Any]:
    """The fp32 logits of each engine's first `steps` decode steps on the same random frames
    (one list of `steps` tensors per engine)."""
    import torch

    out = []
    for eng in engines:
        inputs = eng.processor(text=[prompt], return_tensors="pt")
        states, mask = eng._encode(inputs["input_ids"], inputs["attention_mask"], 3.0)
        eng.cached_decoder.begin(states, mask, steps)
        ids = torch.randint(
            0, 64, (2 * eng.num_codebooks, 1), generator=torch.Generator().manual_seed(0)
        )
        out.append([eng.cached_decoder.step(ids, t).float() for t in range(steps)])
        eng.cached_decoder.end()
    return out
