"""Neural audio codec (family "codec"): causal SEANet encoder, residual VQ, mirror decoder (or
Code2Wav, or an inverse-STFT decoder), offline and streaming.

waveform [B, S] -> pad right to a multiple of hop_length -> SEANet encoder (causal conv,
per stage: residual blocks then ELU + strided conv of kernel 2r, channels doubled; ELU + last
conv to `dimension`) -> optional causal transformer at the encoder rate -> stride-s learnt
downsampling conv (left padding replicates the first frame) to the frame rate -> residual
vector quantizer -> depthwise transposed conv back to the encoder rate -> optional causal
transformer -> SEANet decoder (the mirror: ELU + transposed conv of kernel 2r, residual blocks)
-> [B, T * hop_length].

The quantizer projects the latent [B, T, D] to the codebook width d (no bias), quantizes the
residual level by level by Euclidean nearest neighbour (or highest cosine with
`normalized_lookup`), sums the chosen vectors and projects
back to D. With `num_semantic` > 0 (Mimi), a separate RVQ of that many levels with its own
projections quantizes the same latent beside the acoustic RVQ, and their outputs are summed:
codes are [semantic..., acoustic...]. Any prefix of codebooks (at least the semantic ones)
decodes.

Training (`Codec.__call__`): straight-through estimator over the whole quantizer output
(z + stop_gradient(q - z)), with per-level commitment ||r_l - sg(e_l)||^2 and codebook
||sg(r_l) - e_l||^2 errors returned for the task's loss (VQ-VAE); `active` codebooks (quantizer
dropout) mask the later levels out of the decoded latent. Codebook learning
(`model.quantizer.codebook_update`): "loss": the codebooks are trained params (the codebook
error moves them); "ema": Mimi's EMA statistics, buffers in the params tree that the
optimizer never moves (zero gradient) and that `learn_quantizer` rewrites after each step
(through the codec task's `update_buffers` hook): k-means init on the first batch, EMA
updates, dead-code restarts.

Decoder (`model.decoder`): "seanet", the mirror above; "istft" (`ISTFTDecoder`, `model.istft`,
param subtree `istft_decoder`): in place of the SEANet decoder only, Vocos-style causal ConvNeXt
blocks at the encoder rate predict each frame's STFT magnitude and phase, synthesised by a
causal inverse STFT (`overlap_add`): no upsampling convs at the sample rate, so a training step
costs a fraction of the mirror's; or "code2wav": Qwen3-Omni's Code2Wav
(`audiolm.models.code2wav`, param subtree `code2wav`) replaces the upsampler, the decoder
transformer and the SEANet decoder, fed the quantized latent [B, T, D] in place of its own code
embedding (`Code2Wav(embeddings=...)`; D = its hidden_size, hop = its total upsampling). Why the
latent and not the codes: Code2Wav's embedding is a mean of one table row per codebook, the same
form as the RVQ decode (a sum of codebook rows, projected), so the RVQ decode takes its place
without loss of generality; and integer codes pass no gradient, so a Code2Wav embedding its own
codes would leave the encoder learning from the VQ losses alone, never from the reconstruction,
while the straight-through latent trains the encoder end to end. Code2Wav's trimmed transposed
convs never produce the first start_trim samples of the frame grid: `decode` returns them as
zeros, so both decoders give [B, T * hop_length] on the same grid.

Streaming (`init_stream`, `encode_step`, `decode_step`; names as `code2wav.init_stream` /
`stream_step`): audio in whole frames and codes a few frames at a time, equal to offline. Every
causal conv keeps its last (kernel - 1) * dilation + 1 - stride input frames (`Stream`), each
transposed conv its last input frame, each transformer layer its ring KV cache of `context`
slots, the downsampler its last `stride` encoder frames (the first frame repeated at the start,
as offline), the iSTFT decoder its overlap-add tail (n_fft - hop samples) and its frame count;
the state is a fixed-shape pytree. The Code2Wav decoder streams as
`code2wav.stream_step` does: the last receptive_field frames of latent are decoded again beside
the new ones.

Config: `audiolm.presets.codec.CodecSpec` (every field with its comment), presets `TINY`,
`SPEECH_16K`, `MIMI`, `TINY_MIMI` there. Param tree: `encoder` (`conv_in`, `res_{i}_{j}`
{`conv1`, `conv2`}, `down_{i}`, `conv_out`), `encoder_transformer` / `decoder_transformer`
(`layers_{i}`), `downsample` (`conv`), `upsample` (`conv`), `quantizer` (`semantic`,
`acoustic` or `rvq`: `input_proj` [D, d], `output_proj` [d, D], `codebooks` [L, K, d] or the
buffers `embedding_sum` [L, K, d], `cluster_usage` [L, K], `initialized` []),
`decoder` (`conv_in`, `up_{i}`, `res_{i}_{j}`, `conv_out`) or `istft_decoder` (`conv_in`,
`norm_in`, `block_{i}`, `norm_out`, `magnitude`, `phase`); with `model.discriminator.n_ffts`
set, `discriminator` (`scale_{k}`: `audiolm.models.discriminator`), used by adversarial training
only (`Codec.discriminate`).
"""

from __future__ import annotations

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import audiolm.nn as anl
from audiolm import config as config_lib
from audiolm.models import code2wav as code2wav_lib
from audiolm.config import (MAX_CODEBOOKS, check_float, check_int, check_schema, get_path,
                            require)
from audiolm.nn.compile import fast_jit
from audiolm.models.discriminator import MultiScaleSTFTDiscriminator
from audiolm.nn.params import default_kernel_init, partitioned
from audiolm.presets.codec import (CodecSpec, CodecTransformerSpec, ISTFTSpec, QuantizerSpec,
                                   SEANetSpec, bitrate, frame_rate, hop_length)

FAMILY = "codec"
__all__ = ["Codec", "CodecSpec", "bitrate", "frame_rate", "hop_length", "build", "init_params",
           "describe_params", "rules", "example_batch", "spec_of", "encode", "decode",
           "learn_quantizer", "init_stream", "encode_step", "decode_step"]


def spec_of(model_config: Any) -> CodecSpec:
    """The `CodecSpec` of `config.model` (schema-checked; a spec passes through)."""
    if isinstance(model_config, CodecSpec):
        return model_config
    get = model_config.get if hasattr(model_config, "get") else lambda key: None
    c2w, istft = get("code2wav"), get("istft")
    return config_lib.spec_from_section(
        CodecSpec, {"model": model_config}, "model",
        code2wav=None if c2w is None else code2wav_lib.spec_of(c2w),
        istft=None if istft is None else config_lib.spec_from_section(
            ISTFTSpec, {"model": model_config}, "model.istft"))


def num_frames(spec: CodecSpec, samples: int) -> int:
    """Code frames of a waveform of `samples` samples (padded up to whole frames)."""
    return -(-samples // hop_length(spec))


# ---------------------------------------------------------------------------------------------
# SEANet


class Stream:
    """The frame buffers of one module's causal layers while streaming.

    `state` None: offline, every layer runs on its input as is. A dict: each layer's last
    `context` input frames from the previous call (zeros when missing: the causal zero padding
    at the start of a stream) are prepended to its input and the `drop` outputs they give are
    removed, so chunk after chunk gives the offline outputs; `new` collects the next call's
    state. `context` frames are all a layer's outputs depend on beyond the current ones: a conv
    of kernel k, dilation d, stride s keeps (k - 1) * d + 1 - s and drops context / s; a
    transposed conv of kernel 2s, stride s (causal trim) keeps 1 and drops s.
    """

    def __init__(self, state: dict | None):
        self.state = state
        self.new = None if state is None else {}

    def layer(self, layer: Any, x: jax.Array, name: str, context: int,
              drop: int) -> jax.Array:
        """layer(x [B, T, C]) continuing the stream (buffer state[name])."""
        if self.state is None or not context:
            return layer(x)
        buf = self.state.get(name)
        if buf is None:
            buf = jnp.zeros((x.shape[0], context, x.shape[-1]), x.dtype)
        joined = jnp.concatenate([buf.astype(x.dtype), x], axis=1)
        self.new[name] = joined[:, joined.shape[1] - context:]
        return layer(joined)[:, drop:]

    def conv(self, conv: Any, x: jax.Array, name: str, kernel: int, dilation: int = 1,
             stride: int = 1) -> jax.Array:
        context = (kernel - 1) * dilation + 1 - stride
        return self.layer(conv, x, name, context, context // stride)

    def module(self, module: Any, x: jax.Array, name: str) -> jax.Array:
        """A sub-module `(x, state) -> (y, state)` streaming its own state[name]."""
        y, sub = module(x, None if self.state is None else self.state.get(name, {}))
        if self.new is not None:
            self.new[name] = sub
        return y


class ResidualBlock(nn.Module):
    """x + conv2(ELU(conv1(ELU(x)))): conv1 [kernel, dilation] to `hidden`, conv2 1x1 back.
    `(x [B, T, C], state=None) -> (y, state)`: `Stream`."""
    channels: int
    hidden: int
    kernel: int
    dilation: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, state: dict | None = None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        st = Stream(state)
        h = st.conv(anl.CausalConv1d(self.hidden, self.kernel, dilation=self.dilation,
                                     name="conv1", **kw),
                    jax.nn.elu(x), "conv1", self.kernel, self.dilation)
        h = anl.CausalConv1d(self.channels, 1, name="conv2", **kw)(jax.nn.elu(h))
        return x + h, st.new


class SEANetEncoder(nn.Module):
    """wav [B, S] (S a multiple of prod(ratios)) -> [B, S / prod(ratios), dimension].
    `(wav, state=None) -> (latent, state)`: `Stream`."""
    spec: SEANetSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, wav: jax.Array, state: dict | None = None):
        c = self.spec
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        st = Stream(state)
        x = st.conv(anl.CausalConv1d(c.n_filters, c.kernel_size, name="conv_in", **kw),
                    wav[..., None], "conv_in", c.kernel_size)
        ch = c.n_filters
        for i, ratio in enumerate(reversed(c.ratios)):
            for j in range(c.n_residual_layers):
                x = st.module(ResidualBlock(ch, ch // c.compress, c.residual_kernel_size,
                                            c.dilation_base ** j, name=f"res_{i}_{j}", **kw),
                              x, f"res_{i}_{j}")
            x = st.conv(anl.CausalConv1d(2 * ch, 2 * ratio, stride=ratio, name=f"down_{i}",
                                         **kw),
                        jax.nn.elu(x), f"down_{i}", 2 * ratio, stride=ratio)
            ch *= 2
        x = st.conv(anl.CausalConv1d(c.dimension, c.last_kernel_size, name="conv_out", **kw),
                    jax.nn.elu(x), "conv_out", c.last_kernel_size)
        return x, st.new


class SEANetDecoder(nn.Module):
    """latent [B, T, dimension] -> wav [B, T * prod(ratios)] (the encoder's mirror).
    `(latent, state=None) -> (wav, state)`: `Stream`."""
    spec: SEANetSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, state: dict | None = None):
        c = self.spec
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        st = Stream(state)
        ch = c.n_filters * 2 ** len(c.ratios)
        x = st.conv(anl.CausalConv1d(ch, c.kernel_size, name="conv_in", **kw), z, "conv_in",
                    c.kernel_size)
        for i, ratio in enumerate(c.ratios):
            # Causal: the k - stride extra samples of the transposed conv are trimmed on the right.
            x = st.layer(anl.CausalConvTranspose1d(ch // 2, 2 * ratio, ratio, name=f"up_{i}",
                                                   **kw),
                         jax.nn.elu(x), f"up_{i}", 1, ratio)
            ch //= 2
            for j in range(c.n_residual_layers):
                x = st.module(ResidualBlock(ch, ch // c.compress, c.residual_kernel_size,
                                            c.dilation_base ** j, name=f"res_{i}_{j}", **kw),
                              x, f"res_{i}_{j}")
        x = st.conv(anl.CausalConv1d(1, c.last_kernel_size, name="conv_out", **kw),
                    jax.nn.elu(x), "conv_out", c.last_kernel_size)
        return x[..., 0], st.new


# Causal inverse STFT (decoder "istft")

MAX_LOG_MAGNITUDE = math.log(1e2)  # clip of the predicted log-magnitude: exp never overflows
# Initial log-magnitude bias: ~n_fft/2 bins of magnitude m and random phase synthesise a frame
# of RMS ~ m * sqrt(n_fft): at 0 a fresh decoder would output tens of full scales; at -7 the
# speech preset starts at RMS ~0.07, speech level.
LOG_MAGNITUDE_INIT = -7.0
# The head's kernel starts 10x smaller than default_kernel_init (std / sqrt(fan_in)). At full
# size the random per-frame spectra are loud noise, and the fastest way to quiet them is an
# encoder latent dominated by one constant direction (measured on the speech preset: latent
# mean 0.46 against a spread of 0.05 after 150 steps), which collapses the first codebook's
# cosine lookup to one entry (perplexity 1.0). Small, the head learns the mean spectrum without
# it: codebook 0 perplexity 33 and train mel loss 2.21 at step 100 (2.48 at full size).
HEAD_INIT = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
NORM_FLOOR = 0.1  # floor on the summed squared windows (only bites at a stream's first samples)


def hann_window(n_fft: int) -> jax.Array:
    """Periodic Hann window [n_fft] (its squares overlap-add to a constant at hop n_fft / 4)."""
    return 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * jnp.arange(n_fft) / n_fft)


def overlap_add(frames: jax.Array, hop: int, start: Any = 0,
                tail: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Causal windowed overlap-add of time-domain frames.

    frames [B, T, n_fft] (n_fft = r * hop): frame t is the window of samples [t * hop, t * hop +
    n_fft) of the [B, T * hop] grid, so sample s sees only frames t <= s / hop (causal). Each
    frame is multiplied by the Hann window; every sample is divided by the sum of the squared
    windows of the frames that cover it, counted from the stream's first frame (`start`: the
    absolute index of frames[:, 0], an int or a traced scalar), floored at NORM_FLOOR: exact
    inversion of a Hann-windowed analysis STFT everywhere that sum is >= NORM_FLOOR, the first
    samples of a stream included. tail [B, n_fft - hop]: the windowed sums that earlier frames
    left past their grid (None: zeros, the start of a stream). Returns (wav [B, T * hop], the
    new tail [B, n_fft - hop], unnormalised).
    """
    b, t, n_fft = frames.shape
    r = n_fft // hop
    if n_fft % hop or r < 1:
        raise ValueError(f"overlap_add: frame length {n_fft} must be a multiple of hop={hop}")
    window = hann_window(n_fft)
    chunks = (frames.astype(jnp.float32) * window).reshape(b, t, r, hop)
    # Block j (samples [j * hop, (j + 1) * hop)) sums chunk i of frame j - i.
    acc = sum(jnp.pad(chunks[:, :, i], ((0, 0), (i, r - 1 - i), (0, 0))) for i in range(r))
    if tail is not None and r > 1:
        acc = acc.at[:, :r - 1].add(tail.reshape(b, r - 1, hop).astype(jnp.float32))
    # Squared-window sum of block j: chunks 0..min(j, r - 1) (frames before the first are none).
    covered = jnp.cumsum(jnp.square(window).reshape(r, hop), axis=0)
    block = jnp.minimum(jnp.asarray(start, jnp.int32) + jnp.arange(t), r - 1)
    norm = jnp.maximum(covered[block], NORM_FLOOR)
    wav = (acc[:, :t] / norm).reshape(b, t * hop)
    return wav, acc[:, t:].reshape(b, (r - 1) * hop)


class ISTFTDecoder(nn.Module):
    """Vocos-style decoder: latent [B, T, D] at the encoder rate -> wav [B, T * hop].

    Causal conv (kernel, D -> width), LayerNorm, `num_blocks` causal ConvNeXt blocks
    (`anl.ConvNeXtBlock`: depthwise conv, LayerNorm, GELU MLP, LayerScale 1 / num_blocks,
    residual), LayerNorm, then per frame a linear head to log-magnitude (clipped at
    MAX_LOG_MAGNITUDE, exp) and phase (an angle) of n_fft // 2 + 1 bins; inverse real FFT
    (unnormalised sum, so a magnitude is about a quarter of a sinusoid's amplitude) and the
    causal `overlap_add`: frame t covers samples [t * hop, t * hop + n_fft).

    Why frame t starts (not ends) at its own hop: any later placement would make samples
    depend on later frames (overlap-add lookahead of n_fft - hop samples), breaking the
    codec's causal grid and streaming. The price: the part of frame t past (t + 1) * hop is
    predicted from what frame t has seen; hop j's squared-window weight from frame j itself
    (which has seen it) is a half with n_fft = 2 * hop, under a twentieth with 4 * hop. (On
    the speech preset, with a full-size head init, 150 steps trained alike with 2 and 4 hops
    and alike with the non-causal placement: the price was not yet visible there.)

    `(x, state=None) -> (wav, state)`: state a dict streams: the convs' kept frames
    (`Stream`), `tail` [B, n_fft - hop] (the overlap-add left past the last output) and
    `frames` (frames decoded so far: the normaliser at a stream's start).
    Params `conv_in`, `norm_in`, `block_{i}`, `norm_out`, `magnitude`, `phase`.
    """
    spec: ISTFTSpec
    hop: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, state: dict | None = None):
        c = self.spec
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        st = Stream(state)
        x = st.conv(anl.CausalConv1d(c.width, c.kernel, name="conv_in", **kw), x, "conv_in",
                    c.kernel)
        x = anl.LayerNorm(eps=1e-6, name="norm_in", **kw)(x)
        for i in range(c.num_blocks):
            # The block is pointwise but for its depthwise conv: streamed as a conv of `kernel`.
            block = anl.ConvNeXtBlock(c.width, c.kernel, c.mlp_ratio,
                                      layer_scale_init=1.0 / c.num_blocks, name=f"block_{i}",
                                      **kw)
            x = st.conv(block, x, f"block_{i}", c.kernel)
        x = anl.LayerNorm(eps=1e-6, name="norm_out", **kw)(x).astype(jnp.float32)
        bins = c.n_fft // 2 + 1

        def head(name, bias):
            return nn.Dense(bins, dtype=jnp.float32, param_dtype=self.param_dtype, name=name,
                            kernel_init=partitioned(HEAD_INIT, ("embed", None)),
                            bias_init=partitioned(nn.initializers.constant(bias), (None,)))(x)

        magnitude = jnp.exp(jnp.minimum(head("magnitude", LOG_MAGNITUDE_INIT),
                                        MAX_LOG_MAGNITUDE))
        phase = head("phase", 0.0)
        spectrum = jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))
        frames = jnp.fft.irfft(spectrum, n=c.n_fft, axis=-1, norm="forward")
        start = 0 if state is None else jnp.asarray(state.get("frames", 0), jnp.int32)
        wav, tail = overlap_add(frames, self.hop, start,
                                None if state is None else state.get("tail"))
        if st.new is not None:
            st.new["tail"] = tail
            st.new["frames"] = start + x.shape[1]
        return wav.astype(self.dtype), st.new


class CodecTransformer(nn.Module):
    """Causal transformer x [B, T, D] -> [B, T, D]: LayerNorm (eps 1e-5), interleaved RoPE,
    attention window `context`, GELU MLP without biases, LayerScale (Mimi's).
    `(x, state=None) -> (y, state)`: state a dict streams, holding each layer's ring KV cache
    of `context` slots (`layers_{i}`; empty when missing), positions continuing the stream's."""
    spec: CodecTransformerSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, state: dict | None = None):
        t = self.spec
        new = None if state is None else {}
        for i in range(t.num_layers):
            block = anl.TransformerBlock(
                num_heads=t.num_heads, norm="layer", norm_eps=1e-5, rope_style="interleaved",
                rope_theta=t.rope_theta, causal=True, window=t.context, ffn="plain",
                ffn_hidden=t.ffn_hidden, activation="gelu", ffn_bias=False,
                layer_scale=t.layer_scale or None, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"layers_{i}")
            cache = None
            if state is not None:
                cache = state.get(f"layers_{i}")
                if cache is None:
                    cache = anl.TransformerBlock(num_heads=t.num_heads, parent=None).init_cache(
                        x.shape[0], t.context, x.shape[-1], self.dtype)
            x, cache, _ = block(x, cache=cache)
            if new is not None:
                new[f"layers_{i}"] = cache
        return x, new


class Downsample(nn.Module):
    """Learnt causal conv (kernel 2s, stride s, no bias): [B, T, D] -> [B, T / s, D]. The s
    frames of left padding repeat the first frame (Mimi's replicate padding), or are `left`
    [B, s, D] (the previous frames of a stream)."""
    stride: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, left: jax.Array | None = None) -> jax.Array:
        s = self.stride
        if left is None:
            left = jnp.repeat(x[:, :1], s, axis=1)
        x = jnp.concatenate([left.astype(x.dtype), x], axis=1)
        return nn.Conv(x.shape[-1], (2 * s,), strides=(s,), padding="VALID", use_bias=False,
                       dtype=self.dtype, param_dtype=self.param_dtype, name="conv",
                       kernel_init=partitioned(default_kernel_init,
                                               (None, "conv_in", "conv_out")))(x)


# ---------------------------------------------------------------------------------------------
# Residual vector quantizer


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def nearest(residual: jax.Array, codebook: jax.Array, normalized: bool = False) -> jax.Array:
    """Index of the nearest codebook row (Euclidean; of the L2-normalised vectors, i.e. the
    highest cosine, when `normalized`) of each vector: [..., d], [K, d] -> [...]."""
    r = residual.astype(jnp.float32)
    e = codebook.astype(jnp.float32)
    if normalized:
        r, e = _l2_normalize(r), _l2_normalize(e)
    dots = jnp.einsum("...d,kd->...k", r, e, precision=jax.lax.Precision.HIGHEST)
    dist = jnp.sum(r * r, axis=-1, keepdims=True) - 2.0 * dots + jnp.sum(e * e, axis=-1)
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


class ResidualVQ(nn.Module):
    """`levels` codebooks of `codebook_size` x `dimension` between projections width <-> d.

    Params `input_proj` [width, d], `output_proj` [d, width], and the codebooks: update "loss":
    `codebooks` [L, K, d] (trained); update "ema": the buffers `embedding_sum`
    [L, K, d], `cluster_usage` [L, K] and `initialized` [] (k-means done), learnt by
    `learn_codebooks`; the codebooks are embedding_sum / max(cluster_usage, CODEBOOK_EPS).
    """
    width: int
    dimension: int
    codebook_size: int
    levels: int
    normalized: bool = False  # cosine lookup (QuantizerSpec.normalized_lookup)
    update: str = "loss"  # QuantizerSpec.codebook_update
    param_dtype: Any = jnp.float32

    def setup(self):
        init = partitioned(default_kernel_init, ("embed", None))
        self.input_proj = self.param("input_proj", init, (self.width, self.dimension),
                                     self.param_dtype)
        self.output_proj = self.param(
            "output_proj", partitioned(default_kernel_init, (None, "embed")),
            (self.dimension, self.width), self.param_dtype)
        shape = (self.levels, self.codebook_size, self.dimension)
        normal = partitioned(nn.initializers.normal(1.0), ("codebooks", None, None))
        if self.update == "ema":
            # Usage 1 everywhere: the initial codebooks are the random embedding_sum rows.
            self.embedding_sum = self.param("embedding_sum", normal, shape, jnp.float32)
            self.cluster_usage = self.param(
                "cluster_usage", partitioned(nn.initializers.ones, ("codebooks", None)),
                shape[:2], jnp.float32)
            self.initialized = self.param(
                "initialized", partitioned(nn.initializers.zeros, ()), (), jnp.float32)
        else:
            self.codebooks = self.param("codebooks", normal, shape, self.param_dtype)

    def books(self) -> jax.Array:
        """The codebooks [L, K, d] float32 (EMA ones carry no gradient: buffers)."""
        if self.update == "ema":
            return jax.lax.stop_gradient(ema_codebooks(self.embedding_sum, self.cluster_usage))
        return self.codebooks.astype(jnp.float32)

    def _project_in(self, x):
        return jnp.einsum("btc,cd->btd", x.astype(jnp.float32),
                          self.input_proj.astype(jnp.float32))

    def _project_out(self, q):
        return jnp.einsum("btd,dc->btc", q, self.output_proj.astype(jnp.float32))

    def encode(self, x: jax.Array, levels: int) -> jax.Array:
        """x [B, T, width] -> codes [B, levels, T] (int32)."""
        r = self._project_in(x)
        books = self.books()
        codes = []
        for level in range(levels):
            idx = nearest(r, books[level], self.normalized)
            r = r - jnp.take(books[level], idx, axis=0)
            codes.append(idx)
        return jnp.stack(codes, axis=1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes [B, n, T] (n <= levels) -> [B, T, width]."""
        books = self.books()
        q = 0.0
        for level in range(codes.shape[1]):
            q = q + jnp.take(books[level], codes[:, level], axis=0)
        return self._project_out(q)

    def __call__(self, x: jax.Array, active: jax.Array) -> dict[str, jax.Array]:
        """Training forward: x [B, T, width], `active` levels (int scalar, may be traced).

        Returns quantized [B, T, width] (straight-through), codes [B, L, T], commit and
        codebook [B, T, L] (mean squared error per frame and level; zero for inactive levels).
        """
        z = self._project_in(x)
        r = z
        q = jnp.zeros_like(z)
        codes, commit, codebook = [], [], []
        books = self.books()
        for level in range(self.levels):
            book = books[level]
            idx = nearest(jax.lax.stop_gradient(r), book, self.normalized)
            e = jnp.take(book, idx, axis=0)
            on = (level < active).astype(jnp.float32)
            commit.append(on * jnp.mean(jnp.square(r - jax.lax.stop_gradient(e)), axis=-1))
            codebook.append(on * jnp.mean(jnp.square(jax.lax.stop_gradient(r) - e), axis=-1))
            q = q + on * jax.lax.stop_gradient(e)
            r = r - jax.lax.stop_gradient(e)
            codes.append(idx)
        q = z + jax.lax.stop_gradient(q - z)  # straight-through to the encoder
        return {"quantized": self._project_out(q), "codes": jnp.stack(codes, axis=1),
                "commit": jnp.stack(commit, axis=-1), "codebook": jnp.stack(codebook, axis=-1)}


class Quantizer(nn.Module):
    """Plain RVQ (`rvq`) or Mimi's split RVQ (`semantic` + `acoustic` on the same latent)."""
    spec: QuantizerSpec
    width: int
    param_dtype: Any = jnp.float32

    def setup(self):
        q = self.spec
        kw = dict(width=self.width, dimension=q.dimension, codebook_size=q.codebook_size,
                  normalized=q.normalized_lookup, update=q.codebook_update,
                  param_dtype=self.param_dtype)
        if q.num_semantic:
            self.semantic = ResidualVQ(levels=q.num_semantic, **kw)
            self.acoustic = ResidualVQ(levels=q.num_codebooks - q.num_semantic, **kw)
        else:
            self.rvq = ResidualVQ(levels=q.num_codebooks, **kw)

    def encode(self, x: jax.Array, n: int) -> jax.Array:
        s = self.spec.num_semantic
        if not s:
            return self.rvq.encode(x, n)
        codes = self.semantic.encode(x, s)
        if n > s:
            codes = jnp.concatenate([codes, self.acoustic.encode(x, n - s)], axis=1)
        return codes

    def decode(self, codes: jax.Array) -> jax.Array:
        s = self.spec.num_semantic
        if not s:
            return self.rvq.decode(codes)
        out = self.semantic.decode(codes[:, :s])
        if codes.shape[1] > s:
            out = out + self.acoustic.decode(codes[:, s:])
        return out

    def __call__(self, x: jax.Array, active: jax.Array) -> dict[str, jax.Array]:
        s = self.spec.num_semantic
        if not s:
            return self.rvq(x, active)
        first = self.semantic(x, jnp.asarray(s))  # the semantic level is never dropped
        rest = self.acoustic(x, active - s)
        return {"quantized": first["quantized"] + rest["quantized"],
                "codes": jnp.concatenate([first["codes"], rest["codes"]], axis=1),
                "commit": jnp.concatenate([first["commit"], rest["commit"]], axis=-1),
                "codebook": jnp.concatenate([first["codebook"], rest["codebook"]], axis=-1)}


# ---------------------------------------------------------------------------------------------
# Codebook learning of update "ema" (buffers, written by the train step's buffer hook)

CODEBOOK_EPS = 1e-5  # floor on cluster_usage (Mimi's EuclideanCodebook epsilon)


def ema_codebooks(embedding_sum: jax.Array, cluster_usage: jax.Array) -> jax.Array:
    """Codebooks from the EMA statistics: [..., K, d] / max([..., K], eps) -> [..., K, d]."""
    return (embedding_sum.astype(jnp.float32)
            / jnp.maximum(cluster_usage.astype(jnp.float32), CODEBOOK_EPS)[..., None])


def _sample_rows(key: jax.Array, x: jax.Array, weight: jax.Array, n: int) -> jax.Array:
    """n rows of x [N, d] drawn uniformly with replacement among the rows of weight > 0."""
    idx = jax.random.categorical(key, jnp.where(weight > 0, 0.0, -jnp.inf), shape=(n,))
    return jnp.take(x, idx, axis=0)


def _assign(r: jax.Array, book: jax.Array, weight: jax.Array, normalized: bool):
    """Nearest entries of r [N, d] in book [K, d] -> (idx [N], counts [K], sums [K, d]), rows
    weighted by `weight` [N] (0 for padding frames)."""
    idx = nearest(r, book, normalized)
    onehot = jax.nn.one_hot(idx, book.shape[0], dtype=jnp.float32) * weight[:, None]
    sums = jnp.einsum("nk,nd->kd", onehot, r, precision=jax.lax.Precision.HIGHEST)
    return idx, jnp.sum(onehot, axis=0), sums


def kmeans(r: jax.Array, weight: jax.Array, k: int, iters: int, key: jax.Array,
           normalized: bool = False) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means of the rows of r [N, d] with weight > 0: k means drawn from the rows, then
    `iters` iterations (an empty cluster takes a fresh random row, as moshi's `_run_kmeans`).
    Returns EMA statistics (embedding_sum [k, d], cluster_usage [k]): usage = the final
    cluster sizes floored at 1, embedding_sum = means * usage (so the codebook is the means)."""
    means = _sample_rows(jax.random.fold_in(key, 0), r, weight, k)

    def step(i, means):
        _, counts, sums = _assign(r, means, weight, normalized)
        fresh = _sample_rows(jax.random.fold_in(key, i + 1), r, weight, k)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], fresh)

    means = jax.lax.fori_loop(0, iters, step, means)
    _, counts, _ = _assign(r, means, weight, normalized)
    usage = jnp.maximum(counts, 1.0)
    return means * usage[:, None], usage


def learn_codebooks(spec: QuantizerSpec, rvq: Any, z: jax.Array, weight: jax.Array,
                    rng: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """One training step of a ResidualVQ's EMA buffers (`rvq`: its params) on z [N, d] (the
    projected latent of the batch's frames, weight [N] 1 for valid frames, 0 for padding).

    1. k-means init (`kmeans_init`, while `initialized` is 0): level by level, `kmeans` on the
       residual left by the levels before (already initialised).
    2. Per level l, on the residual r_l of the batch under the current codebooks (as in the
       forward): cluster_usage <- decay * usage + (1 - decay) * counts, embedding_sum <- decay *
       sum + (1 - decay) * (sum of the rows assigned to each entry).
    3. Dead codes (`dead_code_threshold` > 0): entries whose new usage is below threshold x
       mean usage take a random row of r_l as codebook vector, with the mean usage.
    All levels learn every step, whatever quantizer dropout decoded. A batch without valid frames
    leaves everything unchanged. Returns ({embedding_sum, cluster_usage, initialized}, number of
    dead codes restarted).
    """
    k, decay = spec.codebook_size, float(spec.ema_decay)
    emb = rvq["embedding_sum"].astype(jnp.float32)
    usage = rvq["cluster_usage"].astype(jnp.float32)
    z = jax.lax.stop_gradient(z.astype(jnp.float32))
    weight = weight.astype(jnp.float32)
    has_data = jnp.sum(weight) > 0
    init_key, dead_key = jax.random.split(rng)
    levels = usage.shape[0]
    if spec.kmeans_init:
        def initialise(_):
            r, sums, uses = z, [], []
            for level in range(levels):
                s, u = kmeans(r, weight, k, int(spec.kmeans_iters),
                              jax.random.fold_in(init_key, level), spec.normalized_lookup)
                book = s / u[:, None]
                r = r - jnp.take(book, nearest(r, book, spec.normalized_lookup), axis=0)
                sums.append(s)
                uses.append(u)
            return jnp.stack(sums), jnp.stack(uses)

        done = (rvq["initialized"] > 0) | ~has_data
        emb, usage = jax.lax.cond(done, lambda _: (emb, usage), initialise, None)
    r = z
    new_emb, new_usage, dead_total = [], [], jnp.zeros((), jnp.int32)
    for level in range(levels):
        book = ema_codebooks(emb[level], usage[level])
        idx, counts, sums = _assign(r, book, weight, spec.normalized_lookup)
        u = decay * usage[level] + (1.0 - decay) * counts
        e = decay * emb[level] + (1.0 - decay) * sums
        if spec.dead_code_threshold > 0:
            mean = jnp.sum(u) / k
            dead = u < float(spec.dead_code_threshold) * mean
            fresh = _sample_rows(jax.random.fold_in(dead_key, level), r, weight, k)
            e = jnp.where(dead[:, None], mean * fresh, e)
            u = jnp.where(dead, mean, u)
            dead_total = dead_total + jnp.sum(dead.astype(jnp.int32))
        r = r - jnp.take(book, idx, axis=0)
        new_emb.append(e)
        new_usage.append(u)
    keep = lambda new, old: jnp.where(has_data, new, old).astype(old.dtype)
    out = {"embedding_sum": keep(jnp.stack(new_emb), rvq["embedding_sum"]),
           "cluster_usage": keep(jnp.stack(new_usage), rvq["cluster_usage"]),
           "initialized": keep(jnp.ones((), jnp.float32), rvq["initialized"])}
    return out, jnp.where(has_data, dead_total, 0)


def learn_quantizer(spec: CodecSpec, params: Any, latent: jax.Array, frame_mask: jax.Array,
                    rng: jax.Array) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """The quantizer's new EMA buffers after one training batch (update "ema").

    params: the codec params the batch was encoded with; latent [B, T, D]: the unquantized
    latent (`Codec.__call__`'s "latent"); frame_mask [B, T]: valid frames. Returns
    ({"quantizer": {group: {embedding_sum, cluster_usage, initialized}}} (only the buffer leaves,
    group "rvq" or "semantic" / "acoustic"), {"dead_codes": entries restarted, all levels}).
    """
    q = spec.quantizer
    if q.codebook_update != "ema":
        raise ValueError(f"learn_quantizer: model.quantizer.codebook_update="
                         f"{q.codebook_update!r} has no buffers "
                         f"(only 'ema' does)")
    x = latent.astype(jnp.float32).reshape(-1, latent.shape[-1])
    weight = frame_mask.astype(jnp.float32).reshape(-1)
    groups = ("semantic", "acoustic") if q.num_semantic else ("rvq",)
    out, dead = {}, jnp.zeros((), jnp.int32)
    for i, group in enumerate(groups):
        rvq = params["quantizer"][group]
        z = jnp.einsum("nc,cd->nd", x, rvq["input_proj"].astype(jnp.float32))
        out[group], n = learn_codebooks(q, rvq, z, weight, jax.random.fold_in(rng, i))
        dead = dead + n
    return {"quantizer": out}, {"dead_codes": dead.astype(jnp.float32)}


# ---------------------------------------------------------------------------------------------
# The codec


class Codec(nn.Module):
    """Methods (use with `module.apply({"params": p}, ..., method=...)`):

      encode(wav [B, S], num_codebooks=None) -> codes [B, n, ceil(S / hop)] int32
      decode(codes [B, n, T]) -> wav [B, T * hop]   (n >= num_semantic: any prefix decodes)
      __call__(wav [B, S], active=None) -> {"audio" [B, S], "codes" [B, N, T], "commit",
        "codebook" [B, T, N], "latent" [B, T, D]}: training forward, `active` codebooks
        (quantizer dropout; default all).
      encode_step(wav [B, n * hop], state, num_codebooks) -> (codes [B, k, n], state)
      decode_step(codes [B, k, n], state) -> (wav [B, n * hop], state)   (not "code2wav")
        streaming, state from `init_stream` (module level: the jitted entry points).
    """
    spec: CodecSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        c = self.spec
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = c.seanet.dimension
        self.encoder = SEANetEncoder(c.seanet, **kw)
        if c.transformer.num_layers:
            self.encoder_transformer = CodecTransformer(c.transformer, **kw)
        if c.downsample_stride > 1:
            self.downsample = Downsample(c.downsample_stride, **kw)
        if c.decoder == "code2wav":  # Code2Wav replaces upsampler, transformer and SEANet
            self.code2wav = code2wav_lib.Code2Wav(c.code2wav, **kw)
        else:
            if c.decoder == "istft":  # replaces the SEANet decoder only
                self.istft_decoder = ISTFTDecoder(c.istft, math.prod(c.seanet.ratios), **kw)
            else:
                self.decoder = SEANetDecoder(c.seanet, **kw)
            if c.transformer.num_layers:
                self.decoder_transformer = CodecTransformer(c.transformer, **kw)
            if c.downsample_stride > 1:
                s = c.downsample_stride
                # depthwise, as Mimi's (its `upsample_channel_wise_bug`)
                self.upsample = anl.CausalConvTranspose1d(width, 2 * s, s, groups=width,
                                                          use_bias=False, **kw)
        self.quantizer = Quantizer(c.quantizer, width, param_dtype=self.param_dtype)
        if c.discriminator.n_ffts:  # adversarial training only: no params otherwise
            self.discriminator = MultiScaleSTFTDiscriminator(c.discriminator, **kw)

    def _check_wav(self, wav: Any) -> None:
        if np.ndim(wav) != 2 or np.shape(wav)[1] < 1:
            raise ValueError(f"Codec: wav shape {np.shape(wav)} must be [B, S] with S >= 1 "
                             f"(mono samples at {self.spec.sample_rate} Hz)")

    def latent(self, wav: jax.Array) -> jax.Array:
        """Unquantized latent at the frame rate: [B, S] -> [B, ceil(S / hop), D]."""
        self._check_wav(wav)
        hop = hop_length(self.spec)
        pad = -wav.shape[1] % hop
        x = jnp.pad(wav.astype(self.dtype), ((0, 0), (0, pad)))
        x, _ = self.encoder(x)
        if self.spec.transformer.num_layers:
            x, _ = self.encoder_transformer(x)
        if self.spec.downsample_stride > 1:
            x = self.downsample(x)
        return x

    def synthesize(self, latent: jax.Array) -> jax.Array:
        """Decoder from a (quantized) latent [B, T, D] -> wav [B, T * hop]. Code2Wav's trimmed
        transposed convs never produce the first start_trim samples of the frame grid: they
        are zeros (its sample n is sample n + start_trim of the grid)."""
        x = latent.astype(self.dtype)
        if self.spec.decoder == "code2wav":
            wav = self.code2wav(embeddings=x)
            return jnp.pad(wav, ((0, 0), (code2wav_lib.start_trim(self.spec.code2wav), 0)))
        if self.spec.downsample_stride > 1:
            x = self.upsample(x)
        if self.spec.transformer.num_layers:
            x, _ = self.decoder_transformer(x)
        return self._waveform_decoder()[0](x)[0]

    def _waveform_decoder(self) -> tuple[Any, str]:
        """(module, param subtree name) of the last decoder stage, SEANet or iSTFT: the
        latent at the encoder rate [B, T', D] -> wav [B, T' * prod(seanet.ratios)]."""
        if self.spec.decoder == "istft":
            return self.istft_decoder, "istft_decoder"
        return self.decoder, "decoder"

    def encode(self, wav: jax.Array, num_codebooks: int | None = None) -> jax.Array:
        q = self.spec.quantizer
        n = q.num_codebooks if num_codebooks is None else int(num_codebooks)
        if not max(q.num_semantic, 1) <= n <= q.num_codebooks:
            raise ValueError(f"Codec.encode: num_codebooks={n} must be in "
                             f"[{max(q.num_semantic, 1)}, {q.num_codebooks}]")
        return self.quantizer.encode(self.latent(wav), n)

    def decode(self, codes: jax.Array) -> jax.Array:
        check_codes(codes, self.spec)
        return self.synthesize(self.quantizer.decode(jnp.asarray(codes, jnp.int32)))

    def encode_step(self, wav: jax.Array, state: dict, num_codebooks: int):
        """The next whole frames of a stream: wav [B, n * hop], state (`init_stream`'s
        "encode": {"frames", "encoder", "encoder_transformer", "downsample"}) -> (codes
        [B, num_codebooks, n], state). The causal convs continue from their kept input frames,
        the transformer from its KV window, the downsampler from its last `stride` frames (the
        first frame repeated at the start, as offline)."""
        hop = hop_length(self.spec)
        if np.ndim(wav) != 2 or np.shape(wav)[1] < hop or np.shape(wav)[1] % hop:
            raise ValueError(f"Codec.encode_step: wav shape {np.shape(wav)} must be [B, n * "
                             f"{hop}] (whole frames of hop_length={hop}, n >= 1)")
        frames = jnp.asarray(state.get("frames", 0), jnp.int32)
        new = {"frames": frames + wav.shape[1] // hop}
        x, new["encoder"] = self.encoder(wav.astype(self.dtype), state.get("encoder", {}))
        if self.spec.transformer.num_layers:
            x, new["encoder_transformer"] = self.encoder_transformer(
                x, state.get("encoder_transformer", {}))
        if self.spec.downsample_stride > 1:
            s = self.spec.downsample_stride
            first = jnp.repeat(x[:, :1], s, axis=1)
            left = jnp.where(frames == 0, first, state.get("downsample", first))
            new["downsample"] = x[:, -s:]  # chunks are whole frames: >= s encoder frames
            x = self.downsample(x, left)
        return self.quantizer.encode(x, num_codebooks), new

    def decode_step(self, codes: jax.Array, state: dict):
        """The next frames of a stream (decoder "seanet" or "istft"): codes [B, k, n], state
        (`init_stream`'s "decode": {"frames", "upsample", "decoder_transformer", "decoder" or
        "istft_decoder"}) -> (wav [B, n * hop], state)."""
        if self.spec.decoder == "code2wav":
            raise ValueError(f"Codec.decode_step: model.decoder={self.spec.decoder!r}; this "
                             "method streams the SEANet and iSTFT decoders (module-level "
                             "`decode_step` streams all three)")
        check_codes(codes, self.spec)
        st = Stream(state)
        x = self.quantizer.decode(jnp.asarray(codes, jnp.int32)).astype(self.dtype)
        if self.spec.downsample_stride > 1:
            x = st.layer(self.upsample, x, "upsample", 1, self.spec.downsample_stride)
        if self.spec.transformer.num_layers:
            x = st.module(self.decoder_transformer, x, "decoder_transformer")
        decoder, name = self._waveform_decoder()
        wav = st.module(decoder, x, name)
        st.new["frames"] = jnp.asarray(state.get("frames", 0), jnp.int32) + codes.shape[2]
        return wav, st.new

    def __call__(self, wav: jax.Array, active: Any = None) -> dict[str, jax.Array]:
        q = self.spec.quantizer
        active = jnp.asarray(q.num_codebooks if active is None else active, jnp.int32)
        z = self.latent(wav)
        out = self.quantizer(z, active)
        audio = self.synthesize(out["quantized"])[:, :wav.shape[1]]
        return {"audio": audio.astype(jnp.float32), "codes": out["codes"],
                "commit": out["commit"], "codebook": out["codebook"], "latent": z}

    def discriminate(self, wav: jax.Array) -> list[tuple[jax.Array, tuple[jax.Array, ...]]]:
        """Multi-scale STFT discriminator (`model.discriminator`): wav [B, S] -> per scale
        (logits [B, T_k, F_k], feature maps [B, T_k, F_ki, filters])."""
        if not self.spec.discriminator.n_ffts:
            raise ValueError("Codec.discriminate: model.discriminator.n_ffts is empty (no "
                             "discriminator); set it to train adversarially")
        self._check_wav(wav)
        return self.discriminator(wav)


def check_codes(codes: Any, spec: CodecSpec) -> None:
    """codes: ints [B, n, T] with num_semantic <= n <= num_codebooks (n >= 1), T >= 1, ids in
    [0, codebook_size) (checked on concrete arrays)."""
    q = spec.quantizer
    shape = tuple(np.shape(codes))
    lo = max(q.num_semantic, 1)
    if len(shape) != 3 or not lo <= shape[1] <= q.num_codebooks or shape[2] < 1:
        raise ValueError(f"codes: shape {shape} must be [B, n, T>=1] with n in "
                         f"[{lo}, num_codebooks={q.num_codebooks}]")
    dtype = codes.dtype if hasattr(codes, "dtype") else np.asarray(codes).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"codes: dtype {dtype} must be an integer type")
    if not isinstance(codes, jax.core.Tracer):
        arr = np.asarray(codes)
        if arr.min() < 0 or arr.max() >= q.codebook_size:
            raise ValueError(f"codes: ids must be in [0, codebook_size={q.codebook_size}); got "
                             f"min {arr.min()}, max {arr.max()}")


# ---------------------------------------------------------------------------------------------
# Compiled entry points (the module is static: one executable per module and shape)


def _encode_impl(module: Codec, params: Any, wav: jax.Array, n: int) -> jax.Array:
    return module.apply({"params": params}, wav, n, method=Codec.encode)


def _decode_impl(module: Codec, params: Any, codes: jax.Array) -> jax.Array:
    return module.apply({"params": params}, codes, method=Codec.decode)


_encode_jit = jax.jit(_encode_impl, static_argnums=(0, 3))
_decode_jit = jax.jit(_decode_impl, static_argnums=0)
# A few calls per shape (tests, evaluation of a handful of utterances): compile time dominates.
_encode_fast = fast_jit(_encode_impl, static_argnums=(0, 3))
_decode_fast = fast_jit(_decode_impl, static_argnums=0)


def encode(module: Codec, params: Any, wav: Any, num_codebooks: int | None = None,
           fast_compile: bool = False) -> jax.Array:
    """Jitted `Codec.encode`: wav [B, S] -> codes [B, n, ceil(S / hop)] (n default all)."""
    n = module.spec.quantizer.num_codebooks if num_codebooks is None else int(num_codebooks)
    lo = max(module.spec.quantizer.num_semantic, 1)
    if not lo <= n <= module.spec.quantizer.num_codebooks:
        raise ValueError(f"encode: num_codebooks={n} must be in "
                         f"[{lo}, {module.spec.quantizer.num_codebooks}]")
    if np.ndim(wav) != 2 or np.shape(wav)[1] < 1:
        raise ValueError(f"encode: wav shape {np.shape(wav)} must be [B, S] with S >= 1")
    fn = _encode_fast if fast_compile else _encode_jit
    return fn(module, params, jnp.asarray(wav, jnp.float32), n)


def decode(module: Codec, params: Any, codes: Any, fast_compile: bool = False) -> jax.Array:
    """Jitted `Codec.decode`: codes [B, n, T] -> wav [B, T * hop] (codes checked on the host)."""
    check_codes(codes, module.spec)
    fn = _decode_fast if fast_compile else _decode_jit
    return fn(module, params, jnp.asarray(codes, jnp.int32))


# ---------------------------------------------------------------------------------------------
# Streaming: encode audio and decode codes a few frames at a time, equal to offline


def _encode_step_impl(module: Codec, params: Any, state: dict, wav: jax.Array, n: int):
    codes, state = module.apply({"params": params}, wav, state, n, method=Codec.encode_step)
    return state, codes


def _decode_step_impl(module: Codec, params: Any, state: dict, codes: jax.Array):
    wav, state = module.apply({"params": params}, codes, state, method=Codec.decode_step)
    return state, wav


def _synthesize_impl(module: Codec, params: Any, codes: jax.Array, context: jax.Array):
    latent = module.apply({"params": params}, codes, method=lambda m, c: m.quantizer.decode(c))
    latent = jnp.concatenate([context, latent], axis=1)
    return latent, module.apply({"params": params}, latent, method=Codec.synthesize)


_encode_step_jit = jax.jit(_encode_step_impl, static_argnums=(0, 4))
_decode_step_jit = jax.jit(_decode_step_impl, static_argnums=0)
_synthesize_jit = jax.jit(_synthesize_impl, static_argnums=0)
# Short streams (tests): compile time dominates.
_encode_step_fast = fast_jit(_encode_step_impl, static_argnums=(0, 4))
_decode_step_fast = fast_jit(_decode_step_impl, static_argnums=0)
_synthesize_fast = fast_jit(_synthesize_impl, static_argnums=0)


def _fresh(shapes: Any) -> Any:
    """A stream's initial state of the shapes `shapes`: zeros (frame counters, the causal
    convs' zero padding, empty KV caches), except the caches' slot positions: -1 (empty, as
    `Attention.init_cache`)."""
    def leaf(path, x):
        fill = -1 if getattr(path[-1], "key", None) == "pos" else 0
        return jnp.full(x.shape, fill, x.dtype)
    return jax.tree_util.tree_map_with_path(leaf, shapes)


def init_stream(module: Codec, batch: int) -> dict[str, Any]:
    """Empty streaming state of `batch` streams: {"encode": ..., "decode": ...}, the state of
    `encode_step` and of `decode_step` (each reads and returns its own part).

    Seanet and istft decoders: both parts are fixed-shape pytrees (one compile per chunk size).
    Code2Wav decoder ("decode" {"frames", "context"}): its decode step re-decodes the last
    `code2wav.receptive_field` frames of quantized latent beside the new ones, as
    `code2wav.stream_step` does with codes; shapes vary while that context fills.
    """
    spec = module.spec
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"init_stream: batch={batch!r} must be a positive int")
    params = jax.eval_shape(lambda r: init_params(spec, r), jax.random.PRNGKey(0))
    hop, n = hop_length(spec), spec.quantizer.num_codebooks
    wav = jax.ShapeDtypeStruct((batch, hop), jnp.float32)
    encode = _fresh(jax.eval_shape(
        lambda p, w: _encode_step_impl(module, p, {}, w, n)[0], params, wav))
    if spec.decoder == "code2wav":
        decode = {"frames": 0, "context": jnp.zeros((batch, 0, spec.seanet.dimension),
                                                    module.dtype)}
    else:
        codes = jax.ShapeDtypeStruct((batch, n, 1), jnp.int32)
        decode = _fresh(jax.eval_shape(
            lambda p, c: _decode_step_impl(module, p, {}, c)[0], params, codes))
    return {"encode": encode, "decode": decode}


def _stream_batch(state: dict, part: str) -> int:
    """B of a stream: every buffer of the state's `part` is [B, ...]."""
    return int(next(x for x in jax.tree_util.tree_leaves(state[part]) if np.ndim(x)).shape[0])


def encode_step(module: Codec, params: Any, state: dict, wav: Any,
                num_codebooks: int | None = None,
                fast_compile: bool = False) -> tuple[dict, jax.Array]:
    """Encodes the next audio of a stream: wav [B, n * hop] (whole frames: pad the last chunk
    with zeros, as `encode` pads) -> (state, codes [B, num_codebooks, n]). The codes of the
    chunks, concatenated, equal `encode` of the whole audio."""
    q = module.spec.quantizer
    k = q.num_codebooks if num_codebooks is None else int(num_codebooks)
    if not max(q.num_semantic, 1) <= k <= q.num_codebooks:
        raise ValueError(f"encode_step: num_codebooks={k} must be in "
                         f"[{max(q.num_semantic, 1)}, {q.num_codebooks}]")
    hop = hop_length(module.spec)
    batch = _stream_batch(state, "encode")
    if np.ndim(wav) != 2 or np.shape(wav)[0] != batch or np.shape(wav)[1] < hop \
            or np.shape(wav)[1] % hop:
        raise ValueError(f"encode_step: wav shape {np.shape(wav)} must be [B={batch}, n * "
                         f"{hop}] (whole frames of hop_length={hop}, n >= 1)")
    fn = _encode_step_fast if fast_compile else _encode_step_jit
    encode, codes = fn(module, params, state["encode"], jnp.asarray(wav, jnp.float32), k)
    return {**state, "encode": encode}, codes


def decode_step(module: Codec, params: Any, state: dict, codes: Any,
                fast_compile: bool = False) -> tuple[dict, jax.Array]:
    """Decodes the next frames of a stream: codes [B, k, n] (any valid k per call) -> (state,
    wav [B, n * hop]). The chunks, concatenated, equal `decode` of all the codes (within
    float rounding; Code2Wav: exactly its receptive field of context, as `chunked_decode`)."""
    spec = module.spec
    check_codes(codes, spec)
    batch = _stream_batch(state, "decode")
    if np.shape(codes)[0] != batch:
        raise ValueError(f"decode_step: codes shape {tuple(np.shape(codes))} must have "
                         f"B={batch} (the stream's batch)")
    codes = jnp.asarray(codes, jnp.int32)
    if spec.decoder == "code2wav":
        part = state["decode"]
        context = part["context"]
        fn = _synthesize_fast if fast_compile else _synthesize_jit
        latent, wav = fn(module, params, codes, context)
        keep = code2wav_lib.receptive_field(spec.code2wav)
        decode = {"frames": part["frames"] + codes.shape[2], "context": latent[:, -keep:]}
        return {**state, "decode": decode}, wav[:, context.shape[1] * hop_length(spec):]
    fn = _decode_step_fast if fast_compile else _decode_step_jit
    decode, wav = fn(module, params, state["decode"], codes)
    return {**state, "decode": decode}, wav


# ---------------------------------------------------------------------------------------------
# The family contract


def build(model_config: Any, dtype: Any = jnp.float32) -> Codec:
    """The Codec module of `config.model` (or a CodecSpec)."""
    return Codec(spec_of(model_config), dtype=dtype)


def _init_wav(spec: CodecSpec) -> jax.Array:
    return jnp.zeros((1, 2 * hop_length(spec)), jnp.float32)


def _init_all(module: Codec, wav: jax.Array) -> None:
    module(wav)
    if module.spec.discriminator.n_ffts:
        module.discriminate(wav)


def _init_variables(spec: CodecSpec, rng: jax.Array) -> Any:
    """Boxed variables of one `init` call covering the codec and (when enabled) the
    discriminator, so the logical axis names of both are read from one tree."""
    return Codec(spec).init(rng, _init_wav(spec), method=_init_all)


def init_params(model_config: Any, rng: jax.Array) -> Any:
    """Plain random params (use under jax.eval_shape for shapes)."""
    spec = spec_of(model_config)
    init = lambda r: flax.core.meta.unbox(_init_variables(spec, r)["params"])
    if isinstance(rng, jax.core.Tracer):  # traced by the caller (sharded init under jit)
        return init(rng)
    # A run-once graph: compiled without backend optimisation (~10x faster to compile here).
    return fast_jit(init)(rng)


def describe_params(model_config: Any) -> dict[str, dict[str, int]]:
    """{"encoder", "quantizer", "decoder"} parameter counts via eval_shape (nothing allocated),
    plus "discriminator" when `model.discriminator` has scales; the codebooks (`codebooks`, or
    the EMA `embedding_sum` that stands for them) count as the quantizer's embedding; the other
    EMA buffers (usage, init flag) are statistics, not counted (as Mimi's parameter count)."""
    spec = spec_of(model_config)
    shapes = jax.eval_shape(
        lambda r: flax.core.meta.unbox(_init_variables(spec, r)["params"]),
        jax.random.PRNGKey(0))
    side = {"encoder": ("encoder", "encoder_transformer", "downsample"),
            "quantizer": ("quantizer",),
            "decoder": ("upsample", "decoder_transformer", "decoder", "code2wav",
                        "istft_decoder")}
    if spec.discriminator.n_ffts:
        side["discriminator"] = ("discriminator",)
    counted = _drop_leaves(shapes, ("cluster_usage", "initialized"))
    is_emb = lambda path: path[-1] in ("codebooks", "embedding_sum")
    return {k: config_lib.count_params({n: counted[n] for n in names if n in counted},
                                       embedding=is_emb) for k, names in side.items()}


def _drop_leaves(tree: Any, names: tuple[str, ...]) -> Any:
    if not hasattr(tree, "keys"):
        return tree
    return {k: _drop_leaves(v, names) for k, v in tree.items() if k not in names}


def example_batch(model_config: Any, batch_size: int, rng: np.random.Generator,
                  frames: int = 8) -> dict[str, np.ndarray]:
    """Learnable audio: audio [B, frames * hop] float32, a sum of 1-3 sinusoids (80 Hz to a
    quarter of the sample rate, amplitudes 0.05-0.3) per row, and audio_mask [B, S] with random
    right padding (at least half of each row real)."""
    spec = spec_of(model_config)
    n = frames * hop_length(spec)
    t = np.arange(n) / spec.sample_rate
    audio = np.zeros((batch_size, n), np.float32)
    for b in range(batch_size):
        for _ in range(int(rng.integers(1, 4))):
            f = rng.uniform(80.0, spec.sample_rate / 4)
            audio[b] += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    lengths = rng.integers((n + 1) // 2, n + 1, (batch_size,))
    mask = np.arange(n)[None, :] < lengths[:, None]
    return {"audio": audio * mask, "audio_mask": mask}


def _check_ints(config: Any, path: str) -> tuple[int, ...]:
    value = get_path(config, path)
    require(isinstance(value, (list, tuple)) and len(value) >= 1, path, value,
            "must be a non-empty list of positive ints")
    for i, item in enumerate(value):
        require(isinstance(item, int) and not isinstance(item, bool) and item >= 1,
                f"{path}[{i}]", item, "must be a positive int")
    return tuple(value)


DECODERS = ("seanet", "code2wav", "istft")


def istft_rules(config: Any) -> None:
    """The `model.istft` section of decoder "istft": positive sizes, n_fft a multiple of the
    encoder hop prod(model.seanet.ratios) (the frames' rate)."""
    c = "model.istft"
    section = get_path(config, c)
    require(hasattr(section, "keys"), c, section,
            "must be an ISTFTSpec section (audiolm.presets.codec.ISTFT_DECODERS) when "
            "model.decoder='istft'")
    check_schema(config, c, config_lib.spec_schema(ISTFTSpec))
    for key in ("width", "num_blocks", "kernel", "mlp_ratio"):
        check_int(config, f"{c}.{key}", lo=1)
    hop = math.prod(config.model.seanet.ratios)
    n_fft = check_int(config, f"{c}.n_fft", lo=1)
    require(n_fft % hop == 0, f"{c}.n_fft", n_fft,
            f"must be a multiple of the encoder hop prod(model.seanet.ratios="
            f"{tuple(config.model.seanet.ratios)}) = {hop} (one STFT frame per encoder frame)")


def decoder_rules(config: Any) -> None:
    """model.decoder and its section: for "istft" `istft_rules`; for "code2wav" the
    `model.code2wav` section: a valid Code2Wav whose hidden_size is the latent width, whose
    total upsampling is the codec's hop and whose codebooks and sample rate are the codec's."""
    decoder = config_lib.check_choice(config, "model.decoder", DECODERS)
    section = get_path(config, "model.code2wav")
    if decoder == "istft":
        istft_rules(config)
    if decoder != "code2wav":
        return
    c = "model.code2wav"
    require(hasattr(section, "keys"), c, section,
            "must be a Code2Wav section (audiolm.presets.codec.CODE2WAV_DECODERS) when "
            "model.decoder='code2wav'")
    code2wav_lib.validate_code2wav(config, c)
    m = config.model
    hop = math.prod(m.seanet.ratios) * m.downsample_stride
    up = code2wav_lib.total_upsampling(m.code2wav)
    require(up == hop, f"{c}.upsample_rates", tuple(m.code2wav.upsample_rates),
            f"total upsampling prod({c}.upsampling_ratios={tuple(m.code2wav.upsampling_ratios)})"
            f" * prod(upsample_rates) = {up} must equal the codec hop prod(model.seanet.ratios) "
            f"* model.downsample_stride = {hop}")
    for key, path in (("hidden_size", "model.seanet.dimension"),
                      ("num_codebooks", "model.quantizer.num_codebooks"),
                      ("codebook_size", "model.quantizer.codebook_size"),
                      ("sample_rate", "model.sample_rate")):
        require(get_path(config, f"{c}.{key}") == get_path(config, path), f"{c}.{key}",
                get_path(config, f"{c}.{key}"),
                f"must equal {path}={get_path(config, path)!r}")


def rules(config: Any) -> None:
    """Every field of config.model for family codec (ConfigError naming the dotted path)."""
    require(hasattr(config.model, "keys"), "model", config.model, "must be a section")
    check_schema(config, "model", config_lib.spec_schema(CodecSpec))
    check_int(config, "model.sample_rate", lo=1)
    s = "model.seanet"
    dim = check_int(config, f"{s}.dimension", lo=1)
    filters = check_int(config, f"{s}.n_filters", lo=1)
    _check_ints(config, f"{s}.ratios")
    check_int(config, f"{s}.n_residual_layers", lo=0)
    for key in ("kernel_size", "last_kernel_size", "residual_kernel_size", "dilation_base"):
        check_int(config, f"{s}.{key}", lo=1)
    compress = check_int(config, f"{s}.compress", lo=1)
    require(filters % compress == 0, f"{s}.compress", compress,
            f"must divide {s}.n_filters={filters}: residual blocks are channels // compress wide")
    t = "model.transformer"
    layers = check_int(config, f"{t}.num_layers", lo=0)
    heads = check_int(config, f"{t}.num_heads", lo=1)
    if layers:
        require(dim % heads == 0 and (dim // heads) % 2 == 0, f"{t}.num_heads", heads,
                f"must divide model.seanet.dimension={dim} into even head widths (RoPE pairs)")
    check_int(config, f"{t}.ffn_hidden", lo=1)
    check_int(config, f"{t}.context", lo=1)
    check_float(config, f"{t}.rope_theta", lo=1.0, lo_open=True)
    check_float(config, f"{t}.layer_scale", lo=0.0)
    check_int(config, "model.downsample_stride", lo=1)
    decoder_rules(config)
    q = "model.quantizer"
    check_int(config, f"{q}.dimension", lo=1)
    check_int(config, f"{q}.codebook_size", lo=2)
    n = check_int(config, f"{q}.num_codebooks", lo=1, hi=MAX_CODEBOOKS)
    check_int(config, f"{q}.num_semantic", lo=0, hi=n - 1)
    update = config_lib.check_choice(config, f"{q}.codebook_update", ("loss", "ema"))
    check_float(config, f"{q}.ema_decay", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    kmeans_on = config_lib.check_bool(config, f"{q}.kmeans_init")
    check_int(config, f"{q}.kmeans_iters", lo=1)
    threshold = check_float(config, f"{q}.dead_code_threshold", lo=0.0, hi=1.0, hi_open=True)
    for key, on in (("kmeans_init", kmeans_on), ("dead_code_threshold", threshold > 0)):
        require(update == "ema" or not on, f"{q}.{key}", get_path(config, f"{q}.{key}"),
                f"needs {q}.codebook_update='ema' (it acts on the EMA statistics; "
                f"codebook_update={update!r})")
    d = "model.discriminator"
    n_ffts = get_path(config, f"{d}.n_ffts")
    require(isinstance(n_ffts, (list, tuple)), f"{d}.n_ffts", n_ffts,
            "must be a list of STFT sizes (empty = no discriminator)")
    for i, n_fft in enumerate(n_ffts):
        require(isinstance(n_fft, int) and not isinstance(n_fft, bool) and n_fft >= 16
                and n_fft % 4 == 0, f"{d}.n_ffts[{i}]", n_fft,
                "must be an int >= 16 divisible by 4 (hop n_fft / 4)")
    check_int(config, f"{d}.filters", lo=1)
    dilations = get_path(config, f"{d}.dilations")
    require(isinstance(dilations, (list, tuple)), f"{d}.dilations", dilations,
            "must be a list of positive ints (may be empty)")
    for i, dilation in enumerate(dilations):
        require(isinstance(dilation, int) and not isinstance(dilation, bool) and dilation >= 1,
                f"{d}.dilations[{i}]", dilation, "must be a positive int")
    for key in ("time_kernel", "freq_kernel"):
        kernel = check_int(config, f"{d}.{key}", lo=1)
        require(kernel % 2 == 1, f"{d}.{key}", kernel, "must be odd (centred 'same' padding)")
    check_float(config, f"{d}.negative_slope", lo=0.0, hi=1.0)


config_lib.register_rules(FAMILY, rules)
