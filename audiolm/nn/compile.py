"""Compiling programs that run only a few times (tests, a handful of samples, parameter init).

There compiling dominates: XLA's backend optimisation passes cost more time than they save over
a short decode loop or a run-once init graph (one RNG kernel per tensor), and cutting them
(`xla_backend_optimization_level=0`) makes CPU compiles several times faster. `fast_jit` is
`jax.jit` compiled that way, once per argument signature; the other users of the idea (Moshi
init, the samplers, Code2Wav streaming, the tests) call it rather than keep their own cache.

The compile is explicit (`lower(...).compile(options)`) rather than
`jax.jit(compiler_options=...)` so that a backend rejecting the option falls back to its
default options at compile time, without ever retrying a failed run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax

FAST_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def fast_jit(fn: Callable, static_argnums: int | Sequence[int] = ()) -> Callable:
    """`jax.jit(fn, static_argnums)` compiled with `FAST_COMPILER_OPTIONS` (the backend's
    defaults where it rejects them): one executable per signature (static argument values,
    pytree structure, and each leaf's shape, dtype and weak type). Static arguments must be
    hashable."""
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    jitted = jax.jit(fn, static_argnums=static)
    executables: dict = {}

    def call(*args):
        dynamic = [a for i, a in enumerate(args) if i not in static]
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        key = (tuple(args[i] for i in static), tree, tuple(jax.typeof(x) for x in leaves))
        if key not in executables:
            lowered = jitted.lower(*args)
            try:
                executables[key] = lowered.compile(compiler_options=FAST_COMPILER_OPTIONS)
            except Exception:  # noqa: BLE001 - option unknown to this backend: compile normally
                executables[key] = lowered.compile()
        return executables[key](*dynamic)

    return call
