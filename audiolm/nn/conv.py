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
        b, length, _ = x.shape
        left, right = causal_padding(length, self.kernel_size, self.stride, self.dilation)
        x = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
        d = self.dilation
        # XLA:CPU runs dilated convs ~1.5x slower than the same work undilated: split time
        # into its d phases (t mod d), each an undilated conv, and interleave them back.
        by_phase = d > 1 and self.stride == 1 and jax.default_backend() == "cpu"
        if by_phase:
            frames = -(-length // d) + self.kernel_size - 1  # per phase, padded
            x = jnp.pad(x, ((0, 0), (0, frames * d - x.shape[1]), (0, 0)))
            x = x.reshape(b, frames, d, -1).transpose(0, 2, 1, 3).reshape(b * d, frames, -1)
        y = nn.Conv(
            self.features, (self.kernel_size,), strides=(self.stride,), padding="VALID",
            kernel_dilation=(1 if by_phase else d,), feature_group_count=self.groups,
            use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name="conv",
            kernel_init=partitioned(self.kernel_init, (None, "conv_in", "conv_out")),
            bias_init=partitioned(nn.initializers.zeros, ("conv_out",)))(x)
        if by_phase:  # [B*d, ceil(T/d), F] -> [B, T, F]
            y = y.reshape(b, d, -1, self.features).transpose(0, 2, 1, 3)
            y = y.reshape(b, -1, self.features)[:, :length]
        return y


def conv_transpose_polyphase(x: jax.Array, kernel: jax.Array, stride: int, groups: int = 1):
    """Full transposed conv y[t * stride + j] += x[t] @ kernel[j] as one strided-free conv.

    x [B, T, C_in], kernel [k, C_in/groups, F] -> [B, (T - 1) * stride + k, F]. Tap j = m*s + r
    (s = stride, kernel zero-padded to M*s taps) sends x[t] to output frame t + m, phase r: a
    plain conv over T with M taps and s*F output channels, then phases interleaved into time.
    XLA lowers the textbook form (input dilated by s) to s times the FLOPs, mostly on zeros.
    """
    k, cin_g, f = kernel.shape
    s, g = stride, groups
    taps = -(-k // s)  # M
    kernel = jnp.pad(kernel, ((0, taps * s - k), (0, 0), (0, 0)))
    # [M*s, C_in/g, g*Fg] -> [M, s, C_in/g, g, Fg] -> [M, C_in/g, g, s, Fg], taps flipped
    # because conv_general_dilated correlates; output channels group-major for groups.
    w = kernel.reshape(taps, s, cin_g, g, f // g).transpose(0, 2, 3, 1, 4)[::-1]
    z = jax.lax.conv_general_dilated(
        x, w.reshape(taps, cin_g, g * s * (f // g)), window_strides=(1,),
        padding=[(taps - 1, taps - 1)], feature_group_count=g,
        dimension_numbers=("NWC", "WIO", "NWC"))  # [B, T + M - 1, g*s*Fg]
    b, frames = z.shape[:2]
    z = z.reshape(b, frames, g, s, f // g).transpose(0, 1, 3, 2, 4).reshape(b, frames * s, f)
    return z[:, :(x.shape[1] - 1) * s + k]


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
        y = conv_transpose_polyphase(x.astype(self.dtype), jnp.asarray(kernel, self.dtype),
                                     self.stride, self.groups)
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


def fast_sin(x: jax.Array) -> jax.Array:
    """sin(x) for float32 from elementwise mul/add only (max abs error ~2e-7 vs ~3e-8 for
    jnp.sin). XLA:CPU's sin does not vectorise and is ~5x slower; SnakeBeta applies it to every
    sample of the vocoders. Reduction by 2*pi in two parts (Cody-Waite), reflection into
    [-pi/2, pi/2], then the odd Taylor polynomial to x^11 (truncation < 6e-8 there).
    """
    turns = jnp.round(x * (1 / (2 * math.pi)))
    two_pi_hi = 6.28125  # few mantissa bits: turns * two_pi_hi is exact
    r = x - turns * two_pi_hi - turns * (2 * math.pi - two_pi_hi)
    half_pi = math.pi / 2
    r = jnp.where(r > half_pi, math.pi - r, jnp.where(r < -half_pi, -math.pi - r, r))
    r2 = r * r
    poly = r2 * (-1 / 39916800) + 1 / 362880
    poly = poly * r2 - 1 / 5040
    poly = poly * r2 + 1 / 120
    poly = poly * r2 - 1 / 6
    return r + r * r2 * poly


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
        return (xf + jnp.square(fast_sin(xf * alpha)) / (beta + 1e-9)).astype(self.dtype)


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
