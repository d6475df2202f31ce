"""Jitted train and eval steps for any family and task (they call only the task's `loss_fn`).

The task's `loss_fn(module, params, batch, rng, config, train)` already contains every term
(text / codebook CE, code predictor CE, MoE load-balance and z losses weighted from
`config.train`); the step only differentiates it, accumulates gradients over
`train.grad_accum_steps` micro-batches with `lax.scan`, and applies the optimizer.

Buffers: a task with an `update_buffers` hook (`audiolm.tasks.base.Task`) keeps statistics in
the params tree (e.g. the codec's EMA codebooks). The loss_fn hands what the hook needs under
`metrics[BUFFER_INPUTS]` (rows of each micro-batch, concatenated here over micro-batches); after
the optimizer update the hook's values overwrite those leaves, so the optimizer never moves them.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from audiolm.tasks.base import BUFFER_INPUTS
from audiolm.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def split_micro_batches(batch: dict[str, jax.Array], accum: int) -> dict[str, jax.Array]:
    """[B, ...] -> [accum, B // accum, ...]; micro-batch k holds rows k, k + accum, ...

    Strided (not contiguous) rows keep each micro-batch spread over the same batch shards as the
    full batch, so no data moves between devices.
    """
    def split(x):
        if x.ndim == 0:
            return jnp.broadcast_to(x, (accum,))
        if x.shape[0] % accum:
            raise ValueError(f"batch rows {x.shape[0]} not divisible by train.grad_accum_steps="
                             f"{accum}")
        return jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1)

    return jax.tree_util.tree_map(split, batch)


def overwrite_leaves(tree: Any, values: Any) -> Any:
    """`tree` (nested dicts) with the leaves at the paths of `values` (a nested dict of some of
    its paths) replaced by those values, cast to the replaced leaves' dtypes."""
    if not hasattr(values, "keys"):
        return jnp.asarray(values, tree.dtype)
    missing = [k for k in values if k not in tree]
    if missing:
        raise KeyError(f"update_buffers: buffer paths {missing} are not in the params tree "
                       f"(keys {sorted(tree)})")
    out = dict(tree)
    for key, value in values.items():
        out[key] = overwrite_leaves(tree[key], value)
    return out


def make_train_step(module: Any, loss_fn: LossFn, tx: optax.GradientTransformation,
                    config: Any, lr_schedule: Callable[[Any], Any] | None = None,
                    update_buffers: Callable[..., Any] | None = None):
    """Returns `train_step(state, batch) -> (state, metrics)` (not yet jitted).

    metrics: the task's metrics averaged over micro-batches, plus `loss`, `grad_norm`,
    `param_norm`, `learning_rate` and those of `update_buffers` (float32 scalars).
    update_buffers: the task's optional hook (see the module docstring).
    """
    accum = int(config.train.grad_accum_steps)

    def loss_and_grad(params, micro, rng):
        def f(p):
            loss, metrics = loss_fn(module, p, micro, rng, config, True)
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(f, has_aux=True)(params)
        metrics = dict(metrics)
        buffer_inputs = metrics.pop(BUFFER_INPUTS, None)
        metrics["loss"] = loss
        return grads, metrics, buffer_inputs

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        step_rng = jax.random.fold_in(state.rng, state.step)
        if accum == 1:
            grads, metrics, buffer_inputs = loss_and_grad(state.params, batch, step_rng)
        else:
            micro = split_micro_batches(batch, accum)
            rngs = jax.random.split(step_rng, accum)
            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            _, metrics_shape, _ = jax.eval_shape(
                loss_and_grad, state.params, jax.tree_util.tree_map(lambda x: x[0], micro),
                rngs[0])
            metric_zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32),
                                                  metrics_shape)

            def body(carry, xs):
                g_sum, m_sum = carry
                mb, r = xs
                g, m, b = loss_and_grad(state.params, mb, r)
                g_sum = jax.tree_util.tree_map(jnp.add, g_sum, g)
                m_sum = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), m_sum, m)
                return (g_sum, m_sum), b

            (g_sum, m_sum), stacked = jax.lax.scan(body, (zeros, metric_zeros), (micro, rngs))
            grads = jax.tree_util.tree_map(lambda g: g / accum, g_sum)
            metrics = jax.tree_util.tree_map(lambda m: m / accum, m_sum)
            # [accum, B / accum, ...] -> [B, ...] (rows in micro-batch order)
            buffer_inputs = jax.tree_util.tree_map(
                lambda x: x.reshape((-1,) + x.shape[2:]), stacked)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if update_buffers is not None:
            buffers, buffer_metrics = update_buffers(
                module, state.params, buffer_inputs, jax.random.fold_in(step_rng, accum), config)
            params = overwrite_leaves(params, buffers)
            metrics.update(buffer_metrics)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["param_norm"] = optax.tree.norm(params)
        if lr_schedule is not None:
            metrics["learning_rate"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(module: Any, loss_fn: LossFn, config: Any):
    """Returns `eval_step(params, batch, rng) -> metrics` (loss_fn with train=False)."""

    def eval_step(params, batch, rng):
        loss, metrics = loss_fn(module, params, batch, rng, config, False)
        metrics = dict(metrics)
        metrics.pop(BUFFER_INPUTS, None)
        metrics["loss"] = loss
        return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return eval_step


def jit_train_step(train_step, state_shardings: Any, batch_shardings: Any, replicated: Any):
    """jit with the state donated (updated in place) and explicit in/out shardings."""
    return jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, replicated))

