"""The native next-token choice (kernels/sampling.cpp, `musicgen_sampling.sample_native`):
guidance, temperature and top-k with ties in one op, picking by inverse CDF from one uniform
number a row. Checked against a plain NumPy reading of the same rule, for its distribution, and
for the cases it hands back to PyTorch's path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samplemind_gen.engines import native_kernels
from samplemind_gen.engines.musicgen_sampling import next_tokens

pytestmark = pytest.mark.skipif(
    not native_kernels.available(), reason="samplemind-gen's CPU kernels are not built here"
)


def settings(top_k: int, seed: int, rows_per_take: int, **extra: object) -> dict[str, object]:
    return {
        "greedy": False,
        "temperature": 1.0,
        "top_k": top_k,
        "top_p": None,
        "generators": [torch.Generator().manual_seed(seed)],
        "rows_per_take": rows_per_take,
        **extra,
    }


def reference(logits: np.ndarray, scale: float, temperature: float, k: int, u: np.ndarray):
    """The rule in NumPy: guide, divide, keep every value >= the k-th largest, pick the first
    candidate (in vocabulary order) whose running sum of exp(v - max) passes u * total."""
    rows = logits.astype(np.float32)
    if scale > 1:
        cond, uncond = np.split(rows, 2)
        rows = uncond + (cond - uncond) * np.float32(scale)
    if temperature != 1:
        rows = rows / np.float32(temperature)
    picks = []
    for row, draw in zip(rows, u, strict=True):
        kth = np.sort(row)[::-1][k - 1]
        idx = np.nonzero(row >= kth)[0]
        w = np.exp((row[idx] - row.max()).astype(np.float32)).astype(np.float64)
        running = np.cumsum(w)
        past = np.nonzero(running > draw * running[-1])[0]
        picks.append(int(idx[past[0]] if len(past) else idx[-1]))
    return picks


@pytest.mark.parametrize(
    ("scale", "temperature", "k"), [(3.0, 1.0, 250), (1.0, 0.7, 50), (5.5, 1.3, 1)]
)
def test_picks_are_the_rule_applied_to_the_same_uniform_numbers(scale, temperature, k):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2 * 64 if scale > 1 else 64, 2048, generator=gen) * 3
    uniform = torch.rand(64, dtype=torch.float64, generator=gen)
    ids, broken, count = torch.ops.samplemind.sample_top_k(logits, scale, temperature, k, uniform)
    assert count == 0 and not broken.any() and ids.dtype == torch.long and ids.shape == (64,)
    assert ids.tolist() == reference(logits.numpy(), scale, temperature, k, uniform.numpy())


def test_draws_follow_the_softmax_over_the_k_largest():
    """20,000 draws of one row: only the 3 largest, as often as their softmax says; the same
    picks for the same seed."""
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 3.0, -2.0, 0.0, 1.5]]).repeat(20000, 1)
    picks = next_tokens(logits, 1.0, settings(3, 0, 20000))
    assert torch.equal(picks, next_tokens(logits, 1.0, settings(3, 0, 20000)))
    assert not torch.equal(picks, next_tokens(logits, 1.0, settings(3, 1, 20000)))
    assert set(picks.tolist()) == {4, 0, 7}
    expected = torch.tensor([3.0, 2.0, 1.5]).softmax(-1)
    counts = torch.bincount(picks, minlength=8)[[4, 0, 7]].float() / len(picks)
    assert torch.allclose(counts, expected, atol=0.015)


def test_guidance_and_temperature_shape_the_distribution():
    """Guided as uncond + (cond - uncond) * scale, then / temperature: the picks' frequencies
    are that row's softmax."""
    cond = torch.tensor([[1.0, 0.0, 0.5, -1.0]])
    uncond = torch.tensor([[0.5, 0.2, 0.5, 0.0]])
    draws = 20000
    logits = torch.cat([cond.repeat(draws, 1), uncond.repeat(draws, 1)])
    picks = next_tokens(logits, 2.0, settings(4, 3, draws, temperature=0.5))
    guided = (uncond + (cond - uncond) * 2.0) / 0.5
    counts = torch.bincount(picks, minlength=4).float() / draws
    assert torch.allclose(counts, guided.softmax(-1)[0], atol=0.015)


def test_ties_at_the_kth_value_are_all_candidates():
    tied = torch.tensor([[2.0, 1.0, 1.0, 0.0]]).repeat(3000, 1)  # top-2 keeps 3
    assert set(next_tokens(tied, 1.0, settings(2, 1, 3000)).tolist()) == {0, 1, 2}
    many = torch.cat([torch.tensor([[5.0]]), torch.ones(1, 40), torch.zeros(1, 10)], dim=1)
    picks = next_tokens(many.repeat(4000, 1) * 0.1, 1.0, settings(3, 2, 4000))
    assert set(picks.tolist()) == set(range(41))  # 40 ties at the 3rd value: no room limit


def test_bf16_logits_and_minus_infinity():
    logits = torch.tensor([[0.0, float("-inf"), 1.0, float("-inf")]], dtype=torch.bfloat16)
    picks = next_tokens(logits.repeat(500, 1), 1.0, settings(4, 5, 500))
    assert set(picks.tolist()) == {0, 2}  # -inf logits weigh nothing, even inside the top k


def test_a_take_with_nothing_to_weigh_takes_pytorchs_path_alone():
    """A NaN row (or all -inf) is counted, and only its take is redrawn by `choose_tokens`; the
    other take keeps the native pick."""
    gen = torch.Generator().manual_seed(0)
    good = torch.randn(4, 64, generator=gen)
    bad = good.clone()
    bad[1, 5] = float("nan")
    logits = torch.cat([good, bad])  # two takes of 4 rows, unguided
    sampling = settings(8, 0, 4)
    sampling["generators"] = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    uniform = torch.cat(
        [
            torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
            for s in (1, 2)
        ]
    )
    _, broken, count = torch.ops.samplemind.sample_top_k(logits, 1.0, 1.0, 8, uniform)
    assert count == 1 and broken.tolist() == [False] * 5 + [True] + [False] * 2
    picks = next_tokens(logits, 1.0, sampling)
    assert picks.shape == (8,)
    alone = next_tokens(good, 1.0, settings(8, 1, 4))
    assert torch.equal(picks[:4], alone)


def test_bad_arguments_are_refused():
    op = torch.ops.samplemind.sample_top_k
    logits = torch.randn(3, 16)
    with pytest.raises(RuntimeError, match="conditional; unconditional"):
        op(logits, 3.0, 1.0, 4, torch.rand(1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="uniform must be"):
        op(logits, 1.0, 1.0, 4, torch.rand(3))
    with pytest.raises(RuntimeError, match="must be > 0"):
        op(logits, 1.0, 0.0, 4, torch.rand(3, dtype=torch.float64))


def test_next_tokens_keeps_top_p_and_greedy_on_pytorchs_path():
    logits = torch.randn(8, 2048, generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        next_tokens(logits, 1.0, settings(250, 0, 4, greedy=True)), logits.argmax(-1)
    )
    nucleus = next_tokens(logits, 3.0, settings(250, 0, 4, top_p=0.5))
    assert nucleus.shape == (4,)
