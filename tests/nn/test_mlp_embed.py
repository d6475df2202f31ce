"""MLPs and embeddings vs direct numpy math."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from audiolm import nn as ann

from tests.nn.helpers import rand_params, run

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32


def _x(shape=(2, 3, 6), seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _np_act(name, x):
    if name == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0)
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_gated_mlp(act):
    x = _x()
    m = ann.GatedMLP(hidden=10, activation=act)
    p = rand_params(m, x)
    assert jax.tree_util.tree_map(lambda a: a.shape, p) == {
        "gate_proj": {"kernel": (6, 10)}, "up_proj": {"kernel": (6, 10)},
        "down_proj": {"kernel": (10, 6)}}
    y = run(m, p, x)
    xn = np.asarray(x, np.float64)
    g = xn @ np.asarray(p["gate_proj"]["kernel"])
    u = xn @ np.asarray(p["up_proj"]["kernel"])
    np.testing.assert_allclose(y, (_np_act(act, g) * u) @ np.asarray(p["down_proj"]["kernel"]),
                               **TOL)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu", "silu"])
def test_plain_mlp(act):
    x = _x()
    m = ann.MLP(hidden=10, activation=act, out_features=4)
    p = rand_params(m, x)
    assert p["fc1"]["bias"].shape == (10,) and p["fc2"]["kernel"].shape == (10, 4)
    y = run(m, p, x)
    xn = np.asarray(x, np.float64)
    h = _np_act(act, xn @ np.asarray(p["fc1"]["kernel"]) + np.asarray(p["fc1"]["bias"]))
    np.testing.assert_allclose(
        y, h @ np.asarray(p["fc2"]["kernel"]) + np.asarray(p["fc2"]["bias"]), **TOL)


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="activation='swish'"):
        ann.init_params(ann.MLP(hidden=4, activation="swish"), jax.random.PRNGKey(0), _x())


def test_embed_lookup_attend_and_bad_ids():
    m = ann.Embed(num_embeddings=7, features=5)
    ids = jnp.asarray([[0, 3, 6], [1, 1, 2]], jnp.int32)
    p = rand_params(m, ids, std=1.0)
    table = np.asarray(p["embedding"])
    assert table.shape == (7, 5)
    np.testing.assert_array_equal(run(m, p, ids), table[np.asarray(ids)])
    h = _x((2, 3, 5))
    logits = m.apply({"params": p}, h, method=m.attend)
    np.testing.assert_allclose(logits, np.asarray(h) @ table.T, **TOL)
    bad = run(m, p, jnp.asarray([[7, -1]], jnp.int32))
    assert np.all(np.isnan(np.asarray(bad)))


def test_multi_codebook_embed_sums_and_zero_token():
    k, v, d = 3, 6, 4
    m = ann.MultiCodebookEmbed(num_codebooks=k, num_embeddings=v, features=d)
    codes = np.random.default_rng(0).integers(0, v, size=(2, k, 5)).astype(np.int32)
    codes[0, 1, 2] = -1
    codes[1, :, 4] = -1  # every codebook "zero": exact zero vector
    p = rand_params(m, jnp.asarray(codes), std=1.0)
    table = np.asarray(p["embedding"])
    assert table.shape == (k, v, d)
    y = np.asarray(run(m, p, jnp.asarray(codes)))
    ref = np.zeros((2, 5, d))
    for b in range(2):
        for t in range(5):
            for q in range(k):
                if codes[b, q, t] >= 0:
                    ref[b, t] += table[q, codes[b, q, t]]
    np.testing.assert_allclose(y, ref, **TOL)
    assert np.all(y[1, 4] == 0.0)
    codes[0, 0, 0] = v
    assert np.isnan(np.asarray(run(m, p, jnp.asarray(codes)))[0, 0]).all()
    with pytest.raises(ValueError, match="K=3"):
        run(m, p, jnp.asarray(codes[:, :2]))
