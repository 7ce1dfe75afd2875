"""EnCodec's decoder, faster (engines/encodec_fast.py): convolutions as matrix products (the same
audio as transformers' own modules, for MusicGen's codec and for the other options EnCodec has:
causal convolutions, zero padding, odd strides, group norm left alone), and the LSTM with fp16
recurrent weights on samplemind-gen's kernel in the packed CPU modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samplemind_gen.engines.encodec_fast import (
    MatmulConvTranspose1d,
    MatmulPointwiseConv1d,
    speed_up_decoder,
)
from samplemind_gen.engines.encodec_windows import WindowedDecoder, fold_weight_norm


def native_kernels_available() -> bool:
    from samplemind_gen.engines import native_kernels

    return native_kernels.available()


def decode(model, codes):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.decode(codes[None], audio_scales=[None]).audio_values


def kinds(decoder) -> dict[str, int]:  # type: ignore[no-untyped-def]
    names = [type(m).__name__ for m in decoder.modules()]
    return {n: names.count(n) for n in set(names)}


def test_musicgen_codec_decodes_the_same_audio(tiny_musicgen: Path):
    from transformers import MusicgenForConditionalGeneration

    def codec():  # type: ignore[no-untyped-def]
        model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen, dtype=torch.float32)
        return model.audio_encoder.eval()

    reference, fast = codec(), codec()
    codes = torch.randint(0, 64, (2, 4, 37), generator=torch.Generator().manual_seed(0))
    expected = decode(reference, codes)
    fold_weight_norm(fast.decoder)
    # 4 upsampling stages: a transposed convolution and a residual block (1x1 conv + shortcut).
    assert speed_up_decoder(fast.decoder) == 12
    found = kinds(fast.decoder)
    assert found["MatmulConvTranspose1d"] == 4 and found["MatmulPointwiseConv1d"] == 8
    assert "ConvTranspose1d" not in found
    assert speed_up_decoder(fast.decoder) == 0  # nothing left to swap
    got = decode(fast, codes)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6 * float(expected.abs().max()))


def test_the_windowed_decoder_and_its_stream_use_them(tiny_musicgen: Path):
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen, dtype=torch.float32)
    windowed = WindowedDecoder(model.audio_encoder)
    assert any(isinstance(m, MatmulConvTranspose1d) for m in windowed.after)


@pytest.mark.parametrize(
    ("causal", "pad_mode", "ratios", "norm"),
    [
        (True, "constant", [5, 3, 2], "weight_norm"),
        (False, "reflect", [3, 2], "weight_norm"),
        (True, "reflect", [4, 2], "time_group_norm"),
    ],
)
def test_other_encodec_options_decode_the_same_audio(causal, pad_mode, ratios, norm):
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(
        sampling_rate=8000,
        audio_channels=1,
        upsampling_ratios=ratios,
        codebook_size=32,
        hidden_size=16,
        num_filters=4,
        target_bandwidths=[12.0],
        use_causal_conv=causal,
        pad_mode=pad_mode,
        norm_type=norm,
        normalize=False,
        codebook_dim=16,
    )

    def codec():  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        return EncodecModel(config).eval()

    reference, fast = codec(), codec()
    quantizers = len(reference.quantizer.layers)
    codes = torch.randint(0, 32, (1, quantizers, 23), generator=torch.Generator().manual_seed(1))
    expected = decode(reference, codes)
    fold_weight_norm(fast.decoder)
    swapped = speed_up_decoder(fast.decoder)
    found = kinds(fast.decoder)
    if norm == "time_group_norm":  # not what the fast forms compute: left as they are
        assert swapped == 0 and "MatmulConvTranspose1d" not in found
    else:
        assert found["MatmulConvTranspose1d"] == len(ratios)
        assert found["MatmulPointwiseConv1d"] == 2 * len(ratios)
    got = decode(fast, codes)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6 * float(expected.abs().max()))


def test_fast_forms_refuse_what_they_do_not_compute():
    conv = torch.nn.ConvTranspose1d(4, 4, 3, 2)  # kernel is not twice the stride
    holder = type("EncodecConvTranspose1d", (torch.nn.Module,), {})()
    holder.conv, holder.norm_type = conv, "weight_norm"
    assert not MatmulConvTranspose1d.fits(holder)
    wide = type("EncodecConv1d", (torch.nn.Module,), {})()
    wide.conv, wide.norm_type = torch.nn.Conv1d(4, 4, 3), "weight_norm"
    assert not MatmulPointwiseConv1d.fits(wide)
    wide.conv = torch.nn.Conv1d(4, 4, 1)
    assert MatmulPointwiseConv1d.fits(wide)


needs_kernels = pytest.mark.skipif(
    not native_kernels_available(), reason="samplemind-gen's CPU kernels are not built here"
)


@needs_kernels
@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("hidden", [1024, 40])
def test_half_lstm_is_the_lstm_of_its_fp16_recurrent_weights(batch, hidden):
    """The kernel's LSTM equals nn.LSTM whose recurrent weights were rounded to fp16 (up to fp32
    summation order), carries its state across chunks, and is within fp16 rounding of the fp32
    LSTM."""
    from samplemind_gen.engines.encodec_fast import HalfLstm

    torch.manual_seed(batch)
    lstm = torch.nn.LSTM(hidden, hidden, 2).eval()
    fast = HalfLstm(lstm)
    assert HalfLstm.fits(lstm)
    rounded = torch.nn.LSTM(hidden, hidden, 2).eval()
    rounded.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        for layer in range(2):
            w = getattr(rounded, f"weight_hh_l{layer}")
            w.copy_(w.to(torch.float16).float())
    x = torch.randn(2, 11, batch, hidden)
    with torch.no_grad():
        state = exact_state = full_state = None
        for chunk in x:
            got, state = fast(chunk, state)
            exact, exact_state = rounded(chunk, exact_state)
            full, full_state = lstm(chunk, full_state)
            torch.testing.assert_close(got, exact, rtol=0, atol=2e-6)
            for a, b in zip(state, exact_state, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
            assert float((got - full).norm() / full.norm()) < 5e-4


@needs_kernels
def test_half_lstm_gives_the_same_result_on_any_number_of_threads():
    from samplemind_gen.engines.encodec_fast import HalfLstm

    torch.manual_seed(0)
    fast = HalfLstm(torch.nn.LSTM(256, 256, 2).eval())
    x = torch.randn(9, 2, 256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fast(x)[0]
        torch.set_num_threads(2)
        two = fast(x)[0]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@needs_kernels
def test_lstm_layer_refuses_what_it_cannot_take():
    gates = torch.zeros(3, 1, 4 * 64)
    w = torch.zeros(4 * 64, 64, dtype=torch.float16)
    h = torch.zeros(1, 64)
    with pytest.raises(RuntimeError, match="fp32"):
        torch.ops.samplemind.lstm_layer(gates.double(), w, h, h)
    with pytest.raises(RuntimeError, match="bf16 or fp16"):
        torch.ops.samplemind.lstm_layer(gates, w.float(), h, h)
    with pytest.raises(RuntimeError, match="padded"):
        torch.ops.samplemind.lstm_layer(gates, w[:, :32], h, h)
    with pytest.raises(RuntimeError, match="h0 and c0"):
        torch.ops.samplemind.lstm_layer(gates, w, torch.zeros(2, 64), h)


@needs_kernels
def test_packed_modes_stream_encodec_with_the_half_lstm(tiny_musicgen: Path, musicgen_engine):
    """bf16 (and the other packed CPU modes) decode with the fp16 LSTM; fp32 stays exact. The
    stream still equals the one-shot decode, and the audio is within fp16 rounding of fp32's."""
    from samplemind_gen.catalog import resolve_model
    from samplemind_gen.engines import LoadOptions, load_engine

    assert musicgen_engine.windowed.half_lstm is None
    engine = load_engine(resolve_model(str(tiny_musicgen)), LoadOptions(dtype="bfloat16"))
    windowed = engine.windowed
    assert windowed.half_lstm is not None
    # Swapped in for the nn.LSTM (whose fp32 recurrent weights are gone with it).
    codec = engine.model.audio_encoder
    assert not any(isinstance(m, torch.nn.LSTM) for m in codec.modules())
    codes = torch.randint(0, 64, (2, 4, 61), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = windowed.decode(codes)
        stream, pieces = windowed.stream(), []
        for n in [*range(5, 61, 9), 61]:
            piece = stream.push(codes[..., :n], final=n == 61)
            if piece is not None:
                pieces.append(piece)
        torch.testing.assert_close(torch.cat(pieces, dim=-1), whole, rtol=0, atol=1e-6)
        exact = musicgen_engine.windowed.decode(codes)
        # transformers' own one-shot decode runs through it too.
        own = codec.decode(codes[None], audio_scales=[None]).audio_values
    assert float((whole - exact).norm() / exact.norm()) < 1e-3
    torch.testing.assert_close(own, whole, rtol=0, atol=1e-5)
