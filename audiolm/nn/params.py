"""Parameter helpers shared by every block: plain (unboxed) params and partitioned initialisers."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
from flax.core import meta
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

# Default weight initialiser: truncated normal with variance 1/fan_in (DenseGeneral flattens
# multi-axis kernels to [fan_in, fan_out] before calling it).
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def partitioned(init, axes: Sequence[str | None]):
    """`init` whose result carries logical axis names (one per weight dimension)."""
    return nn.with_logical_partitioning(init, tuple(axes))


def init_params(module: nn.Module, rng: Array, *args, **kwargs) -> Any:
    """Plain params pytree of `module`: `unbox(module.init(rng, *args, **kwargs)["params"])`.

    Runs under one `jax.jit` (array arguments traced, everything else static), so a model is
    initialised by one compiled program instead of op-by-op. `module.apply({"params": params},
    ...)` accepts the result directly.
    """
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]

    def init(key, arrays):
        it = iter(arrays)
        full = [next(it) if a else leaf for leaf, a in zip(leaves, is_array)]
        a, kw = jax.tree_util.tree_unflatten(treedef, full)
        return meta.unbox(module.init(key, *a, **kw)["params"])

    return jax.jit(init)(rng, [leaf for leaf, a in zip(leaves, is_array) if a])


def logical_params_axes(module: nn.Module, rng: Array, *args, **kwargs) -> Any:
    """Pytree of logical axis-name tuples matching `init_params` (None for unnamed params).

    Uses `jax.eval_shape`, so nothing is allocated.
    """
    boxed = jax.eval_shape(lambda r: module.init(r, *args, **kwargs)["params"], rng)
    return jax.tree_util.tree_map(
        lambda x: tuple(x.names) if isinstance(x, nn.LogicallyPartitioned) else None,
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def constrain(x: Array, axes: Sequence[str | None]) -> Array:
    """`nn.with_logical_constraint`; a no-op when no mesh / axis rules are active."""
    return nn.with_logical_constraint(x, tuple(axes))


def flat_dot(x: Array, kernel: Array, n_in: int = 1) -> Array:
    """x [..., *kernel.shape[:n_in]] . kernel -> [..., *kernel.shape[n_in:]] as one 2-D matmul.

    The leading axes of x (batch, length) are merged into rows and the kernel into a matrix, so
    forward and both gradients are plain GEMMs: XLA:CPU runs the weight gradient of a dot that
    keeps several leading axes (a contraction over B and T) well below GEMM speed (measured on
    one core, SwiGLU B=4 T=128 D=256 H=512: fwd+bwd 12.8 -> 9.8 ms with the merged rows).
    """
    ins, outs = kernel.shape[:n_in], kernel.shape[n_in:]
    lead = x.shape[:x.ndim - n_in]
    if x.shape[x.ndim - n_in:] != ins:
        raise ValueError(f"flat_dot: x trailing shape {x.shape[x.ndim - n_in:]} != kernel "
                         f"input shape {ins}")
    k_in, k_out = int(np.prod(ins)), int(np.prod(outs))
    y = jnp.dot(x.reshape(-1, k_in), kernel.reshape(k_in, k_out))
    return y.reshape(lead + outs)


def _flat_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s dot_general ([..., D] x [D, F]) through `flat_dot`."""
    (contract, batch) = dimension_numbers
    if batch != ((), ()) or contract != ((lhs.ndim - 1,), (0,)) or rhs.ndim != 2 or \
            precision is not None or preferred_element_type is not None:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    return flat_dot(lhs, rhs, 1)


class Dense(nn.Dense):
    """`flax.linen.Dense` (same params and init) whose matmul is `flat_dot`."""
    dot_general: Any = _flat_dot_general


class Projection(nn.Module):
    """Linear map over the trailing `n_in` axes of x with a multi-axis kernel.

    x [..., *shape[:n_in]] -> [..., *shape[n_in:]]. Param `kernel` of `shape` with logical
    names `axes` (one per kernel dimension), `bias` [*shape[n_in:]] when use_bias. The kernel is
    created at its true rank (no flattening), so its logical names stay valid under a mesh;
    init: truncated normal with variance 1 / prod(shape[:n_in]).
    """
    shape: tuple[int, ...]
    n_in: int
    axes: tuple[str | None, ...]
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n = len(self.shape)
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=tuple(range(self.n_in)),
            out_axis=tuple(range(self.n_in, n)))
        kernel = self.param("kernel", partitioned(init, self.axes), self.shape, self.param_dtype)
        y = flat_dot(x.astype(self.dtype), jnp.asarray(kernel, self.dtype), self.n_in)
        if self.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, self.axes[self.n_in:]),
                              self.shape[self.n_in:], self.param_dtype)
            y = y + jnp.asarray(bias, self.dtype)
        return y
