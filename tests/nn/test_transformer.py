"""TransformerBlock: wiring equals the hand-composed sub-blocks (Qwen3, Kyutai and MusicGen
configurations); cached decoding; MoE aux; cross masks; per-call weight sets."""

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


def _manual(cfg, p, x, positions, context=None, context_mask=None, cross_mask=None,
            weight_set=None):
    """Applies the documented sub-blocks one by one with the block's params."""
    norms = {"rms": ann.RMSNorm, "layer": ann.LayerNorm}
    norm, eps = norms[cfg.get("norm", "rms")], cfg.get("norm_eps", 1e-6)
    suffix = "" if weight_set is None else f"_{weight_set}"
    att_kw = dict(num_heads=cfg["num_heads"],
                  num_kv_heads=cfg.get("num_kv_heads") or cfg["num_heads"],
                  head_dim=cfg.get("head_dim") or D // cfg["num_heads"],
                  qk_norm=cfg.get("qk_norm", False), qkv_bias=cfg.get("qkv_bias", False),
                  out_bias=cfg.get("out_bias", False))
    scale = (lambda name, h: h * p[name]["scale"]) if cfg.get("layer_scale") else \
        (lambda name, h: h)
    h = norm(eps=eps).apply({"params": p["attn_norm"]}, x)
    h, _ = ann.Attention(**att_kw, rope_style=cfg.get("rope_style"),
                         rope_theta=cfg.get("rope_theta", 1e4), window=cfg.get("window")
                         ).apply({"params": p["attn" + suffix]}, h, positions)
    x = x + scale("attn_scale", h)
    if cfg.get("cross_attention"):
        h = norms[cfg.get("cross_norm", "layer")](eps=cfg.get("cross_norm_eps", 1e-5)).apply(
            {"params": p["cross_norm"]}, x)
        h, _ = ann.Attention(**att_kw, causal=False).apply(
            {"params": p["cross_attn"]}, h, context=context, context_mask=context_mask,
            mask=cross_mask)
        x = x + scale("cross_scale", h)
    h = norm(eps=eps).apply({"params": p["ffn_norm"]}, x)
    aux = None
    ffn = {"params": p["ffn" + suffix]}
    if cfg.get("ffn", "gated") == "gated":
        h = ann.GatedMLP(cfg["ffn_hidden"], activation=cfg.get("activation", "silu"),
                         use_bias=bool(cfg.get("ffn_bias", False))).apply(ffn, h)
    elif cfg["ffn"] == "plain":
        bias = cfg.get("ffn_bias")
        h = ann.MLP(cfg["ffn_hidden"], activation=cfg["activation"],
                    use_bias=True if bias is None else bias).apply(ffn, h)
    else:
        h, aux = ann.MoE(cfg["num_experts"], cfg["top_k"], cfg["expert_hidden"],
                         shared_expert_hidden=cfg.get("shared_expert_hidden", 0)).apply(ffn, h)
    return x + scale("ffn_scale", h), aux


CONFIGS = [
    dict(num_heads=4, num_kv_heads=2, qk_norm=True, rope_style="rotate_half", ffn="moe",
         num_experts=4, top_k=2, expert_hidden=6, shared_expert_hidden=5),
    dict(num_heads=4, norm="layer", norm_eps=1e-5, ffn="plain", ffn_hidden=20, activation="gelu",
         cross_attention=True),
    dict(num_heads=2, head_dim=8, norm_eps=1e-8, rope_style="interleaved", ffn_hidden=12,
         window=3, layer_scale=0.01),
    # Kyutai Moshi temporal layer: RMSNorm 1e-8, interleaved RoPE (theta = max_period),
    # LayerScale on all three branches, LayerNorm cross-attention, bias-free plain FFN.
    dict(num_heads=4, norm_eps=1e-8, rope_style="interleaved", rope_theta=100.0, window=5,
         layer_scale=0.2, cross_attention=True, ffn="plain", ffn_hidden=24, activation="gelu",
         ffn_bias=False),
    # MusicGen-style layer with an RMS norm: the cross-attention norm follows the layer's.
    dict(num_heads=2, num_kv_heads=1, norm_eps=1e-5, qkv_bias=True, out_bias=True,
         cross_attention=True, cross_norm="rms", cross_norm_eps=1e-5, ffn_hidden=10,
         ffn_bias=True),
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
    expected |= {"cross_scale"} if cfg.get("layer_scale") and cfg.get("cross_attention") \
        else set()
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


def test_block_cross_mask_restricts_context():
    """cross_mask hides context keys per query (Kyutai's text cross-attention window)."""
    cfg = CONFIGS[3]
    x = _x(t=4)
    positions = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32), (2, 4))
    context = _x(2, 4, D, seed=3)
    cross_mask = (jnp.arange(4)[None, None, None, :] <= jnp.arange(4)[None, None, :, None])
    cross_mask = jnp.broadcast_to(cross_mask, (2, 1, 4, 4))
    m = ann.TransformerBlock(**cfg)
    kw = dict(context=context, context_mask=jnp.ones((2, 4), bool))
    p = rand_params(m, x, positions, **kw)
    y, _, _ = run(m, p, x, positions, cross_mask=cross_mask, **kw)
    ref, _ = jax.jit(functools.partial(_manual, cfg))(p, x, positions, cross_mask=cross_mask,
                                                       **kw)
    np.testing.assert_allclose(y, ref, **TOL)
    unmasked, _, _ = run(m, p, x, positions, **kw)
    # The last query sees every key either way; the first sees only key 0 under the mask.
    np.testing.assert_allclose(y[:, -1], unmasked[:, -1], **TOL)
    assert float(jnp.max(jnp.abs(y[:, 0] - unmasked[:, 0]))) > 1e-3


def test_block_weight_sets_share_norms_and_pick_by_weight_set():
    cfg = dict(num_heads=2, norm_eps=1e-8, rope_style="interleaved", ffn_hidden=12,
               layer_scale=0.1)
    m = ann.TransformerBlock(**cfg, weight_sets=2)
    x = _x(t=3)
    positions = jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32), (2, 3))
    p0 = rand_params(m, x, positions, weight_set=0, seed=0)
    p1 = rand_params(m, x, positions, weight_set=1, seed=1)
    assert set(p0) == {"attn_norm", "attn_0", "ffn_norm", "ffn_0", "attn_scale", "ffn_scale"}
    p = {**p1, **p0}  # shared norms / scales from set 0's draw, both weight sets
    assert set(p) == set(p0) | {"attn_1", "ffn_1"}
    outs = []
    for k in (0, 1):
        y, _, _ = jax.jit(lambda p, x, pos, k=k: m.apply({"params": p}, x, pos, weight_set=k))(
            p, x, positions)
        ref, _ = _manual(cfg, p, x, positions, weight_set=k)
        np.testing.assert_allclose(y, ref, **TOL)
        outs.append(y)
    assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-3
    with pytest.raises(ValueError, match=r"weight_set=2 must be a static int in \[0, 2\)"):
        m.apply({"params": p}, x, positions, weight_set=2)
    with pytest.raises(ValueError, match=r"weight_set=1 must be a static int in \[0, 1\)"):
        ann.TransformerBlock(**cfg).apply({"params": p0}, x, positions, weight_set=1)


def test_block_bad_options_raise():
    x = _x()
    with pytest.raises(ValueError, match="cross_norm='batch'"):
        ann.init_params(ann.TransformerBlock(num_heads=2, ffn_hidden=4, cross_norm="batch"),
                        jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="weight_sets=0 must be >= 1"):
        ann.init_params(ann.TransformerBlock(num_heads=2, ffn_hidden=4, weight_sets=0),
                        jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="got `cross_mask` but cross_attention=False"):
        ann.init_params(ann.TransformerBlock(num_heads=2, ffn_hidden=4), jax.random.PRNGKey(0),
                        x, cross_mask=jnp.ones((2, 1, 7, 3), bool))
