"""Rotary position embeddings (two pair layouts) and Whisper sinusoidal positions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

ROPE_STYLES = ("rotate_half", "interleaved")


def rope_angles(positions: jax.Array, dim: int, theta: float) -> jax.Array:
    """Angles positions * theta**(-2i/dim), i < dim/2, in float32: [B, T] -> [B, T, dim/2]."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, *, theta: float, style: str) -> jax.Array:
    """Rotates x [B, T, H, Dh] by positions [B, T] (int); returns x's dtype.

    style "rotate_half": dimension i pairs with i + Dh/2 (GPT-NeoX / HF `rotate_half`, Qwen3).
    style "interleaved": dimension 2i pairs with 2i+1 (GPT-J / Moshi `apply_rope`).
    Pair i rotates by angle pos * theta**(-2i/Dh), computed in float32.
    """
    if style not in ROPE_STYLES:
        raise ValueError(f"rope style={style!r}: expected one of {ROPE_STYLES}")
    dh = x.shape[-1]
    if dh % 2:
        raise ValueError(f"apply_rope: head_dim={dh} must be even")
    if positions.shape != x.shape[:2]:
        raise ValueError(f"apply_rope: positions shape {positions.shape} must equal x.shape[:2]"
                         f"={x.shape[:2]} (x is [B, T, H, Dh])")
    ang = rope_angles(positions, dh, theta)[:, :, None, :]  # [B, T, 1, Dh/2]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    xf = x.astype(jnp.float32)
    if style == "rotate_half":
        x1, x2 = xf[..., : dh // 2], xf[..., dh // 2:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    else:
        pairs = xf.reshape(*xf.shape[:-1], dh // 2, 2)
        xr, xi = pairs[..., 0], pairs[..., 1]
        out = jnp.stack([xr * cos - xi * sin, xr * sin + xi * cos], axis=-1).reshape(xf.shape)
    return out.astype(x.dtype)


def sinusoidal_positions(length: int, dim: int, max_timescale: float = 10000.0) -> jax.Array:
    """Whisper-style table [length, dim] = concat[sin, cos] (float32).

    Timescales exp(-i * log(max_timescale) / (dim/2 - 1)), i < dim/2.
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal_positions: dim={dim} must be even and >= 4")
    # float32 arithmetic on purpose: matches the reference tables (Whisper / Qwen3-Omni AuT),
    # whose angle rounding at large positions would otherwise differ by ~1e-4.
    inc = np.float32(math.log(max_timescale) / (dim // 2 - 1))
    inv = np.exp(-inc * np.arange(dim // 2, dtype=np.float32))
    t = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return jnp.asarray(np.concatenate([np.sin(t), np.cos(t)], axis=1), jnp.float32)
