"""AuT: the Qwen3-Omni audio encoder (Whisper-style log-mel -> Thinker-width embeddings).

features [B, F, n_mels] (from `audiolm.audio.features`), frame_lengths [B]
  -> cut into chunks of `chunk_frames` frames (zero-padded; frames past a row's length are zero)
  -> per chunk: three Conv2d 3x3 stride 2 (+ exact GELU) over (time, mel), channels
     1 -> conv_channels -> conv_channels -> conv_channels; flatten (channel-major, then mel) ->
     Linear (no bias) -> hidden_size; + sinusoidal positions restarting at 0 in every chunk
  -> pre-LayerNorm encoder layers (non-causal MHA with biases, fc1-GELU-fc2), attention
     block-diagonal over windows of `attention_window_frames // chunk_frames` chunks
  -> ln_post -> proj1 -> GELU -> proj2 -> output_dim (= Thinker width).
Output: embeddings [B, C * tokens_per_chunk, output_dim] and their valid mask; the valid tokens
of a row are a prefix of length `num_audio_tokens(frame_length)` (only a row's last chunk is
partial), which is how the Thinker places them at its audio-token positions.

Optional `CTCHead` (created by the Thinker-Talker family only when `model.aut.ctc_frames_per_token`
> 0; no such field or 0 means no head and the parameters of the published models): a linear map
of each output token to r character frames for an auxiliary CTC loss. The AuT emits 13 tokens per
1 s chunk (Qwen3-Omni's 12.5 Hz), fewer than the characters of speech (~15/s), so CTC runs at r x
the token rate.

A partial last chunk is zero-padded to the full chunk length before the conv stem, as the
reference does whenever its batch holds at least one full chunk (1 s of audio); a batch whose
feature array is shorter than one chunk is processed as a single chunk of that length, as the
reference does for a batch of short clips padded to its longest one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import nn as blocks
from audiolm.config import spec_from_section
from audiolm.nn.mlp import dense
from audiolm.nn.params import Dtype, default_kernel_init, partitioned
from audiolm.presets.thinker_talker_specs import AuTSpec

__all__ = ["AuT", "AuTSpec", "CTCHead", "spec_from_config", "build", "ctc_head",
           "ctc_frames_per_token", "num_audio_tokens", "tokens_per_chunk", "stem_out_len"]


def conv_out_len(n):
    """Length after one 3-wide, stride-2, pad-1 convolution (works on ints and arrays)."""
    return (n - 1) // 2 + 1


def stem_out_len(n):
    """Length after the three stride-2 convolutions of the stem."""
    return conv_out_len(conv_out_len(conv_out_len(n)))


def tokens_per_chunk(chunk_frames: int) -> int:
    return int(stem_out_len(chunk_frames))


def num_audio_tokens(frame_lengths, chunk_frames: int):
    """AuT output tokens of clips with `frame_lengths` mel frames (ints or int arrays).

    Full chunks give `tokens_per_chunk` each; a remainder of r frames gives stem_out_len(r).
    """
    xp = jnp if isinstance(frame_lengths, jax.Array) else np
    fl = xp.asarray(frame_lengths)
    rem = fl % chunk_frames
    out = (fl // chunk_frames) * tokens_per_chunk(chunk_frames) + xp.where(
        rem > 0, stem_out_len(xp.maximum(rem, 1)), 0)
    return int(out) if xp is np and out.ndim == 0 else out


class AuT(nn.Module):
    """Audio encoder of an `AuTSpec` (`model.aut`) over `n_mels` bands (`model.audio.n_mels`).

    `__call__(features [B, F, n_mels], frame_lengths [B] int | None)
      -> (embeds [B, C * tpc, output_dim], mask [B, C * tpc] bool)` with C = ceil(F / chunk_frames)
    and tpc = tokens_per_chunk(chunk_frames).
    """
    config: AuTSpec
    n_mels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def chunk_frames(self) -> int:
        """Mel frames per chunk (what callers need to count AuT tokens)."""
        return self.config.chunk_frames

    def _conv(self, name: str) -> nn.Conv:
        return nn.Conv(self.config.conv_channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                       dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                       kernel_init=partitioned(default_kernel_init,
                                               (None, None, "conv_in", "conv_out")),
                       bias_init=partitioned(nn.initializers.zeros, ("conv_out",)))

    @nn.compact
    def __call__(self, features: jax.Array, frame_lengths: jax.Array | None = None):
        if features.ndim != 3 or features.shape[-1] != self.n_mels:
            raise ValueError(f"AuT: features must be [B, frames, n_mels={self.n_mels}], got shape "
                             f"{features.shape}")
        c = self.config
        b, f, _ = features.shape
        # A batch shorter than one chunk is one chunk of its own length (what the reference
        # does when no clip in its batch reaches a full chunk); otherwise chunks are padded to
        # chunk_frames. Valid token counts are the same either way.
        chunk = min(self.chunk_frames, f)
        n_chunks = -(-f // chunk)
        tpc = tokens_per_chunk(chunk)
        if frame_lengths is None:
            frame_lengths = jnp.full((b,), f, jnp.int32)
        frame_lengths = jnp.asarray(frame_lengths, jnp.int32)
        if frame_lengths.shape != (b,):
            raise ValueError(f"AuT: frame_lengths shape {frame_lengths.shape} must be ({b},)")

        x = features.astype(self.dtype)
        x = jnp.where(jnp.arange(f)[None, :, None] < frame_lengths[:, None, None], x, 0)
        x = jnp.pad(x, ((0, 0), (0, n_chunks * chunk - f), (0, 0)))
        x = x.reshape(b * n_chunks, chunk, self.n_mels, 1)  # NHWC, spatial = (time, mel)
        for i in range(3):
            x = nn.gelu(self._conv(f"conv{i + 1}")(x), approximate=False)
        n, t, m, ch = x.shape  # t == tpc
        x = jnp.transpose(x, (0, 1, 3, 2)).reshape(n, t, ch * m)  # channel-major flatten
        x = dense(c.hidden_size, "conv_out", ("conv_in", "embed"), use_bias=False,
                  dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = x + blocks.sinusoidal_positions(tpc, c.hidden_size).astype(x.dtype)[None]
        x = x.reshape(b, n_chunks * tpc, c.hidden_size)

        # Valid tokens: a prefix of num_audio_tokens(frame_length) per row.
        n_valid = num_audio_tokens(frame_lengths, self.chunk_frames)
        tok = jnp.arange(n_chunks * tpc)
        valid = tok[None, :] < n_valid[:, None]  # [B, N]
        window = (tok // tpc) // (c.attention_window_frames // self.chunk_frames)
        same = window[:, None] == window[None, :]
        mask = same[None] & valid[:, None, :]
        mask = mask | jnp.eye(tok.shape[0], dtype=bool)[None]  # padded queries see themselves
        mask = mask[:, None]  # [B, 1, N, N]

        head_dim = c.hidden_size // c.num_heads
        for i in range(c.num_layers):
            x, _, _ = blocks.TransformerBlock(
                norm="layer", norm_eps=c.norm_eps, num_heads=c.num_heads,
                num_kv_heads=c.num_heads, head_dim=head_dim, qkv_bias=True, out_bias=True,
                qk_norm=False, rope_style=None, causal=False,
                use_dot_product_attention=c.use_dot_product_attention,
                ffn="plain", ffn_hidden=c.ffn_hidden, activation="gelu", ffn_bias=True,
                dtype=self.dtype, param_dtype=self.param_dtype, name=f"layers_{i}")(x, mask=mask)
        x = blocks.LayerNorm(eps=c.norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="ln_post")(x)
        x = dense(c.hidden_size, "proj1", ("embed", "mlp"), use_bias=True, dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
        x = nn.gelu(x, approximate=False)
        x = dense(c.output_dim, "proj2", ("mlp", "embed"), use_bias=True, dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
        x = jnp.where(valid[..., None], x, 0)
        return x, valid


class CTCHead(nn.Module):
    """Per-token linear head emitting `frames_per_token` character frames of `vocab_size` logits.

    `__call__(embeds [B, N, D], mask [B, N] bool) -> (logits [B, N * r, vocab_size] float32,
    mask [B, N * r] bool)`, r = frames_per_token; token n's frames are n * r ... n * r + r - 1.
    """
    vocab_size: int
    frames_per_token: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, embeds: jax.Array, mask: jax.Array):
        b, n, _ = embeds.shape
        r = self.frames_per_token
        logits = dense(r * self.vocab_size, "proj", ("embed", "vocab"), use_bias=True,
                       dtype=self.dtype, param_dtype=self.param_dtype)(embeds)
        logits = logits.astype(jnp.float32).reshape(b, n * r, self.vocab_size)
        return logits, jnp.repeat(mask, r, axis=1)


def ctc_frames_per_token(model_cfg: Any) -> int:
    """`model.aut.ctc_frames_per_token`, 0 when absent (imported configs have no CTC head)."""
    return int(model_cfg.aut.get("ctc_frames_per_token", 0))


def spec_from_config(model_cfg: Any) -> AuTSpec:
    """The `AuTSpec` of `model.aut` (`model_cfg` is the `model` section). A section without the
    optional ctc_frames_per_token (imported configs) reads as 0."""
    aut = model_cfg.aut
    if "ctc_frames_per_token" not in aut:
        aut = {**{key: aut[key] for key in aut}, "ctc_frames_per_token": 0}
    return spec_from_section(AuTSpec, {"model": {"aut": aut}}, "model.aut")


def build(model_cfg: Any, dtype: Dtype = jnp.float32) -> AuT:
    """The AuT of the `model` section (reads `model.aut` and `model.audio.n_mels`)."""
    return AuT(spec_from_config(model_cfg), n_mels=model_cfg.audio.n_mels, dtype=dtype)


def ctc_head(spec: AuTSpec, vocab_size: int, dtype: Dtype = jnp.float32) -> CTCHead | None:
    """The CTC head over a text vocabulary of `vocab_size` (the Thinker's), or None when
    `spec.ctc_frames_per_token` asks for none."""
    if spec.ctc_frames_per_token <= 0:
        return None
    return CTCHead(vocab_size=vocab_size, frames_per_token=spec.ctc_frames_per_token,
                   dtype=dtype)
