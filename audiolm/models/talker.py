"""Qwen3-Omni Talker: Thinker projections, MoE codec decoder, codec_head and code predictor.

The Talker turns Thinker states into audio codes, one frame at a time. A frame has G codes
(`num_codebooks`, HF `num_code_groups`): the MoE decoder predicts codebook 0 with `codec_head`;
the small dense code predictor (HF "MTP") then predicts codebooks 1..G-1 of the same frame,
autoregressively inside the frame, with RoPE positions restarting at 0 every frame.

Config: `TalkerSpec` (with `CodePredictorSpec`; declared in `audiolm.presets.thinker_talker_specs`)
holds every field of `model.talker` with its comment; the section schema is derived from it and
`validate_talker` checks the ranges; `build` / `init_params` take the spec or the section. Sizes of
the published model (Qwen3-Omni-30B-A3B, read from its config.json):

  thinker_hidden_size 2048, projection_hidden 2048, hidden_size 1024, num_layers 20,
  num_heads 16, num_kv_heads 2, head_dim 128, rope_theta 1e6, rms_norm_eps 1e-6,
  vocab_size 3072, codebook_size 2048, num_codebooks 16, num_experts 128, num_experts_per_tok 6,
  moe_hidden 384, shared_expert_hidden 768, norm_topk_prob True, accept_hidden_layer 24,
  codec ids: pad 2148, bos 2149, eos 2150, nothink 2155, think_bos 2156, think_eos 2157;
  code_predictor: hidden_size 1024, num_layers 5, num_heads 16, num_kv_heads 8, head_dim 128,
  ffn_hidden 3072, rope_theta 1e6, rms_norm_eps 1e-6.
  Parameters (equal to transformers' meta-device count, tested): decoder + codec embedding
  3,167,291,392 ("Talker 3.17B"), code predictor 141,570,304 ("MTP 141.6M"), projections
  12,589,056, codec_head 3,145,728; 3,324,596,480 in all.

Design-reference Talker (`audiolm.presets.thinker_talker.design_reference`): hidden_size 1536,
num_layers 24, num_heads 12, num_kv_heads 4 (head_dim 128), num_experts 32,
num_experts_per_tok 4, num_codebooks 4, codebook_size 2048.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import audiolm.nn as anl
from audiolm import config as cfglib
from audiolm.config import (check_bool, check_choice, check_float, check_int, check_schema,
                            require, spec_from_section, spec_schema, spec_to_section)
from audiolm.nn import moe as moe_lib
from audiolm.presets import thinker_talker as tt_presets
from audiolm.presets.thinker_talker_specs import CodePredictorSpec, TalkerSpec

__all__ = ["Talker", "CodePredictor", "TalkerSpec", "CodePredictorSpec", "validate_talker",
           "tiny_config", "spec_of", "build", "init_params", "describe_params",
           "mask_codec_logits", "check_codes", "check_ids"]

MOE_DISPATCH = moe_lib.DISPATCHES
_SPECIAL_IDS = ("codec_pad_id", "codec_bos_id", "codec_eos_id", "codec_nothink_id",
                "codec_think_bos_id", "codec_think_eos_id")


def _check_attention(config: Any, path: str) -> None:
    heads = check_int(config, f"{path}.num_heads", lo=1)
    kv = check_int(config, f"{path}.num_kv_heads", lo=1)
    require(heads % kv == 0, f"{path}.num_kv_heads", kv,
            f"must divide {path}.num_heads={heads} (each kv head serves a group of q heads)")
    head_dim = check_int(config, f"{path}.head_dim", lo=2)
    require(head_dim % 2 == 0, f"{path}.head_dim", head_dim, "must be even (RoPE rotates pairs)")
    check_float(config, f"{path}.rope_theta", lo=1.0, lo_open=True)
    check_float(config, f"{path}.rms_norm_eps", lo=0.0, lo_open=True)


def validate_talker(config: Any, path: str = "model.talker") -> None:
    """Checks the Talker section at dotted `path` of the experiment config `config`.

    Raises ConfigError naming the field, its value and the rule.
    """
    check_schema(config, path, spec_schema(TalkerSpec))
    check_int(config, f"{path}.thinker_hidden_size", lo=1)
    check_int(config, f"{path}.projection_hidden", lo=1)
    hidden = check_int(config, f"{path}.hidden_size", lo=1)
    check_int(config, f"{path}.num_layers", lo=1)
    _check_attention(config, path)
    codebook = check_int(config, f"{path}.codebook_size", lo=2)
    vocab = check_int(config, f"{path}.vocab_size", lo=2)
    require(vocab > codebook, f"{path}.vocab_size", vocab,
            f"must be > {path}.codebook_size={codebook}: codebook 0's vocabulary holds the "
            "audio codes followed by the special codec ids")
    check_int(config, f"{path}.num_codebooks", lo=2, hi=cfglib.MAX_CODEBOOKS)
    experts = check_int(config, f"{path}.num_experts", lo=1)
    check_int(config, f"{path}.num_experts_per_tok", lo=1, hi=experts)
    check_int(config, f"{path}.moe_hidden", lo=1)
    check_int(config, f"{path}.shared_expert_hidden", lo=1)
    check_bool(config, f"{path}.norm_topk_prob")
    check_choice(config, f"{path}.moe_dispatch", MOE_DISPATCH)
    check_float(config, f"{path}.moe_capacity_factor", lo=0.0, lo_open=True)
    check_int(config, f"{path}.accept_hidden_layer", lo=0)
    seen = {}
    for key in _SPECIAL_IDS:
        value = check_int(config, f"{path}.{key}", lo=codebook, hi=vocab - 1)
        require(value not in seen, f"{path}.{key}", value,
                f"must differ from {path}.{seen.get(value)} (special codec ids are distinct)")
        seen[value] = key
    cp = f"{path}.code_predictor"
    cp_hidden = check_int(config, f"{cp}.hidden_size", lo=1)
    require(cp_hidden == hidden, f"{cp}.hidden_size", cp_hidden,
            f"must equal {path}.hidden_size={hidden}: the predictor reads the Talker hidden state "
            "as its first input")
    check_int(config, f"{cp}.num_layers", lo=1)
    check_int(config, f"{cp}.ffn_hidden", lo=1)
    _check_attention(config, cp)


def tiny_config() -> ml_collections.ConfigDict:
    """A fresh `model.talker` section of the tiny Talker (`presets.thinker_talker.TINY_TALKER`)."""
    return spec_to_section(tt_presets.TINY_TALKER)


# ---------------------------------------------------------------------------------------------
# Model.


def spec_of(cfg: Any) -> TalkerSpec:
    """The `TalkerSpec` of a `model.talker` section (schema-checked; a spec passes through)."""
    if isinstance(cfg, TalkerSpec):
        return cfg
    return spec_from_section(TalkerSpec, {"model": {"talker": cfg}}, "model.talker")


def check_codes(codes: Any, num_codebooks: int, codebook_size: int, name: str = "codes",
                axis: int = 1) -> None:
    """Raises ValueError unless `codes` is an int array with `num_codebooks` on `axis` and (for
    concrete arrays) every id in [0, codebook_size). Runs before any computation."""
    shape = tuple(np.shape(codes))
    if len(shape) < 2 or shape[axis] != num_codebooks:
        raise ValueError(f"{name}: shape {shape} must have {num_codebooks} codebooks on axis "
                         f"{axis}")
    dtype = codes.dtype if hasattr(codes, "dtype") else np.asarray(codes).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name}: dtype {dtype} must be an integer type")
    if not isinstance(codes, jax.core.Tracer):
        arr = np.asarray(codes)
        if arr.size and (arr.min() < 0 or arr.max() >= codebook_size):
            raise ValueError(f"{name}: ids must be in [0, {codebook_size}); got min {arr.min()}, "
                             f"max {arr.max()}")


def check_ids(ids: Any, vocab_size: int, name: str) -> None:
    """Raises ValueError if concrete `ids` are not ints in [0, vocab_size)."""
    dtype = ids.dtype if hasattr(ids, "dtype") else np.asarray(ids).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name}: dtype {dtype} must be an integer type")
    if not isinstance(ids, jax.core.Tracer):
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise ValueError(f"{name}: ids must be in [0, {vocab_size}); got min {arr.min()}, "
                             f"max {arr.max()}")


def _block(c: Any, *, moe: Any | None, dtype: Any, param_dtype: Any, name: str) -> nn.Module:
    """A Qwen3 pre-norm decoder layer (q/k norm, rotate-half RoPE, causal) from audiolm.nn."""
    kw: dict[str, Any] = dict(
        norm="rms", norm_eps=c.rms_norm_eps, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
        head_dim=c.head_dim, qk_norm=True, qk_norm_eps=c.rms_norm_eps, rope_style="rotate_half",
        rope_theta=c.rope_theta, causal=True, activation="silu", dtype=dtype,
        param_dtype=param_dtype, name=name)
    if moe is None:
        kw.update(ffn="gated", ffn_hidden=c.ffn_hidden)
    else:
        kw.update(ffn="moe", num_experts=moe.num_experts, top_k=moe.num_experts_per_tok,
                  expert_hidden=moe.moe_hidden, norm_topk_prob=moe.norm_topk_prob,
                  shared_expert_hidden=moe.shared_expert_hidden, dispatch=moe.moe_dispatch,
                  capacity_factor=moe.moe_capacity_factor)
    return anl.TransformerBlock(**kw)


class CodePredictor(nn.Module):
    """Dense decoder predicting codebooks 1..G-1 of one frame from the Talker hidden and code 0.

    Within a frame the input sequence is [talker hidden h, E_talker(c0), E_1(c1), ...,
    E_{G-2}(c_{G-2})] at RoPE positions 0..G-1; the output at position p (1 <= p <= G-1) goes
    through head p-1 and predicts code c_p. Params: `layers_{i}`, `norm`, `codec_embedding`
    [G-1, codebook_size, D] (row j embeds codebook j+1), `lm_head` [G-1, D, codebook_size].
    """
    config: TalkerSpec  # reads code_predictor, num_codebooks, codebook_size
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        t = self.config
        c = t.code_predictor
        g, card = t.num_codebooks, t.codebook_size
        self.layers = [_block(c, moe=None, dtype=self.dtype, param_dtype=self.param_dtype,
                              name=f"layers_{i}") for i in range(c.num_layers)]
        self.norm = anl.RMSNorm(eps=c.rms_norm_eps, dtype=self.dtype,
                                param_dtype=self.param_dtype)
        self.codec_embedding = self.param(
            "codec_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                         ("codebooks", "vocab", "embed")),
            (g - 1, card, c.hidden_size), self.param_dtype)
        self.lm_head = self.param(
            "lm_head",
            nn.with_logical_partitioning(nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)),
                ("codebooks", "embed", "vocab")),
            (g - 1, c.hidden_size, card), self.param_dtype)

    def embed(self, codes: jax.Array, first: int = 1) -> jax.Array:
        """codes [..., K] of codebooks first..first+K-1 -> embeddings [..., K, D]."""
        k = codes.shape[-1]
        tables = jnp.asarray(self.codec_embedding, self.dtype)[first - 1:first - 1 + k]
        return tables[jnp.arange(k), codes]

    def heads(self, hidden: jax.Array, first: int = 0) -> jax.Array:
        """hidden [..., K, D] through heads first..first+K-1 -> logits [..., K, codebook_size]."""
        k = hidden.shape[-2]
        w = jnp.asarray(self.lm_head, self.dtype)[first:first + k]
        return jnp.einsum("...kd,kdv->...kv", hidden.astype(self.dtype), w)

    def decode(self, x: jax.Array, positions: jax.Array | None = None,
               caches: list | None = None) -> tuple[jax.Array, list | None]:
        """x [B, T, D] -> normed hidden [B, T, D] (and the new per-layer KV caches)."""
        new = [] if caches is not None else None
        for i, layer in enumerate(self.layers):
            x, cache, _ = layer(x, positions, cache=None if caches is None else caches[i])
            if new is not None:
                new.append(cache)
        return self.norm(x), new

    def __call__(self, talker_hidden: jax.Array, code0_embed: jax.Array,
                 codes: jax.Array) -> jax.Array:
        """Teacher-forced logits of codebooks 1..G-1 for every frame.

        talker_hidden [B, T, D] (the Talker's final normed hidden of each frame), code0_embed
        [B, T, D] (Talker codec embedding of code 0), codes [B, G, T] -> logits
        [B, T, G-1, codebook_size] (entry j predicts codebook j+1).
        """
        g = self.config.num_codebooks
        b, t, d = talker_hidden.shape
        rest = jnp.moveaxis(codes[:, 1:g - 1], 1, -1)  # [B, T, G-2]: inputs c1..c_{G-2}
        seq = jnp.concatenate([talker_hidden[:, :, None].astype(self.dtype),
                               code0_embed[:, :, None].astype(self.dtype),
                               self.embed(rest)], axis=2)  # [B, T, G, D]
        seq = seq.reshape(b * t, g, d)  # every frame is its own sequence (positions restart)
        pos = jnp.broadcast_to(jnp.arange(g, dtype=jnp.int32), (b * t, g))
        hidden, _ = self.decode(seq, pos)
        logits = self.heads(hidden[:, 1:])  # [B*T, G-1, card]
        return logits.reshape(b, t, g - 1, -1)

    def init_caches(self, batch: int, dtype: Any = jnp.float32) -> list:
        """Empty KV caches (G slots: one frame) for `generate`."""
        c = self.config.code_predictor
        attn = anl.Attention(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                             head_dim=c.head_dim, parent=None)
        return [attn.init_cache(batch, self.config.num_codebooks, dtype)
                for _ in range(c.num_layers)]

    def generate(self, talker_hidden: jax.Array, code0_embed: jax.Array, rng: jax.Array,
                 sample: Callable[[jax.Array, jax.Array], jax.Array]
                 ) -> tuple[jax.Array, jax.Array]:
        """Codes 1..G-1 of one frame, one at a time with a KV cache.

        talker_hidden, code0_embed [B, D] -> (codes [B, G-1] int32, embeddings [B, G-1, D] of
        those codes, whose sum feeds the next Talker step). `sample(logits [B, V], key)` ->
        ids [B] int32 is the sampling rule, given by the sampler (`audiolm.sample.rules`:
        models do not import the sample package).
        """
        g = self.config.num_codebooks
        b = talker_hidden.shape[0]
        caches = self.init_caches(b, self.dtype)
        prefix = jnp.stack([talker_hidden, code0_embed], axis=1).astype(self.dtype)
        hidden, caches = self.decode(prefix, jnp.broadcast_to(jnp.arange(2, dtype=jnp.int32),
                                                              (b, 2)), caches)
        codes, embeds = [], []
        h = hidden[:, -1]
        for j in range(g - 1):  # static unroll: G-1 is small (15 published)
            logits = self.heads(h[:, None], first=j)[:, 0]
            rng, key = jax.random.split(rng)
            code = sample(logits, key)
            e = self.embed(code[:, None], first=j + 1)[:, 0]
            codes.append(code)
            embeds.append(e)
            if j < g - 2:
                pos = jnp.full((b, 1), j + 2, jnp.int32)
                out, caches = self.decode(e[:, None], pos, caches)
                h = out[:, 0]
        return jnp.stack(codes, axis=1), jnp.stack(embeds, axis=1)


class Talker(nn.Module):
    """The Talker: projections of Thinker states, MoE decoder, codec_head, code predictor.

    Params: `text_projection` / `hidden_projection` (`fc1`, `fc2` with biases: thinker width
    -> projection_hidden -> hidden_size), `codec_embedding` [vocab, D], `layers_{i}` (MoE
    blocks with a sigmoid-gated shared expert), `norm`, `codec_head` [D, vocab],
    `code_predictor` (see CodePredictor).
    """
    config: TalkerSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        proj = dict(hidden=c.projection_hidden, activation="silu", use_bias=True,
                    out_features=c.hidden_size, **kw)
        self.text_projection = anl.MLP(**proj)
        self.hidden_projection = anl.MLP(**proj)
        self.codec_embedding = anl.Embed(c.vocab_size, c.hidden_size, **kw)
        self.layers = [_block(c, moe=c, name=f"layers_{i}", **kw) for i in range(c.num_layers)]
        self.norm = anl.RMSNorm(eps=c.rms_norm_eps, **kw)
        self.codec_head = nn.Dense(
            c.vocab_size, use_bias=False, name="codec_head",
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                ("embed", "vocab")), **kw)
        self.code_predictor = CodePredictor(c, **kw)

    # -- inputs -----------------------------------------------------------------------------

    def project_text(self, thinker_embeds: jax.Array) -> jax.Array:
        """Thinker token embeddings [B, T, thinker_hidden] -> Talker inputs [B, T, D]."""
        self._check_thinker(thinker_embeds, "thinker_embeds")
        return self.text_projection(thinker_embeds.astype(self.dtype))

    def project_hidden(self, thinker_hidden: jax.Array) -> jax.Array:
        """Thinker hidden states (after layer accept_hidden_layer) [B, T, thinker_hidden] ->
        Talker inputs [B, T, D]."""
        self._check_thinker(thinker_hidden, "thinker_hidden")
        return self.hidden_projection(thinker_hidden.astype(self.dtype))

    def embed_codec(self, ids: jax.Array) -> jax.Array:
        """Codebook-0 / special codec ids [...] -> [..., D]."""
        check_ids(ids, self.config.vocab_size, "codec ids")
        return self.codec_embedding(ids)

    def embed_frames(self, codes: jax.Array) -> jax.Array:
        """codes [B, G, T] -> the Talker input of the next step [B, T, D]: sum of the Talker
        embedding of code 0 and the code-predictor embeddings of codes 1..G-1."""
        c = self.config
        check_codes(codes, c.num_codebooks, c.codebook_size)
        e0 = self.codec_embedding(codes[:, 0])
        rest = self.code_predictor.embed(jnp.moveaxis(codes[:, 1:], 1, -1))  # [B, T, G-1, D]
        return e0 + jnp.sum(rest, axis=2)

    def _check_thinker(self, x: jax.Array, name: str) -> None:
        if x.ndim != 3 or x.shape[-1] != self.config.thinker_hidden_size:
            raise ValueError(f"{name}: shape {x.shape} must be [B, T, thinker_hidden_size="
                             f"{self.config.thinker_hidden_size}]")

    # -- decoder ----------------------------------------------------------------------------

    def init_caches(self, batch: int, max_len: int, dtype: Any = jnp.float32) -> list:
        """Empty per-layer KV caches of `max_len` slots for incremental decoding."""
        c = self.config
        attn = anl.Attention(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                             head_dim=c.head_dim, parent=None)
        return [attn.init_cache(batch, max_len, dtype) for _ in range(c.num_layers)]

    def decode(self, inputs_embeds: jax.Array, positions: jax.Array | None = None,
               caches: list | None = None) -> dict[str, Any]:
        """inputs_embeds [B, T, D] -> {"hidden" [B, T, D] (final-normed), "logits"
        [B, T, vocab] (codec_head: codebook 0 and special ids), "caches", "aux" (MoE losses
        summed over layers)}."""
        c = self.config
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != c.hidden_size:
            raise ValueError(f"inputs_embeds: shape {inputs_embeds.shape} must be [B, T, "
                             f"hidden_size={c.hidden_size}]")
        x = inputs_embeds.astype(self.dtype)
        aux = {"load_balance_loss": jnp.zeros((), jnp.float32),
               "router_z_loss": jnp.zeros((), jnp.float32)}
        new = [] if caches is not None else None
        for i, layer in enumerate(self.layers):
            x, cache, layer_aux = layer(x, positions,
                                        cache=None if caches is None else caches[i])
            if new is not None:
                new.append(cache)
            for key in aux:
                aux[key] = aux[key] + layer_aux[key].astype(jnp.float32)
        hidden = self.norm(x)
        return {"hidden": hidden, "logits": self.codec_head(hidden), "caches": new, "aux": aux}

    def __call__(self, inputs_embeds: jax.Array, codes: jax.Array | None = None,
                 positions: jax.Array | None = None) -> dict[str, Any]:
        """Teacher-forced forward.

        inputs_embeds [B, T, D] (built from the projections and codec embeddings), codes
        [B, G, T] (optional: the frame codes predicted at each position; when given, the code
        predictor runs teacher-forced on them) -> decode()'s dict plus "predictor_logits"
        [B, T, G-1, codebook_size] when codes are given.
        """
        c = self.config
        if codes is not None:  # checked before any computation
            check_codes(codes, c.num_codebooks, c.codebook_size)
            if codes.shape[2] != inputs_embeds.shape[1]:
                raise ValueError(f"codes: {codes.shape[2]} frames but inputs_embeds has "
                                 f"{inputs_embeds.shape[1]} positions")
        out = self.decode(inputs_embeds, positions)
        if codes is not None:
            e0 = self.codec_embedding(codes[:, 0])
            out["predictor_logits"] = self.code_predictor(out["hidden"], e0, codes)
        return out

    def initialize(self, thinker_states: jax.Array, codes: jax.Array) -> dict[str, Any]:
        """Touches every submodule (for `init`): thinker_states [B, T, thinker_hidden], codes
        [B, G, T]."""
        x = self.project_text(thinker_states) + self.project_hidden(thinker_states)
        x = x + self.embed_frames(codes)
        return self(x, codes)

    def predict_frame(self, talker_hidden: jax.Array, code0: jax.Array, rng: jax.Array,
                      sample: Callable[[jax.Array, jax.Array], jax.Array]
                      ) -> tuple[jax.Array, jax.Array]:
        """One frame's remaining codebooks from the Talker hidden [B, D] and code 0 [B], drawn
        by `sample(logits [B, V], key) -> ids [B]` (see `CodePredictor.generate`).

        Returns (codes [B, G] with code 0 first, next Talker input embedding [B, D] = the sum
        of the frame's code embeddings; the caller adds the trailing text hidden).
        """
        e0 = self.codec_embedding(code0)
        rest, embeds = self.code_predictor.generate(talker_hidden, e0, rng, sample)
        codes = jnp.concatenate([code0[:, None].astype(jnp.int32), rest], axis=1)
        return codes, e0 + jnp.sum(embeds, axis=1)


def init_params(cfg: Any, rng: jax.Array, dtype: Any = jnp.float32,
                param_dtype: Any = jnp.float32) -> Any:
    """Plain random params of the Talker of `cfg` (use under jax.eval_shape for shapes)."""
    c = spec_of(cfg)
    thinker = jnp.zeros((1, 2, c.thinker_hidden_size), dtype)
    codes = jnp.zeros((1, c.num_codebooks, 2), jnp.int32)
    return anl.init_params(build(c, dtype, param_dtype), rng, thinker, codes,
                           method=Talker.initialize)


def mask_codec_logits(logits: jax.Array, cfg: Any) -> jax.Array:
    """codec_head logits [..., vocab] -> logits where the special ids (>= codebook_size) other
    than codec_eos_id are -inf: what the Talker may emit as codebook 0 while speaking."""
    ids = jnp.arange(logits.shape[-1])
    allowed = (ids < cfg.codebook_size) | (ids == cfg.codec_eos_id)
    return jnp.where(allowed, logits, -jnp.inf)


def describe_params(cfg: Any) -> dict[str, dict[str, int]]:
    """{"talker": ..., "talker_code_predictor": ...} -> {"total", "active", "embedding"}
    via eval_shape (nothing allocated). "talker" is everything but the code predictor
    (projections, decoder, codec embedding and head); active counts top_k / num_experts of the
    routed experts."""
    c = spec_of(cfg)
    shapes = jax.eval_shape(lambda: init_params(c, jax.random.PRNGKey(0)))
    frac = c.num_experts_per_tok / c.num_experts

    def routed(path):
        return frac if path[-1] in ("wi_gate", "wi_up", "wo") else 1.0

    def embedding(path):
        return path[-1] == "codec_embedding" or path[0] == "codec_embedding"

    predictor = shapes["code_predictor"]
    rest = {k: v for k, v in shapes.items() if k != "code_predictor"}
    return {"talker": cfglib.count_params(rest, routed=routed, embedding=embedding),
            "talker_code_predictor": cfglib.count_params(
                predictor, embedding=lambda path: path[-1] == "codec_embedding")}


def build(cfg: Any, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> Talker:
    """The Talker module of a `TalkerSpec` or a `model.talker` section."""
    return Talker(spec_of(cfg), dtype=dtype, param_dtype=param_dtype)
