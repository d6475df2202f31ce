"""Masked token cross-entropy: the one implementation every task's loss calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array]:
    """Negative log-likelihood and argmax hit of each target, in float32.

    logits [..., V] (any float dtype), targets [...] int. Where `mask` [...] is false the target
    may be any value (padding, -1, a special id >= V): it is clipped for the gather and both
    outputs are 0 there, and the logits are zeroed so that no NaN/inf of a masked position
    reaches the gradients. Returns (nll [...], correct [...]) float32.
    """
    logits = logits.astype(jnp.float32)
    if mask is not None:
        mask = jnp.asarray(mask).astype(bool)
        logits = jnp.where(mask[..., None], logits, 0.0)
    safe = jnp.clip(targets, 0, logits.shape[-1] - 1).astype(jnp.int32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = logz - picked
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    if mask is not None:
        w = mask.astype(jnp.float32)
        nll, correct = nll * w, correct * w
    return nll, correct


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """sum(x * mask) / max(sum(mask), 1) over `axis` (all axes by default), float32."""
    w = jnp.asarray(mask).astype(jnp.float32)
    return jnp.sum(x * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), 1.0)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean NLL and accuracy over the masked targets, and their count (float32 scalars).

    logits [..., V], targets [...], mask [...]: see `token_nll`.
    """
    nll, correct = token_nll(logits, targets, mask)
    w = jnp.asarray(mask).astype(jnp.float32)
    n = jnp.sum(w)
    return jnp.sum(nll) / jnp.maximum(n, 1.0), jnp.sum(correct) / jnp.maximum(n, 1.0), n
