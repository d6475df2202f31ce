"""Causal 1-D convolutions and the codec-decoder blocks built on them (channels-last).

Shapes: B batch, T frames, C channels. Kernels are stored [k, C_in/groups, C_out]; a torch
Conv1d weight [C_out, C_in/groups, k] maps to kernel = weight.permute(2, 1, 0), a torch
ConvTranspose1d weight [C_in, C_out, k] to kernel = weight.permute(2, 0, 1).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.mlp import dense, get_activation
from audiolm.nn.norms import LayerNorm
from audiolm.nn.params import Dtype, default_kernel_init, partitioned


def causal_padding(length: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """(left, right) zero padding of a causal conv (Moshi StreamingConv1d / Qwen3-Omni).

    left = effective_kernel - stride; right is the least extra padding that makes the last
    frame complete: output length ceil(length / stride) for stride <= effective kernel.
    """
    eff = (kernel_size - 1) * dilation + 1
    left = eff - stride
    n_frames = (length - eff + left) / stride + 1
    ideal = (math.ceil(n_frames) - 1) * stride + (eff - left)
    return left, ideal - length


class CausalConv1d(nn.Module):
    """x [B, T, C_in] -> [B, ceil(T / stride), features]; output t sees inputs <= t only.

    Params `conv/kernel` [k, C_in/groups, features], `conv/bias` [features].
    """
    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"CausalConv1d: x shape {x.shape} must be [B, T, C]")
        if x.shape[-1] % self.groups or self.features % self.groups:
            raise ValueError(f"CausalConv1d: groups={self.groups} must divide in channels "
                             f"{x.shape[-1]} and features={self.features}")
        left, right = causal_padding(x.shape[1], self.kernel_size, self.stride, self.dilation)
        x = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
        return nn.Conv(
            self.features, (self.kernel_size,), strides=(self.stride,), padding="VALID",
            kernel_dilation=(self.dilation,), feature_group_count=self.groups,
            use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name="conv",
            kernel_init=partitioned(self.kernel_init, (None, "conv_in", "conv_out")),
            bias_init=partitioned(nn.initializers.zeros, ("conv_out",)))(x)


class _ConvTranspose(nn.Module):
    """Full transposed conv, torch semantics: y[t * stride + j] += x[t] @ kernel[j].

    x [B, T, C_in] -> [B, (T - 1) * stride + k, features].
    """
    features: int
    kernel_size: int
    stride: int
    groups: int
    use_bias: bool
    dtype: Dtype
    param_dtype: Dtype
    kernel_init: Any

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", partitioned(self.kernel_init, (None, "conv_in", "conv_out")),
                            (k, x.shape[-1] // self.groups, self.features), self.param_dtype)
        # Dilate the input by `stride`, pad k-1 on both sides, correlate with the flipped kernel.
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), jnp.asarray(kernel, self.dtype)[::-1], window_strides=(1,),
            padding=[(k - 1, k - 1)], lhs_dilation=(self.stride,),
            feature_group_count=self.groups,
            dimension_numbers=("NWC", "WIO", "NWC"))
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, ("conv_out",)),
                              (self.features,), self.param_dtype)
            y = y + jnp.asarray(bias, self.dtype)
        return y


class CausalConvTranspose1d(nn.Module):
    """x [B, T, C_in] -> [B, (T - 1) * stride + k - trim_left - trim_right, features].

    The full transposed conv has (T - 1) * stride + k samples; `trim_right` (default
    k - stride, Moshi's causal trim) are removed on the right, so the output has T * stride
    samples. `trim_left` (default 0) removes samples on the left too: Qwen3-Omni Code2Wav trims
    k - stride on both ends. Params `conv/kernel` [k, C_in/groups, features], `conv/bias`
    (groups: Mimi's depthwise upsampler; a torch weight [C_in, C_out/g, k] maps group-wise).
    """
    features: int
    kernel_size: int
    stride: int
    trim_right: int | None = None
    trim_left: int = 0
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"CausalConvTranspose1d: x shape {x.shape} must be [B, T, C]")
        if self.kernel_size < self.stride:
            raise ValueError(f"CausalConvTranspose1d: kernel_size={self.kernel_size} must be "
                             f">= stride={self.stride}")
        right = self.kernel_size - self.stride if self.trim_right is None else self.trim_right
        if x.shape[-1] % self.groups or self.features % self.groups:
            raise ValueError(f"CausalConvTranspose1d: groups={self.groups} must divide in "
                             f"channels {x.shape[-1]} and features={self.features}")
        y = _ConvTranspose(self.features, self.kernel_size, self.stride, self.groups,
                           self.use_bias,
                           self.dtype, self.param_dtype, self.kernel_init, name="conv")(x)
        full = y.shape[1]
        if self.trim_left + right >= full:
            raise ValueError(f"CausalConvTranspose1d: trimming {self.trim_left} + {right} "
                             f"samples leaves nothing of {full}")
        return y[:, self.trim_left: full - right]


class SnakeBeta(nn.Module):
    """y = x + sin^2(x * exp(alpha)) / (exp(beta) + 1e-9), per channel, in float32.

    x [..., C]. Params `alpha`, `beta` [C] (log scale, init 0).
    """
    channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.channels:
            raise ValueError(f"SnakeBeta: x has {x.shape[-1]} channels, expected "
                             f"channels={self.channels}")
        init = partitioned(nn.initializers.zeros, ("conv_out",))
        alpha = jnp.exp(self.param("alpha", init, (self.channels,), self.param_dtype)
                        .astype(jnp.float32))
        beta = jnp.exp(self.param("beta", init, (self.channels,), self.param_dtype)
                       .astype(jnp.float32))
        xf = x.astype(jnp.float32)
        return (xf + jnp.square(jnp.sin(xf * alpha)) / (beta + 1e-9)).astype(self.dtype)


class LayerScale(nn.Module):
    """y = scale * x. x [..., D]; param `scale` [D] initialised to init_value."""
    init_value: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", partitioned(nn.initializers.constant(self.init_value),
                                                ("embed",)), (x.shape[-1],), self.param_dtype)
        return (x * jnp.asarray(scale, self.dtype)).astype(self.dtype)


class ConvNeXtBlock(nn.Module):
    """x + gamma * pwconv2(GELU(pwconv1(LayerNorm(dwconv(x))))). x [B, T, dim] -> same.

    Sub-modules `dwconv` (CausalConv1d depthwise), `norm` (LayerNorm eps), `pwconv1` [dim,
    mlp_ratio*dim], `pwconv2`; param `gamma` [dim] (init layer_scale_init). GELU is exact (erf).
    """
    dim: int
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale_init: float = 1e-6
    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.dim:
            raise ValueError(f"ConvNeXtBlock: x has {x.shape[-1]} channels, expected "
                             f"dim={self.dim}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = CausalConv1d(self.dim, self.kernel_size, groups=self.dim, name="dwconv", **kw)(x)
        h = LayerNorm(eps=self.eps, name="norm", **kw)(h)
        h = dense(self.mlp_ratio * self.dim, "pwconv1", ("embed", "mlp"), True, **kw)(h)
        h = get_activation("gelu")(h)
        h = dense(self.dim, "pwconv2", ("mlp", "embed"), True, **kw)(h)
        gamma = self.param("gamma", partitioned(nn.initializers.constant(self.layer_scale_init),
                                                ("embed",)), (self.dim,), self.param_dtype)
        return (x + jnp.asarray(gamma, self.dtype) * h).astype(self.dtype)
