"""AudioLDM 2 under transformers 5: the GPT-2 step and waveform ranking, done in our code.

The Hub's AudioLDM 2 checkpoints declare `GPT2Model` as their language model. In transformers 5
that class no longer inherits the generation mixin, so the stock pipeline's 8-token GPT-2 loop
fails on `_update_model_kwargs_for_generation` (diffusers issue #12630 is the older face of it);
with `GPT2LMHeadModel` it runs, but passes `past_key_values`, which transformers warns it will
remove. `generate_language_hidden_states` is that loop written against the model's plain forward
(`cache=`), so it works with whichever class a checkpoint declares and never leans on generation
internals. The stock ranking of `num_waveforms_per_prompt` candidates also sorts every prompt's
candidates together, so in a batch one prompt can get another prompt's audio; ours ranks each
prompt's own candidates.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
from diffusers.models import AutoencoderKL
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (
    ClapFeatureExtractor,
    ClapModel,
    GPT2LMHeadModel,
    GPT2Model,
    RobertaTokenizer,
    RobertaTokenizerFast,
    SpeechT5HifiGan,
    T5EncoderModel,
    T5Tokenizer,
    VitsModel,
    VitsTokenizer,
)


@torch.no_grad()
def generate_language_hidden_states(
    language_model: Any,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 8,
) -> torch.Tensor:
    """Run GPT-2 autoregressively on embeddings for `max_new_tokens` steps and return the new
    hidden states, shaped (batch, max_new_tokens, hidden): what AudioLDM 2's UNet attends to.

    Works with `GPT2Model` and `GPT2LMHeadModel` alike; calls the model itself (not its inner
    transformer) so accelerate's offload hooks on it still fire."""
    from transformers import DynamicCache

    cache = DynamicCache(config=language_model.config)
    step_input = inputs_embeds
    for _ in range(max_new_tokens):
        output = language_model(
            inputs_embeds=step_input,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=True,
            output_hidden_states=True,
            return_dict=True,
        )
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:  # GPT2LMHeadModel: the last entry is the final (layer-normed) state
            hidden = output.hidden_states[-1]
        next_hidden = hidden[:, -1:, :]
        inputs_embeds = torch.cat([inputs_embeds, next_hidden], dim=1)
        step_input = next_hidden
        if attention_mask is not None:
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1
            )
    return inputs_embeds[:, -max_new_tokens:, :]


def rank_within_prompts(logits_per_text: torch.Tensor, per_prompt: int) -> torch.Tensor:
    """Indices into the (prompts * per_prompt) candidates, best first within each prompt.

    `logits_per_text` is CLAP's (prompts, prompts * per_prompt) similarity; candidates are laid
    out prompt by prompt, as the pipeline generates them."""
    prompts = logits_per_text.shape[0]
    rows = torch.arange(prompts, device=logits_per_text.device)
    own = logits_per_text.reshape(prompts, prompts, per_prompt)[rows, rows]
    order = torch.argsort(own, dim=1, descending=True)
    return (order + rows[:, None] * per_prompt).reshape(-1)


class FixedAudioLDM2Pipeline(AudioLDM2Pipeline):
    """`AudioLDM2Pipeline` that runs with the `GPT2Model` the Hub checkpoints declare and ranks
    candidates per prompt. Loaded with `FixedAudioLDM2Pipeline.from_pretrained(folder)`."""

    # Set by diffusers' register_modules; declared for the type checker.
    text_encoder: Any
    tokenizer: Any
    feature_extractor: Any
    vocoder: Any
    language_model: Any

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: ClapModel,
        text_encoder_2: T5EncoderModel | VitsModel,
        projection_model: AudioLDM2ProjectionModel,
        language_model: GPT2Model | GPT2LMHeadModel,
        tokenizer: RobertaTokenizer | RobertaTokenizerFast,
        tokenizer_2: T5Tokenizer | VitsTokenizer,
        feature_extractor: ClapFeatureExtractor,
        unet: AudioLDM2UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        vocoder: SpeechT5HifiGan,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            projection_model=projection_model,
            language_model=language_model,  # type: ignore[arg-type]
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            feature_extractor=feature_extractor,
            unet=unet,
            scheduler=scheduler,
            vocoder=vocoder,
        )

    def generate_language_model(
        self,
        inputs_embeds: torch.Tensor = None,  # type: ignore[assignment]
        max_new_tokens: int | None = 8,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        if max_new_tokens is None:
            max_new_tokens = int(getattr(self.language_model.config, "max_new_tokens", 8))
        return generate_language_hidden_states(
            self.language_model,
            inputs_embeds,
            attention_mask=model_kwargs.get("attention_mask"),
            max_new_tokens=max_new_tokens,
        )

    def score_waveforms(self, text, audio, num_waveforms_per_prompt, device, dtype):  # type: ignore[no-untyped-def]
        import librosa

        texts = [text] if isinstance(text, str) else list(text)
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True)
        resampled = librosa.resample(
            audio.numpy(),
            orig_sr=self.vocoder.config.sampling_rate,
            target_sr=self.feature_extractor.sampling_rate,
        )
        inputs["input_features"] = self.feature_extractor(
            list(resampled), return_tensors="pt", sampling_rate=self.feature_extractor.sampling_rate
        ).input_features.type(dtype)
        inputs = inputs.to(device)
        logits_per_text = self.text_encoder(**inputs).logits_per_text
        order = rank_within_prompts(logits_per_text, num_waveforms_per_prompt)
        return torch.index_select(audio, 0, order.cpu())
