"""Sampling rules: property tests against a numpy computation of the allowed sets, seeds,
greedy, the Kyutai draw against moshi's `sample_token`, CFG and transformers' repetition penalty.

Compiled functions are cached per static (top_k, top_p) so hypothesis examples reuse them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from audiolm.nn.compile import fast_jit
from audiolm.sample import rules

V = 12
DRAWS = 64  # samples per example (rows of one batched draw)
KS = (1, 2, 5, 11)
PS = (0.1, 0.5, 0.9)
TOL = 1e-4  # fp32 cumulative-sum slack at the nucleus boundary

logit_rows = hnp.arrays(np.float32, (V,), elements=st.floats(
    -8, 8, width=32, allow_subnormal=False).map(lambda x: x if abs(x) >= 1e-30 else 0.0))
# (XLA on CPU flushes subnormals to zero, numpy does not: they would tie differently. A tiny
# normal logit becomes subnormal once divided by the temperature, hence zero below 1e-30.)
prop = settings(max_examples=40, deadline=None)


@functools.lru_cache(maxsize=None)
def _sampler(top_k, top_p):
    """jit(logits [V], key, temperature) -> DRAWS ids from the same row."""
    def f(logits, key, temperature):
        rows = jnp.broadcast_to(logits, (DRAWS, V))
        ids = rules.sample_logits(rows, key, temperature, top_k, top_p)
        return ids, rules.mask_top_k(logits, top_k), rules.mask_top_p(logits, top_p)
    return fast_jit(f)


def allowed_top_k(logits, k):
    kth = np.sort(logits)[::-1][k - 1]
    return logits >= kth


def allowed_top_p(logits, p, temperature=1.0, slack=TOL):
    """Entries whose higher-ranked probability mass is < p (+ slack), ties kept (float64)."""
    z = logits.astype(np.float64) / temperature
    finite = np.isfinite(z)
    probs = np.zeros_like(z)
    e = np.exp(z[finite] - z[finite].max())
    probs[finite] = e / e.sum()
    order = np.argsort(-z, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    n_keep = max(int(np.sum(before < p + slack)), 1)
    threshold = z[order][n_keep - 1]
    return z >= threshold


@prop
@given(logits=logit_rows, k=st.sampled_from(KS), seed=st.integers(0, 2**31 - 1),
       temperature=st.floats(0.3, 3.0))
def test_top_k_never_emits_excluded(logits, k, seed, temperature):
    ids, masked, _ = _sampler(k, 1.0)(logits, jax.random.PRNGKey(seed), temperature)
    assert allowed_top_k(logits, k)[np.asarray(ids)].all()
    np.testing.assert_array_equal(np.isfinite(np.asarray(masked)), allowed_top_k(logits, k))


@prop
@given(logits=logit_rows, p=st.sampled_from(PS), seed=st.integers(0, 2**31 - 1),
       temperature=st.floats(0.3, 3.0))
def test_top_p_never_emits_excluded(logits, p, seed, temperature):
    ids, _, masked = _sampler(0, p)(logits, jax.random.PRNGKey(seed), temperature)
    # top-p acts on the tempered distribution (transformers' warper order)
    assert allowed_top_p(logits, p, temperature)[np.asarray(ids)].all()
    kept = np.isfinite(np.asarray(masked))
    assert not (kept & ~allowed_top_p(logits, p, slack=TOL)).any()  # nothing beyond the nucleus
    assert not (allowed_top_p(logits, p, slack=-TOL) & ~kept).any()  # the nucleus is all kept


@prop
@given(logits=logit_rows, k=st.sampled_from((2, 5)), p=st.sampled_from(PS),
       seed=st.integers(0, 2**31 - 1), temperature=st.floats(0.3, 3.0))
def test_top_k_then_top_p_never_emits_excluded(logits, k, p, seed, temperature):
    ids = np.asarray(_sampler(k, p)(logits, jax.random.PRNGKey(seed), temperature)[0])
    after_k = np.where(allowed_top_k(logits, k), logits, -np.inf)
    allowed = allowed_top_p(after_k, p, temperature) & allowed_top_k(logits, k)
    assert allowed[ids].all()


def test_fixed_seed_reproducible_and_seeds_differ():
    logits = np.zeros((V,), np.float32)  # uniform: two seeds agreeing on 64 draws ~impossible
    f = _sampler(5, 0.9)
    a, b, c = (np.asarray(f(logits, jax.random.PRNGKey(s), 1.0)[0]) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g = fast_jit(lambda key: rules.kyutai_sample(jnp.zeros((DRAWS, V)), key, 0.7, 4))
    k1, k2, k3 = (np.asarray(g(jax.random.PRNGKey(s))) for s in (3, 3, 4))
    np.testing.assert_array_equal(k1, k2)
    assert not np.array_equal(k1, k3)


def test_off_values_leave_the_logits_unchanged():
    """top_k = 0 and top_p = 1.0 (the config's off values) filter nothing."""
    logits = jax.random.normal(jax.random.PRNGKey(2), (4, V))
    np.testing.assert_array_equal(np.asarray(rules.mask_top_p(logits, 1.0)), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(rules.mask_top_k(logits, 0)), np.asarray(logits))
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(
        np.asarray(rules.sample_logits(logits, key, 1.0)),
        np.asarray(jax.random.categorical(key, logits, axis=-1)))


def test_temperature_zero_is_argmax_static_and_traced():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 3, V))
    greedy = np.asarray(jnp.argmax(logits, -1))
    np.testing.assert_array_equal(np.asarray(rules.sample_logits(logits, None)), greedy)
    np.testing.assert_array_equal(np.asarray(rules.kyutai_sample(logits, None, 0.0, 3)), greedy)
    # traced per-row temperature: rows with 0 are greedy whatever the top-k / top-p / key
    temps = jnp.array([0.0, 5.0, 0.0, 5.0, 0.0])[:, None]
    f = fast_jit(lambda l, t, key: rules.sample_logits(l, key, t, 3, 0.9))
    for seed in range(4):
        out = np.asarray(f(logits, jnp.broadcast_to(temps, (5, 3)), jax.random.PRNGKey(seed)))
        np.testing.assert_array_equal(out[::2], greedy[::2])
    g = fast_jit(lambda l, t, key: rules.kyutai_sample(l, key, t, 3))
    out = np.asarray(g(logits, jnp.broadcast_to(temps, (5, 3)), jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(out[::2], greedy[::2])


def test_draw_follows_the_softmax():
    """Empirical frequencies of 20000 draws at T=2 match softmax(logits / 2) within 0.015
    (about 4 standard errors)."""
    logits = jnp.array([2.0, 1.0, 0.0, -1.0, 0.5, 3.0])
    n = 20000
    ids = np.asarray(fast_jit(lambda key: rules.sample_logits(
        jnp.broadcast_to(logits, (n, 6)), key, 2.0))(jax.random.PRNGKey(0)))
    freq = np.bincount(ids, minlength=6) / n
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits / 2.0)), atol=0.015)
    kids = np.asarray(fast_jit(lambda key: rules.kyutai_sample(
        jnp.broadcast_to(logits, (n, 6)), key, 2.0, 0))(jax.random.PRNGKey(1)))
    np.testing.assert_allclose(np.bincount(kids, minlength=6) / n,
                               np.asarray(jax.nn.softmax(logits / 2.0)), atol=0.015)


@pytest.mark.parametrize("top_k,temp", [(5, 0.8), (1, 1.0), (0, 1.3), (40, 0.7)])
def test_kyutai_draw_equals_moshi_sample_token(top_k, temp):
    """Same Exp(1) noise (torch's generator re-seeded) -> identical ids to moshi."""
    torch = pytest.importorskip("torch")
    sampling = pytest.importorskip("moshi.utils.sampling")
    torch.set_num_threads(1)
    shape = (7, 3, 32)
    logits = np.random.default_rng(top_k).normal(0, 2, shape).astype(np.float32)
    torch.manual_seed(11)
    ref = sampling.sample_token(torch.from_numpy(logits), True, temp, top_k).numpy()
    width = min(top_k, shape[-1]) if top_k else shape[-1]
    torch.manual_seed(11)  # moshi draws one exponential_ of the kept width
    noise = torch.empty(int(np.prod(shape[:-1])), width).exponential_(1).numpy()
    ours = rules.kyutai_draw(jnp.asarray(logits), jnp.asarray(noise.reshape(shape[:-1] + (width,))),
                             temp, top_k)
    np.testing.assert_array_equal(np.asarray(ours), ref)
    # with our own noise: only top-k ids
    ids = np.asarray(rules.kyutai_sample(jnp.asarray(logits), jax.random.PRNGKey(2), temp, top_k))
    if top_k:
        kth = np.sort(logits, -1)[..., -min(top_k, shape[-1])][..., None]
        assert np.take_along_axis(logits >= kth, ids[..., None], -1).all()
    greedy_ref = sampling.sample_token(torch.from_numpy(logits), False, temp, top_k).numpy()
    np.testing.assert_array_equal(np.asarray(rules.kyutai_sample(jnp.asarray(logits), None, 0.0,
                                                                  top_k)), greedy_ref)


def test_cfg():
    rng = np.random.default_rng(0)
    cond, uncond = (jnp.asarray(rng.normal(size=(2, 4, V)).astype(np.float32)) for _ in range(2))
    np.testing.assert_array_equal(np.asarray(rules.cfg_logits(cond, uncond, 1.0)), np.asarray(cond))
    np.testing.assert_array_equal(np.asarray(rules.cfg_logits(cond, uncond, 0.0)),
                                  np.asarray(uncond))
    np.testing.assert_allclose(np.asarray(rules.cfg_logits(cond, uncond, 3.0)),
                               np.asarray(uncond + 3.0 * (cond - uncond)), rtol=1e-6)
    c, u = rules.split_cfg(jnp.concatenate([cond, uncond]))
    np.testing.assert_array_equal(np.asarray(c), np.asarray(cond))
    np.testing.assert_array_equal(np.asarray(u), np.asarray(uncond))
    with pytest.raises(ValueError, match="even"):
        rules.split_cfg(cond[:1])


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_transformers(penalty):
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4, V)).astype(np.float32)
    ids = rng.integers(0, V, (4, 9))
    ids[0, :4] = 3  # repeated ids count once
    ref = lp.RepetitionPenaltyLogitsProcessor(penalty)(torch.from_numpy(ids),
                                                        torch.from_numpy(logits.copy())).numpy()
    ours = rules.apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(ids), None, penalty)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-6)
    # masked history: per row, transformers on the valid prefix only
    lengths = [9, 5, 1, 3]
    mask = np.arange(9)[None, :] < np.asarray(lengths)[:, None]
    ours = np.asarray(rules.apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(ids),
                                                     jnp.asarray(mask), penalty))
    for r, n in enumerate(lengths):
        want = lp.RepetitionPenaltyLogitsProcessor(penalty)(
            torch.from_numpy(ids[r:r + 1, :n]), torch.from_numpy(logits[r:r + 1].copy())).numpy()
        np.testing.assert_allclose(ours[r:r + 1], want, rtol=1e-6)


def test_stop_after_eos():
    eos, pad = 7, 0
    done = jnp.zeros((3,), bool)
    steps = [[1, 7, 2], [7, 3, 4], [5, 5, 5]]
    outs = []
    for tok in steps:
        tok, done = rules.stop_after_eos(jnp.asarray(tok), done, eos, pad)
        outs.append(np.asarray(tok))
    np.testing.assert_array_equal(np.stack(outs), [[1, 7, 2], [7, 0, 4], [0, 0, 5]])
    np.testing.assert_array_equal(np.asarray(done), [True, True, False])
    # [B, K] tokens: a row ends when any entry is EOS
    tok, d = rules.stop_after_eos(jnp.array([[1, 7], [2, 3]]), jnp.array([False, True]), eos, pad)
    np.testing.assert_array_equal(np.asarray(tok), [[1, 7], [0, 0]])
    np.testing.assert_array_equal(np.asarray(d), [True, True])


def test_bad_arguments():
    logits = jnp.zeros((2, V))
    with pytest.raises(ValueError, match="top_k must be a static"):
        rules.sample_logits(logits, jax.random.PRNGKey(0), 1.0, jnp.array(3))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        rules.sample_logits(logits, jax.random.PRNGKey(0), -1.0)
    for p in (0.0, -0.5, 1.5):  # top_p is the nucleus mass kept, in (0, 1]; 1.0 = off
        with pytest.raises(ValueError, match=rf"top_p={p} must be in \(0, 1\]"):
            rules.sample_logits(logits, jax.random.PRNGKey(0), 1.0, 0, p)
        with pytest.raises(ValueError, match=rf"top_p={p} must be in \(0, 1\]"):
            rules.mask_top_p(logits, p)
    with pytest.raises(ValueError, match="history_ids shape"):
        rules.apply_repetition_penalty(logits, jnp.zeros((3, 4), jnp.int32), None, 1.2)
