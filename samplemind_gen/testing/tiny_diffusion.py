"""Tiny random-weight diffusers audio pipelines (AudioLDM, AudioLDM 2, Stable Audio Open), built
from small component configs and saved with `save_pretrained` (safetensors), so they load through
exactly the same `from_pretrained(folder)` path as a downloaded checkpoint.

They keep the real sample rates, channel counts, mel layout and hop sizes of the Hub checkpoints
(16 kHz mono with 64 mel bins at 100 frames/s; 44.1 kHz stereo), so durations and shapes are
real; the weights are noise. Each builds in about a second and makes a second of audio in a few
steps in well under a second on a laptop CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from samplemind_gen.testing.tiny_musicgen import WORDS, train_t5_tokenizer

_SFX_TEXT = (
    "hammer hitting wooden surface door slam footsteps gravel thunder glass breaking dog barking "
    "engine whoosh riser impact explosion birds forest ocean waves crackling fire laser zap"
)
SOUND_WORDS = [*WORDS, *_SFX_TEXT.split()]

# The vocoders of the Hub LDM checkpoints: 16 kHz, hop 160 (100 mel frames per second), 64 bins.
LDM_SAMPLE_RATE = 16000
LDM_MEL_BINS = 64
LDM_UPSAMPLE_RATES = [8, 5, 4]  # product 160, as the real [5, 4, 2, 2, 2], in fewer layers


def train_roberta_tokenizer(vocab_size: int = 300):  # type: ignore[no-untyped-def]
    """A RoBERTa (byte-level BPE) tokenizer trained locally, as CLAP's text side expects.

    `RobertaTokenizer(vocab_file=..., merges_file=...)` silently ignores its files in
    transformers 5, so the trained vocabulary is saved and loaded back with `from_pretrained`.
    The special tokens get ids 0..4, matching a CLAP text config with bos 0, pad 1, eos 2."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(SOUND_WORDS[i:] + SOUND_WORDS[:i]) for i in range(len(SOUND_WORDS))]
    bpe.train_from_iterator(
        corpus,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        return RobertaTokenizer.from_pretrained(tmp, model_max_length=77)


def _t5_tokenizer(max_length: int):  # type: ignore[no-untyped-def]
    tokenizer = train_t5_tokenizer(200)
    tokenizer.model_max_length = max_length
    return tokenizer


def _t5_encoder(vocab_size: int, d_model: int = 32):  # type: ignore[no-untyped-def]
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // 2,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


def _clap_text_config(hidden: int, projection_dim: int, vocab_size: int) -> dict[str, Any]:
    return dict(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=80,
        projection_dim=projection_dim,
        layer_norm_eps=1e-5,
    )


def _ldm_vocoder():  # type: ignore[no-untyped-def]
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    config = SpeechT5HifiGanConfig(
        model_in_dim=LDM_MEL_BINS,
        sampling_rate=LDM_SAMPLE_RATE,
        upsample_initial_channel=16,
        upsample_rates=LDM_UPSAMPLE_RATES,
        upsample_kernel_sizes=[2 * r for r in LDM_UPSAMPLE_RATES],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    )
    return SpeechT5HifiGan(config).eval()


def _make_audible(vocoder, vae, latent_channels: int = 4) -> None:  # type: ignore[no-untyped-def]
    """HiFi-GAN's init (std 0.01 per layer) makes a random vocoder output ~1e-7 of DC. Re-init
    the convolutions, drop their biases, make the last kernel zero-sum (no DC) and scale it so
    a decoded random latent comes out at about -17 dBFS RMS: noise that meters and analysers
    treat like real audio."""
    import torch

    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                module.reset_parameters()
                if module.bias is not None:
                    module.bias.zero_()
        post = vocoder.conv_post.weight
        post.sub_(post.mean(dim=-1, keepdim=True))
        frames = 100 // vae_scale(vae)
        bins = LDM_MEL_BINS // vae_scale(vae)
        mel = vae.decode(torch.randn(1, latent_channels, frames, bins)).sample
        rms = vocoder(mel.squeeze(1)).std().item()
        post.mul_(0.14 / max(rms, 1e-12))


def vae_scale(vae) -> int:  # type: ignore[no-untyped-def]
    return int(2 ** (len(vae.config.block_out_channels) - 1))


def _ldm_vae():  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    # Two levels: a VAE scale factor of 2 (the Hub checkpoints use 4), 4 latent channels.
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )


def _ldm_scheduler():  # type: ignore[no-untyped-def]
    from diffusers import DDIMScheduler

    # The Hub LDM checkpoints ship a DDIM scheduler with these betas.
    return DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        num_train_timesteps=1000,
    )


def build_audioldm(folder: Path, *, seed: int = 0) -> Path:
    """Build and save a random-weight `AudioLDMPipeline` (16 kHz mono)."""
    import torch
    from diffusers import AudioLDMPipeline, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = train_roberta_tokenizer()
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(**_clap_text_config(16, 16, len(tokenizer)))
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        attention_head_dim=4,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True,
    )
    vae, vocoder = _ldm_vae(), _ldm_vocoder()
    _make_audible(vocoder, vae)
    pipe: Any = AudioLDMPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_ldm_scheduler(),
        vocoder=vocoder,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_audioldm2(
    folder: Path, *, language_model_class: str = "GPT2Model", seed: int = 0
) -> Path:
    """Build and save a random-weight `AudioLDM2Pipeline` (16 kHz mono).

    `language_model_class="GPT2Model"` is what the Hub checkpoints declare (and what the stock
    pipeline can no longer run with transformers 5); "GPT2LMHeadModel" holds the same weights
    under the class the pipeline expects."""
    import torch
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2Model,
    )

    if language_model_class not in ("GPT2Model", "GPT2LMHeadModel"):
        raise ValueError(
            f"language_model_class must be GPT2Model or GPT2LMHeadModel, not {language_model_class}"
        )
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = train_roberta_tokenizer()
    tokenizer_2 = _t5_tokenizer(32)
    text_config = ClapTextConfig(**_clap_text_config(16, 16, len(tokenizer)))
    audio_config = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        layer_norm_eps=1e-5,
        depths=[2, 2],
        num_attention_heads=[2, 2],
        num_hidden_layers=2,
        hidden_size=32,
        patch_embeds_hidden_size=16,
        projection_dim=16,
        patch_size=2,
        patch_stride=2,
        patch_embed_input_channels=4,
    )
    clap = ClapModel(
        ClapConfig(
            text_config=text_config.to_dict(),
            audio_config=audio_config.to_dict(),
            projection_dim=16,
        )
    )
    # CLAP ranks candidates at 48 kHz; a long hop keeps the mel small enough for the tiny
    # Swin tower (the real extractor uses hop 480 for a 256-wide spectrogram input).
    feature_extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=7900)
    text_encoder_2 = _t5_encoder(len(tokenizer_2), d_model=32)
    # The vocabulary is never used (the pipeline feeds embeddings), so keep it small.
    gpt2_config = GPT2Config(
        n_embd=16,
        n_head=2,
        n_layer=2,
        vocab_size=64,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    gpt2_config.max_new_tokens = 8
    language_model = (GPT2Model if language_model_class == "GPT2Model" else GPT2LMHeadModel)(
        gpt2_config
    ).eval()
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16
    )
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
        attention_head_dim=4,
    )
    vae, vocoder = _ldm_vae(), _ldm_vocoder()
    _make_audible(vocoder, vae)
    pipe: Any = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=clap,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=_ldm_scheduler(),
        vocoder=vocoder,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _debias_oobleck(vae, latent_channels: int) -> None:  # type: ignore[no-untyped-def]
    """A random Oobleck decoder outputs a large DC offset; a zero-sum last kernel removes it,
    and its weight-norm gain sets the level to about -17 dBFS RMS, like `_make_audible`."""
    import torch

    conv = vae.decoder.conv2
    with torch.no_grad():
        direction = getattr(conv, "weight_v", None)
        gain = getattr(conv, "weight_g", None)
        if direction is None or gain is None:  # pragma: no cover - other weight-norm styles
            return
        direction.sub_(direction.mean(dim=-1, keepdim=True))
        rms = vae.decode(torch.randn(1, latent_channels, 32)).sample.std().item()
        gain.mul_(0.14 / max(rms, 1e-12))


# Stable Audio Open's scheduler settings (CosineDPMSolverMultistepScheduler on the Hub).
STABLE_AUDIO_SCHEDULER = dict(
    sigma_min=0.3,
    sigma_max=500.0,
    sigma_data=1.0,
    sigma_schedule="exponential",
    num_train_timesteps=1000,
    solver_order=2,
    prediction_type="v_prediction",
    rho=7.0,
    solver_type="midpoint",
    lower_order_final=True,
    euler_at_final=False,
    final_sigmas_type="zero",
)


def build_stable_audio(folder: Path, *, max_seconds: float = 3.0, seed: int = 0) -> Path:
    """Build and save a random-weight `StableAudioPipeline` (44.1 kHz stereo).

    Stable Audio always denoises its full latent window and crops to the requested length; the
    tiny window holds `max_seconds` (the real one about 47 s). The scheduler config names
    `CosineDPMSolverMultistepScheduler`, as on the Hub, even when `torchsde` is missing here."""
    import json

    import torch
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    folder = Path(folder)
    torch.manual_seed(seed)
    sample_rate = 44100
    downsampling = [8, 16, 16]  # hop 2048, as the real [2, 4, 4, 8, 8]
    hop = 8 * 16 * 16
    latent_channels = 4
    tokenizer = _t5_tokenizer(32)
    text_encoder = _t5_encoder(len(tokenizer), d_model=16)
    vae = AutoencoderOobleck(
        encoder_hidden_size=4,
        downsampling_ratios=downsampling,
        channel_multiples=[1, 2, 2],
        decoder_channels=4,
        decoder_input_channels=latent_channels,
        audio_channels=2,
        sampling_rate=sample_rate,
    )
    _debias_oobleck(vae, latent_channels)
    transformer = StableAudioDiTModel(
        sample_size=int(max_seconds * sample_rate / hop) + 1,
        in_channels=latent_channels,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=latent_channels,
        cross_attention_dim=16,
        time_proj_dim=16,
        global_states_input_dim=32,
        cross_attention_input_dim=16,
    )
    projection_model = StableAudioProjectionModel(
        text_encoder_dim=16, conditioning_dim=16, min_value=0, max_value=512
    )
    # The pipeline's __init__ wants a scheduler object; which one does not matter, because the
    # saved config is rewritten to the Hub's class below (so this works without torchsde).
    from diffusers import EDMDPMSolverMultistepScheduler

    pipe: Any = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection_model,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=EDMDPMSolverMultistepScheduler(**STABLE_AUDIO_SCHEDULER),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "CosineDPMSolverMultistepScheduler"]
    index_path.write_text(json.dumps(index, indent=2))
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config = {k: v for k, v in config.items() if k.startswith("_") or k in STABLE_AUDIO_SCHEDULER}
    config["_class_name"] = "CosineDPMSolverMultistepScheduler"
    config_path.write_text(json.dumps(config, indent=2))
    return folder
