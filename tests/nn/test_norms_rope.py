"""Norms, RoPE and sinusoidal positions vs numpy and (where installed) the torch references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import nn as ann

from tests.nn.helpers import run

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_rmsnorm_matches_numpy_and_casts():
    x = _rng().normal(size=(2, 3, 8)).astype(np.float32)
    m = ann.RMSNorm(eps=1e-6)
    p = ann.init_params(m, jax.random.PRNGKey(0), x)
    assert p["scale"].shape == (8,) and np.all(np.asarray(p["scale"]) == 1)
    p = {"scale": jnp.asarray(_rng(1).normal(size=8), jnp.float32)}
    y = run(m, p, x)
    ref = np.asarray(p["scale"]) * x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, ref, **TOL)
    yb = run(ann.RMSNorm(dtype=jnp.bfloat16), p, x.astype(jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), ref, rtol=2e-2, atol=2e-2)


def test_layernorm_matches_numpy():
    x = _rng().normal(size=(2, 3, 8)).astype(np.float32) * 3 + 1
    m = ann.LayerNorm(eps=1e-5)
    p = ann.init_params(m, jax.random.PRNGKey(0), x)
    assert set(p) == {"scale", "bias"}
    p = {"scale": jnp.asarray(_rng(1).normal(size=8), jnp.float32),
         "bias": jnp.asarray(_rng(2).normal(size=8), jnp.float32)}
    y = run(m, p, x)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(y, ref, **TOL)
    assert not ann.init_params(ann.LayerNorm(use_bias=False), jax.random.PRNGKey(0), x).get("bias")


def _np_rope(x, pos, theta, style):
    """Direct complex-number form: pair i rotates by pos * theta**(-2i/D)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, :, None, None].astype(np.float64) * inv
    if style == "rotate_half":
        z = x[..., : d // 2] + 1j * x[..., d // 2:]
        r = z * np.exp(1j * ang)
        return np.concatenate([r.real, r.imag], -1)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    r = z * np.exp(1j * ang)
    return np.stack([r.real, r.imag], -1).reshape(x.shape)


@pytest.mark.parametrize("style", ["rotate_half", "interleaved"])
def test_rope_matches_complex_rotation(style):
    x = _rng().normal(size=(2, 5, 3, 8)).astype(np.float32)
    pos = np.array([[0, 1, 2, 3, 4], [7, 3, 100, 0, 2]], np.int32)
    y = ann.apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=1e4, style=style)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, _np_rope(x, pos, 1e4, style), **TOL)
    # Rotation: norms of pairs are preserved, position 0 is the identity.
    np.testing.assert_allclose(y[1, 3], x[1, 3], **TOL)
    with pytest.raises(ValueError, match="rope style"):
        ann.apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=1e4, style="neox")


def test_rope_rotate_half_matches_transformers_qwen3():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb
    torch.set_num_threads(1)
    b, t, h, d, theta = 2, 6, 3, 16, 1e6
    q = _rng().normal(size=(b, t, h, d)).astype(np.float32)
    k = _rng(1).normal(size=(b, t, h, d)).astype(np.float32)
    pos = np.stack([np.arange(t), np.arange(t) + 1000]).astype(np.int64)
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = torch.from_numpy(pos).float()[..., None] * inv
    emb = torch.cat([freqs, freqs], -1)
    # HF layout [B, H, T, D]; cos/sin [B, T, D] unsqueezed at dim 1.
    qt, kt = (torch.from_numpy(a).transpose(1, 2) for a in (q, k))
    rq, rk = apply_rotary_pos_emb(qt, kt, emb.cos(), emb.sin())
    for ours, ref in ((q, rq), (k, rk)):
        y = ann.apply_rope(jnp.asarray(ours), jnp.asarray(pos, jnp.int32), theta=theta,
                           style="rotate_half")
        # Angles up to ~1000 rad in fp32: allow a few ulps of the angle.
        np.testing.assert_allclose(y, ref.transpose(1, 2).numpy(), rtol=1e-4, atol=1e-4)


def test_rope_interleaved_matches_moshi():
    torch = pytest.importorskip("torch")
    import os
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    rope_mod = pytest.importorskip("moshi.modules.rope")
    torch.set_num_threads(1)
    b, t, h, d = 2, 5, 2, 8
    q = _rng().normal(size=(b, t, h, d)).astype(np.float32)
    k = _rng(1).normal(size=(b, t, h, d)).astype(np.float32)
    offset = np.array([0, 37])
    rq, rk = rope_mod.apply_rope(torch.from_numpy(q), torch.from_numpy(k),
                                 torch.from_numpy(offset), max_period=1e4,
                                 time_before_heads=True)
    pos = (offset[:, None] + np.arange(t)[None]).astype(np.int32)
    for ours, ref in ((q, rq), (k, rk)):
        y = ann.apply_rope(jnp.asarray(ours), jnp.asarray(pos), theta=1e4, style="interleaved")
        np.testing.assert_allclose(y, ref.numpy(), **TOL)


def test_sinusoidal_positions_whisper_formula():
    length, dim = 20, 16
    table = np.asarray(ann.sinusoidal_positions(length, dim))
    inc = math.log(1e4) / (dim // 2 - 1)
    t = np.arange(length)[:, None] * np.exp(-inc * np.arange(dim // 2))[None]
    np.testing.assert_allclose(table, np.concatenate([np.sin(t), np.cos(t)], 1), **TOL)
    assert table.shape == (length, dim) and table.dtype == np.float32


def test_sinusoidal_positions_match_qwen3_omni():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        SinusoidsPositionEmbedding)
    ref = SinusoidsPositionEmbedding(1500, 64).positional_embedding.numpy()
    ours = np.asarray(ann.sinusoidal_positions(1500, 64))
    # Both in fp32; torch's and numpy's exp differ by an ulp for some timescales, which at
    # angles ~1500 rad moves sin/cos by up to ~2e-4. Short positions agree to 1e-6.
    np.testing.assert_allclose(ours[:100], ref[:100], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-4)
