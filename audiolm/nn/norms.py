"""Normalisation layers. Statistics are computed in float32 and the result cast to `dtype`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.params import Dtype, partitioned


class RMSNorm(nn.Module):
    """y = scale * x * rsqrt(mean(x^2) + eps) over the last axis (Qwen3 / Moshi rms_norm_f32).

    x [..., D] -> [..., D]. Param `scale` [D] (ones). `axis_name` is the logical name of D
    ("embed" for residual streams, "head_dim" for q/k norms).
    """
    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)),
                           (d,), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (scale.astype(jnp.float32) * y).astype(self.dtype)


class LayerNorm(nn.Module):
    """y = (x - mean) * rsqrt(var + eps) * scale + bias over the last axis, in float32.

    x [..., D] -> [..., D]. Params `scale` [D] (ones, if use_scale), `bias` [D] (zeros, if
    use_bias).
    """
    eps: float = 1e-5
    use_bias: bool = True
    use_scale: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        if self.use_scale:
            scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)),
                               (d,), self.param_dtype)
            y = y * scale.astype(jnp.float32)
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, (self.axis_name,)),
                              (d,), self.param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)
