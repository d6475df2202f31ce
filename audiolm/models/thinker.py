"""Thinker: the Qwen3-Omni MoE text decoder with audio embeddings merged at audio-token positions.

tokens [B, T] -> embed (audio_token_id positions replaced, in order, by the AuT embeddings of
the row) -> num_layers x [x += attn(RMSNorm x); x += FFN(RMSNorm x)] -> RMSNorm -> lm_head.
Attention: causal GQA, no biases, per-head RMSNorm on q and k before rotate-half RoPE (for
audio + text the reference's M-RoPE positions are equal on all axes, i.e. plain 1-D RoPE).
FFN of layer i is MoE (router softmax -> top-k -> optional renormalisation, SwiGLU experts, no
shared expert) iff i is not in `mlp_only_layers`, num_experts > 0 and (i + 1) is a multiple of
`decoder_sparse_step`; otherwise a dense SwiGLU of width `ffn_hidden`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import nn as blocks
from audiolm.config import spec_from_section
from audiolm.nn.mlp import dense
from audiolm.nn.params import Dtype
from audiolm.presets.thinker_talker_specs import ThinkerSpec

__all__ = ["Thinker", "ThinkerSpec", "spec_from_config", "build", "check_tokens", "is_moe_layer",
           "merge_audio"]


def is_moe_layer(i: int, num_experts: int, decoder_sparse_step: int,
                 mlp_only_layers: Sequence[int]) -> bool:
    """Whether Thinker layer `i` (0-based) has a routed-expert FFN (the reference's rule)."""
    return (i not in tuple(mlp_only_layers)) and num_experts > 0 and (
        (i + 1) % decoder_sparse_step == 0)


def merge_audio(embeds: jax.Array, tokens: jax.Array, audio_embeds: jax.Array,
                audio_token_id: int) -> jax.Array:
    """Puts the k-th audio embedding of row b at the k-th `audio_token_id` position of row b.

    embeds [B, T, D], tokens [B, T], audio_embeds [B, N, D] (valid embeddings first) -> [B, T, D].
    """
    is_audio = tokens == audio_token_id
    k = jnp.clip(jnp.cumsum(is_audio, axis=1) - 1, 0, audio_embeds.shape[1] - 1)
    picked = jnp.take_along_axis(audio_embeds, k[..., None], axis=1).astype(embeds.dtype)
    return jnp.where(is_audio[..., None], picked, embeds)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_tokens(tokens, vocab_size: int, audio_token_id: int, audio_lengths=None) -> None:
    """Raises ValueError for tokens that are not [B, T] ints in [0, vocab_size), or (when
    `audio_lengths` [B] is given) rows whose number of audio_token_id placeholders differs from
    their AuT token count. Value checks run only on concrete arrays (outside jit)."""
    if tokens.ndim != 2:
        raise ValueError(f"Thinker: tokens must be [B, T] ints, got shape {tokens.shape}")
    if tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(f"Thinker: tokens shape {tuple(tokens.shape)}: the batch B and the "
                         "length T must be >= 1")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"Thinker: tokens must be integers, got {tokens.dtype}")
    if not _is_concrete(tokens):
        return
    t = np.asarray(tokens)
    if t.size and (t.min() < 0 or t.max() >= vocab_size):
        bad = t[(t < 0) | (t >= vocab_size)]
        raise ValueError(f"Thinker: token ids must be in [0, vocab_size={vocab_size}); got "
                         f"{bad[:8].tolist()}")
    if audio_lengths is not None and _is_concrete(audio_lengths):
        count = (t == audio_token_id).sum(axis=1)
        lens = np.asarray(audio_lengths)
        if not np.array_equal(count, lens):
            raise ValueError(f"Thinker: rows have {count.tolist()} audio_token_id="
                             f"{audio_token_id} placeholders but their audio gives "
                             f"{lens.tolist()} AuT tokens; they must be equal")


class Thinker(nn.Module):
    """The Thinker decoder of a `ThinkerSpec` (`model.thinker`).

    `__call__(tokens [B, T] int, positions [B, T] | None, *, audio_embeds [B, N, D] | None,
    audio_lengths [B] | None, caches | None, return_hidden_states=False) -> dict` with
      logits [B, T, vocab_size] (float32),
      aux: {"load_balance_loss", "router_z_loss"} averaged over MoE layers (0 if none),
      hidden_states (only if asked): tuple of num_layers + 1 arrays [B, T, D]: the input
        embeddings (audio merged), then the residual stream after each layer (before the final
        norm); the Talker reads entry `accept_hidden_layer`,
      caches (only with `caches`, from `init_caches`): the updated per-layer KV caches;
        positions then default to cache index + arange(T) (incremental decoding).
    """
    config: ThinkerSpec
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    # The two ids callers check tokens against (the samplers, the family module).
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def audio_token_id(self) -> int:
        return self.config.audio_token_id

    @nn.nowrap
    def init_caches(self, batch: int, max_len: int, dtype: Dtype = jnp.float32) -> list:
        """Empty per-layer KV caches with `max_len` slots for incremental decoding."""
        c = self.config
        attn = blocks.Attention(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
                                head_dim=c.head_dim, parent=None)
        return [attn.init_cache(batch, max_len, dtype) for _ in range(c.num_layers)]

    def moe_layers(self) -> list[int]:
        c = self.config
        return [i for i in range(c.num_layers)
                if is_moe_layer(i, c.num_experts, c.decoder_sparse_step, c.mlp_only_layers)]

    def _check_tokens(self, tokens, audio_embeds, audio_lengths):
        c = self.config
        if audio_embeds is not None and (audio_embeds.ndim != 3 or audio_embeds.shape[0] !=
                                         tokens.shape[0] or
                                         audio_embeds.shape[2] != c.hidden_size):
            raise ValueError(f"Thinker: audio_embeds must be [B={tokens.shape[0]}, N, "
                             f"hidden_size={c.hidden_size}], got {audio_embeds.shape}")
        check_tokens(tokens, self.vocab_size, self.audio_token_id,
                     audio_lengths if audio_embeds is not None else None)

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None, *,
                 audio_embeds: jax.Array | None = None, audio_lengths: jax.Array | None = None,
                 caches: list | None = None,
                 return_hidden_states: bool = False) -> dict[str, Any]:
        self._check_tokens(tokens, audio_embeds, audio_lengths)
        c = self.config
        b, t = tokens.shape
        if caches is not None and len(caches) != c.num_layers:
            raise ValueError(f"Thinker: got {len(caches)} caches for {c.num_layers} layers")
        if positions is None:
            start = caches[0]["index"] if caches is not None else 0
            positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        embed = blocks.Embed(self.vocab_size, c.hidden_size, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="embed_tokens")
        x = embed(tokens)
        if audio_embeds is not None:
            x = merge_audio(x, tokens, audio_embeds, self.audio_token_id)
        hidden = [x]
        lb, z, new_caches = [], [], []
        for i in range(c.num_layers):
            moe = is_moe_layer(i, c.num_experts, c.decoder_sparse_step,
                               c.mlp_only_layers)
            block = blocks.TransformerBlock(
                norm="rms", norm_eps=c.rms_norm_eps, num_heads=c.num_heads,
                num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, qkv_bias=False,
                out_bias=False, qk_norm=True, qk_norm_eps=c.rms_norm_eps,
                rope_style="rotate_half", rope_theta=c.rope_theta, causal=True,
                use_dot_product_attention=c.use_dot_product_attention,
                ffn="moe" if moe else "gated", ffn_hidden=c.ffn_hidden, activation="silu",
                num_experts=c.num_experts if moe else 0,
                top_k=c.num_experts_per_tok if moe else 0, expert_hidden=c.moe_hidden,
                norm_topk_prob=c.norm_topk_prob, dispatch=c.moe_dispatch,
                capacity_factor=c.moe_capacity_factor,
                dtype=self.dtype, param_dtype=self.param_dtype, name=f"layers_{i}")
            x, cache, aux = block(x, positions,
                                  cache=None if caches is None else caches[i])
            new_caches.append(cache)
            if moe:
                lb.append(aux["load_balance_loss"])
                z.append(aux["router_z_loss"])
            if return_hidden_states:
                hidden.append(x)
        x = blocks.RMSNorm(eps=c.rms_norm_eps, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="norm")(x)
        if c.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = dense(self.vocab_size, "lm_head", ("embed", "vocab"), use_bias=False,
                           dtype=self.dtype, param_dtype=self.param_dtype)(x)
        zero = jnp.zeros((), jnp.float32)
        out = {
            "logits": logits.astype(jnp.float32),
            "aux": {"load_balance_loss": jnp.mean(jnp.stack(lb)) if lb else zero,
                    "router_z_loss": jnp.mean(jnp.stack(z)) if z else zero},
        }
        if return_hidden_states:
            out["hidden_states"] = tuple(hidden)
        if caches is not None:
            out["caches"] = new_caches
        return out


def spec_from_config(model_cfg: Any) -> ThinkerSpec:
    """The `ThinkerSpec` of `model.thinker` (`model_cfg` is the `model` section)."""
    return spec_from_section(ThinkerSpec, {"model": {"thinker": model_cfg.thinker}},
                             "model.thinker")


def build(model_cfg: Any, dtype: Dtype = jnp.float32) -> Thinker:
    """The Thinker of the `model` section (reads `model.thinker`)."""
    return Thinker(spec_from_config(model_cfg), dtype=dtype)
