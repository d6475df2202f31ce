"""Test helpers for audiolm.nn: jitted apply (one compile instead of op-by-op dispatch)."""

import jax
import jax.numpy as jnp
import numpy as np


def run(module, params, *args, **kwargs):
    """`module.apply({"params": params}, *args, **kwargs)` under jax.jit.

    Positional/keyword arguments must be arrays, None or pytrees of arrays.
    """
    fn = jax.jit(lambda p, a, kw: module.apply({"params": p}, *a, **kw))
    return fn(params, args, kwargs)


def rand_params(module, *args, seed=0, std=0.3, **kwargs):
    """Random params with `module.init`'s structure, drawn with numpy (no PRNG compile).

    Every leaf (kernels, norm scales, biases) is N(0, std^2), so all of them are exercised.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params_unjitted(module, *args, **kwargs))
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * std, s.dtype), shapes)


def init_params_unjitted(module, *args, **kwargs):
    from flax.core import meta
    return meta.unbox(module.init(jax.random.PRNGKey(0), *args, **kwargs)["params"])
