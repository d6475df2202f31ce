"""Multi-scale STFT discriminator for adversarial codec training (EnCodec's MS-STFTD layout).

Per scale (one per `DiscriminatorSpec.n_ffts` entry): the complex STFT of the waveform (periodic
Hann window of n_fft, hop n_fft / 4, n_fft / 2 zeros on both sides, scaled by
1 / sqrt(sum(window^2))) with its real and imaginary parts as two channels, [B, T, F, 2] ->

  conv_0      kernel (time_kernel, freq_kernel), stride 1                -> filters, LeakyReLU
  conv_{1+i}  kernel (time_kernel, freq_kernel), stride (1, 2),
              dilation (dilations[i], 1)                                  -> filters, LeakyReLU
  conv_{n}    kernel (3, 3)                                               -> filters, LeakyReLU
  conv_post   kernel (3, 3)                                               -> 1 logit channel

with "same" zero padding along both axes, so the logits are [B, T, ceil(F / 2**len(dilations))].
The feature maps are the activations after every LeakyReLU (the feature-matching targets). Unlike
EnCodec the convs carry no weight normalisation (the codec task trains the discriminator with its
own Adam group, `train.param_groups.discriminator`).

Params: `scale_{k}` {`conv_{i}`, `conv_post`: `kernel` [kt, kf, C_in, C_out], `bias` [C_out]}.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm.audio import features
from audiolm.nn.params import default_kernel_init, partitioned
from audiolm.presets.codec import DiscriminatorSpec

__all__ = ["STFTDiscriminator", "MultiScaleSTFTDiscriminator", "complex_stft"]


def complex_stft(wav: jax.Array, n_fft: int) -> jax.Array:
    """Normalised STFT as channels: wav [B, S] -> [B, frames, n_fft/2 + 1, 2] (real, imag),
    frames = S // (n_fft / 4) + 1."""
    hop = n_fft // 4
    pad = n_fft // 2
    x = jnp.pad(wav.astype(jnp.float32), ((0, 0), (pad, pad)))
    frames = (x.shape[1] - n_fft) // hop + 1
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    window = features.hann_window(n_fft)
    spec = jnp.fft.rfft(x[:, idx] * jnp.asarray(window), axis=-1)
    spec = spec / float(np.sqrt(np.sum(window ** 2)))
    return jnp.stack([jnp.real(spec), jnp.imag(spec)], axis=-1)


class STFTDiscriminator(nn.Module):
    """One scale: wav [B, S] -> (logits [B, T, F'] float32, feature maps [B, T, F_i, filters])."""
    spec: DiscriminatorSpec
    n_fft: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _conv(self, x, kernel, stride, dilation, features_out, name):
        kt, kf = kernel
        pad_t = (kt - 1) * dilation // 2
        conv = nn.Conv(
            features_out, (kt, kf), strides=(1, stride), kernel_dilation=(dilation, 1),
            padding=((pad_t, pad_t), ((kf - 1) // 2, (kf - 1) // 2)), dtype=self.dtype,
            param_dtype=self.param_dtype, name=name,
            kernel_init=partitioned(default_kernel_init, (None, None, "conv_in", "conv_out")),
            bias_init=partitioned(nn.initializers.zeros, ("conv_out",)))
        return conv(x)

    @nn.compact
    def __call__(self, wav: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        c = self.spec
        x = complex_stft(wav, self.n_fft).astype(self.dtype)
        kernel = (c.time_kernel, c.freq_kernel)
        layers = [(kernel, 1, 1)] + [(kernel, 2, d) for d in c.dilations] + [((3, 3), 1, 1)]
        feature_maps = []
        for i, (k, stride, dilation) in enumerate(layers):
            x = self._conv(x, k, stride, dilation, c.filters, f"conv_{i}")
            x = nn.leaky_relu(x, c.negative_slope)
            feature_maps.append(x)
        logits = self._conv(x, (3, 3), 1, 1, 1, "conv_post")[..., 0]
        return logits.astype(jnp.float32), tuple(feature_maps)


class MultiScaleSTFTDiscriminator(nn.Module):
    """wav [B, S] -> one (logits, feature maps) pair per scale (see `STFTDiscriminator`)."""
    spec: DiscriminatorSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, wav: jax.Array) -> list[tuple[jax.Array, tuple[jax.Array, ...]]]:
        if wav.ndim != 2:
            raise ValueError(f"MultiScaleSTFTDiscriminator: wav shape {wav.shape} must be "
                             f"[B, S]")
        return [STFTDiscriminator(self.spec, n_fft, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name=f"scale_{k}")(wav)
                for k, n_fft in enumerate(self.spec.n_ffts)]
