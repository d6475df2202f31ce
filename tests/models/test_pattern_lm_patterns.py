"""The pattern loss for every pattern kind, against a direct reading of the layout, and a
conditioning-free model on a non-delay pattern."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm import patterns
from audiolm.models import pattern_lm
from audiolm.tasks import codes as codes_task
from audiolm.presets import pattern_lm as presets

K, V, T, B = 4, 8, 5, 2

KINDS = [("parallel", {}), ("delay", {"delays": [0, 0, 2, 3]}), ("unroll", {}),
         ("coarse_first", {}), ("musiclm", {"group_by": 2})]


def _config(kind, kwargs, conditioning=None):
    return presets.model(
        max_frames=T,
        pretransform=presets.MuLawRVQSpec(n_q=K, codebook_size=V, sample_rate=400,
                                          frame_rate=50.0),
        lm=presets.TransformerSpec(hidden_size=16, num_layers=1, num_heads=2, ffn_hidden=32,
                                   positional="rope"),
        conditioning=conditioning or presets.ConditioningSpec(8),
        pattern=presets.PatternSpec(kind, kwargs))


@pytest.mark.parametrize("kind,kwargs", KINDS, ids=[k for k, _ in KINDS])
def test_pattern_loss_reads_the_layout(kind, kwargs):
    """Code (t, q) laid out at step s is scored by the logits at output position s - 1 (the
    pattern starts with a special step), only when s exists in the valid-steps sequence."""
    model_config = _config(kind, kwargs)
    pattern_lm.rules(ml_collections.ConfigDict({"model": model_config}))
    spec = pattern_lm.spec_from_config(model_config)
    pattern = pattern_lm.pattern_for(spec, T)
    s_valid = patterns.num_steps(pattern, keep_only_valid_steps=True)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, V, (B, K, T)).astype(np.int32)
    tmask = np.ones((B, T), bool)
    tmask[1, -2:] = False
    logits = rng.standard_normal((B, K, s_valid, V)).astype(np.float32)
    seen = []

    def logits_fn(seq):
        seen.append(np.asarray(seq))
        return jnp.asarray(logits)

    loss, metrics = codes_task.pattern_loss(logits_fn, jnp.asarray(codes), jnp.asarray(tmask),
                                            spec)
    assert seen[0].shape == (B, K, s_valid)
    assert pattern.starts_with_special
    per_q = []
    for q in range(K):
        nll, n = 0.0, 0
        for step, t, qq in zip(pattern.entry_step, pattern.entry_t, pattern.entry_q):
            if qq != q or t >= T or step >= s_valid or step == 0:
                continue
            assert seen[0][0, q, step] == codes[0, q, t]  # the layout puts (t, q) there
            for b in range(B):
                if not tmask[b, t]:
                    continue
                row = logits[b, q, step - 1].astype(np.float64)
                nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[codes[b, q, t]]
                n += 1
        per_q.append(nll / max(n, 1))
    np.testing.assert_allclose(float(loss), np.mean(per_q), rtol=1e-5)
    for q in range(K):
        np.testing.assert_allclose(float(metrics[f"ce_q{q}"]), per_q[q], rtol=1e-5)


def test_unconditional_model_on_unroll_pattern():
    model_config = _config("unroll", {})
    pattern_lm.rules(ml_collections.ConfigDict({"model": model_config}))
    module = pattern_lm.build(model_config)
    assert not module.spec.conditioning.conditioners
    shapes = jax.eval_shape(lambda r: pattern_lm.init_params(model_config, r),
                            jax.random.PRNGKey(0))
    assert not any(k.startswith(("conditioner_set", "cross", "prepend", "global"))
                   for k in shapes)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape).astype(np.float32)), shapes)
    batch = pattern_lm.example_batch(model_config, B, rng)
    assert set(batch) == {"codes", "target_mask"}
    exp = ml_collections.ConfigDict({"model": model_config})

    @jax.jit
    def losses(p, b):
        rng = jax.random.PRNGKey(0)
        direct, _ = codes_task.pattern_loss(lambda seq: module.apply({"params": p}, seq),
                                            b["codes"], b["target_mask"], module.spec)
        return (codes_task.pattern_lm_loss(module, p, b, rng, exp, False),
                codes_task.pattern_lm_loss(module, p, b, rng, exp, True), direct)

    (loss, metrics), (loss_train, _), direct = losses(params, batch)
    np.testing.assert_allclose(float(loss), float(direct), rtol=1e-6)
    # Nothing to drop in an unconditional model: training and eval losses agree.
    np.testing.assert_allclose(float(loss_train), float(loss), rtol=1e-6)
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
