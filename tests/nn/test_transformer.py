"""TransformerBlock: wiring equals the hand-composed sub-blocks; cached decoding; MoE aux."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import nn as ann

from tests.nn.helpers import rand_params, run

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32
D = 16


def _x(b=2, t=7, d=D, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, d)), jnp.float32)


def _manual(cfg, p, x, positions, context=None, context_mask=None):
    """Applies the documented sub-blocks one by one with the block's params."""
    norm = ann.RMSNorm if cfg.get("norm", "rms") == "rms" else ann.LayerNorm
    eps = cfg.get("norm_eps", 1e-6)
    att_kw = dict(num_heads=cfg["num_heads"],
                  num_kv_heads=cfg.get("num_kv_heads") or cfg["num_heads"],
                  head_dim=cfg.get("head_dim") or D // cfg["num_heads"],
                  qk_norm=cfg.get("qk_norm", False))
    h = norm(eps=eps).apply({"params": p["attn_norm"]}, x)
    h, _ = ann.Attention(**att_kw, rope_style=cfg.get("rope_style"), window=cfg.get("window")
                         ).apply({"params": p["attn"]}, h, positions)
    if cfg.get("layer_scale"):
        h = h * p["attn_scale"]["scale"]
    x = x + h
    if cfg.get("cross_attention"):
        h = ann.LayerNorm(eps=1e-5).apply({"params": p["cross_norm"]}, x)
        h, _ = ann.Attention(**att_kw, causal=False).apply(
            {"params": p["cross_attn"]}, h, context=context, context_mask=context_mask)
        x = x + h
    h = norm(eps=eps).apply({"params": p["ffn_norm"]}, x)
    aux = None
    if cfg.get("ffn", "gated") == "gated":
        h = ann.GatedMLP(cfg["ffn_hidden"], activation=cfg.get("activation", "silu")).apply(
            {"params": p["ffn"]}, h)
    elif cfg["ffn"] == "plain":
        h = ann.MLP(cfg["ffn_hidden"], activation=cfg["activation"]).apply({"params": p["ffn"]}, h)
    else:
        h, aux = ann.MoE(cfg["num_experts"], cfg["top_k"], cfg["expert_hidden"],
                         shared_expert_hidden=cfg.get("shared_expert_hidden", 0)).apply(
            {"params": p["ffn"]}, h)
    if cfg.get("layer_scale"):
        h = h * p["ffn_scale"]["scale"]
    return x + h, aux


CONFIGS = [
    dict(num_heads=4, num_kv_heads=2, qk_norm=True, rope_style="rotate_half", ffn="moe",
         num_experts=4, top_k=2, expert_hidden=6, shared_expert_hidden=5),
    dict(num_heads=4, norm="layer", norm_eps=1e-5, ffn="plain", ffn_hidden=20, activation="gelu",
         cross_attention=True),
    dict(num_heads=2, head_dim=8, norm_eps=1e-8, rope_style="interleaved", ffn_hidden=12,
         window=3, layer_scale=0.01),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_block_equals_manual_composition(cfg):
    x = _x()
    positions = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (2, 7))
    m = ann.TransformerBlock(**cfg)
    kw = {}
    if cfg.get("cross_attention"):
        kw = dict(context=_x(2, 5, 10, seed=3),
                  context_mask=jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool))
    p = rand_params(m, x, positions, **kw)
    expected = {"attn_norm", "attn", "ffn_norm", "ffn"}
    expected |= {"cross_norm", "cross_attn"} if cfg.get("cross_attention") else set()
    expected |= {"attn_scale", "ffn_scale"} if cfg.get("layer_scale") else set()
    assert set(p) == expected
    y, cache, aux = run(m, p, x, positions, **kw)
    ref, ref_aux = jax.jit(functools.partial(_manual, cfg))(p, x, positions, **kw)
    assert cache is None
    np.testing.assert_allclose(y, ref, **TOL)
    if ref_aux is None:
        assert float(aux["load_balance_loss"]) == 0.0 and float(aux["router_z_loss"]) == 0.0
    else:
        np.testing.assert_allclose(aux["load_balance_loss"], ref_aux["load_balance_loss"], **TOL)
        assert float(aux["load_balance_loss"]) > 0


def test_block_cached_decoding_equals_full():
    cfg = CONFIGS[0] | dict(window=4)
    x = _x(t=9)
    m = ann.TransformerBlock(**cfg)
    p = rand_params(m, x)
    full, _, _ = run(m, p, x)
    cache = m.init_cache(2, 4, D)
    assert cache["k"].shape == (2, 4, 2, 4)
    step = jax.jit(lambda c, xi: m.apply({"params": p}, xi, cache=c))
    ys = []
    y, cache, _ = step(cache, x[:, :3])
    ys.append(y)
    for i in range(3, 9):
        y, cache, _ = step(cache, x[:, i:i + 1])
        ys.append(y)
    np.testing.assert_allclose(jnp.concatenate(ys, 1), full, **TOL)


def test_block_bad_config_raises():
    x = _x()
    with pytest.raises(ValueError, match="ffn='conv'"):
        ann.init_params(ann.TransformerBlock(num_heads=2, ffn="conv", ffn_hidden=4),
                        jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="ffn_hidden=0"):
        ann.init_params(ann.TransformerBlock(num_heads=2), jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="needs `context`"):
        ann.init_params(ann.TransformerBlock(num_heads=2, ffn_hidden=4, cross_attention=True),
                        jax.random.PRNGKey(0), x)
