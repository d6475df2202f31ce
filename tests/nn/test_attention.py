"""Attention: numpy reference, fused path, incremental decoding with the (ring) KV cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import nn as ann

from tests.nn.helpers import rand_params, run

from tests.nn.test_norms_rope import _np_rope

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32
D = 16


def _x(b=2, t=9, d=D, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, d)), jnp.float32)


def _params(m, x, seed=0, **kw):
    return rand_params(m, x, seed=seed, **kw)


def _np_rms(x, scale, eps):
    return scale * x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + eps)


def _np_attention(p, x, cfg, positions, context=None, context_mask=None, mask=None):
    """Direct numpy attention, loops over heads; float64."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x, np.float64)
    kv_in = x if context is None else np.asarray(context, np.float64)
    q = np.einsum("btd,dhk->bthk", x, p["q_proj"]["kernel"])
    k = np.einsum("bsd,dhk->bshk", kv_in, p["k_proj"]["kernel"])
    v = np.einsum("bsd,dhk->bshk", kv_in, p["v_proj"]["kernel"])
    if cfg.get("qkv_bias"):
        q, k, v = (a + p[n]["bias"] for a, n in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj")))
    if cfg.get("qk_norm"):
        q = _np_rms(q, p["q_norm"]["scale"], cfg.get("qk_norm_eps", 1e-6))
        k = _np_rms(k, p["k_norm"]["scale"], cfg.get("qk_norm_eps", 1e-6))
    pos = np.asarray(positions)
    if context is None and cfg.get("rope_style"):
        theta = cfg.get("rope_theta", 1e4)
        style = cfg["rope_style"]
        q, k = _np_rope(q, pos, theta, style), _np_rope(k, pos, theta, style)
    b, t, h, dh = q.shape
    s, hkv = k.shape[1], k.shape[2]
    out = np.zeros((b, t, h, dh))
    for bi in range(b):
        for hi in range(h):
            j = hi // (h // hkv)
            logits = q[bi, :, hi] @ k[bi, :, j].T / np.sqrt(dh)
            vis = np.ones((t, s), bool)
            if context is None:
                dq = pos[bi][:, None] - pos[bi][None, :]
                if cfg.get("causal", True):
                    vis &= dq >= 0
                if cfg.get("window"):
                    vis &= dq < cfg["window"]
            elif context_mask is not None:
                vis &= np.asarray(context_mask)[bi][None, :]
            if mask is not None:
                m = np.asarray(mask)[bi]
                vis &= m[hi if m.shape[0] > 1 else 0]
            for ti in range(t):
                if not vis[ti].any():
                    continue
                lg = np.where(vis[ti], logits[ti], -np.inf)
                w = np.exp(lg - lg.max())
                out[bi, ti, hi] = (w / w.sum()) @ v[bi, :, j]
    y = np.einsum("bthk,hkd->btd", out, p["o_proj"]["kernel"])
    if cfg.get("out_bias"):
        y = y + p["o_proj"]["bias"]
    return y


CONFIGS = [
    dict(num_heads=4, num_kv_heads=4, head_dim=8),
    dict(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, rope_style="rotate_half",
         rope_theta=1e6),
    dict(num_heads=4, num_kv_heads=1, head_dim=6, qkv_bias=True, out_bias=True,
         rope_style="interleaved", window=3),
    dict(num_heads=2, num_kv_heads=2, head_dim=8, causal=False, out_features=5),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_attention_matches_numpy(cfg):
    x = _x()
    m = ann.Attention(**cfg)
    p = _params(m, x)
    positions = jnp.asarray(np.stack([np.arange(9), np.arange(9) + 5]), jnp.int32)
    y, cache = run(m, p, x, positions)
    assert cache is None and y.shape == (2, 9, cfg.get("out_features") or D)
    np.testing.assert_allclose(y, _np_attention(p, x, cfg, positions), **TOL)
    yf, _ = run(m.clone(use_dot_product_attention=True), p, x, positions)
    np.testing.assert_allclose(yf, y, **TOL)


def test_param_shapes_follow_contract():
    m = ann.Attention(num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True, out_bias=True,
                      qk_norm=True, out_features=12)
    p = ann.init_params(m, jax.random.PRNGKey(0), _x())
    shapes = jax.tree_util.tree_map(lambda a: a.shape, p)
    assert shapes == {
        "q_proj": {"kernel": (D, 4, 8), "bias": (4, 8)},
        "k_proj": {"kernel": (D, 2, 8), "bias": (2, 8)},
        "v_proj": {"kernel": (D, 2, 8), "bias": (2, 8)},
        "o_proj": {"kernel": (4, 8, 12), "bias": (12,)},
        "q_norm": {"scale": (8,)}, "k_norm": {"scale": (8,)},
    }
    axes = ann.logical_params_axes(m, jax.random.PRNGKey(0), _x())
    assert axes["q_proj"]["kernel"] == ("embed", "heads", "head_dim")
    assert axes["o_proj"]["kernel"] == ("heads", "head_dim", "embed")


def test_extra_mask_and_padding_positions():
    cfg = dict(num_heads=4, num_kv_heads=2, head_dim=8, rope_style="rotate_half")
    x = _x()
    m = ann.Attention(**cfg)
    p = _params(m, x)
    positions = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (2, 9))
    rng = np.random.default_rng(3)
    mask = rng.random((2, 4, 9, 9)) < 0.7
    mask[0, :, 2] = False  # a query row with nothing visible -> exact zeros before o_proj
    y, _ = run(m, p, x, positions, mask=jnp.asarray(mask))
    ref = _np_attention(p, x, cfg, positions, mask=mask)
    np.testing.assert_allclose(y, ref, **TOL)
    yf, _ = run(m.clone(use_dot_product_attention=True), p, x, positions,
                                                           mask=jnp.asarray(mask))
    np.testing.assert_allclose(yf, y, **TOL)
    # Negative key positions (padding) are never visible.
    pad = positions.at[1, 6:].set(-1)
    y_pad, _ = run(m, p, x, pad)
    keep = np.ones((2, 1, 9, 9), bool)
    keep[1, :, :, 6:] = False
    ref = _np_attention(p, x, cfg, pad, mask=keep)
    np.testing.assert_allclose(y_pad[:, :6], ref[:, :6], **TOL)


def test_cross_attention_matches_numpy():
    cfg = dict(num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, rope_style="rotate_half")
    x, ctx = _x(t=5), _x(t=7, d=10, seed=4)
    cmask = jnp.asarray(np.random.default_rng(5).random((2, 7)) < 0.6).at[:, 0].set(True)
    m = ann.Attention(**cfg)
    p = _params(m, x, context=ctx)
    assert p["k_proj"]["kernel"].shape == (10, 2, 8)
    y, _ = run(m, p, x, context=ctx, context_mask=cmask)
    ref = _np_attention(p, x, cfg, np.zeros((2, 5), np.int32), context=ctx, context_mask=cmask)
    np.testing.assert_allclose(y, ref, **TOL)
    with pytest.raises(ValueError, match="cache"):
        run(m, p, x, context=ctx, cache=m.init_cache(2, 4))


def _decode(m, p, x, positions, cache_len, prefill):
    """Prefill `prefill` tokens, then one token at a time; returns stacked outputs, cache."""
    b, t, _ = x.shape
    cache = m.init_cache(b, cache_len, jnp.float32)
    step = jax.jit(lambda c, xi, pi: run(m, p, xi, pi, cache=c))
    ys = []
    y, cache = run(m, p, x[:, :prefill], positions[:, :prefill], cache=cache)
    ys.append(y)
    for i in range(prefill, t):
        y, cache = step(cache, x[:, i:i + 1], positions[:, i:i + 1])
        ys.append(y)
    return jnp.concatenate(ys, axis=1), cache


@pytest.mark.parametrize("cfg,cache_len,prefill", [
    (CONFIGS[0], 12, 4),
    (CONFIGS[1], 12, 1),
    (dict(CONFIGS[1], use_dot_product_attention=True), 10, 5),
    (CONFIGS[2], 3, 2),  # ring buffer, window == cache length < sequence
    (dict(num_heads=4, num_kv_heads=2, head_dim=8, rope_style="interleaved", window=4), 4, 7),
    (dict(num_heads=2, num_kv_heads=1, head_dim=8, qk_norm=True, rope_style="rotate_half",
          window=5), 6, 3),
])
def test_cached_decoding_equals_full_forward(cfg, cache_len, prefill):
    b, t = 2, 11
    x = _x(b, t)
    m = ann.Attention(**cfg)
    p = _params(m, x)
    positions = jnp.asarray(np.stack([np.arange(t), np.arange(t) + 3]), jnp.int32)
    full, _ = run(m, p, x, positions)
    inc, cache = _decode(m, p, x, positions, cache_len, prefill)
    np.testing.assert_allclose(inc, full, **TOL)
    assert int(cache["index"]) == t
    # The ring holds the last cache_len keys at slots (position - offset) % cache_len.
    stored = np.asarray(cache["pos"])
    n = min(t, cache_len)
    for bi in range(b):
        expect = np.asarray(positions)[bi, t - n:]
        slots = np.arange(t - n, t) % cache_len
        np.testing.assert_array_equal(stored[bi, slots], expect)


def test_cache_default_positions_and_init_without_params():
    m = ann.Attention(num_heads=2, num_kv_heads=2, head_dim=4, rope_style="rotate_half")
    cache = m.init_cache(3, 5, jnp.bfloat16)
    assert cache["k"].shape == (3, 5, 2, 4) and cache["k"].dtype == jnp.bfloat16
    assert cache["pos"].dtype == jnp.int32 and np.all(np.asarray(cache["pos"]) == -1)
    assert cache["index"].shape == () and int(cache["index"]) == 0
    x = _x(2, 5, 8)
    p = _params(m, x)
    full, _ = run(m, p, x)
    c = m.init_cache(2, 8)
    y1, c = run(m, p, x[:, :3], cache=c)
    y2, c = run(m, p, x[:, 3:], cache=c)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), full, **TOL)


def test_bad_arguments_raise():
    x = _x()
    with pytest.raises(ValueError, match="num_kv_heads"):
        ann.init_params(ann.Attention(num_heads=3, num_kv_heads=2, head_dim=4),
                        jax.random.PRNGKey(0), x)
    m = ann.Attention(num_heads=2, num_kv_heads=2, head_dim=4)
    p = rand_params(m, x)
    with pytest.raises(ValueError, match="mask shape"):
        run(m, p, x, mask=jnp.ones((2, 1, 9, 8), bool))
    with pytest.raises(ValueError, match="positions shape"):
        run(m, p, x, jnp.zeros((2, 8), jnp.int32))


@pytest.mark.parametrize("backend,setting,fused", [
    ("cpu", None, False), ("gpu", None, True), ("tpu", None, True), ("gpu", False, False),
    ("cpu", True, True)])
def test_fused_attention_is_the_default_on_accelerators(monkeypatch, backend, setting, fused):
    import audiolm.nn.attention as attn_lib
    seen = []
    real = attn_lib.dot_product_attention

    def spy(*args, use_fused=False):
        seen.append(use_fused)
        return real(*args, use_fused=use_fused)

    monkeypatch.setattr(attn_lib, "dot_product_attention", spy)
    monkeypatch.setattr(attn_lib.jax, "default_backend", lambda: backend)
    x = _x()
    m = ann.Attention(num_heads=2, num_kv_heads=1, head_dim=8,
                      use_dot_product_attention=setting)
    run(m, _params(m, x), x, jnp.broadcast_to(jnp.arange(9), (2, 9)))
    assert seen and all(s is fused for s in seen)
