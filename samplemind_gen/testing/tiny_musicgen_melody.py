"""A tiny random-weight MusicGen-Melody checkpoint (`MusicgenMelodyForConditionalGeneration`),
saved with `save_pretrained` plus its tokenizer, for tests of melody conditioning."""

from __future__ import annotations

from pathlib import Path

from samplemind_gen.testing.tiny_musicgen import TINY, MusicGenSize, train_t5_tokenizer


def build_musicgen_melody(folder: Path, *, size: MusicGenSize = TINY, seed: int = 0) -> Path:
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_t5_tokenizer(min(size.t5_vocab, 200))
    text = T5Config(
        vocab_size=max(size.t5_vocab, len(tokenizer)),
        d_model=size.t5_d_model,
        d_kv=size.t5_d_model // size.t5_heads,
        d_ff=size.t5_ff,
        num_layers=size.t5_layers,
        num_heads=size.t5_heads,
        pad_token_id=0,
        eos_token_id=1,
    )
    audio = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=size.vocab,
        hidden_size=size.encodec_hidden,
        num_filters=size.encodec_filters,
        target_bandwidths=[2.2],
        use_causal_conv=False,
        normalize=False,
        codebook_dim=size.encodec_hidden,
    )
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        ffn_dim=size.ffn,
        num_codebooks=size.codebooks,
        audio_channels=1,
        max_position_embeddings=size.max_position,
        pad_token_id=size.vocab,
        bos_token_id=size.vocab,
    )
    config = MusicgenMelodyConfig(  # type: ignore[call-arg]
        text_encoder=text.to_dict(),
        audio_encoder=audio.to_dict(),
        decoder=decoder.to_dict(),
        decoder_start_token_id=size.vocab,
        pad_token_id=size.vocab,
        num_chroma=12,
        chroma_length=235,
    )
    model = MusicgenMelodyForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
        # At the default init (std 0.02) the chroma barely moves the tiny decoder: make the
        # melody matter, so tests can see it.
        model.audio_enc_to_dec_proj.weight.normal_(std=1.0)
    gen = model.generation_config
    gen.decoder_start_token_id = size.vocab
    gen.pad_token_id = size.vocab
    gen.max_length = 1500
    gen.do_sample = True
    gen.guidance_scale = 3.0
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
