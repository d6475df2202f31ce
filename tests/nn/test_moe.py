"""MoE: both dispatches vs a per-token numpy computation of the same math, aux losses, drops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import nn as ann

from tests.nn.helpers import rand_params, run
from audiolm.nn.moe import capacity

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32


def _silu(x):
    return x / (1 + np.exp(-x))


def _np_moe(p, x, top_k, norm_topk_prob, shared):
    """Per-token loop: softmax router, top-k, renormalise, SwiGLU experts, shared expert."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    b, t, d = x.shape
    xs = np.asarray(x, np.float64).reshape(-1, d)
    y = np.zeros_like(xs)
    all_probs, picks = [], []
    for n, xt in enumerate(xs):
        logits = xt @ p["router"]["kernel"]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs, kind="stable")[:top_k]
        w = probs[top]
        if norm_topk_prob:
            w = w / w.sum()
        for e, we in zip(top, w):
            hid = _silu(xt @ p["wi_gate"][e]) * (xt @ p["wi_up"][e])
            y[n] += we * (hid @ p["wo"][e])
        if shared:
            s = p["shared_expert"]
            out = (_silu(xt @ s["gate_proj"]["kernel"]) * (xt @ s["up_proj"]["kernel"])) \
                @ s["down_proj"]["kernel"]
            gate = 1 / (1 + np.exp(-(xt @ p["shared_expert_gate"]["kernel"])))
            y[n] += gate * out
        all_probs.append(probs)
        picks.append(top)
    num_e = p["router"]["kernel"].shape[1]
    f = np.zeros(num_e)
    for top in picks:
        f[top] += 1.0 / len(picks)
    logits = xs @ p["router"]["kernel"]
    lse = np.log(np.exp(logits).sum(-1))
    aux = {"load_balance_loss": num_e * np.sum(f * np.mean(all_probs, 0)),
           "router_z_loss": np.mean(lse ** 2)}
    return y.reshape(b, t, d), aux


@pytest.mark.parametrize("dispatch", ["dropless", "capacity", "tiles", "ragged_dot", "gmm"])
@pytest.mark.parametrize("norm,shared", [(True, 0), (False, 6)])
def test_moe_matches_per_token_numpy(dispatch, norm, shared):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 8)), jnp.float32)
    m = ann.MoE(num_experts=6, top_k=2, expert_hidden=5, norm_topk_prob=norm,
                shared_expert_hidden=shared, dispatch=dispatch, capacity_factor=3.0)
    p = rand_params(m, x, seed=0)
    y, aux = jax.jit(lambda p, x: run(m, p, x))(p, x)
    ref, ref_aux = _np_moe(p, x, 2, norm, shared)
    np.testing.assert_allclose(y, ref, **TOL)
    for key in ("load_balance_loss", "router_z_loss"):
        np.testing.assert_allclose(aux[key], ref_aux[key], **TOL)


def test_param_shapes_and_dispatches_agree_when_capacity_ample():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 8)), jnp.float32)
    m = ann.MoE(num_experts=4, top_k=3, expert_hidden=6, shared_expert_hidden=3)
    p = rand_params(m, x, seed=3)
    assert p["router"]["kernel"].shape == (8, 4) and "bias" not in p["router"]
    assert p["wi_gate"].shape == p["wi_up"].shape == (4, 8, 6) and p["wo"].shape == (4, 6, 8)
    assert p["shared_expert_gate"]["kernel"].shape == (8, 1)
    y_drop, aux_drop = run(m, p, x)
    # capacity_factor = E / k gives C = N slots: nothing can be dropped.
    y_cap, aux_cap = run(m.clone(dispatch="capacity", capacity_factor=4 / 3), p, x)
    assert capacity(15, 3, 4, 4 / 3) == 15
    np.testing.assert_allclose(y_cap, y_drop, **TOL)
    np.testing.assert_allclose(aux_cap["load_balance_loss"], aux_drop["load_balance_loss"])


def test_capacity_drops_overflow_assignments():
    # Router that sends every token to expert 0 (top-1): capacity C keeps the first C tokens.
    n_tok, d = 6, 4
    x = jnp.asarray(np.random.default_rng(4).normal(size=(1, n_tok, d)), jnp.float32)
    m = ann.MoE(num_experts=3, top_k=1, expert_hidden=5, dispatch="capacity",
                capacity_factor=1.0)  # C = ceil(6 / 3) = 2
    p = rand_params(m, x, seed=0)
    kernel = np.zeros((d, 3), np.float32)
    p["router"]["kernel"] = jnp.asarray(kernel)
    x = x.at[..., 0].set(1.0)  # with zero logits top_k picks expert 0 for every token
    y, _ = run(m, p, x)
    full, _ = run(m.clone(dispatch="dropless"), p, x)
    np.testing.assert_allclose(y[0, :2], full[0, :2], **TOL)
    np.testing.assert_array_equal(np.asarray(y[0, 2:]), 0.0)


def test_moe_gradients_finite_and_bad_config():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 4, 8)), jnp.float32)
    m = ann.MoE(num_experts=4, top_k=2, expert_hidden=4)
    p = rand_params(m, x, seed=0)

    def loss(p):
        y, aux = run(m, p, x)
        return jnp.sum(y ** 2) + aux["load_balance_loss"] + aux["router_z_loss"]

    g = jax.grad(loss)(p)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(g))
    assert float(jnp.abs(g["wi_gate"]).sum()) > 0
    assert float(jnp.abs(g["router"]["kernel"]).sum()) > 0
    with pytest.raises(ValueError, match="top_k=5"):
        ann.init_params(m.clone(top_k=5), jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="dispatch='sparse'"):
        ann.init_params(m.clone(dispatch="sparse"), jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("rows,experts,sizes", [
    (40, 4, None),                 # random groups, tile 2
    (3, 8, [0, 2, 0, 0, 0, 1, 0, 0]),  # decode-sized: mostly empty groups, tile 1
    (256, 4, [0, 256, 0, 0]),     # one full group, tile 16
])
def test_grouped_swiglu_tiles_equal_ragged_dot(rows, experts, sizes):
    from audiolm.nn.moe import grouped_swiglu, tile_rows
    rng = np.random.default_rng(rows)
    d, h = 6, 5
    if sizes is None:
        sizes = np.bincount(rng.integers(0, experts, rows), minlength=experts)
    gs = jnp.asarray(sizes, jnp.int32)
    xs = jnp.asarray(rng.normal(size=(rows, d)), jnp.float32)
    ws = [jnp.asarray(rng.normal(size=s) * 0.3, jnp.float32)
          for s in ((experts, d, h), (experts, d, h), (experts, h, d))]
    expect = np.zeros((rows, d))
    start = 0
    for e, size in enumerate(np.asarray(sizes)):  # per-row numpy reference
        for r in range(start, start + size):
            x = np.asarray(xs[r], np.float64)
            hid = _silu(x @ np.asarray(ws[0][e])) * (x @ np.asarray(ws[1][e]))
            expect[r] = hid @ np.asarray(ws[2][e])
        start += size

    def loss(method, xs, *ws):
        return jnp.sum(grouped_swiglu(xs, gs, *ws, jax.nn.silu, method) ** 2)

    # gmm: the Pallas Megablox kernel, in interpret mode on CPU.
    for method in ("ragged_dot", "tiles", "gmm"):
        out = jax.jit(grouped_swiglu, static_argnums=(5, 6))(xs, gs, *ws, jax.nn.silu, method)
        np.testing.assert_allclose(out, expect, **TOL)
    g_ref = jax.grad(lambda *a: loss("ragged_dot", *a), argnums=(0, 1, 2, 3))(xs, *ws)
    for method in ("tiles", "gmm"):
        grads = jax.grad(lambda *a: loss(method, *a), argnums=(0, 1, 2, 3))(xs, *ws)
        for a, b in zip(g_ref, grads):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert tile_rows(rows, experts) == {40: 2, 3: 1, 256: 16}[rows]


def test_grouped_swiglu_rejects_unknown_method():
    from audiolm.nn.moe import grouped_swiglu
    w = jnp.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="method='dense'"):
        grouped_swiglu(jnp.zeros((1, 2)), jnp.ones((1,), jnp.int32), w, w, w, jax.nn.silu,
                       "dense")


def test_dropless_gradients_equal_capacity_dispatch():
    # With capacity for every assignment the einsum dispatch (plain autodiff) computes the
    # same function: the dropless custom VJPs (tiled_swiglu, permute_rows) must match it.
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 9, 8)), jnp.float32)
    m = ann.MoE(num_experts=4, top_k=2, expert_hidden=6, dispatch="tiles")
    p = rand_params(m, x, seed=1)

    def loss(m, p, x):
        return jnp.sum(jnp.sin(run(m, p, x)[0]))

    grad = jax.grad(loss, argnums=(1, 2))
    want = grad(m.clone(dispatch="capacity", capacity_factor=2.0), p, x)
    got = grad(m, p, x)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
