"""audiolm.nn.compile.fast_jit: one executable per signature, jax.jit's results, the fallback to
default options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.nn.compile import FAST_COMPILER_OPTIONS, fast_jit


@pytest.fixture
def compiles(monkeypatch):
    """The compiler_options of every compile, in order (the real compile still runs)."""
    real = jax.stages.Lowered.compile
    seen = []

    def compile(self, compiler_options=None):
        seen.append(compiler_options)
        return real(self, compiler_options=compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
    return seen


def test_one_executable_per_signature(compiles):
    def f(scale, x, extra):
        return {"y": x * scale + (0 if extra is None else extra["b"].sum())}

    fast = fast_jit(f, static_argnums=0)
    x = jnp.arange(3, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(fast(2, x, None)["y"]), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(np.asarray(fast(2, x + 1, None)["y"]), [2.0, 4.0, 6.0])
    assert compiles == [FAST_COMPILER_OPTIONS]  # same signature: compiled once
    np.testing.assert_array_equal(np.asarray(fast(3, x, None)["y"]), [0.0, 3.0, 6.0])
    fast(2, jnp.arange(4, dtype=jnp.float32), None)  # another shape
    fast(2, jnp.arange(3, dtype=jnp.int32), None)  # another dtype
    out = fast(2, x, {"b": jnp.ones(2)})  # another pytree structure
    np.testing.assert_array_equal(np.asarray(out["y"]), [2.0, 4.0, 6.0])
    assert len(compiles) == 5
    # A Python float (weak type) and a float32 array are different signatures.
    g = fast_jit(lambda t, x: x / t)
    g(2.0, x)
    g(3.0, x)
    g(jnp.float32(2.0), x)
    assert len(compiles) == 7


def test_falls_back_to_default_options_where_rejected(monkeypatch):
    real = jax.stages.Lowered.compile
    seen = []

    def compile(self, compiler_options=None):
        seen.append(compiler_options)
        if compiler_options:
            raise RuntimeError("unknown compiler option")
        return real(self)

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
    out = fast_jit(lambda x: x + 1)(jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(out), [2.0, 2.0])
    assert seen == [FAST_COMPILER_OPTIONS, None]
