"""One prompt's cross-attention folded into two small linears (`CachedDecoder._folded_cross`,
kernels/step_ops.cpp `folded_cross`): the same logits as the attention it replaces, within each
packed mode's own rounding, and used only where every prompted row attends to the same prompt
and the folded weights are fewer bytes than the projections they replace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samplemind_gen.engines import native_kernels

needs_kernels = pytest.mark.skipif(
    not native_kernels.available(), reason=f"no native kernels here: {native_kernels.reason()}"
)

MODES = {"bf16": {"dtype": "bfloat16"}, "int8": {"quantize": "int8"}, "int4": {"quantize": "int4"}}


@pytest.fixture(scope="module")
def wide_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight MusicGen with musicgen-small's head size (64) and 4 heads: wide enough
    that a short prompt's folded weights are fewer bytes than the two projections."""
    from samplemind_gen.testing.tiny_musicgen import MusicGenSize, build_musicgen

    size = MusicGenSize(hidden=256, layers=2, heads=4, ffn=512)
    return build_musicgen(tmp_path_factory.mktemp("wide-musicgen") / "musicgen-wide", size=size)


def _decoder(checkpoint: Path, mode: str):  # type: ignore[no-untyped-def]
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    options = LoadOptions(**MODES[mode]) if mode in MODES else LoadOptions(dtype="float32")
    return load_engine(resolve_model(str(checkpoint)), options).cached_decoder


def _guided_inputs(hidden: int, tokens: int = 5, takes: int = 1, prompts: int = 1):  # type: ignore[no-untyped-def]
    """Encoder states and mask as guidance builds them: `takes` prompted rows (of `prompts`
    different prompts, in turn), then as many unconditional rows, all padding."""
    gen = torch.Generator().manual_seed(0)
    different = [torch.randn(tokens, hidden, generator=gen) for _ in range(prompts)]
    states = torch.zeros(2 * takes, tokens, hidden)
    mask = torch.zeros(2 * takes, tokens, dtype=torch.long)
    for t in range(takes):
        states[t] = different[t % prompts]
        mask[t] = 1
    return states, mask


def _logits(decoder, states, mask, fold: bool, steps: int = 12) -> torch.Tensor:  # type: ignore[no-untyped-def]
    decoder.fold_cross = fold
    decoder.begin(states, mask, steps)
    assert decoder.folded == fold
    gen = torch.Generator().manual_seed(1)
    rows = states.shape[0] * decoder.codebooks
    out = torch.stack(
        [
            decoder.step(torch.randint(0, 64, (rows, 1), generator=gen), p).float()
            for p in range(steps)
        ]
    )
    decoder.end()
    return out


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "int8", "int4"])
def test_the_folded_step_is_as_close_to_fp32_as_the_attention_it_replaces(
    wide_musicgen: Path, mode: str
):
    """Over 12 steps of a guided take: the folded step's logits against the unfolded step's
    (the same math, associated otherwise) and both against the fp32 reference."""
    states, mask = _guided_inputs(256)
    reference = _logits(_decoder(wide_musicgen, "fp32"), states, mask, fold=False)
    decoder = _decoder(wide_musicgen, mode)
    folded = _logits(decoder, states, mask, fold=True)
    unfolded = _logits(decoder, states, mask, fold=False)
    assert _err(folded, unfolded) < {"bf16": 0.03, "int8": 0.03, "int4": 0.06}[mode]
    assert _err(folded, reference) <= 1.1 * _err(unfolded, reference) + 0.002


@needs_kernels
def test_each_prompt_of_a_batch_folds_on_its_own(wide_musicgen: Path):
    decoder = _decoder(wide_musicgen, "int8")
    states, mask = _guided_inputs(256, takes=4)  # --variations 4: one prompt, four seeds
    decoder.begin(states, mask, 4)
    assert decoder.folded
    assert decoder._layers_call[5].tolist() == [0, 0, 0, 0, -1, -1, -1, -1]
    decoder.end()
    states, mask = _guided_inputs(256, takes=3, prompts=2)
    decoder.begin(states, mask, 4)
    assert decoder.folded
    assert decoder._layers_call[5].tolist() == [0, 1, 0, -1, -1, -1]
    assert len(decoder._layers_call[4]) == 2 * 8 * len(decoder.layers)
    assert decoder._fold_cache == []  # only a one-prompt take's fold is kept for the next
    decoder.end()


@pytest.mark.parametrize("mode", ["bf16", "int8"])
@needs_kernels
def test_a_take_steps_the_same_alone_and_among_other_prompts(wide_musicgen: Path, mode: str):
    """A take's logits do not depend on the rest of its batch: prompts that fold (each its own
    A and B), a prompt too long to fold (its attention on its rows alone), padding."""
    decoder = _decoder(wide_musicgen, mode)
    gen = torch.Generator().manual_seed(5)
    short, other, long = (torch.randn(n, 256, generator=gen) for n in (5, 7, 80))
    alone_states, alone_mask = torch.zeros(2, 5, 256), torch.zeros(2, 5, dtype=torch.long)
    alone_states[0], alone_mask[0] = short, 1
    batch_states, batch_mask = torch.zeros(6, 80, 256), torch.zeros(6, 80, dtype=torch.long)
    for row, prompt in enumerate((long, short, other)):
        batch_states[row, : len(prompt)], batch_mask[row, : len(prompt)] = prompt, 1

    def steps(states, mask, rows: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
        decoder.begin(states, mask, 6)
        picked = []
        gen = torch.Generator().manual_seed(1)
        codes = torch.randint(0, 64, (6, 2, decoder.codebooks), generator=gen)
        for p in range(6):
            ids = torch.zeros(states.shape[0], decoder.codebooks, dtype=torch.long)
            ids[rows] = codes[p]
            logits = decoder.step(ids.reshape(-1, 1), p).reshape(
                states.shape[0], decoder.codebooks, -1
            )
            picked.append(logits[rows])
        groups = decoder._layers_call[5].tolist()
        decoder.end()
        return torch.stack(picked), groups

    alone, alone_groups = steps(alone_states, alone_mask, [0, 1])
    batched, batch_groups = steps(batch_states, batch_mask, [1, 4])
    assert alone_groups == [0, -1] and batch_groups == [-2, 0, 1, -1, -1, -1]
    assert torch.equal(alone, batched)


@needs_kernels
def test_the_fold_is_left_where_it_reads_more_bytes_or_is_switched_off(
    wide_musicgen: Path, monkeypatch: pytest.MonkeyPatch
):
    """An 80-token prompt's folded weights (A: 4 heads x 80 tokens x 256 in int8, B: 256 x 320 in
    bf16) outgrow the int8 projections and the prompt's keys and values they replace; with
    SAMPLEMIND_GEN_FOLD_CROSS=0 nothing folds."""
    states, mask = _guided_inputs(256, tokens=80)
    decoder = _decoder(wide_musicgen, "int8")
    decoder.begin(states, mask, 4)
    assert not decoder.folded and decoder._layers_call is not None
    assert native_kernels.label().endswith("+fold")  # the recipe says the step folds
    monkeypatch.setenv("SAMPLEMIND_GEN_FOLD_CROSS", "0")
    assert not native_kernels.label().endswith("+fold")
    decoder = _decoder(wide_musicgen, "int8")
    states, mask = _guided_inputs(256)
    decoder.begin(states, mask, 4)
    assert not decoder.folded


@needs_kernels
@pytest.mark.parametrize("mode", ["bf16", "int8", "int4", "fp16"])
def test_dense_weights_are_what_the_kernels_multiply_by(wide_musicgen: Path, mode: str):
    """Each packed kernel applied to the identity rows gives its `dense()` weights (plus the
    bias), and `levels()` times its row scales is them: the weights the fold multiplies the
    prompt's keys and values by."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    options = LoadOptions(dtype="float16") if mode == "fp16" else LoadOptions(**MODES[mode])
    decoder = load_engine(resolve_model(str(wide_musicgen)), options).cached_decoder
    kernel = decoder.layers[0].encoder_attn.q_proj.kernel
    eye = torch.eye(kernel.in_features)
    if mode == "bf16":
        eye = eye.to(torch.bfloat16)  # bf16 activations; ones and zeros are exact in bf16
    out = kernel(eye.unsqueeze(1)).float().squeeze(1)
    if kernel.bias is not None:
        out = out - kernel.bias
    assert _err(out, kernel.dense().T) < 1e-3
    levels, scales = kernel.levels()  # what the fold multiplies in bf16 where that is exact
    weights = levels.float() * (scales[:, None] if scales is not None else 1.0)
    assert torch.equal(weights, kernel.dense())


@needs_kernels
def test_a_prompt_again_reuses_its_folded_weights(wide_musicgen: Path):
    """Regenerating a prompt (new seeds, more variations) reuses the fold built for it, with
    the same logits as a fresh build; a new prompt builds its own."""
    decoder = _decoder(wide_musicgen, "bf16")
    states, mask = _guided_inputs(256)
    first = _logits(decoder, states, mask, fold=True)
    [(_, kept)] = decoder._fold_cache
    variations, variations_mask = _guided_inputs(256, takes=4)  # the same prompt, 4 takes
    decoder.begin(variations, variations_mask, 4)
    assert decoder.folded and decoder._fold_cache[0][1] is kept
    decoder.end()
    assert torch.equal(_logits(decoder, states, mask, fold=True), first)
    other = states.clone()
    other[0] += 1.0
    decoder.begin(other, mask, 4)
    assert decoder.folded and decoder._fold_cache[0][1] is not kept
    decoder._fold_cache = []  # a fresh build gives the same logits as the reused one
    assert torch.equal(_logits(decoder, states, mask, fold=True), first)
