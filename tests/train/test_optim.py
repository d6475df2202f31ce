"""Optimizer parameter groups (`train.param_groups`): per-group settings on top-level params
subtrees for every optimizer kind, separate state, the plain optimizer unchanged without groups,
and errors naming the field."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from audiolm.config import ConfigError
from audiolm.presets.experiment import base_config
from audiolm.train import optim


def _train(optimizer="sgd", groups=None):
    train = base_config().train
    train.optimizer = optimizer
    train.learning_rate = 0.1
    train.warmup_steps = 0
    train.schedule = "constant"
    train.weight_decay = 0.0
    train.clip_norm = 0.0
    train.b1 = 0.0  # sgd: no momentum
    for name, settings in (groups or {}).items():
        train.param_groups[name] = ml_collections.ConfigDict(settings)
    return train


PARAMS = {"encoder": {"kernel": jnp.ones((2, 3))}, "critic": {"kernel": jnp.ones((3, 2)),
                                                              "bias": jnp.ones((2,))}}


def test_sgd_groups_step_with_their_own_learning_rate():
    tx = optim.make_optimizer(_train("sgd", {"critic": {"learning_rate": 0.01}}))
    grads = jax.tree_util.tree_map(lambda x: 2.0 * jnp.ones_like(x), PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["encoder"]["kernel"], -0.2)
    np.testing.assert_allclose(updates["critic"]["kernel"], -0.02)
    np.testing.assert_allclose(updates["critic"]["bias"], -0.02)


def test_adamw_groups_keep_separate_moments_and_betas():
    tx = optim.make_optimizer(_train("adamw", {"critic": {"learning_rate": 0.01, "b1": 0.5}}))
    state = tx.init(PARAMS)
    assert set(state.inner_states) == {"default", "critic"}
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    _, state = tx.update(grads, state, PARAMS)
    adam = lambda group: next(s for s in jax.tree_util.tree_leaves(
        state.inner_states[group], is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState))
    # first moment after one step: (1 - b1) * g with each group's own b1 (0.0 vs 0.5)
    np.testing.assert_allclose(adam("default").mu["encoder"]["kernel"], 1.0)
    np.testing.assert_allclose(adam("critic").mu["critic"]["kernel"], 0.5)
    assert jax.tree_util.tree_leaves(adam("default").mu["critic"]) == []  # masked out
    assert jax.tree_util.tree_leaves(adam("critic").mu["encoder"]) == []


def test_group_clip_norm_clips_that_group_only():
    tx = optim.make_optimizer(_train("sgd", {"critic": {"clip_norm": 1.0}}))
    grads = jax.tree_util.tree_map(lambda x: 10.0 * jnp.ones_like(x), PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["encoder"]["kernel"], -1.0)  # 0.1 * 10, unclipped
    critic = jnp.concatenate([updates["critic"]["kernel"].ravel(), updates["critic"]["bias"]])
    np.testing.assert_allclose(float(jnp.linalg.norm(critic)), 0.1, rtol=1e-5)  # norm 1 * lr


def test_adafactor_accepts_groups():
    tx = optim.make_optimizer(_train("adafactor", {"critic": {"learning_rate": 0.01}}))
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    big = float(jnp.abs(updates["encoder"]["kernel"]).max())
    small = float(jnp.abs(updates["critic"]["kernel"]).max())
    assert big > 0 and small == pytest.approx(big / 10, rel=1e-4)


def test_without_groups_the_optimizer_is_the_plain_chain():
    state = optim.make_optimizer(_train("adamw")).init(PARAMS)
    assert not isinstance(state, optax.MultiTransformState)
    # chain(adamw) (clip_norm 0): adamw's own (scale_by_adam, decay mask, lr) state, all params
    adam = state[0][0]
    assert isinstance(adam, optax.ScaleByAdamState)
    assert set(adam.mu) == {"encoder", "critic"}


def test_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"train\.param_groups\.critic\.momentum is not a "
                                          r"known field"):
        optim.make_optimizer(_train("sgd", {"critic": {"momentum": 0.9}}))
    with pytest.raises(ConfigError, match=r"train\.param_groups\.default: 'default' names"):
        optim.make_optimizer(_train("sgd", {"default": {"learning_rate": 0.01}}))
    tx = optim.make_optimizer(_train("sgd", {"decoder": {"learning_rate": 0.01}}))
    with pytest.raises(ConfigError, match=r"train\.param_groups\.decoder: no top-level params "
                                          r"subtree 'decoder'; the params have \['critic', "
                                          r"'encoder'\]"):
        tx.init(PARAMS)
