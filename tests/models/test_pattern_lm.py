"""Pattern LM: conditioning (cross / prepend / global), CFG, causality and the pattern loss.

Random params are drawn in numpy from `jax.eval_shape` shapes (compiling the initialisers of
every layer costs more than the tests). Tolerances: fp32, 1e-5 unless stated.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm import patterns
from audiolm.models import conditioners as cond_lib
from audiolm.models import pattern_lm
from audiolm.sample import pattern_lm as sampler
from audiolm.sample import rules
from audiolm.tasks import codes as codes_task
from audiolm.presets import pattern_lm as presets

B = 2


def random_params(model_config, seed=0, scale=0.3):
    shapes = jax.eval_shape(lambda r: pattern_lm.init_params(model_config, r),
                            jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape).astype(np.float32)), shapes)


@pytest.fixture(scope="module")
def setup():
    model_config = presets.tiny()
    pattern_lm.rules(ml_collections.ConfigDict({"model": model_config}))
    module = pattern_lm.build(model_config)
    params = random_params(model_config)
    apply = jax.jit(lambda p, seq, conds, drop: module.apply({"params": p}, seq, conds, drop))
    batch = pattern_lm.example_batch(model_config, B, np.random.default_rng(0))
    conds = {k: jnp.asarray(v) for k, v in batch.items() if k.startswith("cond.")}
    spec = module.spec
    seq, _ = patterns.build(pattern_lm.pattern_for(spec, model_config.max_frames),
                            jnp.asarray(batch["codes"]), spec.card, keep_only_valid_steps=True)
    none = {t: jnp.zeros((B,), bool) for t in pattern_lm.COND_TYPES}
    return dict(config=model_config, module=module, params=params, apply=apply, batch=batch,
                conds=conds, seq=seq, none=none)


def _run(s, conds=None, drop=None, seq=None):
    return np.asarray(s["apply"](s["params"], s["seq"] if seq is None else seq,
                                 s["conds"] if conds is None else conds,
                                 s["none"] if drop is None else drop))


def _other_conditions(s):
    """Every conditioner's input replaced by a different valid value."""
    other = pattern_lm.example_batch(s["config"], B, np.random.default_rng(7))
    return {k: jnp.asarray(v) for k, v in other.items() if k.startswith("cond.")}


def test_shapes_and_spec(setup):
    s = setup
    spec = s["module"].spec
    assert (spec.n_q, spec.card) == (4, 16)  # from the pretransform
    logits = _run(s)
    # prepend tokens are removed from the output
    assert logits.shape == (B, spec.n_q, s["seq"].shape[-1], spec.card)
    assert np.all(np.isfinite(logits))
    c = spec.conditioning
    assert c.cross_attention_ids == ("prompt", "style") and c.prepend_ids == ("genre",)
    assert c.global_ids == ("bpm",)


@pytest.mark.parametrize("cid,kind", [("prompt", "cross"), ("style", "cross"),
                                      ("genre", "prepend"), ("bpm", "global")])
def test_each_condition_changes_logits(setup, cid, kind):
    s = setup
    base = _run(s)
    other = _other_conditions(s)
    conds = dict(s["conds"])
    for key in cond_lib.batch_keys(cid, s["module"].spec.conditioning.conditioners[cid]):
        conds[key] = other[key]
    changed = _run(s, conds)
    diff = np.abs(changed - base).max(axis=(1, 2, 3))
    assert np.all(diff > 1e-3), (cid, kind, diff)
    # Dropping that type removes the effect of the change.
    drop = dict(s["none"])
    drop[kind] = jnp.ones((B,), bool)
    np.testing.assert_allclose(_run(s, conds, drop), _run(s, s["conds"], drop), atol=1e-5)


def test_masked_condition_tokens_are_ignored(setup):
    s = setup
    conds = dict(s["conds"])
    mask = np.asarray(conds["cond.style.mask"])
    emb = np.asarray(conds["cond.style"]).copy()
    emb[~mask] = 100.0  # garbage behind the mask
    conds["cond.style"] = jnp.asarray(emb)
    np.testing.assert_allclose(_run(s, conds), _run(s), atol=1e-5)


def test_drop_all_equals_null_condition(setup):
    s = setup
    module, params = s["module"], s["params"]
    all_ = {t: jnp.ones((B,), bool) for t in pattern_lm.COND_TYPES}
    dropped = _run(s, drop=all_)
    # independent of the conditions given ...
    np.testing.assert_allclose(_run(s, _other_conditions(s), drop=all_), dropped, atol=1e-5)
    # ... and equal to decoding with the null (all-zero) condition tensors.
    @jax.jit
    def null_logits(p, seq, conds):
        cond = module.apply({"params": p}, conds, method=module.condition)
        null = pattern_lm.null_condition(cond)
        assert set(null) == {"cross", "cross_mask", "prepend", "prepend_mask", "global"}
        return module.apply({"params": p}, seq, null, method=module.decode)

    ref = null_logits(params, s["seq"], s["conds"])
    np.testing.assert_allclose(dropped, np.asarray(ref), atol=1e-5)
    assert np.abs(dropped - _run(s)).max() > 1e-3


def test_per_sample_drop(setup):
    s = setup
    drop = {t: jnp.array([True, False]) for t in pattern_lm.COND_TYPES}
    mixed = _run(s, drop=drop)
    all_ = _run(s, drop={t: jnp.ones((B,), bool) for t in pattern_lm.COND_TYPES})
    np.testing.assert_allclose(mixed[0], all_[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], _run(s)[1], atol=1e-5)


def test_cfg(setup):
    """Guidance on one doubled batch (conditional rows, then rows with every type dropped),
    halved by `rules.split_cfg` and combined by `rules.cfg_logits`."""
    s = setup
    cond = _run(s)
    uncond = _run(s, drop={t: jnp.ones((B,), bool) for t in pattern_lm.COND_TYPES})
    both = {k: jnp.concatenate([v, v]) for k, v in s["conds"].items()}
    drop = {t: jnp.repeat(jnp.array([False, True]), B) for t in pattern_lm.COND_TYPES}
    c, u = rules.split_cfg(_run(s, both, drop, jnp.concatenate([s["seq"], s["seq"]])))
    np.testing.assert_allclose(c, cond, atol=1e-5)
    np.testing.assert_allclose(u, uncond, atol=1e-5)
    g3 = np.asarray(rules.cfg_logits(jnp.asarray(c), jnp.asarray(u), 3.0))
    np.testing.assert_allclose(g3, uncond + 3.0 * (cond - uncond), atol=1e-4)


def test_causal(setup):
    s = setup
    seq = np.asarray(s["seq"]).copy()
    cut = seq.shape[-1] // 2
    seq[:, :, cut:] = (seq[:, :, cut:] + 1) % s["module"].spec.card
    changed = _run(s, seq=jnp.asarray(seq))
    base = _run(s)
    np.testing.assert_allclose(changed[:, :, :cut], base[:, :, :cut], atol=1e-5)
    assert np.abs(changed[:, :, cut:] - base[:, :, cut:]).max() > 1e-3


def test_cfg_dropout_mask_statistics():
    drop = pattern_lm.cfg_drop_mask(jax.random.PRNGKey(0), 4000, 0.25)
    rates = {t: float(np.mean(np.asarray(d))) for t, d in drop.items()}
    assert all(abs(r - 0.25) < 0.03 for r in rates.values()), rates
    # independent per type
    both = np.mean(np.asarray(drop["cross"]) & np.asarray(drop["prepend"]))
    assert abs(both - 0.25 ** 2) < 0.02


def test_loss_matches_manual_delay_cross_entropy(setup):
    """The eval loss = mean over codebooks of the CE of code (t, q) read at output position
    t + q (delay pattern, leading special step: (t, q) sits at step 1 + t + q), over real
    frames whose step exists in the valid-steps sequence."""
    s = setup
    # The compiled forward of the fixture scores the sequence; loss_fn itself is compiled in
    # test_pattern_lm_patterns.py (a smaller model).
    loss, metrics = codes_task.pattern_loss(
        lambda seq: jnp.asarray(_run(s, seq=seq)), jnp.asarray(s["batch"]["codes"]),
        jnp.asarray(s["batch"]["target_mask"]), s["module"].spec)
    logits = _run(s)  # [B, K, S, V] on the valid-steps sequence
    codes = np.asarray(s["batch"]["codes"])
    tmask = np.asarray(s["batch"]["target_mask"])
    _, k, t = codes.shape
    per_q = []
    for q in range(k):
        nll, n = 0.0, 0
        for b in range(B):
            for f in range(t):
                pos = f + q  # predicts step pos + 1, which must exist
                if pos + 1 >= logits.shape[2] or not tmask[b, f]:
                    continue
                row = logits[b, q, pos].astype(np.float64)
                lse = np.log(np.sum(np.exp(row - row.max()))) + row.max()
                nll += lse - row[codes[b, q, f]]
                n += 1
        per_q.append(nll / n)
    np.testing.assert_allclose(float(loss), np.mean(per_q), rtol=1e-5)
    for q in range(k):
        np.testing.assert_allclose(float(metrics[f"ce_q{q}"]), per_q[q], rtol=1e-5)


def test_describe_musicgen_small_counts():
    desc = pattern_lm.describe_params(presets.musicgen_small())
    # 24 layers x (self 4M + cross 4M + FFN 8M + 3 LayerNorms) + 4 embeddings (2049 rows) +
    # 4 heads + final LayerNorm; the T5 projection (enc_to_dec_proj) 768 x 1024 + 1024.
    d, f, v, k, n = 1024, 4096, 2048, 4, 24
    layer = 8 * d * d + 2 * d * f + 6 * d
    assert desc["transformer"]["total"] == n * layer + k * (v + 1) * d + k * d * v + 2 * d
    assert desc["transformer"]["embedding"] == k * (v + 1) * d
    assert desc["conditioning"]["total"] == 768 * d + d


def test_generate_greedy_is_self_consistent(setup):
    """Greedy decoding with a prompt: the prompt is kept, codes are in range, and re-scoring the
    generated codes teacher-forced gives argmax = the generated code at every generated slot."""
    s = setup
    module, params, spec = s["module"], s["params"], s["module"].spec
    frames, p_len = 9, 2  # full layout of 9 frames = 13 steps: the setup's compiled shapes
    prompt = jnp.asarray(s["batch"]["codes"][:, :, :p_len])
    gen = jax.jit(lambda p, c, pr: sampler.generate(
        module, p, c, frames=frames, rng=jax.random.PRNGKey(0), prompt=pr, temperature=0.0,
        cfg_scale=2.0))
    codes = np.asarray(gen(params, s["conds"], prompt))
    assert codes.shape == (B, spec.n_q, frames)
    np.testing.assert_array_equal(codes[:, :, :p_len], np.asarray(prompt))
    assert codes.min() >= 0 and codes.max() < spec.card
    pattern = pattern_lm.pattern_for(spec, frames)
    seq, _ = patterns.build(pattern, jnp.asarray(codes), spec.card)
    assert seq.shape == s["seq"].shape
    cond = _run(s, seq=seq)
    uncond = _run(s, seq=seq, drop={t: jnp.ones((B,), bool) for t in pattern_lm.COND_TYPES})
    logits = jnp.asarray(uncond + 2.0 * (cond - uncond))
    pred, valid = patterns.revert_logits(pattern, logits)
    pred = np.asarray(jnp.argmax(jnp.nan_to_num(pred), axis=-1))
    assert bool(np.all(np.asarray(valid)))
    np.testing.assert_array_equal(pred[:, :, p_len:], codes[:, :, p_len:])


def test_bfloat16_compute_close_to_float32(setup):
    s = setup
    module16 = pattern_lm.build(s["config"], dtype=jnp.bfloat16)
    logits16 = jax.jit(lambda p: module16.apply({"params": p}, s["seq"], s["conds"]))(s["params"])
    assert logits16.dtype == jnp.float32  # logits are returned in float32
    ref = _run(s)
    err = np.abs(np.asarray(logits16) - ref).max() / np.abs(ref).max()
    assert err < 0.05, err


def test_kv_cache_decoding_equals_full_forward(setup):
    """Prefill (prepend tokens + first steps) then the remaining steps one chunk at a time
    through the KV cache give the logits of the uncached forward."""
    s = setup
    module, params, spec = s["module"], s["params"], s["module"].spec

    @jax.jit
    def cached(p, seq, conds):
        cond = module.apply({"params": p}, conds, method=module.condition)
        plen = cond["prepend"].shape[1]
        cache = pattern_lm.init_cache(spec, B, plen + seq.shape[-1])
        first, cache = module.apply({"params": p}, seq[:, :, :5], cond, cache, None,
                                    method=module.decode)
        out = [first]
        for start, stop in ((5, 6), (6, 9), (9, seq.shape[-1])):
            logits, cache = module.apply({"params": p}, seq[:, :, start:stop], cond, cache,
                                         jnp.int32(start), method=module.decode)
            out.append(logits)
        return jnp.concatenate(out, axis=2)

    np.testing.assert_allclose(np.asarray(cached(params, s["seq"], s["conds"])), _run(s),
                               atol=1e-5)
