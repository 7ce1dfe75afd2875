"""MusicGen's decoder stepped one frame at a time, with a preallocated KV cache.

`transformers`' decoder forward is general (masks built every step, a `DynamicCache` that grows by
`torch.cat`, so each step copies the whole cache of every layer). `CachedDecoder` runs the same
modules (the very same weight tensors, quantized or not) in the same order, but:

- the self-attention cache is allocated once per take and written in place;
- the cross-attention keys/values of the text are computed once per take;
- the encoder mask is built once per take, with `transformers`' own mask function;
- no per-step mask building, cache bookkeeping or output dataclasses.

For fp32 greedy decoding it gives exactly `generate`'s codes (tested on the tiny checkpoints).
`static=True` attends over the whole preallocated cache with a mask, so every step has the same
shapes: what CUDA graph capture needs (see `CudaGraphStep`).
"""

from __future__ import annotations

from typing import Any


class CachedDecoder:
    """Steps a `MusicgenForCausalLM` with a static KV cache. One instance per engine; call
    `begin` once per take (or batch), then `step` once per frame."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        core = lm.model.decoder
        self.core = core
        self.layers = list(core.layers)
        attn = self.layers[0].self_attn
        self.heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        self.hidden = int(core.config.hidden_size)
        self.codebooks = int(lm.num_codebooks)
        self._keys: list[Any] = []
        self._values: list[Any] = []
        self._cross: list[tuple[Any, Any]] = []
        self._cross_mask: Any = None
        self._rows = 0
        self._capacity = 0
        self._positions: Any = None
        self._static_mask: Any = None

    @property
    def dtype(self) -> Any:
        """The dtype activations run in (fp32 when the linear layers are int8-quantized)."""
        return self.core.layer_norm.weight.dtype

    def begin(self, encoder_states: Any, encoder_mask: Any, steps: int) -> None:
        """Prepare for `steps` decode steps: allocate the cache, project the text once."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        states = encoder_states.to(self.dtype)
        rows = states.shape[0]
        device = states.device
        self._rows = rows
        self._capacity = steps
        shape = (rows, self.heads, steps, self.head_dim)
        self._keys = [torch.zeros(shape, dtype=self.dtype, device=device) for _ in self.layers]
        self._values = [torch.zeros(shape, dtype=self.dtype, device=device) for _ in self.layers]
        kv_shape = (rows, states.shape[1], self.heads, self.head_dim)
        self._cross = []
        for layer in self.layers:
            ca = layer.encoder_attn
            k = ca.k_proj(states).view(kv_shape).transpose(1, 2)
            v = ca.v_proj(states).view(kv_shape).transpose(1, 2)
            self._cross.append((k, v))
        dummy = torch.zeros((rows, 1, self.hidden), dtype=self.dtype, device=device)
        self._cross_mask = create_bidirectional_mask(
            config=self.core.config,
            inputs_embeds=dummy,
            attention_mask=encoder_mask,
            encoder_hidden_states=states,
        )
        positions = self.core.embed_positions
        if steps > positions.weights.size(0):
            positions.make_weights(steps, positions.embedding_dim)
        self._positions = positions.weights
        self._static_mask = None

    def end(self) -> None:
        """Drop the per-take cache (it is the biggest per-take allocation)."""
        self._keys, self._values, self._cross = [], [], []
        self._cross_mask = self._static_mask = None

    def embed(self, input_ids: Any, position: int | Any) -> Any:
        ids = input_ids.reshape(-1, self.codebooks, 1)
        x = sum(self.core.embed_tokens[c](ids[:, c]) for c in range(self.codebooks))
        if isinstance(position, int):
            pos = self._positions[position : position + 1]
        else:  # a 1-element tensor (static / graph mode)
            pos = self._positions.index_select(0, position)
        return x + pos.to(x.dtype)

    def step(self, input_ids: Any, position: int) -> Any:
        """One frame: `input_ids` (rows * codebooks, 1) -> logits (rows * codebooks, vocab)."""
        import torch.nn.functional as F

        x = self.embed(input_ids, position)
        rows, h, d = self._rows, self.heads, self.head_dim
        end = position + 1
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            residual = x
            y = layer.self_attn_layer_norm(x)
            q = sa.q_proj(y).view(rows, 1, h, d).transpose(1, 2)
            k = sa.k_proj(y).view(rows, 1, h, d).transpose(1, 2)
            v = sa.v_proj(y).view(rows, 1, h, d).transpose(1, 2)
            keys, values = self._keys[i], self._values[i]
            keys[:, :, position : position + 1] = k
            values[:, :, position : position + 1] = v
            a = F.scaled_dot_product_attention(
                q, keys[:, :, :end], values[:, :, :end], scale=self.scaling
            )
            x = residual + sa.out_proj(a.transpose(1, 2).reshape(rows, 1, -1))
            x = self._cross_and_ffn(i, layer, x)
        return self._logits(x)

    def step_static(self, input_ids: Any, position: Any) -> Any:
        """`step` with shapes that do not depend on `position` (a 1-element long tensor):
        attention runs over the whole cache with the future masked. For CUDA graphs."""
        import torch
        import torch.nn.functional as F

        x = self.embed(input_ids, position)
        rows, h, d = self._rows, self.heads, self.head_dim
        slots = torch.arange(self._capacity, device=x.device)
        mask = torch.zeros(self._capacity, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(slots > position, float("-inf")).view(1, 1, 1, -1)
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            residual = x
            y = layer.self_attn_layer_norm(x)
            q = sa.q_proj(y).view(rows, 1, h, d).transpose(1, 2)
            k = sa.k_proj(y).view(rows, 1, h, d).transpose(1, 2)
            v = sa.v_proj(y).view(rows, 1, h, d).transpose(1, 2)
            self._keys[i].index_copy_(2, position, k)
            self._values[i].index_copy_(2, position, v)
            a = F.scaled_dot_product_attention(
                q, self._keys[i], self._values[i], attn_mask=mask, scale=self.scaling
            )
            x = residual + sa.out_proj(a.transpose(1, 2).reshape(rows, 1, -1))
            x = self._cross_and_ffn(i, layer, x)
        return self._logits(x)

    def _cross_and_ffn(self, i: int, layer: Any, x: Any) -> Any:
        import torch.nn.functional as F

        rows, h, d = self._rows, self.heads, self.head_dim
        ca = layer.encoder_attn
        residual = x
        y = layer.encoder_attn_layer_norm(x)
        q = ca.q_proj(y).view(rows, 1, h, d).transpose(1, 2)
        k, v = self._cross[i]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=self._cross_mask, scale=self.scaling)
        x = residual + ca.out_proj(a.transpose(1, 2).reshape(rows, 1, -1))
        residual = x
        y = layer.final_layer_norm(x)
        y = layer.fc2(layer.activation_fn(layer.fc1(y)))
        return residual + y

    def _logits(self, x: Any) -> Any:
        import torch

        x = self.core.layer_norm(x)
        logits = torch.stack([head(x) for head in self.lm.lm_heads], dim=1)
        return logits.reshape(-1, logits.shape[-1])


class CudaGraphStep:
    """Captures `CachedDecoder.step_static` in a CUDA graph after `begin`, then replays it:
    one launch per decode step instead of hundreds of small kernels. CUDA only."""

    def __init__(self, decoder: CachedDecoder, rows_times_codebooks: int, device: str) -> None:
        import torch

        self.decoder = decoder
        self.ids = torch.zeros((rows_times_codebooks, 1), dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
            for _ in range(2):
                decoder.step_static(self.ids, self.position)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = decoder.step_static(self.ids, self.position)
        # Warm-up and capture wrote junk into slot 0; the first real step overwrites it.

    def step(self, input_ids: Any, position: int) -> Any:
        self.ids.copy_(input_ids)
        self.position.fill_(position)
        self.graph.replay()
        return self.logits
