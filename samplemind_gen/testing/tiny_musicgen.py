"""Tiny (or real-architecture) random-weight MusicGen checkpoints, saved with `save_pretrained`
so they load through exactly the same `from_pretrained(folder)` path as a downloaded model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORDS = (  # noqa: SIM905 - words read better as one string
    "lofi hip hop drums bass synth pad ambient techno house kick snare hat piano guitar strings "
    "warm dark bright punchy dusty vinyl jazz chords melody loop groove bpm minor major slow fast "
    "cinematic texture field recording foley rain wind orchestral epic trap boom bap reggae funk"
).split()

# Words of everyday prompts, learnt as whole tokens by the real-architecture checkpoints'
# tokenizer, so that a prompt costs about as many tokens as with t5-base's (which splits rarer
# words into two or three pieces); the tiny checkpoints keep their 200-token vocabulary.
PROMPT_WORDS = (  # noqa: SIM905
    "with a an the and of in on for to from at by deep heavy soft lush crackle beat beats drum "
    "vocal vocals energetic chill happy sad upbeat dreamy 80s 90s retro sound music track song "
    "analog distorted clean reverb delay lead arp sub bassline tempo key tape hiss saturated "
    "rhythm percussion lofi"
).split()


@dataclass(frozen=True)
class MusicGenSize:
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 64
    vocab: int = 64
    codebooks: int = 4
    t5_d_model: int = 32
    t5_layers: int = 2
    t5_heads: int = 2
    t5_ff: int = 64
    t5_vocab: int = 200
    encodec_hidden: int = 16
    encodec_filters: int = 4
    max_position: int = 2048


TINY = MusicGenSize()
# musicgen-small: decoder 1024 hidden, 24 layers, 16 heads, ffn 4096, 4 codebooks of 2048; t5-base.
SMALL = MusicGenSize(
    hidden=1024,
    layers=24,
    heads=16,
    ffn=4096,
    vocab=2048,
    codebooks=4,
    t5_d_model=768,
    t5_layers=12,
    t5_heads=12,
    t5_ff=3072,
    t5_vocab=32128,
    encodec_hidden=128,
    encodec_filters=64,
)


def train_t5_tokenizer(vocab_size: int = 200):  # type: ignore[no-untyped-def]
    """A T5-style tokenizer trained locally with `tokenizers` (no sentencepiece, no Hub)."""
    from tokenizers import Tokenizer, models, normalizers
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    trainer = UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    _t5_pieces(tok)
    tok.train_from_iterator(corpus, trainer=trainer)
    return _t5_tokenizer(tok)


def _t5_pieces(tok) -> None:  # type: ignore[no-untyped-def]
    """T5's word boundaries: "\u2581" before each word, as sentencepiece marks them."""
    from tokenizers import decoders, pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()


def _t5_tokenizer(tok):  # type: ignore[no-untyped-def]
    """`tok` ending each text with </s>, as a transformers T5 tokenizer (<pad> 0, </s>, <unk>)."""
    from tokenizers import processors
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]

    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        extra_ids=0,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def build_musicgen(
    folder: Path, *, stereo: bool = False, size: MusicGenSize = TINY, seed: int = 0
) -> Path:
    """Build and save a random-weight MusicGen checkpoint (safetensors) plus its processor."""
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = checkpoint_tokenizer(size)
    channels = 2 if stereo else 1
    codebooks = size.codebooks * channels
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
    decoder = MusicgenDecoderConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        ffn_dim=size.ffn,
        num_codebooks=codebooks,
        audio_channels=channels,
        max_position_embeddings=size.max_position,
        pad_token_id=size.vocab,
        bos_token_id=size.vocab,
    )
    config = MusicgenConfig(  # type: ignore[call-arg]
        text_encoder=text.to_dict(),
        audio_encoder=audio.to_dict(),
        decoder=decoder.to_dict(),
        decoder_start_token_id=size.vocab,
        pad_token_id=size.vocab,
    )
    model = MusicgenForConditionalGeneration(config).eval()
    # EnCodec's codebooks start as zeros (they are learned by k-means); random ones make the
    # decoded audio depend on the codes, so different seeds give different audio.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
    model.generation_config.decoder_start_token_id = size.vocab
    model.generation_config.pad_token_id = size.vocab
    model.generation_config.max_length = 1500
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    model.save_pretrained(folder, safe_serialization=True)
    save_processor(folder, tokenizer)
    return folder


def checkpoint_tokenizer(size: MusicGenSize):  # type: ignore[no-untyped-def]
    """The tokenizer of a checkpoint of `size`: the tiny 200-token one, or for the real
    architecture a Unigram vocabulary of whole prompt words (`WORDS`, `PROMPT_WORDS`) with single
    characters to fall back on."""
    if size == TINY:
        return train_t5_tokenizer(min(size.t5_vocab, 200))
    return word_tokenizer([*WORDS, *PROMPT_WORDS])


def word_tokenizer(words: list[str]):  # type: ignore[no-untyped-def]
    """A T5-style Unigram tokenizer that reads each of `words` as one token and anything else
    character by character."""
    import string

    from tokenizers import Tokenizer, models, normalizers

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -5.0) for w in dict.fromkeys(words)]
    chars = string.ascii_lowercase + string.digits + ",.-'!?"
    pieces += (
        [("\u2581", -8.0)] + [(c, -10.0) for c in chars] + [("\u2581" + c, -10.0) for c in chars]
    )
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    _t5_pieces(tok)
    return _t5_tokenizer(tok)


def save_processor(folder: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """MusicGen's processor (EnCodec's feature extractor and `tokenizer`) into `folder`."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
