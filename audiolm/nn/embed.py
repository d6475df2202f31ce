"""Token embeddings: a single table (with tied output head) and a per-codebook summed table."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.params import Dtype, partitioned

default_embed_init = nn.initializers.normal(stddev=1.0)


class Embed(nn.Module):
    """ids [...] int -> [..., D]. Param `embedding` [V, D].

    Ids outside [0, V) give NaN rows, so a bad id fails loudly instead of silently clipping.
    `attend(x [..., D]) -> [..., V]` is x @ embedding^T (tied output head).
    """
    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    embedding_init: Any = default_embed_init

    def setup(self):
        self.embedding = self.param(
            "embedding", partitioned(self.embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"Embed: ids must be integers, got dtype {ids.dtype}")
        table = jnp.asarray(self.embedding, self.dtype)
        valid = (ids >= 0) & (ids < self.num_embeddings)
        out = jnp.take(table, jnp.clip(ids, 0, self.num_embeddings - 1), axis=0)
        return jnp.where(valid[..., None], out, jnp.nan).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        table = jnp.asarray(self.embedding, self.dtype)
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), table)


class MultiCodebookEmbed(nn.Module):
    """codes [B, K, T] int -> [B, T, D] = sum_k table_k[codes_k]. Param `embedding` [K, V, D].

    Id -1 embeds to an exact zero vector (Moshi's "zero" token); ids < -1 or >= V give NaN.
    """
    num_codebooks: int
    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    embedding_init: Any = default_embed_init

    @nn.compact
    def __call__(self, codes: jax.Array) -> jax.Array:
        k, v = self.num_codebooks, self.num_embeddings
        if codes.ndim != 3 or codes.shape[1] != k:
            raise ValueError(f"MultiCodebookEmbed: codes shape {codes.shape} must be "
                             f"[B, K={k}, T]")
        if not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(f"MultiCodebookEmbed: codes must be integers, got {codes.dtype}")
        table = self.param("embedding",
                           partitioned(self.embedding_init, ("codebooks", "vocab", "embed")),
                           (k, v, self.features), self.param_dtype)
        table = jnp.asarray(table, self.dtype)
        idx = jnp.clip(codes, 0, v - 1)
        rows = table[jnp.arange(k)[None, :, None], idx]  # [B, K, T, D]
        rows = jnp.where((codes >= 0)[..., None], rows, 0.0)
        rows = jnp.where(((codes >= -1) & (codes < v))[..., None], rows, jnp.nan)
        return jnp.sum(rows, axis=1).astype(self.dtype)
