"""Kyutai temporal + depth transformer family (Moshi, Hibiki, Kyutai STT / TTS).

Streams: one text stream and K audio codebooks, laid out with one delay per stream by
`audiolm.patterns` (kind ``stream_delay``). A sequence *column* is [B, 1+K] ids: text first.

Temporal transformer (per column s): input = text_emb(text_s) + sum_k audio_emb_k(audio_{k,s})
(+ summed conditions); id -1 ("zero") embeds to exact zeros. Pre-norm layers: self-attention
(interleaved RoPE, window = context), optional LayerNorm + cross-attention, gated SiLU (or plain
GELU) FFN. Text logits = text_linear(out_norm(h_s)) predict column s+1.

Depformer (per frame, slice k = 0..dep_q-1): inp_k = depformer_in[set(k)](out_norm(h_s)) +
(k == 0 ? depformer_text_emb(text_{s+1}) : depformer_emb[k-1](audio_{k-1,s+1})); causal over the
slices, attention / FFN weights chosen per slice (optionally shared through a schedule); logits
of slice k = audio_head_k(out). Its KV cache lives for one frame.

Fusion of text and audio (`model.fusion`):
  add              the Kyutai input sum above.
  concat           the sequence is [text_0..text_{S-1}, audio_0..audio_{S-1}] (positions 0..2S-1):
                   text logits from the text segment, the depformer reads the audio segment
                   (audio sees the whole text: text-first generation).
  cross_attention  the temporal input is the audio (+ conditions); each layer cross-attends to
                   the text embeddings of columns <= s within the context window (needs
                   temporal.cross_attention).
  interleave       positions alternate text_s, audio_s; text logits and the depformer read the
                   audio positions.

Decoding API (for the sampler; see tests/importers/test_moshi_import.py::greedy_generate,
token-identical to Kyutai's LMGen): `state = module.init_state(B)` (ring KV cache per temporal
layer, length = context); per frame `module.apply(p, column [B, 1+K, 1], state,
method=MoshiLM.step)` -> text logits + hidden; then `cache = module.init_depformer_cache(B)` and
for k in range(dep_q) `apply(p, k, prev, hidden, cache, method=MoshiLM.depformer_step)`.
Which frame of which stream sits in a column comes from `delay_pattern(spec, frames)` with
`patterns.steps_for`; `initial_tokens(spec)` fills the slots before a stream's delay.

Training: `delayed_inputs` (patterns.build, keep_only_valid_steps) gives inputs / targets /
mask (the loss on them is the `codes` task's, `audiolm.tasks.codes`); `undelay_logits` (patterns.revert_logits) maps
outputs back onto the codes as Kyutai's `LMModel.forward` does.

Shapes: B batch, K audio codebooks, S columns, D temporal width, Dd depformer width.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import config as config_lib
from audiolm import nn as blocks
from audiolm import patterns
from audiolm.config import check_choice, check_float, check_int, check_str, require
from audiolm.models import family as family_lib
from audiolm.nn.compile import fast_jit
from audiolm.presets.moshi_specs import ConditionerSpec, DepformerSpec, MoshiSpec, TemporalSpec

FAMILY = "moshi"
FUSIONS = ("add", "concat", "cross_attention", "interleave")
ZERO_TOKEN = -1  # embeds to exact zeros, masked in the loss


# ------------------------------------------------------------------------------------------
# Static description of a model: the typed spec of config.model (declared, field by field with
# its comment, in `audiolm.presets.moshi_specs`, which sits below the models so the presets can
# build it too); hashable, so a flax module field and a jit static argument.

def spec_from_config(m: Any) -> MoshiSpec:
    """The MoshiSpec of `config.model` (family moshi): its schema checked (keys, types), each
    conditioner built as a ConditionerSpec. Ranges and cross-field rules are `rules`'s."""
    root = {"model": m}  # errors name the dotted path from `model`
    conds = {name: config_lib.spec_from_section(ConditionerSpec, root, f"model.conditioners.{name}")
             for name in sorted(m.conditioners.keys())}
    return config_lib.spec_from_section(MoshiSpec, root, "model", conditioners=conds)


# ------------------------------------------------------------------------------------------
# Layers


def _norm(t: TemporalSpec, name: str, dtype):
    if t.norm == "rms":
        return blocks.RMSNorm(eps=t.norm_eps, dtype=dtype, name=name)
    return blocks.LayerNorm(eps=t.norm_eps, dtype=dtype, name=name)


def _block(tr: TemporalSpec | DepformerSpec, t: TemporalSpec, name: str, dtype,
           weight_sets: int):
    """Kyutai's pre-norm layer as the shared block: norms shared by the `weight_sets` attention /
    FFN sets (`attn_0..`, `ffn_0..`: the depformer's per-slice weights), interleaved RoPE with
    theta = rope_theta, LayerNorm cross-attention, bias-free FFN. The temporal transformer `t`
    gives the norm (the depformer shares it, as in Kyutai's code); only the temporal one has a
    ring-cache window (context), grouped key/value heads and cross-attention."""
    temporal = isinstance(tr, TemporalSpec)
    return blocks.TransformerBlock(
        num_heads=tr.num_heads, num_kv_heads=tr.num_kv_heads if temporal else tr.num_heads,
        norm=t.norm, norm_eps=t.norm_eps,
        rope_style="interleaved" if tr.positional == "rope" else None,
        rope_theta=tr.rope_theta, causal=True, window=tr.context if temporal else None,
        cross_attention=temporal and tr.cross_attention, cross_norm="layer", cross_norm_eps=1e-5,
        ffn=tr.ffn, ffn_hidden=tr.ffn_hidden, activation=tr.activation, ffn_bias=False,
        layer_scale=tr.layer_scale or None, weight_sets=weight_sets, dtype=dtype, name=name)


class KyutaiEmbed(nn.Module):
    """ids [...] -> [..., features]; id -1 -> zeros. Optional low-rank table + projection and
    Kyutai's two-stream demux (id = right * V + left, right - 1 in [-1, V-1])."""
    num_embeddings: int
    features: int
    low_rank: int = 0
    demux: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids):
        width = self.low_rank or self.features
        table = blocks.Embed(self.num_embeddings, width, dtype=self.dtype, name="table")
        dense = lambda name: nn.Dense(self.features, use_bias=False, dtype=self.dtype, name=name)
        zero = ids == ZERO_TOKEN
        if self.low_rank:
            # Kyutai creates this projection even in demux mode (where out1/out2 replace it);
            # it is kept so that checkpoints and parameter counts match.
            low_rank = dense("low_rank")
        if self.demux:
            left = jnp.where(zero, 0, ids % self.num_embeddings)
            right = jnp.where(zero, 0, ids // self.num_embeddings - 1)
            y = dense("out1")(table(left))
            y2 = dense("out2")(table(jnp.maximum(right, 0)))
            y = y + jnp.where((right >= 0)[..., None], y2, 0.0)
            if self.low_rank and self.is_initializing():
                low_rank(jnp.zeros((1, width), self.dtype))
        else:
            y = table(jnp.where(zero, 0, ids))
            y = jnp.where(zero[..., None], 0.0, y)
            if self.low_rank:
                y = low_rank(y)
        return jnp.where(zero[..., None], 0.0, y)


def kyutai_sin_embedding(length: int, dim: int, max_period: float = 10000.0):
    """Kyutai's sinusoidal positions [length, dim] = concat[cos, sin] (nn's halves swapped)."""
    pe = blocks.sinusoidal_positions(length, dim, max_timescale=max_period)
    half = dim // 2
    return jnp.concatenate([pe[:, half:], pe[:, :half]], axis=-1)


# ------------------------------------------------------------------------------------------
# The model


class MoshiLM(nn.Module):
    """Temporal transformer + depformer. Entry points (use with `apply(..., method=...)`):

    __call__(tokens [B, 1+K, S], conditions) -> dict(text_logits [B, S, Vt], hidden [B, S, D],
        extra [B, S, n_extra, extra_dim]) over delayed input columns.
    depformer_forward(targets [B, 1+K, S], hidden [B, S, D]) -> [B, dep_q, S, card] (teacher
        forced: slice k reads target stream k-1).
    step(column [B, 1+K, 1], state, conditions, part) -> (text_logits [B, Vt], hidden [B, D],
        state) one decode column (use `init_state` for the state).
    depformer_step(k, prev [B], hidden [B, D], cache) -> (logits [B, card], cache).
    """
    spec: MoshiSpec
    dtype: Any = jnp.float32

    def setup(self):
        s, t = self.spec, self.spec.temporal
        self.text_emb = KyutaiEmbed(s.text_in_vocab_size, t.hidden_size,
                                    demux=s.demux_second_text_stream, dtype=self.dtype,
                                    name="text_emb")
        self.audio_emb = blocks.MultiCodebookEmbed(s.audio_codebooks, s.audio_vocab_size,
                                                   t.hidden_size, dtype=self.dtype,
                                                   name="audio_emb")
        self.layers = [_block(t, t, f"temporal_{i}", self.dtype, weight_sets=1)
                       for i in range(t.num_layers)]
        self.out_norm = _norm(t, "out_norm", self.dtype)
        self.text_linear = nn.Dense(s.text_out_vocab_size, use_bias=False, dtype=self.dtype,
                                    name="text_linear")
        self.extra = [nn.Dense(s.extra_heads.dim, use_bias=False, dtype=self.dtype,
                               name=f"extra_head_{i}") for i in range(s.extra_heads.num_heads)]
        self.cond_modules = {name: _ConditionerModule(name, c, t.hidden_size, self.dtype,
                                                      name=f"cond_{name}")
                             for name, c in s.conditioners.items()}
        if s.dep_q:
            d = s.depformer
            self.depformer_in = [nn.Dense(d.hidden_size, use_bias=False, dtype=self.dtype,
                                          name=f"depformer_in_{i}") for i in range(s.num_in_proj)]
            self.depformer_text_emb = KyutaiEmbed(s.text_in_vocab_size, d.hidden_size,
                                                  low_rank=d.low_rank,
                                                  demux=s.demux_second_text_stream,
                                                  dtype=self.dtype, name="depformer_text_emb")
            self.depformer_emb = [KyutaiEmbed(s.audio_vocab_size, d.hidden_size,
                                              low_rank=d.low_rank, dtype=self.dtype,
                                              name=f"depformer_emb_{k}")
                                  for k in range(s.dep_q - 1)]
            self.dep_layers = [_block(d, t, f"depformer_{i}", self.dtype, weight_sets=s.num_sets)
                               for i in range(d.num_layers)]
            self.audio_heads = [nn.Dense(s.card, use_bias=False, dtype=self.dtype,
                                         name=f"audio_head_{k}") for k in range(s.dep_q)]

    # -- conditioning ----------------------------------------------------------------------

    def _conditions(self, conditions: Mapping[str, Any] | None, batch: int):
        """(sum [B, 1, D] | None, cross [B, Sc, D] | None, cross_mask [B, Sc] | None)."""
        conditions = dict(conditions or {})
        total, cross, cross_mask = None, [], []
        for name, c in self.spec.conditioners.items():
            value, mask = conditions.get(name), conditions.get(f"{name}_mask")
            out, valid = self.cond_modules[name](value, mask, batch)
            if c.fuse == "sum":
                total = out if total is None else total + out
            else:
                # Kyutai attends to every source position: absent ones hold the learnt padding.
                cross.append(out)
                cross_mask.append(jnp.ones(valid.shape, bool))
        if not cross:
            return total, None, None
        src = jnp.concatenate(cross, axis=1)
        if self.spec.cross_pos_emb:
            src = src + self.spec.cross_pos_emb_scale * kyutai_sin_embedding(
                src.shape[1], src.shape[2]).astype(src.dtype)[None]
        return total, src, jnp.concatenate(cross_mask, axis=1)

    # -- temporal --------------------------------------------------------------------------

    def _embed(self, tokens):
        if tokens.ndim != 3 or tokens.shape[1] != 1 + self.spec.audio_codebooks:
            raise ValueError(f"tokens shape {tokens.shape} must be [B, "
                             f"1+K={1 + self.spec.audio_codebooks}"
                             f", S] (text stream first, then each audio codebook)")
        return self.text_emb(tokens[:, 0]), self.audio_emb(tokens[:, 1:])

    def _temporal(self, x, positions, caches=None, context=None, context_mask=None,
                  cross_mask=None):
        if self.spec.temporal.cross_attention and context is None:
            raise ValueError("a temporal.cross_attention model needs a cross-attention source "
                             "(a `cross` conditioner or fusion='cross_attention')")
        new = []
        for i, layer in enumerate(self.layers):
            x, c, _ = layer(x, positions, cache=None if caches is None else caches[i],
                            context=context, context_mask=context_mask, cross_mask=cross_mask)
            new.append(c)
        return self.out_norm(x), (new if caches is not None else None)

    def _heads(self, h):
        text = self.text_linear(h)
        extra = (jnp.stack([head(h) for head in self.extra], axis=-2) if self.extra
                 else jnp.zeros(h.shape[:-1] + (0, self.spec.extra_heads.dim), h.dtype))
        return text, extra

    def _cross_inputs(self, text_e, cond_cross, cond_mask, q_cols, k_cols, k_valid):
        """Cross-attention source and masks for fusion='cross_attention' (+ cross conditions).

        Text key column c is visible from query column q iff c <= q and q - c < context.
        """
        b, tq = q_cols.shape
        vis = (k_cols[:, None, :] <= q_cols[:, :, None]) & k_valid[:, None, :]
        if self.spec.temporal.context is not None:
            vis &= q_cols[:, :, None] - k_cols[:, None, :] < self.spec.temporal.context
        ctx, ctx_mask = text_e, k_valid
        if cond_cross is not None:
            sc = cond_cross.shape[1]
            ctx = jnp.concatenate([cond_cross, text_e], axis=1)
            ctx_mask = jnp.concatenate([cond_mask, k_valid], axis=1)
            vis = jnp.concatenate([jnp.broadcast_to(cond_mask[:, None, :], (b, tq, sc)), vis],
                                  axis=2)
        return ctx, ctx_mask, vis[:, None]

    def __call__(self, tokens, conditions=None):
        s = self.spec
        check_inputs(s, tokens, "tokens")
        b, _, n = tokens.shape
        text_e, audio_e = self._embed(tokens)
        cond_sum, cond_cross, cond_mask = self._conditions(conditions, b)
        add = (lambda x: x) if cond_sum is None else (lambda x: x + cond_sum.astype(x.dtype))
        cols = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        kw = dict(context=cond_cross, context_mask=cond_mask)
        if s.fusion == "add":
            h, _ = self._temporal(add(text_e + audio_e), cols, **kw)
            h_text = h_audio = h
        elif s.fusion == "cross_attention":
            ctx, ctx_mask, vis = self._cross_inputs(text_e, cond_cross, cond_mask, cols, cols,
                                                    jnp.ones((b, n), bool))
            h, _ = self._temporal(add(audio_e), cols, context=ctx, context_mask=ctx_mask,
                                  cross_mask=vis)
            h_text = h_audio = h
        elif s.fusion == "concat":
            x = jnp.concatenate([add(text_e), add(audio_e)], axis=1)
            pos = jnp.broadcast_to(jnp.arange(2 * n, dtype=jnp.int32), (b, 2 * n))
            h, _ = self._temporal(x, pos, **kw)
            h_text, h_audio = h[:, :n], h[:, n:]
        else:  # interleave
            x = jnp.stack([add(text_e), add(audio_e)], axis=2).reshape(b, 2 * n, -1)
            pos = jnp.broadcast_to(jnp.arange(2 * n, dtype=jnp.int32), (b, 2 * n))
            h, _ = self._temporal(x, pos, **kw)
            h_text = h_audio = h[:, 1::2]
        text_logits, extra = self._heads(h_text)
        return {"text_logits": text_logits, "hidden": h_audio, "extra": extra}

    # -- depformer -------------------------------------------------------------------------

    def _dep_input(self, k: int, prev, hidden):
        s = self.spec
        proj = self.depformer_in[s.in_schedule[k]](hidden)
        tok = self.depformer_text_emb(prev) if k == 0 else self.depformer_emb[k - 1](prev)
        return proj + tok

    def _dep_slice(self, k: int, x, caches):
        """Runs slice k ([N, 1, Dd]) through every depformer layer with per-slice weights."""
        pos = jnp.full((x.shape[0], 1), k, jnp.int32)
        new = []
        for layer, cache in zip(self.dep_layers, caches):
            x, cache, _ = layer(x, pos, cache=cache, weight_set=self.spec.schedule[k])
            new.append(cache)
        return self.audio_heads[k](x[:, 0]), new

    @nn.nowrap
    def init_depformer_cache(self, n: int):
        d = self.spec.depformer
        attn = blocks.Attention(d.num_heads, d.num_heads, d.hidden_size // d.num_heads,
                                parent=None)
        return [attn.init_cache(n, self.spec.dep_q, self.dtype) for _ in range(d.num_layers)]

    def depformer_forward(self, targets, hidden):
        """Teacher-forced audio logits [B, dep_q, S, card] from targets [B, 1+K, S]."""
        s = self.spec
        if not s.dep_q:
            raise ValueError("this model has no depformer (model.depformer.num_slices=0)")
        b, _, n = targets.shape
        flat_h = hidden.reshape(b * n, 1, -1)
        caches = self.init_depformer_cache(b * n)
        logits = []
        for k in range(s.dep_q):
            prev = targets[:, k].reshape(b * n, 1)  # stream k-1 of the column (text for k=0)
            out, caches = self._dep_slice(k, self._dep_input(k, prev, flat_h), caches)
            logits.append(out.reshape(b, n, -1))
        return jnp.stack(logits, axis=1)

    def depformer_step(self, k: int, prev, hidden, cache):
        """Slice k of one frame: prev [B] (text token for k=0, else codebook k-1), hidden
        [B, D] -> (logits [B, card], cache). Start each frame with `init_depformer_cache(B)`."""
        x = self._dep_input(k, prev[:, None], hidden[:, None])
        return self._dep_slice(k, x, cache)

    # -- decoding --------------------------------------------------------------------------

    @nn.nowrap
    def init_state(self, batch: int):
        """Decode state: a ring KV cache per temporal layer (length = context) + text buffer."""
        t = self.spec.temporal
        per_col = 2 if self.spec.fusion in ("concat", "interleave") else 1
        length = t.context  # the ring buffer: Moshi's context window
        attn = blocks.Attention(t.num_heads, t.num_kv_heads, t.hidden_size // t.num_heads,
                                parent=None)
        state = {"caches": [attn.init_cache(batch, length * per_col, self.dtype)
                            for _ in range(t.num_layers)],
                 "column": jnp.zeros((), jnp.int32)}
        if self.spec.fusion == "cross_attention":
            state["text"] = jnp.zeros((batch, length, t.hidden_size), self.dtype)
            state["text_col"] = jnp.full((batch, length), -1, jnp.int32)
        return state

    def step(self, column, state, conditions=None, part: str = "frame"):
        """One decode column [B, 1+K, 1] -> (text_logits [B, Vt], hidden [B, D], state).

        part: "frame" for add / cross_attention / interleave; for concat the sampler runs the
        text segment first ("text": text logits of the next text column) and then the audio
        segment ("audio": hidden for the depformer).
        """
        s = self.spec
        check_inputs(s, column, "column")
        b = column.shape[0]
        text_e, audio_e = self._embed(column)
        cond_sum, cond_cross, cond_mask = self._conditions(conditions, b)
        add = (lambda x: x) if cond_sum is None else (lambda x: x + cond_sum.astype(x.dtype))
        caches = state["caches"]
        col = state["column"]
        new_state = dict(state)
        if s.fusion == "concat":
            if part not in ("text", "audio"):
                raise ValueError(f"part={part!r}: fusion='concat' decodes part='text' then 'audio'")
        elif part != "frame":
            raise ValueError(f"part={part!r}: fusion={s.fusion!r} decodes part='frame'")
        kw = dict(context=cond_cross, context_mask=cond_mask)
        if s.fusion == "add":
            h, caches = self._temporal(add(text_e + audio_e), None, caches, **kw)
        elif s.fusion == "cross_attention":
            length = state["text"].shape[1]
            slot = col % length
            buf = jax.lax.dynamic_update_slice_in_dim(state["text"], text_e.astype(
                state["text"].dtype), slot, axis=1)
            cols = state["text_col"].at[:, slot].set(col)
            qc = jnp.full((b, 1), col, jnp.int32)
            ctx, ctx_mask, vis = self._cross_inputs(buf, cond_cross, cond_mask, qc, cols,
                                                    cols >= 0)
            h, caches = self._temporal(add(audio_e), None, caches, context=ctx,
                                       context_mask=ctx_mask, cross_mask=vis)
            new_state.update(text=buf, text_col=cols)
        elif s.fusion == "concat":
            x = add(text_e) if part == "text" else add(audio_e)
            h, caches = self._temporal(x, None, caches, **kw)
        else:
            x = jnp.concatenate([add(text_e), add(audio_e)], axis=1)
            h, caches = self._temporal(x, None, caches, **kw)
            h = h[:, 1:]
        text_logits, _ = self._heads(h[:, -1])
        new_state.update(caches=caches, column=col + 1)
        return text_logits, h[:, -1], new_state

    def extra_heads(self, hidden):
        return self._heads(hidden)[1]

    def init_all(self, tokens, conditions=None):
        """Touches every parameter (for init)."""
        out = self(tokens, conditions)
        if self.spec.dep_q:
            out["audio_logits"] = self.depformer_forward(tokens, out["hidden"])
        return out


class _ConditionerModule(nn.Module):
    """Kyutai LUT / tensor conditioner: output_proj(embed or tensor), learnt padding where the
    condition is absent. -> ([B, S, D], valid [B, S])."""
    cond_name: str
    cond: ConditionerSpec
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, value, mask, batch: int):
        c, name = self.cond, self.cond_name
        pad = self.param("learnt_padding", nn.initializers.normal(0.2), (self.out_dim,))
        proj = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, name="output_proj")
        if c.type == "lut":
            ids = (jnp.full((batch,), c.n_bins, jnp.int32) if value is None
                   else jnp.asarray(value, jnp.int32).reshape(batch))
            valid = ((ids >= 0) & (ids < c.n_bins))[:, None]  # n_bins (or -1) = absent
            emb = blocks.Embed(c.n_bins + 1, c.dim, dtype=self.dtype, name="embed")
            x = proj(emb(jnp.clip(ids, 0, c.n_bins))[:, None])
        else:
            if value is None:
                if self.is_initializing():
                    value = jnp.zeros((batch, 1, c.dim), self.dtype)
                else:
                    raise ValueError(f"conditions[{name!r}] is required: a [B, S, {c.dim}] "
                                     f"tensor (tensor conditioner)")
            value = jnp.asarray(value)
            if value.ndim != 3 or value.shape[-1] != c.dim:
                raise ValueError(f"conditions[{name!r}] shape {value.shape} must be "
                                 f"[B, S, {c.dim}]")
            valid = (jnp.ones(value.shape[:2], bool) if mask is None
                     else jnp.asarray(mask, bool))
            x = proj(value.astype(self.dtype))
        x = jnp.where(valid[..., None], x, pad.astype(x.dtype))
        return x, valid


# ------------------------------------------------------------------------------------------
# Family API


def build(model_config, dtype=jnp.float32) -> MoshiLM:
    return MoshiLM(spec_from_config(model_config), dtype=dtype)


def example_conditions(spec: MoshiSpec, batch: int, rng: np.random.Generator | None = None):
    """Conditions with every conditioner present (random LUT ids, random tensors)."""
    rng = rng or np.random.default_rng(0)
    out = {}
    for name, c in spec.conditioners.items():
        if c.type == "lut":
            out[name] = rng.integers(0, c.n_bins, (batch,)).astype(np.int32)
        else:
            out[name] = rng.standard_normal((batch, 3, c.dim)).astype(np.float32)
    return out


def _example_tokens(spec: MoshiSpec, batch: int, columns: int):
    tokens = np.zeros((batch, 1 + spec.audio_codebooks, columns), np.int32)
    return jnp.asarray(tokens)


def init_params(model_config, rng, columns: int = 4):
    module = build(model_config)
    spec = module.spec
    tokens = _example_tokens(spec, 1, columns)
    conds = example_conditions(spec, 1)
    init = lambda r: module.init(r, tokens, conds, method=MoshiLM.init_all)["params"]
    if isinstance(rng, jax.core.Tracer):  # traced by the caller (sharded init under jit)
        return flax.core.meta.unbox(init(rng))
    # A run-once graph (one RNG kernel per tensor): compiled without backend optimisation.
    return flax.core.meta.unbox(fast_jit(init)(rng))


def describe_params(model_config) -> dict[str, dict[str, int]]:
    module = build(model_config)
    spec = module.spec
    tokens = _example_tokens(spec, 1, 2)
    conds = example_conditions(spec, 1)
    shapes = jax.eval_shape(
        lambda r: module.init(r, tokens, conds, method=MoshiLM.init_all)["params"],
        jax.random.PRNGKey(0))
    shapes = flax.core.meta.unbox(shapes)
    is_emb = lambda path: path[-1] == "embedding"
    groups: dict[str, dict] = {"embeddings": {}, "temporal": {}, "heads": {},
                               "depformer": {}, "conditioners": {}}
    for name, sub in shapes.items():
        if name in ("text_emb", "audio_emb"):
            groups["embeddings"][name] = sub
        elif name.startswith("temporal_") or name == "out_norm":
            groups["temporal"][name] = sub
        elif name == "text_linear" or name.startswith("extra_head_"):
            groups["heads"][name] = sub
        elif name.startswith("cond_"):
            groups["conditioners"][name] = sub
        else:
            groups["depformer"][name] = sub
    return {k: config_lib.count_params(v, embedding=is_emb) for k, v in groups.items() if v}


def _text_ids(spec: MoshiSpec) -> int:
    """Text ids in use: text_in_vocab_size, squared with the demuxed second text stream."""
    v = spec.text_in_vocab_size
    return v * v if spec.demux_second_text_stream else v


def check_inputs(spec: MoshiSpec, tokens, name: str = "tokens") -> None:
    """Module input tokens [B, 1+K, T] (B, T >= 1): ints, text in -1..text_in_vocab-1 and audio
    in -1..card (the initial tokens included; -1 = zero / masked). Shapes are always checked;
    values on the host only (concrete arrays), since an id past an embedding table becomes a
    NaN row under jit: callers that jit must check their inputs first (`check_tokens`)."""
    k = spec.audio_codebooks
    if not family_lib.check_code_grid(tokens, 1 + k, "MoshiLM", name,
                                      f"[B, 1+K={1 + k}, S] (K=model.audio_codebooks)"):
        return
    t = np.asarray(tokens)
    text_hi = _text_ids(spec)
    for rows, lo, hi, what in ((t[:, :1], -1, text_hi - 1, "text"),
                               (t[:, 1:], -1, spec.card, "audio")):
        bad = (rows < lo) | (rows > hi)
        if bad.any():
            b, q, i = np.argwhere(bad)[0]
            q = q + (0 if what == "text" else 1)
            raise ValueError(f"MoshiLM: {name}[{b}, {q}, {i}] = {t[b, q, i]}: {what} ids must be "
                             f"in {lo}..{hi} (-1 = zero, {hi} = the initial token)")


def check_tokens(model_config, codes, name: str = "codes") -> None:
    """Host-side range check of codes [B, 1+K, T]: text < text_in_vocab_size, audio < card
    (the initial token), -1 allowed (zero / masked). Raises ValueError naming the problem."""
    spec = spec_from_config(model_config)
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.shape[1] != 1 + spec.audio_codebooks:
        raise ValueError(f"{name} shape {codes.shape} must be [B, 1+K, T] with "
                         f"K=model.audio_codebooks={spec.audio_codebooks} (got "
                         f"{codes.shape[1] - 1 if codes.ndim == 3 else '?'} codebooks)")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{name} must be integer ids, got {codes.dtype}")
    text, audio = codes[:, 0], codes[:, 1:]
    text_hi = _text_ids(spec)
    if ((text < -1) | (text >= text_hi)).any():
        bad = text[(text < -1) | (text >= text_hi)][0]
        raise ValueError(f"{name}[:, 0] (text) has id {bad}: expected -1 or 0..{text_hi - 1}")
    bad = (audio < -1) | (audio >= spec.card)
    if bad.any():
        b, q, t = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{b}, {q + 1}, {t}] (audio codebook {q}) = {audio[b, q, t]}: "
                         f"expected -1 or an id in 0..{spec.card - 1} (card = "
                         f"model.audio_vocab_size - 1 = {spec.card})")


def stack_streams(model_config, text, audio) -> np.ndarray:
    """codes [B, 1+K, T] from text [B, T] and audio: an array [B, K, T] or a list of K entries,
    each [B, T] or None (an absent codebook: zero ids, contributes nothing, masked in the loss).
    """
    spec = spec_from_config(model_config)
    text = np.asarray(text)
    if text.ndim != 2:
        raise ValueError(f"text shape {text.shape} must be [B, T]")
    if not isinstance(audio, (list, tuple)):
        audio = list(np.moveaxis(np.asarray(audio), 1, 0))
    if len(audio) != spec.audio_codebooks:
        raise ValueError(f"audio has {len(audio)} codebooks; model.audio_codebooks="
                         f"{spec.audio_codebooks} (pass None for an absent codebook)")
    rows = [text]
    for q, a in enumerate(audio):
        if a is None:
            rows.append(np.full(text.shape, ZERO_TOKEN, np.int32))
        else:
            a = np.asarray(a)
            if a.shape != text.shape:
                raise ValueError(f"audio[{q}] shape {a.shape} must equal text shape {text.shape}")
            rows.append(a)
    codes = np.stack(rows, axis=1).astype(np.int32)
    check_tokens(model_config, codes)
    return codes


def delay_pattern(spec: MoshiSpec, frames: int) -> patterns.Pattern:
    return patterns.moshi_delays(spec.delays, frames)


def initial_tokens(spec: MoshiSpec) -> np.ndarray:
    """[1+K, 1] initial (special) token per stream: text_initial, then card per codebook."""
    return np.array([[spec.text_initial]] + [[spec.card]] * spec.audio_codebooks, np.int32)


def delayed_inputs(spec: MoshiSpec, codes):
    """codes [B, 1+K, T] -> (inputs [B, 1+K, T], targets [B, 1+K, T], target_mask [B, 1+K, T]).

    Each stream is shifted right by its delay (padded with the initial token) after one initial
    column (`patterns.build`, kind stream_delay, keep_only_valid_steps); the model reads
    columns [:-1] and is scored on [1:]; zero ids (-1) and padding are masked.
    """
    pattern = delay_pattern(spec, codes.shape[2])
    seq, mask = patterns.build(pattern, codes, initial_tokens(spec), keep_only_valid_steps=True)
    targets = seq[:, :, 1:]
    valid = mask[None, :, 1:] & (targets != ZERO_TOKEN)
    return seq[:, :, :-1], targets, valid


def undelay_logits(spec: MoshiSpec, text_logits, audio_logits):
    """Delayed-position logits -> logits aligned with the codes (NaN where not predicted).

    text_logits [B, T, Vt], audio_logits [B, dep_q, T, card] -> ([B, 1, T, Vt], mask [1, T],
    [B, dep_q, T, card], mask [dep_q, T]) through `patterns.revert_logits`.
    """
    T = text_logits.shape[1]
    full = patterns.moshi_delays(spec.delays, T)
    # Output position s predicts step s+1; revert each stream group on its own sub-pattern.
    text = _undelay_group(full, (0,), text_logits[:, None])
    audio = None
    if audio_logits is not None:
        audio = _undelay_group(full, tuple(range(1, 1 + spec.dep_q)), audio_logits)
    return text, audio


def _undelay_group(full: patterns.Pattern, streams: Sequence[int], logits):
    """(logits [B, G, T, V], mask [G, T]) of the streams `streams` of the full layout.

    A group's delays need not contain a 0 (a delayed text stream, or every generated codebook
    delayed, e.g. [0, 2, 2, 2]): it is reverted on its delays minus their minimum `base`, then
    moved `base` frames earlier (code t of a stream with delay d is predicted at output t + d),
    the last `base` frames having no prediction (NaN, mask False).
    """
    delays = dict(full.params)["delays"]
    sub = [delays[i] for i in streams]
    base = min(sub)
    out, mask = patterns.revert_logits(patterns.moshi_delays([d - base for d in sub],
                                                             full.timesteps),
                                       logits, keep_only_valid_steps=True)
    if base:
        out = jnp.concatenate([out[:, :, base:], jnp.full_like(out[:, :, :base], jnp.nan)],
                              axis=2)
        mask = jnp.concatenate([mask[:, base:], jnp.zeros_like(mask[:, :base])], axis=1)
    return out, mask


def example_batch(model_config, batch_size: int, rng: np.random.Generator,
                  frames: int = 8) -> dict[str, np.ndarray]:
    spec = spec_from_config(model_config)
    text_hi = min(spec.text_out_vocab_size, spec.text_in_vocab_size - 1)
    text = rng.integers(0, text_hi, (batch_size, 1, frames))
    audio = rng.integers(0, spec.card, (batch_size, spec.audio_codebooks, frames))
    batch = {"codes": np.concatenate([text, audio], axis=1).astype(np.int32)}
    if spec.conditioners:
        batch["conditions"] = example_conditions(spec, batch_size, rng)
    return batch


# ------------------------------------------------------------------------------------------
# Validation


def _check_transformer(config, p: str, depformer: bool):
    """Ranges of a temporal / depformer section (its keys and types: `check_schema`)."""
    check_int(config, f"{p}.hidden_size", lo=1)
    heads = check_int(config, f"{p}.num_heads", lo=1)
    width = config_lib.get_path(config, f"{p}.hidden_size")
    require(width % heads == 0, f"{p}.hidden_size", width,
            f"must be divisible by {p}.num_heads={heads}")
    require((width // heads) % 2 == 0, f"{p}.hidden_size", width,
            f"head width hidden_size/num_heads={width // heads} must be even (RoPE pairs)")
    if not depformer:
        kv = check_int(config, f"{p}.num_kv_heads", lo=1)
        require(heads % kv == 0, f"{p}.num_kv_heads", kv,
                f"must divide {p}.num_heads={heads}")
        check_int(config, f"{p}.context", lo=1)
        check_choice(config, f"{p}.norm", ("rms", "layer"))
        check_float(config, f"{p}.norm_eps", lo=0.0, lo_open=True)
    check_int(config, f"{p}.num_layers", lo=1)
    check_int(config, f"{p}.ffn_hidden", lo=1)
    check_choice(config, f"{p}.ffn", ("gated", "plain"))
    check_choice(config, f"{p}.activation", sorted(blocks.ACTIVATIONS))
    check_choice(config, f"{p}.positional", ("rope", "none"))
    check_float(config, f"{p}.rope_theta", lo=1.0)
    check_float(config, f"{p}.layer_scale", lo=0.0)


def rules(config) -> None:
    """Every field of config.model for family moshi (ConfigError with the dotted path): the
    keys and types of `MoshiSpec` (`check_schema`), then ranges and cross-field rules."""
    m = config.model
    require(hasattr(m, "keys"), "model", m, "must be a section")
    av = m.get("audio_vocab_size", None)
    require(not isinstance(av, int) or isinstance(av, bool) or av > 0,
            "model.audio_vocab_size", av, "must be an int > 0 (card + 1 rows)")
    if "fusion" in m:  # a choice: named with its choices whatever the wrong value's type
        check_choice(config, "model.fusion", FUSIONS)
    config_lib.check_schema(config, "model", config_lib.spec_schema(MoshiSpec))
    check_choice(config, "model.family", (FAMILY,))
    tin = check_int(config, "model.text_in_vocab_size", lo=2)
    check_int(config, "model.text_out_vocab_size", lo=1)
    check_int(config, "model.audio_vocab_size", lo=2)
    k = check_int(config, "model.audio_codebooks", lo=1, hi=64)
    delays = m.delays
    require(len(delays) == 1 + k, "model.delays", list(delays),
            f"needs one delay per stream: 1 text + model.audio_codebooks={k} = {1 + k}, "
            f"got {len(delays)}")
    for i, d in enumerate(delays):
        require(isinstance(d, int) and not isinstance(d, bool) and d >= 0,
                f"model.delays[{i}]", d, "must be an int >= 0")
    require(min(delays) == 0, "model.delays", list(delays), "must contain a 0 (the text stream "
            "normally has delay 0)")
    check_int(config, "model.text_padding_id", lo=0, hi=tin - 1)
    check_int(config, "model.text_end_padding_id", lo=0, hi=tin - 1)
    fusion = check_choice(config, "model.fusion", FUSIONS)
    _check_transformer(config, "model.temporal", depformer=False)
    if fusion == "cross_attention":
        require(m.temporal.cross_attention, "model.temporal.cross_attention", False,
                "must be True when model.fusion='cross_attention'")
    # depformer
    p = "model.depformer"
    dep_q = check_int(config, f"{p}.num_slices", lo=0)
    require(dep_q <= k, f"{p}.num_slices", dep_q,
            f"must be <= model.audio_codebooks={k} (slices predict input codebooks)")
    check_int(config, f"{p}.low_rank", lo=0)
    sched = m.depformer.schedule
    if dep_q:
        _check_transformer(config, p, depformer=True)
        if len(sched):
            require(m.depformer.weights_per_step, f"{p}.schedule", list(sched),
                    f"needs {p}.weights_per_step=True")
            require(len(sched) == dep_q, f"{p}.schedule", list(sched),
                    f"needs one weight set per slice ({p}.num_slices={dep_q}), got {len(sched)}")
            for i, v in enumerate(sched):
                require(isinstance(v, int) and 0 <= v, f"{p}.schedule[{i}]", v, "must be an int >= 0")
            require(sorted(set(sched)) == list(range(max(sched) + 1)), f"{p}.schedule",
                    list(sched), "must use every weight set 0..max (no unused sets)")
    else:
        require(not len(sched), f"{p}.schedule", list(sched), f"must be empty when {p}.num_slices=0")
    # heads, conditioning
    check_int(config, "model.extra_heads.num_heads", lo=0)
    check_int(config, "model.extra_heads.dim", lo=1)
    check_float(config, "model.cross_pos_emb_scale")
    has_cross = fusion == "cross_attention"
    require(hasattr(m.conditioners, "keys"), "model.conditioners", m.conditioners,
            "must be a section (name -> conditioner), empty for none")
    for name in m.conditioners.keys():
        cp = f"model.conditioners.{name}"
        config_lib.check_schema(config, cp, config_lib.spec_schema(ConditionerSpec))
        typ = check_choice(config, f"{cp}.type", ("lut", "tensor"))
        check_int(config, f"{cp}.dim", lo=1)
        fuse = check_choice(config, f"{cp}.fuse", ("sum", "cross"))
        if typ == "lut":
            n_bins = check_int(config, f"{cp}.n_bins", lo=1)
            pv = m.conditioners[name].possible_values
            require(len(pv) <= n_bins, f"{cp}.possible_values", list(pv),
                    f"has more values than {cp}.n_bins={n_bins}")
            require(fuse == "sum", f"{cp}.fuse", fuse, "a lut conditioner is summed ('sum')")
        if fuse == "cross":
            has_cross = True
            require(m.temporal.cross_attention, f"{cp}.fuse", fuse,
                    "needs model.temporal.cross_attention=True")
    if m.temporal.cross_attention:
        require(m.temporal.num_kv_heads == m.temporal.num_heads, "model.temporal.num_kv_heads",
                m.temporal.num_kv_heads, "must equal model.temporal.num_heads with "
                "cross_attention (Kyutai's cross-attention projection has no kv_repeat)")
        require(has_cross, "model.temporal.cross_attention", True,
                "needs a cross-attention source: a conditioner with fuse='cross' or "
                "model.fusion='cross_attention'")
    _check_sample_extra(config)


def _check_sample_extra(config) -> None:
    """The Moshi sampler's text-stream knobs in sample.extra (read by audiolm.sample.moshi)."""
    sample = config.get("sample", None)
    extra = sample.get("extra", None) if hasattr(sample, "get") else None
    if extra is None:
        return
    require(hasattr(extra, "keys"), "sample.extra", extra, "must be a section or None")
    if "text_temperature" in extra:
        check_float(config, "sample.extra.text_temperature", lo=0.0)
    if "text_top_k" in extra:
        check_int(config, "sample.extra.text_top_k", lo=0)
    if "user_codes" in extra:
        check_str(config, "sample.extra.user_codes")


config_lib.register_rules("moshi", rules)
