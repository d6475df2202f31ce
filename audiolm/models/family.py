"""The family contract: what every model family module provides (checked by a test).

A family is an architecture. Its module defines the functions below at module level and
registers its validation rules with `audiolm.config.register_rules` at import; the registry in
`audiolm.config.FAMILIES` maps `config.model.family` to the module. What is learnt with it (loss,
batches, evaluators, samples) is a task's business (`audiolm.tasks`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


@runtime_checkable
class Family(Protocol):
    FAMILY: str  # the config.model.family name

    def build(self, model_config: Any, dtype: Any = ...) -> Any:
        """The flax module of `model_config` (validate the experiment config first)."""

    def init_params(self, model_config: Any, rng: Any) -> Any:
        """A plain params pytree (logical-axis metadata unboxed)."""

    def describe_params(self, model_config: Any) -> dict[str, dict[str, int]]:
        """{component: {"total", "active", "embedding"}} via eval_shape: nothing allocated."""

    def rules(self, config: Any) -> None:
        """Every field of config.model; raises ConfigError naming the dotted path."""

    def example_batch(self, model_config: Any, batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A random, learnable batch in the layout the family's tasks consume."""


def check_code_grid(codes: Any, rows: int, owner: str, name: str, layout: str,
                    kind: str = "ids") -> bool:
    """Shape, size and dtype checks of a [B, rows, T] integer grid, before any computation:
    raises ValueError naming `owner`, `name`, the shape and the rule (`layout` spells the
    expected shape). Returns whether the values are concrete (a tracer's ids cannot be read
    on the host, so range checks are the caller's, on concrete arrays only)."""
    if codes.ndim != 3 or codes.shape[1] != rows:
        raise ValueError(f"{owner}: {name} shape {tuple(codes.shape)} must be {layout}")
    if codes.shape[0] < 1 or codes.shape[2] < 1:
        raise ValueError(f"{owner}: {name} shape {tuple(codes.shape)}: the batch B and the "
                         "length T must be >= 1")
    if not jnp.issubdtype(codes.dtype, jnp.integer):
        raise ValueError(f"{owner}: {name} must be integer {kind}, got {codes.dtype}")
    return not isinstance(codes, jax.core.Tracer)
