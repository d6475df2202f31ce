"""Helpers of the codec tests: a few Adam steps of the codec task's loss by hand."""

import jax
import numpy as np
import optax

from audiolm.models import codec
from audiolm.nn.compile import fast_jit
from audiolm.tasks import codec as task


def adam_steps(config, steps, learning_rate=3e-3):
    """`steps` Adam steps of the codec task's loss (train=True) on one synthetic batch of 4
    (`codec.example_batch`, seed 0; params from PRNGKey(0), step i's rng PRNGKey(i)), jitted
    directly (the loop's own tests cover the loop; fast_jit: compile time dominates a few tiny
    steps). Returns (module, trained params, the first step's grads, each step's metrics on
    the host)."""
    module = codec.build(config.model)
    params = codec.init_params(config.model, jax.random.PRNGKey(0))
    batch = codec.example_batch(config.model, 4, np.random.default_rng(0))
    tx = optax.adam(learning_rate)

    @fast_jit
    def step(params, opt_state, rng):
        (_, metrics), grads = jax.value_and_grad(
            lambda p: task.loss_fn(module, p, batch, rng, config, True), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics, grads

    opt_state = tx.init(params)
    first_grads, history = None, []
    for i in range(steps):
        params, opt_state, metrics, grads = step(params, opt_state, jax.random.PRNGKey(i))
        if i == 0:
            first_grads = grads
        history.append(jax.device_get(metrics))
    return module, params, first_grads, history
