"""MusicGen's decoder stepped one frame at a time, with a preallocated KV cache.

`transformers`' decoder forward is general (masks built every step, a `DynamicCache` that grows by
`torch.cat`, so each step copies the whole cache of every layer). `CachedDecoder` runs the same
modules (the very same weight tensors, quantized or not) in the same order, but:

- the self-attention cache is allocated once per take and written in place;
- the cross-attention keys/values of the text are computed once per take;
- the encoder mask is built once per take, with `transformers`' own mask function;
- no per-step mask building, cache bookkeeping or output dataclasses.

For fp32 greedy decoding it gives exactly `generate`'s codes (tested on the tiny checkpoints).
`step_static` attends over the whole preallocated cache with a mask, so every step has the same
shapes: what CUDA graph capture needs (see `CudaGraphStep`).

On CPU, with samplemind-gen's kernels built (`native_kernels`), the packed modes step through
the ops of `kernels/step_ops.cpp` (`native_attention`, `_step_native`): each attention one op (the
step's key and value written into the cache and the query attended over it in one pass, instead
of ~10 PyTorch ops with sdpa), each residual add fused with the layer norm after it, GELU inside
fc1's kernel. The caches can be int8 with one scale per cached row and head (`int8_cache`), half
of bf16's memory. Each prompt's cross-attention can be folded into two small linears a layer
(`_folded_cross`: the prompt's keys and values are fixed for a take, so the q projection, the
attention over them and the output projection are linear in them), fewer bytes a step.
"""

from __future__ import annotations

from typing import Any

from samplemind_gen.engines import native_kernels


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
        self.fused = hasattr(attn, "qkv_proj")
        # The dtype of the attention caches (self and cross); None: the activations' dtype.
        # Packed modes with fp32 activations (int8, fp16) set bf16 on CPUs with native bf16:
        # half the cache memory (a 30 s take's self-attention cache is 590 MB in fp32) and
        # attention over long caches ~2x faster.
        self.cache_dtype: Any = None
        # samplemind-gen's step ops (CPU packed modes, set by the engine) and int8 caches for
        # them (quantized modes). Used where the q/k/v projection is fused, the head size is one
        # the attention op has (16, 32, 64, 128) and the hidden size a multiple of 16; else
        # PyTorch's ops.
        self.native_attention = False
        self.int8_cache = False
        self._native = False
        self._key_scales: list[Any] = []
        self._value_scales: list[Any] = []
        self._keys: list[Any] = []
        self._values: list[Any] = []
        self._cross: list[tuple[Any, Any]] = []
        self._cross_mask: Any = None
        self._rows = 0
        self._capacity = 0
        self._positions: Any = None
        self._static_mask: Any = None
        self._plan: list[tuple[Any, ...]] = []
        self._next_norms: list[tuple[Any, Any, float]] = []
        self._heads: list[Any] = []
        # The step ops' decoder layers in one call (`decoder_layers`, kernels/step_ops.cpp)
        # where every linear is one of samplemind-gen's kernels; False: one call per op.
        self.one_call = True
        self._layers_call: tuple[Any, ...] | None = None
        # The frame's embeddings + first norm (`embed_frame`) and the LM heads (`lm_heads`) as
        # one native op each, where the step ops run.
        self._embed_tables: list[Any] | None = None
        self._heads_call: tuple[list[Any], list[int]] | None = None
        # Each prompt's cross-attention folded into two small linears a layer where that reads
        # fewer bytes a step (`_folded_cross`); False: never (SAMPLEMIND_GEN_FOLD_CROSS=0).
        self.fold_cross = native_kernels.fold_cross()
        # The last take's folded prompt (encoder states, A and B) when it had one, kept across
        # takes: regenerating a prompt with new seeds skips the 35-70 ms build (~20 MB for
        # musicgen-small).
        self._fold_cache: list[tuple[Any, list[Any]]] = []

    @property
    def folded(self) -> bool:
        """Whether this take's steps run a folded cross-attention (`_folded_cross`)."""
        return self._layers_call is not None and bool(self._layers_call[4])

    @property
    def dtype(self) -> Any:
        """The dtype activations run in (fp32 when the linear layers are int8-quantized)."""
        return self.core.layer_norm.weight.dtype

    def begin(
        self, encoder_states: Any, encoder_mask: Any, steps: int, *, static: bool = False
    ) -> None:
        """Prepare for `steps` decode steps: allocate the cache, project the text once.
        `static`: the caches `step_static` uses (never the native kernel's)."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        states = encoder_states.to(self.dtype)
        rows = states.shape[0]
        device = states.device
        self._rows = rows
        self._capacity = steps
        self._native = (
            self.native_attention
            and not static
            and self.fused
            and self.head_dim in (16, 32, 64, 128)
            and self.hidden % 16 == 0
            and self.core.layer_norm.bias is not None  # add_layer_norm takes a bias
            and device.type == "cpu"
        )
        cache = self.cache_dtype or self.dtype
        shape = (rows, self.heads, steps, self.head_dim)
        self._key_scales = self._value_scales = [None] * len(self.layers)
        if self._native and self.int8_cache:
            self._keys = [torch.zeros(shape, dtype=torch.int8) for _ in self.layers]
            self._values = [torch.zeros(shape, dtype=torch.int8) for _ in self.layers]
            self._key_scales = [torch.zeros(shape[:3]) for _ in self.layers]
            self._value_scales = [torch.zeros(shape[:3]) for _ in self.layers]
        else:
            self._keys = [torch.zeros(shape, dtype=cache, device=device) for _ in self.layers]
            self._values = [torch.zeros(shape, dtype=cache, device=device) for _ in self.layers]
        kv_shape = (rows, states.shape[1], self.heads, self.head_dim)
        self._cross = []
        for layer in self.layers:
            ca = layer.encoder_attn
            k = ca.k_proj(states).view(kv_shape).transpose(1, 2).to(cache)
            v = ca.v_proj(states).view(kv_shape).transpose(1, 2).to(cache)
            if self._native:  # the kernel reads (rows, heads, tokens, head_dim) in order
                k, v = k.contiguous(), v.contiguous()
            self._cross.append((k, v))
        dummy = torch.zeros((rows, 1, self.hidden), dtype=self.dtype, device=device)
        mask = create_bidirectional_mask(
            config=self.core.config,
            inputs_embeds=dummy,
            attention_mask=encoder_mask,
            encoder_hidden_states=states,
        )
        if mask is not None and mask.dtype == torch.bool:
            # What sdpa turns a boolean mask into on every call (48 calls a step), once; the
            # results are identical (fully masked rows included).
            zero = torch.zeros((), dtype=cache, device=device)
            mask = torch.where(mask, zero, torch.full((), float("-inf"), dtype=cache))
        if self._native and mask is not None:  # the kernel adds fp32 rows x tokens
            mask = mask.to(torch.float32).reshape(rows, -1).contiguous()
            if mask.shape[1] != states.shape[1]:  # a mask shape the op cannot take: sdpa's way
                return self.begin(encoder_states, encoder_mask, steps, static=True)
        self._cross_mask = mask
        positions = self.core.embed_positions
        if steps > positions.weights.size(0):
            positions.make_weights(steps, positions.embedding_dim)
        self._positions = positions.weights
        self._static_mask = None
        self._plan = self._build_plan()
        # Each layer ends with the add + norm that starts the next (the last: the final norm).
        self._next_norms = [plan[0] for plan in self._plan[1:]] + [_norm_args(self.core.layer_norm)]
        self._layers_call = self._one_call_args() if self._native and self.one_call else None
        if self._layers_call is not None and self.fold_cross:
            folded = self._folded_cross(states, mask)
            if folded is not None:
                self._layers_call = (*self._layers_call[:4], *folded)
        self._embed_tables = self._native_embed_tables() if self._native else None
        self._heads_call = self._native_heads() if self._native else None

    def end(self) -> None:
        """Drop the per-take cache (it is the biggest per-take allocation)."""
        self._keys, self._values, self._cross = [], [], []
        self._key_scales, self._value_scales = [], []
        self._cross_mask = self._static_mask = None
        self._plan, self._heads, self._next_norms = [], [], []
        self._layers_call = self._embed_tables = self._heads_call = None

    def embed(self, input_ids: Any, position: int | Any) -> Any:
        ids = input_ids.reshape(-1, self.codebooks, 1)
        x = sum(self.core.embed_tokens[c](ids[:, c]) for c in range(self.codebooks))
        if isinstance(position, int):
            pos = self._positions[position : position + 1]
        else:  # a 1-element tensor (static / graph mode)
            pos = self._positions.index_select(0, position)
        return x + pos.to(x.dtype)

    def step(self, input_ids: Any, position: int) -> Any:
        """One frame: `input_ids` (rows * codebooks, 1) -> logits (rows * codebooks, vocab).

        The same modules and weights as the decoder's forward, called through the plan `begin`
        built (kernels bound directly, no module dispatch): at ~1,000 tiny ops a step on a CPU,
        Python overhead is a quarter of the step otherwise."""
        import torch.nn.functional as F

        if self._native:
            return self._step_native(input_ids, position)
        sdpa = F.scaled_dot_product_attention
        layer_norm = F.layer_norm
        x = self.embed(input_ids, position)
        rows, h, d = self._rows, self.heads, self.head_dim
        width = h * d
        split = (rows, 1, h, d)
        merged = (rows, 1, width)
        scale = self.scaling
        end = position + 1
        cross_mask = self._cross_mask
        cache = self.cache_dtype
        convert = cache is not None and cache != x.dtype
        for plan, keys, values, (ck, cv) in zip(
            self._plan, self._keys, self._values, self._cross, strict=True
        ):
            (ln1, qkv, q_p, k_p, v_p, out1, ln2, cq, out2, ln3, fc1, act, fc2, _) = plan
            y = layer_norm(x, (self.hidden,), *ln1)
            if qkv is not None:
                fused = qkv(y)
                q = fused[..., :width].view(split).transpose(1, 2)
                k = fused[..., width : 2 * width].view(split).transpose(1, 2)
                v = fused[..., 2 * width :].view(split).transpose(1, 2)
            else:
                q = q_p(y).view(split).transpose(1, 2)
                k = k_p(y).view(split).transpose(1, 2)
                v = v_p(y).view(split).transpose(1, 2)
            keys[:, :, position:end] = k
            values[:, :, position:end] = v
            if convert:
                q = q.to(cache)
            a = sdpa(q, keys[:, :, :end], values[:, :, :end], scale=scale)
            a = a.transpose(1, 2).reshape(merged)
            x = x + out1(a.to(x.dtype) if convert else a)
            y = layer_norm(x, (self.hidden,), *ln2)
            q = cq(y).view(split).transpose(1, 2)
            if convert:
                q = q.to(cache)
            a = sdpa(q, ck, cv, attn_mask=cross_mask, scale=scale)
            a = a.transpose(1, 2).reshape(merged)
            x = x + out2(a.to(x.dtype) if convert else a)
            y = layer_norm(x, (self.hidden,), *ln3)
            x = x + fc2(act(fc1(y)))
        return self._logits(x)

    def _step_native(self, input_ids: Any, position: int) -> Any:
        """`step` on samplemind-gen's step ops (`kernels/step_ops.cpp`): each attention one op
        (the new key and value go into the cache, bf16, fp32 or int8, inside it), each residual
        add fused with the layer norm after it, and GELU inside the fc1 kernel where it has one.
        Per layer 9 ops instead of ~40."""
        import torch
        import torch.nn.functional as F

        ops = torch.ops.samplemind
        self_attention, cross_attention, add_norm = (
            ops.self_attention,
            ops.cross_attention,
            ops.add_layer_norm,
        )
        if self._embed_tables is not None:
            x, y = ops.embed_frame(
                input_ids, self._embed_tables, self._positions, position, *self._plan[0][0]
            )
        else:
            x = self.embed(input_ids, position)
            y = F.layer_norm(x, (self.hidden,), *self._plan[0][0])
        scale = self.scaling
        cross_mask = self._cross_mask
        if self._layers_call is not None:
            _, y = ops.decoder_layers(
                x, y, *self._layers_call[:3], cross_mask, position, scale, *self._layers_call[3:]
            )
            return self._head_logits(y)
        for plan, keys, values, key_scales, value_scales, (ck, cv), next_norm in self._per_layer():
            (_, qkv, _, _, _, out1, ln2, cq, out2, ln3, fc1, act, fc2, fc1_gelu) = plan
            a = self_attention(qkv(y), keys, values, key_scales, value_scales, position, scale)
            x, y = add_norm(x, out1(a), *ln2)
            x, y = add_norm(x, out2(cross_attention(cq(y), ck, cv, cross_mask, scale)), *ln3)
            h = fc1_gelu(y) if fc1_gelu is not None else act(fc1(y))
            x, y = add_norm(x, fc2(h), *next_norm)
        return self._head_logits(y)

    def _build_plan(self) -> list[tuple[Any, ...]]:
        """Per layer: layer-norm arguments and direct kernel callables, in `step`'s order."""
        plan = []
        self._heads = [direct(head) for head in self.lm.lm_heads]
        for layer in self.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            act = layer.activation_fn
            plan.append(
                (
                    _norm_args(layer.self_attn_layer_norm),
                    direct(sa.qkv_proj) if self.fused else None,
                    None if self.fused else direct(sa.q_proj),
                    None if self.fused else direct(sa.k_proj),
                    None if self.fused else direct(sa.v_proj),
                    direct(sa.out_proj),
                    _norm_args(layer.encoder_attn_layer_norm),
                    direct(ca.q_proj),
                    direct(ca.out_proj),
                    _norm_args(layer.final_layer_norm),
                    direct(layer.fc1),
                    getattr(act, "act", act),  # transformers' GELUActivation wraps F.gelu
                    direct(layer.fc2),
                    _with_gelu(layer.fc1, getattr(act, "act", act)),
                )
            )
        return plan

    def _per_layer(self) -> Any:
        """Per layer of this take: (plan, keys, values, key scales, value scales, the prompt's
        (keys, values), the norm after the layer)."""
        return zip(
            self._plan,
            self._keys,
            self._values,
            self._key_scales,
            self._value_scales,
            self._cross,
            self._next_norms,
            strict=True,
        )

    def _one_call_args(self) -> tuple[Any, ...] | None:
        """`decoder_layers`' arguments (params, kinds, caches, eps, folded, groups; the last
        two empty: no folded cross-attention) for this take, or None when
        a linear is not one of samplemind-gen's kernels (oneDNN's, fbgemm's or aten's) or the
        feed-forward's activation is not the GELU the kernels apply."""
        import torch

        empty = torch.empty(0)
        params: list[Any] = []
        kinds: list[int] = []
        caches: list[Any] = []
        eps: list[float] = []
        layers = zip(self.layers, self._per_layer(), strict=True)
        for layer, (plan, keys, values, key_scales, value_scales, (ck, cv), next_norm) in layers:
            if plan[13] is None:  # no GELU inside fc1's kernel
                return None
            sa, ca = layer.self_attn, layer.encoder_attn
            linears = (sa.qkv_proj, sa.out_proj, ca.q_proj, ca.out_proj, layer.fc1, layer.fc2)
            kernels = _kernel_args(linears)
            if kernels is None:
                return None
            params += kernels[0]
            kinds += kernels[1]
            for weight, bias, e in (plan[6], plan[9], next_norm):
                params += [weight, bias]
                eps.append(e)
            scales = [empty if t is None else t for t in (key_scales, value_scales)]
            caches += [keys, values, *scales, ck, cv]
        return params, kinds, caches, eps, [], None

    def _folded_cross(self, states: Any, mask: Any) -> tuple[list[Any], Any] | None:
        """`decoder_layers`' (folded, groups) arguments: per layer, A's and B's 4 tensors each
        for every prompt that folds, and each row's prompt (int64: its index among them; -1 for
        rows that attend to nothing, guidance's unconditional rows; -2 for a prompt that reads
        fewer bytes as attention). None when no row's prompt folds.

        With a prompt's keys K and values V fixed for the take, a layer's cross-attention block
        is linear in them: per head h and prompt token t, q_h . K[h, t] * scale = y . A[h, t] +
        c[h, t] with A[h, t] = scale * Wq_h^T K[h, t] (c from q's bias), and the output
        projection of the softmax-weighted values is sum p[h, t] B[h, t] + bias with B[h, t] =
        Wo_h V[h, t]. So the q projection, the attention over the prompt and the output
        projection become two linears of heads x tokens rows: a 14-token prompt's A and B are
        0.75-1 MB a layer against 2 MB (int8) or 3 MB (compact bf16) of projection weights.
        Whether a prompt folds depends on its length alone, and each row is computed from its
        own rows, so a take comes out the same alone and in a batch of other prompts (each
        prompt its own A and B: a batch of different prompts reads more bytes than with the
        shared weights, the price of that)."""
        import torch

        rows, length = states.shape[0], states.shape[1]
        if mask is None:
            attends = torch.ones((rows, length), dtype=torch.bool)
        else:
            if mask.shape != (rows, length):
                return None
            attends = mask == 0
            if not bool((attends | (mask == float("-inf"))).all()):
                return None  # a mask of other values: attention's own way
        groups = [-1] * rows
        prompts: list[tuple[Any, int]] = []  # (its encoder states, its group)
        folds: list[tuple[Any, list[Any]]] = []  # (its encoder states, its A and B)
        # Folds kept from the last take that this one needs; the others freed before building
        # (a batch of new prompts would otherwise hold both sets at its peak).
        states_of = [
            states[row, attends[row]] if bool(attends[row].any()) else None for row in range(rows)
        ]
        kept = [
            (p, f)
            for p, f in self._fold_cache
            if any(q is not None and _same(p, q) for q in states_of)
        ]
        self._fold_cache = []
        for row, prompt in enumerate(states_of):
            if prompt is None:
                continue
            same = [g for p, g in prompts if _same(p, prompt)]
            if same:
                groups[row] = same[0]
                continue
            folded = next((f for p, f in kept if _same(p, prompt)), None)
            if folded is None:
                folded = self._fold(row, attends[row])
            if folded is None:
                group = -2
            else:
                group = len(folds)
                folds.append((prompt.clone(), folded))
            prompts.append((prompt, group))
            groups[row] = group
        # Kept for the next take when this one had one prompt (a prompt regenerated with new
        # seeds, more variations of it): ~20 MB for musicgen-small.
        self._fold_cache = folds if len(folds) == 1 else []
        if not folds:
            return None
        layers = len(self.layers)
        per_layer = [
            t for layer in range(layers) for _, f in folds for t in f[8 * layer : 8 * layer + 8]
        ]
        return per_layer, torch.tensor(groups, dtype=torch.long)

    def _fold(self, first: int, keep: Any) -> list[Any] | None:
        """Every layer's A and B (`_folded_cross`) for prompt row `first`, or None where they
        would read more bytes than the projections they replace."""
        import torch

        a_and_b = self._fold_layer(0, first, keep)
        if a_and_b is None:
            return None
        if sum(t.numel() * t.element_size() for t in a_and_b) >= self._replaced_bytes(keep):
            return None  # the first layer decides for all: they have one shape
        # The other layers' A and B allocated before their weights are dequantized, so each
        # layer's temporaries reuse the same heap blocks (between the results they had grown
        # the heap by ~100 MB); trimmed after.
        stored = (0, 1, 2, 4)  # A's weights (its scales and sums if int8), B's weights
        results = [a_and_b] + [
            [torch.empty_like(t) if i in stored else t for i, t in enumerate(a_and_b)]
            for _ in self.layers[1:]
        ]
        for index in range(1, len(self.layers)):
            parts = self._fold_layer(index, first, keep)
            if parts is None:
                return None
            for i, t in enumerate(parts):
                if i in stored:
                    results[index][i].copy_(t)
                else:
                    results[index][i] = t
        from samplemind_gen.engines.musicgen_quant import trim_heap

        trim_heap()
        return [t for layer in results for t in layer]

    def _replaced_bytes(self, keep: Any) -> int:
        """The bytes a step that a layer's fold replaces: both projections' weights and the
        prompt's keys and values at its unmasked tokens `keep` (its own tokens, not the batch's
        padded length: whether a prompt folds must not depend on the rest of its batch)."""
        ca = self.layers[0].encoder_attn
        weights = 0
        for linear in (ca.q_proj, ca.out_proj):
            spec = _kernel_spec(getattr(linear, "kernel", None))
            assert spec is not None  # _fold_layer(0) folded it
            weights += sum(t.numel() * t.element_size() for t in spec[1] if t is not None)
        element = self._cross[0][0].element_size()
        return weights + 2 * int(keep.sum()) * self.heads * self.head_dim * element

    def _fold_layer(self, index: int, first: int, keep: Any) -> list[Any] | None:
        """Layer `index`'s folded cross-attention for prompt row `first` (its unmasked tokens
        `keep`): A's and B's 4 tensors each as `decoder_layers` takes them; None when a
        projection is not one of samplemind-gen's kernels."""
        import torch

        from samplemind_gen.engines.musicgen_quant import int8_pack, pad_inputs

        ca = self.layers[index].encoder_attn
        k, v = self._cross[index]
        q_kernel: Any = getattr(ca.q_proj, "kernel", None)
        o_kernel: Any = getattr(ca.out_proj, "kernel", None)
        q_spec, o_spec = _kernel_spec(q_kernel), _kernel_spec(o_kernel)
        if q_spec is None or o_spec is None or not hasattr(q_kernel, "levels"):
            return None
        empty = torch.empty(0)
        keys = k[first][:, keep].to(torch.float32)  # (heads, tokens, head_dim)
        vf = v[first][:, keep].to(torch.float32)
        width = keys.shape[0] * keys.shape[1]
        # Multiplied in bf16 with fp32 sums where the weights are exact in bf16 (bf16 weights,
        # int8 levels; the keys times int8's scales are rounded to bf16): a prompt's build 35-40
        # ms in int8, 54-70 in compact bf16, against ~48 and ~95 with fp32 copies of the weights.
        levels, scales = q_kernel.levels()
        kf = keys  # the q projection's per-output scales go with the keys
        if scales is not None:
            kf = keys * scales.view(self.heads, 1, self.head_dim)
        wq = levels.view(self.heads, self.head_dim, -1)
        a = torch.einsum("htd,hdk->htk", kf.to(wq.dtype), wq).reshape(width, -1).float()
        a *= self.scaling
        c = empty
        if q_kernel.bias is not None:
            bq = q_kernel.bias.view(self.heads, 1, self.head_dim)
            c = ((keys * bq).sum(-1).reshape(width) * self.scaling).contiguous()
        if q_spec[0] in (LINEAR_INT8, LINEAR_INT4):
            # quantized modes: A in int8 (the activations are quantized as for Wq); B stays
            # bf16, its inputs being the softmax weights
            parts = [*int8_pack(a), c]
        else:
            parts = [pad_inputs(a, torch.bfloat16), empty, empty, c]
        levels, scales = o_kernel.levels()
        wo = levels.view(levels.shape[0], self.heads, -1)
        b = torch.einsum("nhd,htd->nht", wo, vf.to(wo.dtype)).reshape(levels.shape[0], width)
        if scales is not None:  # the output projection's per-output scales
            b = b.float() * scales[:, None]
        bias = empty if o_kernel.bias is None else o_kernel.bias
        parts += [pad_inputs(b, torch.bfloat16), empty, empty, bias]
        return parts

    def _native_embed_tables(self) -> list[Any] | None:
        """The codebooks' embedding tables, as `embed_frame` takes them (fp32 or bf16, alike),
        or None."""
        import torch

        tables = [table.weight for table in self.core.embed_tokens]
        dtype = tables[0].dtype
        if dtype not in (torch.float32, torch.bfloat16) or dtype != self.dtype:
            return None
        if any(t.dtype != dtype or not t.is_contiguous() for t in tables):
            return None
        return tables

    def _native_heads(self) -> tuple[list[Any], list[int]] | None:
        """`lm_heads`' arguments (params, kinds) when every head is one of samplemind-gen's
        kernels, else None."""
        return _kernel_args(self.lm.lm_heads)

    def step_static(self, input_ids: Any, position: Any) -> Any:
        """`step` with shapes that do not depend on `position` (a 1-element long tensor):
        attention runs over the whole cache with the future masked. For CUDA graphs."""
        import torch
        import torch.nn.functional as F

        x = self.embed(input_ids, position)
        rows = self._rows
        slots = torch.arange(self._capacity, device=x.device)
        mask = torch.zeros(self._capacity, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(slots > position, float("-inf")).view(1, 1, 1, -1)
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            residual = x
            y = layer.self_attn_layer_norm(x)
            q, k, v = self._qkv(sa, y)
            self._keys[i].index_copy_(2, position, k)
            self._values[i].index_copy_(2, position, v)
            a = F.scaled_dot_product_attention(
                q, self._keys[i], self._values[i], attn_mask=mask, scale=self.scaling
            )
            x = residual + sa.out_proj(a.transpose(1, 2).reshape(rows, 1, -1))
            x = self._cross_and_ffn(i, layer, x)
        return self._logits(x)

    def _qkv(self, sa: Any, y: Any) -> tuple[Any, Any, Any]:
        """Self-attention q, k, v, each (rows, heads, 1, head_dim): one fused projection when the
        weights are packed (`musicgen_quant.fuse_qkv`), else three."""
        rows, h, d = self._rows, self.heads, self.head_dim
        if self.fused:
            qkv = sa.qkv_proj(y)
            width = h * d
            return tuple(  # type: ignore[return-value]
                qkv[..., i * width : (i + 1) * width].view(rows, 1, h, d).transpose(1, 2)
                for i in range(3)
            )
        q = sa.q_proj(y).view(rows, 1, h, d).transpose(1, 2)
        k = sa.k_proj(y).view(rows, 1, h, d).transpose(1, 2)
        v = sa.v_proj(y).view(rows, 1, h, d).transpose(1, 2)
        return q, k, v

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
        return self._head_logits(self.core.layer_norm(x))

    def _head_logits(self, x: Any) -> Any:
        """The LM heads over the final layer norm's output."""
        import torch

        if self._heads_call is not None:
            return torch.ops.samplemind.lm_heads(x, *self._heads_call)
        heads = self._heads or self.lm.lm_heads
        logits = torch.stack([head(x) for head in heads], dim=1)
        return logits.reshape(-1, logits.shape[-1])


# Kernel kinds of `decoder_layers` (kernels/isa.h LinearKind).
LINEAR_HALF, LINEAR_INT8, LINEAR_INT4, LINEAR_COMPACT = 0, 1, 2, 3


def _kernel_spec(kernel: Any) -> tuple[int, list[Any]] | None:
    """(kind, [4 tensors or None]) of one of samplemind-gen's linear kernels, as
    `decoder_layers` takes it; None for any other kernel."""
    from samplemind_gen.engines.musicgen_quant import (
        CompactLinear,
        HalfLinear,
        Int4Linear,
        Int8Linear,
    )

    if isinstance(kernel, CompactLinear):
        return LINEAR_COMPACT, [kernel.data, kernel.table, kernel.exceptions, kernel.bias]
    if isinstance(kernel, HalfLinear):
        return LINEAR_HALF, [kernel.weight, None, None, kernel.bias]
    if isinstance(kernel, Int8Linear):
        return LINEAR_INT8, [kernel.weight, kernel.scales, kernel.wsum, kernel.bias]
    if isinstance(kernel, Int4Linear) and kernel.native:
        return LINEAR_INT4, [kernel.nibbles, kernel.scales, kernel.mins, kernel.bias]
    return None


def _kernel_args(linears: Any) -> tuple[list[Any], list[int]] | None:
    """(params, kinds) of packed linear modules as the native ops take them (4 tensors and a
    kind each, an empty tensor for None), or None when one is not samplemind-gen's kernel."""
    import torch

    empty = torch.empty(0)
    params: list[Any] = []
    kinds: list[int] = []
    for linear in linears:
        spec = _kernel_spec(getattr(linear, "kernel", None))
        if spec is None:
            return None
        kinds.append(spec[0])
        params += [empty if t is None else t for t in spec[1]]
    return params, kinds


def _same(a: Any, b: Any) -> bool:
    """Whether two prompts' encoder states are the same prompt."""
    import torch

    return bool(a.shape == b.shape and torch.equal(a, b))


def _norm_args(norm: Any) -> tuple[Any, Any, float]:
    return (norm.weight, norm.bias, float(norm.eps))


def _with_gelu(linear: Any, act: Any) -> Any:
    """gelu(linear(x)) as one kernel call where the packed kernel has one and the activation is
    F.gelu's exact (erf) GELU; else None."""
    import torch.nn.functional as F

    kernel = getattr(linear, "kernel", None)
    if act is not F.gelu or kernel is None or not hasattr(kernel, "with_gelu"):
        return None
    return kernel.with_gelu()


def direct(linear: Any) -> Any:
    """`linear` as a callable without module dispatch: for fbgemm-packed layers the kernel
    itself (the module's forward adds ~25 us of wrapper a call), else the module."""
    import torch

    kernel = getattr(linear, "kernel", None)
    if kernel is not None:  # a musicgen_quant kernel (HalfLinear...) behind a PackedModule
        return kernel
    packed_holder = getattr(linear, "_packed_params", None)
    if packed_holder is None or not hasattr(packed_holder, "_packed_params"):
        return linear
    packed = packed_holder._packed_params
    if packed_holder.dtype == torch.float16:
        fp16_op = torch.ops.quantized.linear_dynamic_fp16
        return lambda x: fp16_op(x, packed)
    int8_op = torch.ops.quantized.linear_dynamic
    reduce_range = not (linear.version is None or linear.version < 4)
    return lambda x: int8_op(x, packed, reduce_range)


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
