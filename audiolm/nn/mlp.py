"""Feed-forward blocks: gated (SwiGLU-style) and plain two-layer MLPs."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.params import Dense, Dtype, constrain, default_kernel_init, partitioned

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU (torch default)
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation by name: one of ACTIVATIONS."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(features: int, name: str, axes: tuple[str, str], use_bias: bool, dtype: Dtype,
          param_dtype: Dtype, kernel_init: Any = default_kernel_init) -> nn.Dense:
    """nn.Dense (merged-rows matmul, `params.flat_dot`) with logically partitioned kernel
    [in, out] and bias [out]."""
    return Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=partitioned(kernel_init, axes),
                    bias_init=partitioned(nn.initializers.zeros, (axes[1],)))


class GatedMLP(nn.Module):
    """y = down_proj(act(gate_proj x) * up_proj x). x [..., D] -> [..., D].

    Params `gate_proj/kernel`, `up_proj/kernel` [D, hidden], `down_proj/kernel` [hidden, D]
    (+ `bias` when use_bias).
    """
    hidden: int
    activation: str = "silu"
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = dense(self.hidden, "gate_proj", ("embed", "mlp"), **kw)(x)
        up = dense(self.hidden, "up_proj", ("embed", "mlp"), **kw)(x)
        h = act(gate) * up
        if h.ndim == 3:
            h = constrain(h, ("batch", "length", "mlp"))
        return dense(x.shape[-1], "down_proj", ("mlp", "embed"), **kw)(h)


class MLP(nn.Module):
    """y = fc2(act(fc1 x)). x [..., D] -> [..., out_features or D].

    Params `fc1/kernel` [D, hidden], `fc2/kernel` [hidden, Dout] (+ `bias` when use_bias).
    """
    hidden: int
    activation: str = "gelu"
    use_bias: bool = True
    out_features: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        h = act(dense(self.hidden, "fc1", ("embed", "mlp"), **kw)(x))
        if h.ndim == 3:
            h = constrain(h, ("batch", "length", "mlp"))
        return dense(self.out_features or x.shape[-1], "fc2", ("mlp", "embed"), **kw)(h)
