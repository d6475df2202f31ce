"""Multi-head attention with GQA, q/k RMSNorm, RoPE, windows, cross-attention and a ring KV cache.

Shapes: B batch, T query length, S key length, D model width, H query heads, Hkv key/value
heads (H % Hkv == 0; kv head j serves q heads j*rep .. (j+1)*rep-1), Dh head width, L cache slots.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.norms import RMSNorm
from audiolm.nn.params import Dtype, Projection, constrain
from audiolm.nn.rope import ROPE_STYLES, apply_rope

Cache = dict[str, jax.Array]


def attention_mask(q_pos: jax.Array, k_pos: jax.Array, *, causal: bool,
                   window: int | None) -> jax.Array:
    """Self-attention visibility [B, 1, T, S] from positions q_pos [B, T], k_pos [B, S].

    Key k is visible from query q iff pos_k >= 0 (a negative position marks an empty / padded
    slot), pos_k <= pos_q (causal) and pos_q - pos_k < window (window).
    """
    qp = q_pos[:, None, :, None]
    kp = k_pos[:, None, None, :]
    visible = jnp.broadcast_to(kp >= 0, (q_pos.shape[0], 1, q_pos.shape[1], k_pos.shape[1]))
    if causal:
        visible = visible & (kp <= qp)
    if window is not None:
        visible = visible & (qp - kp < window)
    return visible


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                          use_fused: bool = False) -> jax.Array:
    """softmax(q k^T / sqrt(Dh)) v with GQA.

    q [B, T, H, Dh], k/v [B, S, Hkv, Dh], mask [B, 1|H, T, S] bool (True = visible) or None
    -> [B, T, H, Dh] in q's dtype. Logits and softmax in float32. Query rows with no visible key
    return exact zeros. `use_fused` routes through `jax.nn.dot_product_attention`.
    """
    b, t, h, dh = q.shape
    hkv = k.shape[2]
    scale = dh ** -0.5
    if use_fused:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)
    else:
        rep = h // hkv
        qg = q.reshape(b, t, hkv, rep, dh)
        logits = jnp.einsum("btgrd,bsgd->bgrts", qg, k,
                            preferred_element_type=jnp.float32) * scale
        if mask is not None:
            m = mask.reshape(b, hkv, rep, t, -1) if mask.shape[1] == h else mask[:, :, None]
            logits = jnp.where(m, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bgrts,bsgd->btgrd", probs, v).reshape(b, t, h, dh)
    if mask is not None:
        any_visible = jnp.any(mask, axis=-1)  # [B, 1|H, T]
        out = out * jnp.transpose(any_visible, (0, 2, 1))[..., None].astype(out.dtype)
    return out.astype(q.dtype)


class Attention(nn.Module):
    """Self- or cross-attention (the `audiolm.nn` block contract: dtype / param_dtype fields,
    logically named weights).

    `__call__(x [B, T, D], positions [B, T] | None, *, context [B, S, Dc] | None,
    context_mask [B, S] | None, mask [B, 1|H, T, S] | None, cache | None)
    -> (y [B, T, Dout], new_cache | None)`.

    With a cache (from `init_cache`), the new keys are written at slots (index + arange(T)) % L
    and the queries attend over the L slots as they were before this call plus the T new keys
    (so S = L + T for `mask`); the visibility rule uses stored key positions. Attending over the
    pre-write slots keeps chunked prefill exact even when the chunk overwrites slots still inside
    the window (ring buffer, L = window). Default positions are index + arange(T) with a cache.
    """
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6
    rope_style: str | None = None
    rope_theta: float = 1e4
    causal: bool = True
    window: int | None = None
    out_features: int | None = None
    # True: jax.nn.dot_product_attention (cuDNN flash attention on GPU); False: the XLA einsum
    # path; None: fused on accelerators, einsum on CPU (where XLA's einsum is the faster one).
    use_dot_product_attention: bool | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _check(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"Attention: num_heads={self.num_heads} must be a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if self.rope_style is not None and self.rope_style not in ROPE_STYLES:
            raise ValueError(f"Attention: rope_style={self.rope_style!r}: expected None or one "
                             f"of {ROPE_STYLES}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"Attention: window={self.window} must be >= 1 or None")

    @nn.nowrap
    def init_cache(self, batch: int, max_len: int, dtype: Dtype = jnp.float32) -> Cache:
        """Empty ring KV cache with `max_len` slots (no params needed)."""
        shape = (batch, max_len, self.num_kv_heads, self.head_dim)
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
                "pos": jnp.full((batch, max_len), -1, jnp.int32),
                "index": jnp.zeros((), jnp.int32)}

    def _proj(self, name: str, d_in: int, heads: int, heads_axis: str) -> Projection:
        return Projection((d_in, heads, self.head_dim), 1, ("embed", heads_axis, "head_dim"),
                          use_bias=self.qkv_bias, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array | None = None, *,
                 context: jax.Array | None = None, context_mask: jax.Array | None = None,
                 mask: jax.Array | None = None, cache: Cache | None = None):
        self._check()
        b, t, d = x.shape
        if context is not None and cache is not None:
            raise ValueError("Attention: `cache` is for self-attention; got both `context` and "
                             "`cache` (cross-attention keys are recomputed from context)")
        if positions is None:
            start = cache["index"] if cache is not None else 0
            positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        elif positions.shape != (b, t):
            raise ValueError(f"Attention: positions shape {positions.shape} must be {(b, t)}")
        positions = positions.astype(jnp.int32)

        x = constrain(x, ("batch", "length", "embed"))
        q = self._proj("q_proj", d, self.num_heads, "heads")(x)
        kv_in = x if context is None else context
        dc = kv_in.shape[-1]
        k = self._proj("k_proj", dc, self.num_kv_heads, "kv_heads")(kv_in)
        v = self._proj("v_proj", dc, self.num_kv_heads, "kv_heads")(kv_in)
        if self.qk_norm:
            norm = dict(eps=self.qk_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                        axis_name="head_dim")
            q = RMSNorm(**norm, name="q_norm")(q)
            k = RMSNorm(**norm, name="k_norm")(k)
        q = constrain(q, ("batch", "length", "heads", "head_dim"))

        new_cache = None
        if context is not None:
            s = context.shape[1]
            vis = jnp.ones((b, 1, t, s), bool)
            if context_mask is not None:
                if context_mask.shape != (b, s):
                    raise ValueError(f"Attention: context_mask shape {context_mask.shape} must "
                                     f"be {(b, s)}")
                vis = vis & context_mask[:, None, None, :].astype(bool)
        else:
            if self.rope_style is not None:
                q = apply_rope(q, positions, theta=self.rope_theta, style=self.rope_style)
                k = apply_rope(k, positions, theta=self.rope_theta, style=self.rope_style)
            k_pos = positions
            if cache is not None:
                new_cache = self._write_cache(cache, k, v, positions)
                k = jnp.concatenate([cache["k"].astype(k.dtype), k], axis=1)
                v = jnp.concatenate([cache["v"].astype(v.dtype), v], axis=1)
                k_pos = jnp.concatenate([cache["pos"], positions], axis=1)
            vis = attention_mask(positions, k_pos, causal=self.causal, window=self.window)
        if mask is not None:
            expect = (b, t, vis.shape[-1])
            if mask.ndim != 4 or (mask.shape[0], mask.shape[2], mask.shape[3]) != expect or \
                    mask.shape[1] not in (1, self.num_heads):
                raise ValueError(f"Attention: mask shape {mask.shape} must be "
                                 f"[B, 1|H, T, S] = [{b}, 1|{self.num_heads}, {t}, "
                                 f"{vis.shape[-1]}]")
            vis = vis & mask.astype(bool)
        k = constrain(k, ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(v, ("batch", "length", "kv_heads", "head_dim"))
        fused = self.use_dot_product_attention
        if fused is None:
            fused = jax.default_backend() != "cpu"
        out = dot_product_attention(q, k, v, vis, use_fused=fused)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        y = Projection((self.num_heads, self.head_dim, self.out_features or d), 2,
                       ("heads", "head_dim", "embed"), use_bias=self.out_bias, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="o_proj")(out)
        return constrain(y, ("batch", "length", "embed")), new_cache

    @staticmethod
    def _write_cache(cache: Cache, k: jax.Array, v: jax.Array, positions: jax.Array) -> Cache:
        """Writes T new keys at ring slots (index + arange(T)) % L; keeps only the last L."""
        length = cache["k"].shape[1]
        t = k.shape[1]
        keep = min(t, length)  # static: older keys of an over-long chunk never reach the cache
        slots = (cache["index"] + (t - keep) + jnp.arange(keep)) % length
        return {
            "k": cache["k"].at[:, slots].set(k[:, t - keep:].astype(cache["k"].dtype)),
            "v": cache["v"].at[:, slots].set(v[:, t - keep:].astype(cache["v"].dtype)),
            "pos": cache["pos"].at[:, slots].set(positions[:, t - keep:]),
            "index": cache["index"] + t,
        }
