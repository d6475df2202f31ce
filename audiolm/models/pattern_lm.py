"""Pattern LM family (MusicGen / stable-audio-tools audio LM): a causal transformer over
pattern-interleaved codebooks, with cross-attention, prepend and global conditioning and
classifier-free guidance.

Model (`PatternLM`): codes are laid out by an `audiolm.patterns` pattern into a sequence
[B, K, S] (special token = card); per-codebook embeddings (card + 1 rows) are summed; a pre-norm
causal transformer runs over [prepend tokens; sequence]; one linear head per codebook gives
logits [B, K, S, card] for the sequence positions (prepend positions are removed).

Conditioning (ids listed in `model.conditioning`, conditioners in `conditioners.py`):

- cross-attention: the conditioners' tokens [B, S_i, C] are concatenated along the sequence
  (with their masks), optionally projected to the model width, and every layer cross-attends
  to them;
- prepend: concatenated along the sequence, projected (Linear-SiLU-Linear) and placed before the
  code sequence; they take positions 0..P-1 and masked ones are invisible;
- global: each conditioner's tokens are mean-pooled over their mask, the results concatenated
  along features, projected (Linear-SiLU-Linear) to the width and ADDED TO EVERY POSITION of
  the input (prepend tokens included) before the first layer. (stable-audio-tools builds a
  global condition and its LM backbone then ignores it; here it reaches the residual stream of
  every layer.)

Classifier-free guidance: the null condition is all-zero condition tensors (after the
conditioners, before the projections; masks unchanged), as in stable-audio-tools. Training
drops each type (cross / prepend / global) per sample with probability
`model.conditioning.cfg_dropout`; the sampler runs the null condition (`null_condition`) as
the second half of a doubled batch and combines the halves with
`audiolm.sample.rules.cfg_logits` = u + scale * (c - u).

Loss: the `codes` task's (`audiolm.tasks.codes.pattern_loss`: pattern sequence with valid steps
only, logits reverted to frames, CE per codebook averaged over codebooks, as MusicGen). Sampling: `audiolm.sample.pattern_lm` (MusicGen's walk over the full
layout with a prompt, CFG and the sampling rules of `audiolm.sample.rules`, one KV-cached step per
pattern step); `generate` here forwards to it.

Family contract (`audiolm.models.family.Family`): `build`, `init_params`, `describe_params`,
`example_batch`; validation rules registered for "pattern_lm".

Batch: ``codes`` [B, K, T] int32 in [0, card), ``target_mask`` [B, T] bool (True = real frame),
and the conditioners' arrays ``cond.<id>`` / ``cond.<id>.mask``.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import config as config_lib
from audiolm import nn as anl
from audiolm import patterns
from audiolm.config import ConfigError, check_choice, check_float, check_int, get_path, require
from audiolm.models import conditioners as cond_lib
from audiolm.models import pretransform as pretransform_lib
from audiolm.models import family as family_lib
from audiolm.nn.params import default_kernel_init, partitioned
from audiolm.presets.pattern_lm_specs import (CONDITIONER_SPECS, ConditioningSpec,
                                              PatternLMSpec, PatternSpec, TransformerSpec)

__all__ = ["PatternLMSpec", "TransformerSpec", "ConditioningSpec", "PatternSpec", "PatternLM",
           "build", "spec_from_config", "init_params", "describe_params", "example_batch",
           "pattern_for", "cfg_drop_mask", "rules", "COND_TYPES", "FAMILY", "apply_drop",
           "null_condition", "init_cache"]

FAMILY = "pattern_lm"
COND_TYPES = ("cross", "prepend", "global")


# ---------------------------------------------------------------------------------------------
# Static description of a model: the typed spec of config.model (`PatternLMSpec` and its section
# specs, declared field by field with their comments in `audiolm.presets.pattern_lm_specs`,
# which sits below the models so the presets build it too). Hashable: a flax module field and a
# jit static argument.


def spec_from_config(model_config: Any) -> PatternLMSpec:
    """The PatternLMSpec of a (validated) `config.model`: the pretransform built (n_q and card
    come from it), each conditioner the spec of its type (`CONDITIONER_SPECS`)."""
    root = {"model": model_config}  # errors name the dotted path from `model`
    conds = {cid: _conditioner_spec(root, cid) for cid in
             sorted(model_config.conditioning.conditioners.keys())}
    conditioning = config_lib.spec_from_section(ConditioningSpec, root, "model.conditioning",
                                                conditioners=conds)
    tokenizer = pretransform_lib.build(model_config.pretransform)
    return config_lib.spec_from_section(PatternLMSpec, root, "model", pretransform=tokenizer,
                                        conditioning=conditioning)


def _conditioner_spec(root: Any, cid: str) -> Any:
    path = f"model.conditioning.conditioners.{cid}"
    ctype = get_path(root, f"{path}.type")
    require(ctype in CONDITIONER_SPECS, f"{path}.type", ctype,
            f"unknown conditioner type; expected one of {list(CONDITIONER_SPECS)}")
    return config_lib.spec_from_section(CONDITIONER_SPECS[ctype], root, path)


def _tuple(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_tuple(x) for x in v)
    return v


def pattern_for(spec: PatternLMSpec, timesteps: int) -> patterns.Pattern:
    """The codebook pattern of the model for `timesteps` frames."""
    return patterns.make(spec.pattern.kind, spec.n_q, timesteps, **dict(spec.pattern.kwargs))


def check_codes(spec: PatternLMSpec, codes: Any, name: str = "codes",
                special: bool = False) -> None:
    """Host-side check of codes [B, K, T] (B, T >= 1, K = n_q): ints in 0..card-1, or 0..card
    with `special` (the pattern's special token). Tracers get the shape checks only: an id past
    the embedding table is a NaN row under jit, so jitting callers check first."""
    if not family_lib.check_code_grid(codes, spec.n_q, "PatternLM", name,
                                      f"[B, K={spec.n_q}, T] (K = model.pretransform.n_q)",
                                      kind="codes"):
        return
    c = np.asarray(codes)
    hi = spec.card if special else spec.card - 1
    bad = (c < 0) | (c > hi)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"PatternLM: {name}{list(where)} = {c[where]}: must be in 0..{hi} "
                         f"(card = model.pretransform.codebook_size = {spec.card}"
                         + (", the special token" if special else "") + ")")


# ---------------------------------------------------------------------------------------------
# Modules.


def _norm(lm: TransformerSpec, name: str, dtype: Any) -> nn.Module:
    if lm.norm == "rms":
        return anl.RMSNorm(lm.norm_eps, dtype=dtype, name=name)
    return anl.LayerNorm(lm.norm_eps, dtype=dtype, name=name)


def _block(spec: PatternLMSpec, dtype: Any) -> anl.TransformerBlock:
    """The shared pre-norm block as MusicGen's decoder layer: causal self-attention (RoPE only
    with positional='rope'; sinusoidal positions are added to the input by the model), the
    layer's norm before the cross-attention too, biases as the checkpoint has them.
    `__call__(x, positions, mask=, context=, context_mask=, cache=) -> (x, cache, aux)`."""
    s = spec.lm
    return anl.TransformerBlock(
        num_heads=s.num_heads, num_kv_heads=s.num_kv_heads, head_dim=s.head_dim, norm=s.norm,
        norm_eps=s.norm_eps, qkv_bias=s.attn_bias, out_bias=s.attn_bias,
        rope_style="rotate_half" if s.positional == "rope" else None, rope_theta=s.rope_theta,
        causal=True, cross_attention=spec.has_cross, cross_norm=s.norm, cross_norm_eps=s.norm_eps,
        ffn=s.ffn, ffn_hidden=s.ffn_hidden, activation=s.activation, ffn_bias=s.mlp_bias,
        dtype=dtype)


def init_cache(spec: PatternLMSpec, batch: int, max_len: int, dtype: Any = jnp.float32) -> list:
    """Empty self-attention KV caches (one per layer) for `max_len` positions (prepend tokens
    included)."""
    lm = spec.lm
    attn = anl.Attention(lm.num_heads, lm.num_kv_heads, lm.head_dim, parent=None)
    return [attn.init_cache(batch, max_len, dtype) for _ in range(lm.num_layers)]


class CodebookHeads(nn.Module):
    """x [B, S, D] -> logits [B, K, S, V]; params `kernel` [K, D, V] (+ `bias` [K, V])."""
    num_codebooks: int
    vocab: int
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        kernel = self.param("kernel", partitioned(default_kernel_init, ("codebooks", "embed", "vocab")),
                            (self.num_codebooks, d, self.vocab))
        logits = jnp.einsum("bsd,kdv->bksv", x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, ("codebooks", "vocab")),
                              (self.num_codebooks, self.vocab))
            logits = logits + bias[None, :, None, :]
        return logits


class PatternLM(nn.Module):
    """The whole pattern LM.

    `__call__(seq [B, K, S] int, conditions {"cond.<id>": array}, drop=None) -> [B, K, S, card]`
    where `drop` maps "cross" / "prepend" / "global" to [B] bool (True = use the null
    condition for that sample). Methods `condition` (raw arrays -> grouped condition tensors)
    and `decode` (sequence + grouped tensors -> logits) expose the two halves. `dtype` is the
    compute dtype of the transformer (params stay float32; conditioners and logits float32).
    """
    spec: PatternLMSpec
    dtype: Any = jnp.float32

    def setup(self):
        s, c, width = self.spec, self.spec.conditioning, self.spec.lm.hidden_size
        if c.conditioners:
            self.conditioner_set = cond_lib.ConditionerSet(c.conditioners, c.cond_dim)
        if s.has_cross and c.project_cross_attention:
            self.cross_proj = nn.Dense(width, kernel_init=partitioned(default_kernel_init,
                                                                      (None, "embed")),
                                       bias_init=partitioned(nn.initializers.zeros, ("embed",)))
        if c.prepend_ids:
            self.prepend_proj = anl.MLP(width, "silu", use_bias=False, out_features=width,
                                        dtype=self.dtype)
        if c.global_ids:
            self.global_proj = anl.MLP(width, "silu", use_bias=False, out_features=width)
        self.embed = anl.MultiCodebookEmbed(s.n_q, s.card + 1, width,
                                            embedding_init=nn.initializers.normal(1.0))
        self.layers = [_block(s, self.dtype) for _ in range(s.lm.num_layers)]
        if s.lm.final_norm:
            self.final_norm = _norm(s.lm, "final_norm", self.dtype)
        self.heads = CodebookHeads(s.n_q, s.card, s.lm.head_bias, self.dtype)

    def condition(self, conditions: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Grouped condition tensors: cross [B, Sc, C] + cross_mask, prepend [B, P, C] +
        prepend_mask, global [B, G*C] (keys present only for the types in use)."""
        c = self.spec.conditioning
        out: dict[str, jax.Array] = {}
        if not c.conditioners:
            return out
        per_id = self.conditioner_set(conditions)
        if c.cross_attention_ids:
            out["cross"] = jnp.concatenate([per_id[i][0] for i in c.cross_attention_ids], axis=1)
            out["cross_mask"] = jnp.concatenate([per_id[i][1] for i in c.cross_attention_ids],
                                                axis=1)
        if c.prepend_ids:
            out["prepend"] = jnp.concatenate([per_id[i][0] for i in c.prepend_ids], axis=1)
            out["prepend_mask"] = jnp.concatenate([per_id[i][1] for i in c.prepend_ids], axis=1)
        if c.global_ids:
            pooled = []
            for i in c.global_ids:
                emb, mask = per_id[i]
                m = mask[..., None].astype(emb.dtype)
                pooled.append(jnp.sum(emb * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))
            out["global"] = jnp.concatenate(pooled, axis=-1)
        return out

    def decode(self, seq: jax.Array, cond: Mapping[str, jax.Array], cache: list | None = None,
               offset: jax.Array | int | None = None):
        """seq [B, K, n] int (special = card) + grouped condition tensors -> [B, K, n, card].

        Without `cache`: seq is the sequence from step 0; returns logits. With `cache` (from
        `init_cache`, one slot per position, prepend tokens included): `offset=None` is the
        prefill (prepend tokens + seq from step 0 are written to the cache); otherwise seq holds
        steps offset .. offset + n - 1 (offset may be traced). Returns (logits, new_cache).
        """
        s, c, lm = self.spec, self.spec.conditioning, self.spec.lm
        b, k, length = seq.shape
        if k != s.n_q:
            raise ValueError(f"PatternLM: seq has K={k} codebooks (axis 1 of [B, K, S]); the "
                             f"model has n_q={s.n_q}")
        check_codes(s, seq, "seq", special=True)
        x = self.embed(seq.astype(jnp.int32)).astype(self.dtype)
        if lm.scale_embedding:
            x = x * jnp.sqrt(jnp.float32(lm.hidden_size)).astype(x.dtype)
        prefill = cache is None or offset is None
        p = cond["prepend"].shape[1] if c.prepend_ids else 0
        new_valid = jnp.ones((b, length), bool)
        if c.prepend_ids and prefill:
            pre = self.prepend_proj(cond["prepend"])
            x = jnp.concatenate([pre.astype(x.dtype), x], axis=1)
            new_valid = jnp.concatenate([cond["prepend_mask"].astype(bool), new_valid], axis=1)
        if c.global_ids:
            x = x + self.global_proj(cond["global"])[:, None, :].astype(x.dtype)
        n = x.shape[1]
        start = 0 if prefill else p + offset
        positions = jnp.broadcast_to(start + jnp.arange(n, dtype=jnp.int32), (b, n))
        if lm.positional == "sinusoidal":
            max_len = n if cache is None else cache[0]["k"].shape[1]
            table = anl.sinusoidal_positions(max(max_len, n), lm.hidden_size)
            half = lm.hidden_size // 2  # MusicGen / audiocraft order: [cos, sin]
            table = jnp.concatenate([table[:, half:], table[:, :half]], axis=1)
            x = x + jnp.take(table, positions, axis=0).astype(x.dtype)
        key_valid = new_valid
        if cache is not None:
            # Slots 0..p-1 hold the prepend tokens (the prefill writes from slot 0).
            slots = cache[0]["k"].shape[1]
            cached = jnp.ones((b, slots), bool)
            if c.prepend_ids:
                cached = cached.at[:, :p].set(cond["prepend_mask"].astype(bool))
            key_valid = jnp.concatenate([cached, new_valid], axis=1)
        mask = jnp.broadcast_to(key_valid[:, None, None, :], (b, 1, n, key_valid.shape[1]))
        context = context_mask = None
        if s.has_cross:
            context = cond["cross"]
            if c.project_cross_attention:
                context = self.cross_proj(context)
            context = context.astype(self.dtype)
            context_mask = cond["cross_mask"].astype(bool)
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, c, _ = layer(x, positions, mask=mask, context=context, context_mask=context_mask,
                            cache=None if cache is None else cache[i])
            new_cache.append(c)
        if lm.final_norm:
            x = self.final_norm(x)
        logits = self.heads(x[:, n - length:]).astype(jnp.float32)
        return logits if cache is None else (logits, new_cache)

    def __call__(self, seq: jax.Array, conditions: Mapping[str, jax.Array] | None = None,
                 drop: Mapping[str, jax.Array] | None = None) -> jax.Array:
        cond = self.condition(conditions or {})
        if drop is not None:
            cond = apply_drop(cond, drop)
        return self.decode(seq, cond)


def apply_drop(cond: Mapping[str, jax.Array], drop: Mapping[str, jax.Array]) -> dict:
    """Replaces the condition tensors of type t by zeros where drop[t] [B] is True (masks are
    kept). Types absent from `drop` are kept."""
    out = dict(cond)
    for t in COND_TYPES:
        if t in out and t in drop:
            d = jnp.asarray(drop[t], bool)
            d = d.reshape(d.shape + (1,) * (out[t].ndim - 1))
            out[t] = jnp.where(d, jnp.zeros_like(out[t]), out[t])
    return out


def null_condition(cond: Mapping[str, jax.Array]) -> dict:
    """The null (unconditional) condition: every condition tensor zeroed, masks kept."""
    return {k: (v if k.endswith("_mask") else jnp.zeros_like(v)) for k, v in cond.items()}


def cfg_drop_mask(rng: jax.Array, batch: int, p: float) -> dict[str, jax.Array]:
    """Per-sample, per-type CFG dropout: {type: [B] bool}, each True with probability p."""
    keys = jax.random.split(rng, len(COND_TYPES))
    return {t: jax.random.bernoulli(k, p, (batch,)) for t, k in zip(COND_TYPES, keys)}


# ---------------------------------------------------------------------------------------------
# Family contract.


def build(model_config: Any, dtype: Any = jnp.float32) -> PatternLM:
    """The model of `model_config`; `dtype` is the transformer's compute dtype."""
    return PatternLM(spec_from_config(model_config), dtype)


def _example_inputs(spec: PatternLMSpec, batch: int, frames: int):
    pattern = pattern_for(spec, frames)
    s = patterns.num_steps(pattern, True)
    seq = jnp.full((batch, spec.n_q, s), spec.card, jnp.int32)
    conds = cond_lib.example_inputs(spec.conditioning.conditioners, batch, np.random.default_rng(0))
    return seq, {k: jnp.asarray(v) for k, v in conds.items()}


def init_params(model_config: Any, rng: jax.Array) -> Any:
    spec = spec_from_config(model_config)
    seq, conds = _example_inputs(spec, 1, min(int(model_config.max_frames), 8))
    return anl.init_params(PatternLM(spec), rng, seq, conds)


def describe_params(model_config: Any) -> dict[str, dict[str, int]]:
    shapes = jax.eval_shape(lambda r: init_params(model_config, r), jax.random.PRNGKey(0))
    groups: dict[str, dict] = {"conditioning": {}, "transformer": {}}
    for name, sub in shapes.items():
        is_cond = name.startswith(("conditioner_set", "cross_proj", "prepend_proj", "global_proj"))
        groups["conditioning" if is_cond else "transformer"][name] = sub
    emb = lambda path: path[0] == "embed" or (len(path) > 1 and path[-1] == "embedding")
    return {k: config_lib.count_params(v, embedding=emb) for k, v in groups.items() if v}


def example_batch(model_config: Any, batch_size: int, rng: np.random.Generator) -> dict:
    """Codes [B, K, max_frames], a target mask with random right padding (at least half of
    each row real) and random conditioner inputs.

    The codes are learnable from context (so loss-decrease checks mean something): codebook q
    of a row counts up from a random start with stride q + 1, modulo card.
    """
    spec = spec_from_config(model_config)
    t = int(model_config.max_frames)
    start = rng.integers(0, spec.card, (batch_size, spec.n_q, 1))
    stride = np.arange(1, spec.n_q + 1)[None, :, None]
    codes = ((start + stride * np.arange(t)[None, None, :]) % spec.card).astype(np.int32)
    lengths = rng.integers((t + 1) // 2, t + 1, (batch_size,))
    out = {"codes": codes, "target_mask": np.arange(t)[None, :] < lengths[:, None]}
    out.update(cond_lib.example_inputs(spec.conditioning.conditioners, batch_size, rng))
    return out


# ---------------------------------------------------------------------------------------------
# Validation rules.


def _check_ids(path, ids, known):
    require(isinstance(ids, (list, tuple)), path, ids, "must be a list of conditioner ids")
    for j, cid in enumerate(ids):
        require(cid in known, f"{path}[{j}]", cid,
                f"no conditioner provides this id; model.conditioning.conditioners has "
                f"{sorted(known)}")
    require(len(set(ids)) == len(ids), path, list(ids), "ids must not repeat")


def rules(config: Any) -> None:
    """Checks every field of config.model for the pattern_lm family (ConfigError): the keys
    and types of `PatternLMSpec` (`check_schema`; the pretransform and conditioner sections by
    their type's rules), then ranges and cross-field rules."""
    config_lib.check_schema(config, "model", config_lib.spec_schema(PatternLMSpec))
    check_choice(config, "model.family", (FAMILY,))
    check_int(config, "model.max_frames", lo=1)
    pretransform_lib.validate(config, "model.pretransform")
    n_q = get_path(config, "model.pretransform.n_q")

    kind = check_choice(config, "model.pattern.kind",
                        ("parallel", "delay", "unroll", "coarse_first", "musiclm"))
    kwargs = config.model.pattern.kwargs
    require(hasattr(kwargs, "keys"), "model.pattern.kwargs", kwargs, "must be a section")
    try:
        patterns.make(kind, n_q, int(get_path(config, "model.max_frames")),
                      **{k: _tuple(v) for k, v in dict(kwargs).items()})
    except ValueError as e:
        raise ConfigError(f"model.pattern.kwargs={dict(kwargs)!r}: {e} (kind={kind!r}, "
                          f"n_q={n_q} from model.pretransform.n_q)") from None

    width = check_int(config, "model.lm.hidden_size", lo=1)
    check_int(config, "model.lm.num_layers", lo=1)
    heads = check_int(config, "model.lm.num_heads", lo=1)
    kv = check_int(config, "model.lm.num_kv_heads", lo=1)
    require(heads % kv == 0, "model.lm.num_kv_heads", kv,
            f"must divide model.lm.num_heads={heads}")
    check_int(config, "model.lm.head_dim", lo=1)
    check_choice(config, "model.lm.ffn", ("plain", "gated"))
    check_int(config, "model.lm.ffn_hidden", lo=1)
    check_choice(config, "model.lm.activation", sorted(anl.ACTIVATIONS))
    check_choice(config, "model.lm.norm", ("layer", "rms"))
    check_float(config, "model.lm.norm_eps", lo=0.0, lo_open=True)
    pos = check_choice(config, "model.lm.positional", ("sinusoidal", "rope", "none"))
    check_float(config, "model.lm.rope_theta", lo=0.0, lo_open=True)
    if pos == "sinusoidal":
        require(width % 2 == 0 and width >= 4, "model.lm.hidden_size", width,
                "must be even and >= 4 with model.lm.positional='sinusoidal'")
    if pos == "rope":
        hd = get_path(config, "model.lm.head_dim")
        require(hd % 2 == 0, "model.lm.head_dim", hd, "must be even with positional='rope'")

    c = "model.conditioning"
    cond_dim = check_int(config, f"{c}.cond_dim", lo=1)
    check_float(config, f"{c}.cfg_dropout", lo=0.0, hi=1.0)
    conds = get_path(config, f"{c}.conditioners")
    require(hasattr(conds, "keys"), f"{c}.conditioners", conds,
            "must be a section {id: {type: ..., ...}}")
    for cid in conds.keys():
        p = f"{c}.conditioners.{cid}"
        require(isinstance(cid, str) and cid and "." not in cid, p, cid,
                "conditioner ids must be non-empty strings without '.'")
        ctype = _conditioner_spec(config, cid).type  # keys and types: the type's spec
        _conditioner_rules(config, p, ctype, cond_dim)
    known = set(conds.keys())
    for key in ("cross_attention_ids", "prepend_ids", "global_ids"):
        _check_ids(f"{c}.{key}", get_path(config, f"{c}.{key}"), known)
    cross = list(get_path(config, f"{c}.cross_attention_ids"))
    if get_path(config, f"{c}.project_cross_attention"):
        require(bool(cross), f"{c}.project_cross_attention", True,
                f"needs at least one id in {c}.cross_attention_ids")


def _conditioner_rules(config, p, ctype, cond_dim):
    if ctype == "number":
        lo = check_float(config, f"{p}.min_val")
        hi = check_float(config, f"{p}.max_val")
        require(hi > lo, f"{p}.max_val", hi, f"must be > {p}.min_val={lo}")
    elif ctype == "lookup":
        n = check_int(config, f"{p}.num_classes", lo=1)
        check_int(config, f"{p}.min_val", lo=0)
        options = get_path(config, f"{p}.options")
        for j, option in enumerate(options):
            require(isinstance(option, str), f"{p}.options[{j}]", option, "must be a string")
        if options:
            require(n == len(options) + 1, f"{p}.num_classes", n,
                    f"must be len({p}.options) + 1 = {len(options) + 1} (id 0 = unknown option)")
    elif ctype == "text":
        check_int(config, f"{p}.max_length", lo=1)
        check_int(config, f"{p}.num_layers", lo=0)
        h = check_int(config, f"{p}.num_heads", lo=1)
        check_int(config, f"{p}.ffn_hidden", lo=1)
        require(cond_dim % h == 0, f"{p}.num_heads", h,
                f"must divide model.conditioning.cond_dim={cond_dim}")
        require(cond_dim % 2 == 0 and cond_dim >= 4, "model.conditioning.cond_dim", cond_dim,
                f"must be even and >= 4 for the text conditioner {p}")
    else:  # t5 / tensor
        check_int(config, f"{p}.dim", lo=1)
        check_int(config, f"{p}.max_length", lo=1)
        if ctype == "t5":
            config_lib.check_str(config, f"{p}.path", allow_empty=False)


config_lib.register_rules("pattern_lm", rules)
