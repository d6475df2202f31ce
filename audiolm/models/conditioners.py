"""Conditioners of the pattern LM: raw conditions -> (embeddings [B, S, C], mask [B, S]).

Every conditioner has an id (its key in `model.conditioning.conditioners`) and a typed spec, one
per type (`audiolm.presets.pattern_lm_specs.CONDITIONER_SPECS`, declared there with a comment
per field). The functions here take `conditioners`, a mapping id -> spec
(`PatternLMSpec.conditioning.conditioners`). Each works in two stages, so the model stays a pure
jit-able function of arrays:

1. host side, `prepare(conditioners, raw)`: python values -> numpy arrays in the batch, under
   the keys ``cond.<id>`` (and ``cond.<id>.mask`` for sequences);
2. in the model, `ConditionerSet`: arrays -> (embeddings [B, S_id, C], mask [B, S_id]) with
   C = `model.conditioning.cond_dim` (trainable).

Types:

- ``number``: floats, clipped to [min_val, max_val] and normalised to [0, 1], embedded by learned
  Fourier features + a linear layer (stable-audio-tools' NumberConditioner). One token.
- ``lookup``: class ids (ints in [min_val, min_val + num_classes), or strings from `options`,
  unknown -> 0) through a table. One token.
- ``text``: a small built-in byte-level encoder: UTF-8 bytes (+1, 0 = padding) cut to
  `max_length`, byte embeddings + sinusoidal positions + `num_layers` bidirectional layers.
- ``t5``: a frozen T5 encoder from a local directory (transformers `save_pretrained` layout:
  config.json, *.safetensors and a tokenizer), run on the host by our JAX port `T5Encoder`;
  the model holds only the projection to C. (Frozen, as in MusicGen and stable-audio-tools.)
- ``tensor``: pre-computed embeddings [B, S, dim] with a mask, projected to C when
  `project` or dim != C, else passed through.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import extras, nn as anl
from audiolm.nn.params import partitioned
from audiolm.presets.pattern_lm_specs import CONDITIONER_SPECS

__all__ = ["TYPES", "ConditionerSet", "prepare", "example_inputs", "check_conditions",
           "T5Spec", "T5Encoder", "load_t5_encoder", "T5TextEncoder", "batch_keys",
           "byte_tokenize"]

TYPES = tuple(CONDITIONER_SPECS)


def batch_keys(cid: str, spec: Any) -> tuple[str, ...]:
    """Batch keys conditioner `cid` reads."""
    key = f"cond.{cid}"
    return (key, key + ".mask") if spec.is_sequence else (key,)


# ---------------------------------------------------------------------------------------------
# Host side: python values -> arrays.


def byte_tokenize(texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes + 1 (0 = padding), cut to max_length: (ids [B, L] int32, mask [B, L] bool)."""
    ids = np.zeros((len(texts), max_length), np.int32)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text conditioner: item {i} must be a str, got {type(text).__name__}")
        b = np.frombuffer(text.encode("utf-8"), np.uint8)[:max_length]
        ids[i, :len(b)] = b.astype(np.int32) + 1
    return ids, ids > 0


def _lookup_ids(cid: str, spec: Any, values: Sequence[Any]) -> np.ndarray:
    options, n = spec.options, spec.num_classes
    out = np.zeros((len(values),), np.int32)
    for i, v in enumerate(values):
        if options:
            out[i] = options.index(v) + 1 if v in options else 0  # 0 = unknown option
        else:
            if isinstance(v, (bool, float)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"lookup conditioner {cid!r}: item {i}={v!r} must be an int "
                                 f"class id in [0, {n})")
            lo = spec.min_val
            if not lo <= int(v) < lo + n:
                raise ValueError(f"lookup conditioner {cid!r}: item {i}={v} is out of range: "
                                 f"expected an int in [min_val={lo}, min_val + num_classes="
                                 f"{lo + n})")
            out[i] = int(v) - lo
    return out


def _pad_tensor(cid: str, spec: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    dim, length = spec.dim, spec.max_length
    if isinstance(values, tuple) and len(values) == 2:
        emb, mask = np.asarray(values[0], np.float32), np.asarray(values[1], bool)
    else:
        emb = np.asarray(values, np.float32)
        mask = np.ones(emb.shape[:2], bool) if emb.ndim == 3 else None
    if emb.ndim != 3 or emb.shape[2] != dim:
        raise ValueError(f"tensor conditioner {cid!r}: expected [B, S, dim={dim}], got shape "
                         f"{emb.shape}")
    if emb.shape[1] > length:
        raise ValueError(f"tensor conditioner {cid!r}: S={emb.shape[1]} exceeds "
                         f"max_length={length}")
    pad = length - emb.shape[1]
    emb = np.pad(emb, ((0, 0), (0, pad), (0, 0)))
    mask = np.pad(mask, ((0, 0), (0, pad)))
    return emb, mask


def prepare(conditioners: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw conditions {id: list of python values or arrays} -> batch arrays.

    number: list of floats; lookup: list of ints (or option strings); text / t5: list of str;
    tensor: array [B, S, dim] or (array, mask [B, S]).
    """
    out: dict[str, np.ndarray] = {}
    for cid, spec in conditioners.items():
        if cid not in raw:
            raise ValueError(f"conditions: missing {cid!r} (conditioners: {list(conditioners)})")
        value = raw[cid]
        key = f"cond.{cid}"
        if spec.type == "number":
            arr = np.asarray(value, np.float32).reshape(-1)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"number conditioner {cid!r}: values must be finite, got "
                                 f"{arr.tolist()}")
            out[key] = arr
        elif spec.type == "lookup":
            out[key] = _lookup_ids(cid, spec, list(value))
        elif spec.type == "text":
            out[key], out[key + ".mask"] = byte_tokenize(list(value), spec.max_length)
        elif spec.type == "t5":
            encoder = T5TextEncoder.cached(spec.path)
            emb, mask = encoder(list(value), spec.max_length)
            out[key], out[key + ".mask"] = _pad_tensor(cid, spec, (emb, mask))
        elif spec.type == "tensor":
            out[key], out[key + ".mask"] = _pad_tensor(cid, spec, value)
        else:
            raise ValueError(f"conditioner {cid!r}: unknown type {spec.type!r}; expected one "
                             f"of {TYPES}")
    return out


def example_inputs(conditioners: Mapping[str, Any], batch: int,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random valid batch arrays for every conditioner (no files needed: t5 gets random
    embeddings of the encoder width, as the host side would produce)."""
    out: dict[str, np.ndarray] = {}
    for cid, spec in conditioners.items():
        key = f"cond.{cid}"
        if spec.type == "number":
            out[key] = rng.uniform(spec.min_val, spec.max_val, (batch,)).astype(np.float32)
        elif spec.type == "lookup":
            out[key] = rng.integers(0, spec.num_classes, (batch,)).astype(np.int32)
        else:
            length = spec.max_length
            lengths = rng.integers(1, length + 1, (batch,))
            mask = np.arange(length)[None, :] < lengths[:, None]
            if spec.type == "text":
                ids = rng.integers(1, 257, (batch, length)).astype(np.int32)
                out[key] = np.where(mask, ids, 0).astype(np.int32)
            else:
                emb = rng.standard_normal((batch, length, spec.dim)).astype(np.float32)
                out[key] = emb * mask[..., None]
            out[key + ".mask"] = mask
    return out


# ---------------------------------------------------------------------------------------------
# In-model conditioners (trainable).


def check_conditions(conditioners: Mapping[str, Any], conditions: Mapping[str, Any]) -> None:
    """Host-side check of the batch arrays `ConditionerSet` reads (what `prepare` makes): lookup
    ids in [0, num_classes), finite numbers, text byte ids in [0, 256], B >= 1. Tracers (inside
    jit) are skipped: callers that jit check first, since an id past a table embeds as garbage
    and a NaN number poisons every code. Raises ValueError naming the key, the value, the rule."""
    for cid, spec in conditioners.items():
        key = f"cond.{cid}"
        value = conditions.get(key)
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        x = np.asarray(value)
        if x.ndim == 0 or x.shape[0] < 1:
            raise ValueError(f"conditions[{key!r}] shape {x.shape}: needs a batch axis B >= 1")
        if spec.type == "number":
            bad = ~np.isfinite(x.astype(np.float64))
            if bad.any():
                raise ValueError(f"conditions[{key!r}] (number conditioner {cid!r}) has "
                                 f"{x[bad][0]} at row {int(np.argwhere(bad)[0][0])}: values must "
                                 "be finite")
        elif spec.type in ("lookup", "text"):
            hi = spec.num_classes - 1 if spec.type == "lookup" else 256
            if not np.issubdtype(x.dtype, np.integer):
                raise ValueError(f"conditions[{key!r}] ({spec.type} conditioner {cid!r}) must "
                                 f"be integer ids, got {x.dtype}")
            bad = (x < 0) | (x > hi)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                rule = ("a class index in 0..num_classes-1 (`prepare` subtracts min_val)"
                        if spec.type == "lookup" else "a byte + 1 (0 = padding)")
                raise ValueError(f"conditions[{key!r}]{list(where)} = {x[where]}: must be in "
                                 f"0..{hi}, {rule}")


def _dense(features: int, name: str, use_bias: bool = True, axes=("embed", "embed")) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, name=name,
                    kernel_init=partitioned(anl.params.default_kernel_init, axes),
                    bias_init=partitioned(nn.initializers.zeros, (axes[1],)))


class NumberEmbed(nn.Module):
    """x [B] float -> [B, 1, C]: normalise to [0, 1], learned Fourier features, linear."""
    dim: int
    min_val: float
    max_val: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.clip(x.astype(jnp.float32), self.min_val, self.max_val)
        x = (x - self.min_val) / (self.max_val - self.min_val)
        half = max(self.dim // 2, 1)
        freqs = self.param("freqs", partitioned(nn.initializers.normal(1.0), (None,)), (half,))
        ang = 2.0 * math.pi * x[:, None] * freqs[None, :]
        feats = jnp.concatenate([x[:, None], jnp.sin(ang), jnp.cos(ang)], axis=-1)
        return _dense(self.dim, "proj", axes=(None, "embed"))(feats)[:, None, :]


class EncoderLayer(nn.Module):
    """Pre-LayerNorm bidirectional transformer layer (self-attention with key mask + GELU MLP)."""
    num_heads: int
    ffn_hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = anl.LayerNorm(name="attn_norm")(x)
        vis = jnp.broadcast_to(mask[:, None, None, :], (x.shape[0], 1, x.shape[1], x.shape[1]))
        h, _ = anl.Attention(self.num_heads, self.num_heads, d // self.num_heads, causal=False,
                             qkv_bias=True, out_bias=True, name="attn")(h, mask=vis)
        x = x + h
        h = anl.LayerNorm(name="ffn_norm")(x)
        return x + anl.MLP(self.ffn_hidden, activation="gelu", name="ffn")(h)


class ByteTextEncoder(nn.Module):
    """ids [B, L] (bytes + 1, 0 = pad) -> ([B, L, C], mask [B, L])."""
    dim: int
    num_layers: int
    num_heads: int
    ffn_hidden: int

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        x = anl.Embed(257, self.dim, embedding_init=nn.initializers.normal(0.02),
                      name="embed")(ids.astype(jnp.int32))
        if self.dim >= 4:
            x = x + anl.sinusoidal_positions(ids.shape[1], self.dim)[None]
        for i in range(self.num_layers):
            x = EncoderLayer(self.num_heads, self.ffn_hidden, name=f"layers_{i}")(x, mask)
        if self.num_layers:
            x = anl.LayerNorm(name="final_norm")(x)
        return x


class ConditionerSet(nn.Module):
    """Applies every conditioner to its batch arrays.

    `__call__(conditions: {"cond.<id>": array, ...}) -> {id: (emb [B, S_id, C], mask [B, S_id])}`
    with padded positions of emb set to zero.
    """
    conditioners: Mapping[str, Any]  # id -> conditioner spec (hashable: a FrozenDict)
    cond_dim: int

    @nn.compact
    def __call__(self, conditions: Mapping[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
        check_conditions(self.conditioners, conditions)
        out = {}
        for cid, spec in self.conditioners.items():
            key = f"cond.{cid}"
            for k in batch_keys(cid, spec):
                if k not in conditions:
                    raise ValueError(f"conditions: missing batch array {k!r} for conditioner "
                                     f"{cid!r} (type {spec.type})")
            x = jnp.asarray(conditions[key])
            name = f"cond_{cid}"
            if spec.type == "number":
                emb = NumberEmbed(self.cond_dim, float(spec.min_val), float(spec.max_val),
                                  name=name)(x)
                mask = jnp.ones(emb.shape[:2], bool)
            elif spec.type == "lookup":
                emb = anl.Embed(spec.num_classes, self.cond_dim,
                                embedding_init=nn.initializers.normal(1.0),
                                name=name)(x.astype(jnp.int32))[:, None, :]
                mask = jnp.ones(emb.shape[:2], bool)
            elif spec.type == "text":
                mask = jnp.asarray(conditions[key + ".mask"], bool)
                emb = ByteTextEncoder(self.cond_dim, spec.num_layers, spec.num_heads,
                                      spec.ffn_hidden, name=name)(x, mask)
            else:  # t5 / tensor: pre-computed embeddings
                mask = jnp.asarray(conditions[key + ".mask"], bool)
                emb = x.astype(jnp.float32)
                if spec.project or spec.dim != self.cond_dim:
                    emb = _dense(self.cond_dim, name, axes=(None, "embed"))(emb)
            out[cid] = (emb * mask[..., None].astype(emb.dtype), mask)
        return out


# ---------------------------------------------------------------------------------------------
# T5 encoder (JAX port of transformers' T5EncoderModel, inference only).


@dataclasses.dataclass(frozen=True)
class T5Spec:
    """A T5 encoder in the shared vocabulary; `from_hf` maps transformers' T5Config names."""
    vocab_size: int
    hidden_size: int  # d_model
    head_dim: int  # d_kv
    num_heads: int
    ffn_hidden: int  # d_ff
    num_layers: int
    num_buckets: int  # relative_attention_num_buckets
    max_distance: int  # relative_attention_max_distance
    norm_eps: float  # layer_norm_epsilon
    gated: bool  # a gated FFN (feed_forward_proj "gated-...")
    activation: str  # key of audiolm.nn.ACTIVATIONS

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "T5Spec":
        proj = cfg.get("feed_forward_proj", "relu")
        gated = proj.startswith("gated-")
        act = proj.split("-")[-1]
        # transformers maps "gated-gelu" to the tanh GELU ("gelu_new"); plain "gelu" is exact.
        act = {"gelu": "gelu_tanh" if gated else "gelu", "relu": "relu", "silu": "silu"}.get(act)
        if act is None:
            raise ValueError(f"T5 config: feed_forward_proj={proj!r} is not supported; expected "
                             f"relu, gelu, silu or their gated- forms")
        return cls(vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["d_model"]),
                   head_dim=int(cfg["d_kv"]), num_heads=int(cfg["num_heads"]),
                   ffn_hidden=int(cfg["d_ff"]), num_layers=int(cfg["num_layers"]),
                   num_buckets=int(cfg.get("relative_attention_num_buckets", 32)),
                   max_distance=int(cfg.get("relative_attention_max_distance", 128)),
                   norm_eps=float(cfg.get("layer_norm_epsilon", 1e-6)), gated=gated,
                   activation=act)


def t5_relative_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucket of (key - query) for every query/key pair: [L, L] int32."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (np.log(np.maximum(rel, 1).astype(np.float32) / max_exact)
                             / math.log(max_distance / max_exact) * (half - max_exact)
                             ).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class T5Encoder(nn.Module):
    """ids [B, L] int, mask [B, L] bool -> last hidden state [B, L, hidden_size] (float32).

    Param names follow transformers (`shared`, `block_i/{q,k,v,o,ln_attn,wi|wi_0,wi_1,wo,ln_ff}`,
    `relative_attention_bias` [buckets, H] from layer 0, `final_layer_norm`). T5 attention has no
    1/sqrt(d) scale and a learned relative-position bias shared by all layers.
    """
    spec: T5Spec

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        s = self.spec
        b, length = ids.shape
        x = anl.Embed(s.vocab_size, s.hidden_size, name="shared")(ids.astype(jnp.int32))
        rel = self.param("relative_attention_bias", nn.initializers.normal(1.0),
                         (s.num_buckets, s.num_heads))
        buckets = t5_relative_buckets(length, s.num_buckets, s.max_distance)
        bias = jnp.transpose(rel[buckets], (2, 0, 1))[None]  # [1, H, L, L]
        bias = bias + jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
        inner = s.num_heads * s.head_dim
        act = anl.get_activation(s.activation)

        def lin(features, name):
            return nn.Dense(features, use_bias=False, name=name)

        for i in range(s.num_layers):
            p = f"block_{i}_"
            h = anl.RMSNorm(s.norm_eps, name=p + "ln_attn")(x)
            q = lin(inner, p + "q")(h).reshape(b, length, s.num_heads, s.head_dim)
            k = lin(inner, p + "k")(h).reshape(b, length, s.num_heads, s.head_dim)
            v = lin(inner, p + "v")(h).reshape(b, length, s.num_heads, s.head_dim)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias
            probs = jax.nn.softmax(logits, axis=-1)
            o = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, inner)
            x = x + lin(s.hidden_size, p + "o")(o)
            h = anl.RMSNorm(s.norm_eps, name=p + "ln_ff")(x)
            if s.gated:
                h = act(lin(s.ffn_hidden, p + "wi_0")(h)) * lin(s.ffn_hidden, p + "wi_1")(h)
            else:
                h = act(lin(s.ffn_hidden, p + "wi")(h))
            x = x + lin(s.hidden_size, p + "wo")(h)
        return anl.RMSNorm(s.norm_eps, name="final_layer_norm")(x)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    load_file = extras.require("safetensors.numpy", "import",
                               f"Reading the weights of {path!r}").load_file
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{path!r} has no *.safetensors weights")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(os.path.join(path, f)))
    return tensors


def load_t5_encoder(path: str, prefix: str = "") -> tuple[T5Spec, dict]:
    """(spec, params) of the T5 encoder saved by transformers at directory `path`.

    Reads config.json and the safetensors weights (keys under `prefix`, e.g. "text_encoder."
    for a MusicGen directory). Decoder / lm_head tensors of a full T5 are skipped; any other
    unknown encoder tensor, or a missing one, raises ValueError.
    """
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    if "text_encoder" in cfg and prefix:
        cfg = cfg["text_encoder"]
    spec = T5Spec.from_hf(cfg)
    raw = {k[len(prefix):]: v for k, v in _read_safetensors(path).items() if k.startswith(prefix)}
    used: set[str] = set()

    def take(*names):
        for n in names:
            if n in raw:
                used.update(x for x in names if x in raw)
                return np.asarray(raw[n], np.float32)
        raise ValueError(f"T5 weights at {path!r}: missing tensor {prefix}{names[0]}")

    params: dict[str, Any] = {
        "shared": {"embedding": take("shared.weight", "encoder.embed_tokens.weight")},
        "relative_attention_bias": take(
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        "final_layer_norm": {"scale": take("encoder.final_layer_norm.weight")},
    }
    for i in range(spec.num_layers):
        a = f"encoder.block.{i}.layer.0."
        f_ = f"encoder.block.{i}.layer.1."
        p = f"block_{i}_"
        params[p + "ln_attn"] = {"scale": take(a + "layer_norm.weight")}
        for n in "qkvo":
            params[p + n] = {"kernel": take(a + f"SelfAttention.{n}.weight").T}
        params[p + "ln_ff"] = {"scale": take(f_ + "layer_norm.weight")}
        names = ("wi_0", "wi_1", "wo") if spec.gated else ("wi", "wo")
        for n in names:
            params[p + n] = {"kernel": take(f_ + f"DenseReluDense.{n}.weight").T}
    leftover = sorted(k for k in raw if k not in used and not k.startswith(("decoder.", "lm_head.")))
    if leftover:
        raise ValueError(f"T5 weights at {path!r}: unexpected tensors {leftover[:5]} "
                         f"({len(leftover)} in all)")
    return spec, jax.tree_util.tree_map(jnp.asarray, params)


class T5TextEncoder:
    """Host-side frozen T5: texts -> (embeddings [B, L, hidden_size], mask [B, L]).

    Tokenises with the tokenizer saved in the same directory (transformers AutoTokenizer),
    padding / truncating to `max_length`.
    """
    _cache: dict[str, "T5TextEncoder"] = {}

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"t5 conditioner: path={path!r} is not a directory with a "
                                    f"T5 encoder saved by transformers")
        self.path = path
        self.spec, self.params = load_t5_encoder(path)
        self.module = T5Encoder(self.spec)
        self._apply = jax.jit(lambda p, i, m: self.module.apply({"params": p}, i, m))
        self._tokenizer = None

    @classmethod
    def cached(cls, path: str) -> "T5TextEncoder":
        if path not in cls._cache:
            cls._cache[path] = cls(path)
        return cls._cache[path]

    def tokenize(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        enc = self._tokenizer(list(texts), truncation=True, max_length=max_length,
                              padding="max_length", return_tensors="np")
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(bool)

    def encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self._apply(self.params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
        return np.asarray(out) * np.asarray(mask, np.float32)[..., None]

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(texts, max_length)
        return self.encode_ids(ids, mask), mask
