"""One pre-norm residual transformer layer composed of the shared blocks.

x += attn_scale(attn(attn_norm(x)))
x += cross_scale(cross_attn(cross_norm(x), context))   (if cross_attention)
x += ffn_scale(ffn(ffn_norm(x)))                       (ffn: GatedMLP | MLP | MoE)

Every family's decoder layer is this block, configured: Qwen3-Omni (RMSNorm, rotate-half RoPE,
q/k norm, gated SiLU or MoE), Kyutai Moshi (RMSNorm eps 1e-8 or LayerNorm, interleaved RoPE
with theta = max_period, LayerScale, ring-cache window, LayerNorm cross-attention, per-step
weight sets in the depformer), the pattern LM / MusicGen (LayerNorm everywhere, positions added
outside, cross-attention, GELU MLP with the checkpoint's biases).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.attention import Attention, Cache
from audiolm.nn.conv import LayerScale
from audiolm.nn.mlp import MLP, GatedMLP
from audiolm.nn.moe import MoE
from audiolm.nn.norms import LayerNorm, RMSNorm
from audiolm.nn.params import Dtype, constrain

NORMS = ("rms", "layer")  # RMSNorm | LayerNorm (both in float32)
FFNS = ("gated", "plain", "moe")


def zero_aux() -> dict[str, jax.Array]:
    """The aux dict of a layer without MoE (same structure as MoE's)."""
    return {"load_balance_loss": jnp.zeros((), jnp.float32),
            "router_z_loss": jnp.zeros((), jnp.float32)}


class TransformerBlock(nn.Module):
    """`__call__(x [B, T, D], positions [B, T] | None, *, mask, context [B, S, Dc],
    context_mask [B, S], cross_mask, cache, weight_set) -> (x [B, T, D], new_cache | None, aux)`.

    Sub-modules: `attn_norm`, `attn` (Attention), `cross_norm` (kind `cross_norm`, eps
    cross_norm_eps) and `cross_attn` (same heads and biases, no RoPE, no window, not causal)
    when cross_attention, `ffn_norm`, `ffn`, `attn_scale` / `ffn_scale` (+ `cross_scale` with
    cross_attention) LayerScales when layer_scale is set. `cache` is the self-attention KV cache
    (`init_cache`); `cross_mask` [B, 1|H, T, S] further restricts which context keys each query
    sees (on top of context_mask). aux is MoE's {"load_balance_loss", "router_z_loss"} or zeros.
    num_kv_heads defaults to num_heads, head_dim to D // num_heads; ffn_bias None means the
    module default (GatedMLP: False, MLP: True).

    weight_sets=None: one attention / FFN named `attn` / `ffn`. weight_sets=n: n of them named
    `attn_0..` / `ffn_0..` sharing the norms and layer scales, chosen per call by `weight_set`
    (Kyutai's depformer: one set per codebook slice, through a schedule); `init` creates the
    sets it is called with.
    """
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    norm: str = "rms"
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6
    rope_style: str | None = None
    rope_theta: float = 1e4
    causal: bool = True
    window: int | None = None
    use_dot_product_attention: bool | None = None  # None: fused on accelerators (nn.attention)
    cross_attention: bool = False
    cross_norm: str = "layer"
    cross_norm_eps: float = 1e-5
    ffn: str = "gated"
    ffn_hidden: int = 0
    activation: str = "silu"
    ffn_bias: bool | None = None
    num_experts: int = 0
    top_k: int = 0
    expert_hidden: int = 0
    norm_topk_prob: bool = True
    shared_expert_hidden: int = 0
    dispatch: str = "dropless"
    capacity_factor: float = 2.0
    layer_scale: float | None = None
    weight_sets: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _check(self, d: int):
        if self.norm not in NORMS:
            raise ValueError(f"TransformerBlock: norm={self.norm!r}: expected one of {NORMS}")
        if self.cross_norm not in NORMS:
            raise ValueError(f"TransformerBlock: cross_norm={self.cross_norm!r}: expected one of "
                             f"{NORMS}")
        if self.ffn not in FFNS:
            raise ValueError(f"TransformerBlock: ffn={self.ffn!r}: expected one of {FFNS}")
        if self.ffn != "moe" and self.ffn_hidden < 1:
            raise ValueError(f"TransformerBlock: ffn_hidden={self.ffn_hidden} must be >= 1 for "
                             f"ffn={self.ffn!r}")
        if self.head_dim is None and d % self.num_heads:
            raise ValueError(f"TransformerBlock: width {d} is not divisible by num_heads="
                             f"{self.num_heads}; set head_dim")
        if self.weight_sets is not None and self.weight_sets < 1:
            raise ValueError(f"TransformerBlock: weight_sets={self.weight_sets} must be >= 1 or "
                             f"None")

    def _norm(self, name: str, eps: float, kind: str):
        cls = RMSNorm if kind == "rms" else LayerNorm
        return cls(eps=eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def _attention(self, name: str, d: int, cross: bool) -> Attention:
        return Attention(
            num_heads=self.num_heads, num_kv_heads=self.num_kv_heads or self.num_heads,
            head_dim=self.head_dim or d // self.num_heads, qkv_bias=self.qkv_bias,
            out_bias=self.out_bias, qk_norm=self.qk_norm, qk_norm_eps=self.qk_norm_eps,
            rope_style=None if cross else self.rope_style, rope_theta=self.rope_theta,
            causal=self.causal and not cross, window=None if cross else self.window,
            use_dot_product_attention=self.use_dot_product_attention, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name)

    @nn.nowrap
    def init_cache(self, batch: int, max_len: int, width: int,
                   dtype: Dtype = jnp.float32) -> Cache:
        """Empty self-attention KV cache for a model of width D=`width` (no params needed)."""
        return Attention(num_heads=self.num_heads,
                         num_kv_heads=self.num_kv_heads or self.num_heads,
                         head_dim=self.head_dim or width // self.num_heads
                         ).init_cache(batch, max_len, dtype)

    def _scale(self, name: str, h: jax.Array) -> jax.Array:
        if self.layer_scale is None:
            return h
        return LayerScale(self.layer_scale, dtype=self.dtype, param_dtype=self.param_dtype,
                          name=name)(h)

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array | None = None, *,
                 mask: jax.Array | None = None, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None, cross_mask: jax.Array | None = None,
                 cache: Cache | None = None, weight_set: int = 0):
        d = x.shape[-1]
        self._check(d)
        sets = self.weight_sets or 1
        if not isinstance(weight_set, int) or not 0 <= weight_set < sets:
            raise ValueError(f"TransformerBlock: weight_set={weight_set!r} must be a static int "
                             f"in [0, {sets}) (weight_sets={self.weight_sets})")
        suffix = "" if self.weight_sets is None else f"_{weight_set}"
        if self.cross_attention and context is None:
            raise ValueError("TransformerBlock: cross_attention=True needs `context` [B, S, Dc]")
        if not self.cross_attention and context is not None:
            raise ValueError("TransformerBlock: got `context` but cross_attention=False")
        x = constrain(x.astype(self.dtype), ("batch", "length", "embed"))

        h = self._norm("attn_norm", self.norm_eps, self.norm)(x)
        h, new_cache = self._attention("attn" + suffix, d, cross=False)(
            h, positions, mask=mask, cache=cache)
        x = x + self._scale("attn_scale", h)

        if self.cross_attention:
            h = self._norm("cross_norm", self.cross_norm_eps, self.cross_norm)(x)
            h, _ = self._attention("cross_attn", d, cross=True)(
                h, context=context, context_mask=context_mask, mask=cross_mask)
            x = x + self._scale("cross_scale", h)
        elif cross_mask is not None:
            raise ValueError("TransformerBlock: got `cross_mask` but cross_attention=False")

        h = self._norm("ffn_norm", self.norm_eps, self.norm)(x)
        aux = zero_aux()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, name="ffn" + suffix)
        if self.ffn == "moe":
            h, aux = MoE(num_experts=self.num_experts, top_k=self.top_k,
                         expert_hidden=self.expert_hidden, norm_topk_prob=self.norm_topk_prob,
                         shared_expert_hidden=self.shared_expert_hidden, dispatch=self.dispatch,
                         capacity_factor=self.capacity_factor, activation=self.activation,
                         **kw)(h)
        elif self.ffn == "gated":
            bias = False if self.ffn_bias is None else self.ffn_bias
            h = GatedMLP(self.ffn_hidden, activation=self.activation, use_bias=bias, **kw)(h)
        else:
            bias = True if self.ffn_bias is None else self.ffn_bias
            h = MLP(self.ffn_hidden, activation=self.activation, use_bias=bias, **kw)(h)
        x = constrain(x + self._scale("ffn_scale", h), ("batch", "length", "embed"))
        return x, new_cache, aux
