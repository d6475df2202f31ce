"""The train state: one `flax.struct` dataclass, a plain pytree that jit, Orbax and shardings see."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (the data iterator state is checkpointed beside it).

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: plain params pytree of the family's module.
      opt_state: optax state of `tx`.
      rng: uint32[2] base PRNG key; step `s` uses `fold_in(rng, s)`, so a resumed run draws the
        same dropout / sampling randomness as an uninterrupted one.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   rng=jnp.asarray(rng, jnp.uint32))

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for checkpointing (Orbax saves nested dicts of arrays)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state,
                "rng": self.rng}
