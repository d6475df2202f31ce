"""Qwen3-Omni Code2Wav: causal codec decoder from G codebooks of codes to a waveform.

codes [B, G, T] -> embedding (one table of G * codebook_size rows, codebook q offset by
q * codebook_size) -> mean over the G codebooks -> causal sliding-window pre-transformer
(RMSNorm, LayerScale on both branches) -> len(upsampling_ratios) x [causal ConvTranspose
(k = s = ratio) -> ConvNeXt block] -> decoder: causal conv (hidden -> decoder_dim), one block per
upsample rate r [SnakeBeta -> ConvTranspose(k=2r, stride r, trimmed r samples on both ends) ->
residual units with dilations `residual_dilations`], SnakeBeta, causal conv to 1 channel,
clamp to [-1, 1].

Config: `Code2WavSpec` (declared in `audiolm.presets.thinker_talker_specs`) holds every field of
`model.code2wav` with its comment; the section schema is derived from it and `validate_code2wav`
checks the ranges; `build` / `init_params` take the spec or the section. Sizes of the published
model (Qwen3-Omni-30B-A3B config.json):

  codebook_size 2048, num_codebooks 16, hidden_size 1024, num_layers 8, num_heads 16,
  num_kv_heads 16, head_dim 64, ffn_hidden 3072, rope_theta 1e4, sliding_window 72,
  layer_scale_init 0.01, rms_norm_eps 1e-5, upsampling_ratios (2, 2), convnext_kernel 7,
  convnext_mlp_ratio 4, convnext_eps 1e-6, convnext_scale_init 1e-6, decoder_dim 1536,
  upsample_rates (8, 5, 4, 3), decoder_kernel 7, residual_dilations (1, 3, 9),
  sample_rate 24000 (1920 samples per frame: 12.5 frames/s).
  Parameters: 216,016,577 (equal to transformers' meta-device count, tested).

Design-reference Code2Wav (`audiolm.presets.thinker_talker.design_reference`: 512 wide,
upsampling [8, 5, 4, 2] = 320x at 16 kHz, 50 frames/s, 4 codebooks x 2048): hidden_size 512,
decoder_dim 512, upsampling_ratios () (no ConvNeXt stage), upsample_rates (8, 5, 4, 2),
sample_rate 16000, num_codebooks 4, codebook_size 2048; the other fields as published.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import audiolm.nn as anl
from audiolm.config import (MAX_CODEBOOKS, ConfigError, check_float, check_int, check_schema,
                            get_path, require, spec_from_section, spec_schema, spec_to_section)
from audiolm.nn.compile import fast_jit
from audiolm.presets import thinker_talker as tt_presets
from audiolm.presets.thinker_talker_specs import Code2WavSpec


def total_upsampling(cfg: Any) -> int:
    """Samples per codec frame: prod(upsampling_ratios) * prod(upsample_rates)."""
    return math.prod(cfg.upsampling_ratios) * math.prod(cfg.upsample_rates)


def output_length(cfg: Any, num_frames: int) -> int:
    """Waveform samples produced for `num_frames` frames.

    The ratio stages keep ConvTranspose lengths exact (x ratio); every decoder block trims r
    samples on both ends: L -> (L - 1) * r. Published: ((((4T-1)*8-1)*5-1)*4-1)*3.
    """
    length = num_frames * math.prod(cfg.upsampling_ratios)
    for rate in cfg.upsample_rates:
        length = (length - 1) * rate
    return length


def _check_positive_ints(config: Any, path: str, min_len: int) -> tuple[int, ...]:
    value = get_path(config, path)
    require(isinstance(value, (list, tuple)) and len(value) >= min_len, path, value,
            f"must be a list of at least {min_len} positive ints")
    for i, item in enumerate(value):
        require(isinstance(item, int) and not isinstance(item, bool) and item >= 1,
                f"{path}[{i}]", item, "must be a positive int")
    return tuple(value)


def validate_code2wav(config: Any, path: str = "model.code2wav") -> None:
    """Checks the Code2Wav section at dotted `path` of the experiment config `config`.

    Raises ConfigError naming the field, its value and the rule.
    """
    check_schema(config, path, spec_schema(Code2WavSpec))
    check_int(config, f"{path}.codebook_size", lo=1)
    check_int(config, f"{path}.num_codebooks", lo=1, hi=MAX_CODEBOOKS)
    check_int(config, f"{path}.hidden_size", lo=1)
    check_int(config, f"{path}.num_layers", lo=1)
    heads = check_int(config, f"{path}.num_heads", lo=1)
    kv = check_int(config, f"{path}.num_kv_heads", lo=1)
    require(heads % kv == 0, f"{path}.num_kv_heads", kv, f"must divide {path}.num_heads={heads}")
    head_dim = check_int(config, f"{path}.head_dim", lo=2)
    require(head_dim % 2 == 0, f"{path}.head_dim", head_dim, "must be even (RoPE rotates pairs)")
    check_int(config, f"{path}.ffn_hidden", lo=1)
    check_float(config, f"{path}.rope_theta", lo=1.0, lo_open=True)
    check_int(config, f"{path}.sliding_window", lo=1)
    check_float(config, f"{path}.layer_scale_init")
    check_float(config, f"{path}.rms_norm_eps", lo=0.0, lo_open=True)
    _check_positive_ints(config, f"{path}.upsampling_ratios", 0)
    check_int(config, f"{path}.convnext_kernel", lo=1)
    check_int(config, f"{path}.convnext_mlp_ratio", lo=1)
    check_float(config, f"{path}.convnext_eps", lo=0.0, lo_open=True)
    check_float(config, f"{path}.convnext_scale_init")
    rates = _check_positive_ints(config, f"{path}.upsample_rates", 1)
    dim = check_int(config, f"{path}.decoder_dim", lo=1)
    divisor = 2 ** len(rates)
    require(dim % divisor == 0, f"{path}.decoder_dim", dim,
            f"must be divisible by 2**len(upsample_rates)={divisor}: every decoder block "
            "halves the channels")
    check_int(config, f"{path}.decoder_kernel", lo=1)
    _check_positive_ints(config, f"{path}.residual_dilations", 1)
    check_int(config, f"{path}.sample_rate", lo=1)


def tiny_config() -> ml_collections.ConfigDict:
    """A fresh `model.code2wav` section of the tiny Code2Wav
    (`presets.thinker_talker.TINY_CODE2WAV`)."""
    return spec_to_section(tt_presets.TINY_CODE2WAV)


def validate_codebook_sync(config: Any, talker_path: str = "model.talker",
                           code2wav_path: str = "model.code2wav") -> None:
    """The Talker emits the codes Code2Wav reads: codebook count and size must match."""
    for key in ("num_codebooks", "codebook_size"):
        a = get_path(config, f"{talker_path}.{key}")
        b = get_path(config, f"{code2wav_path}.{key}")
        if a != b:
            raise ConfigError(f"{talker_path}.{key}={a!r} but {code2wav_path}.{key}={b!r}: "
                              "they must match")


# ---------------------------------------------------------------------------------------------
# Model.


def spec_of(cfg: Any) -> Code2WavSpec:
    """The `Code2WavSpec` of a `model.code2wav` section (schema-checked; a spec passes
    through). Specs are hashable: modules holding them are static under jit."""
    if isinstance(cfg, Code2WavSpec):
        return cfg
    return spec_from_section(Code2WavSpec, {"model": {"code2wav": cfg}}, "model.code2wav")


def check_codes(codes: Any, cfg: Any) -> None:
    """codes must be ints [B, num_codebooks, T] (T >= 1) with ids in [0, codebook_size)."""
    shape = tuple(np.shape(codes))
    g, card = cfg.num_codebooks, cfg.codebook_size
    if len(shape) != 3 or shape[1] != g or shape[2] < 1:
        raise ValueError(f"codes: shape {shape} must be [B, num_codebooks={g}, T>=1]")
    dtype = codes.dtype if hasattr(codes, "dtype") else np.asarray(codes).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"codes: dtype {dtype} must be an integer type")
    if not isinstance(codes, jax.core.Tracer):
        arr = np.asarray(codes)
        if arr.min() < 0 or arr.max() >= card:
            raise ValueError(f"codes: ids must be in [0, codebook_size={card}); got min "
                             f"{arr.min()}, max {arr.max()}")


class ResidualUnit(nn.Module):
    """x + conv2(snake2(conv1(snake1(x)))): causal conv (decoder_kernel, dilation) then 1x1."""
    channels: int
    kernel: int
    dilation: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = anl.SnakeBeta(self.channels, name="snake1", **kw)(x)
        h = anl.CausalConv1d(self.channels, self.kernel, dilation=self.dilation, name="conv1",
                             **kw)(h)
        h = anl.SnakeBeta(self.channels, name="snake2", **kw)(h)
        h = anl.CausalConv1d(self.channels, 1, name="conv2", **kw)(h)
        return x + h


class DecoderBlock(nn.Module):
    """SnakeBeta -> ConvTranspose(k=2r, stride r) trimmed r samples on both ends -> residual
    units. [B, L, C] -> [B, (L-1)*r, C/2]."""
    channels: int
    rate: int
    kernel: int
    dilations: tuple[int, ...]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = self.channels // 2
        r = self.rate
        x = anl.SnakeBeta(self.channels, name="snake", **kw)(x)
        # (L+1)*r samples trimmed by r on both ends (the reference's trim): (L-1)*r samples
        x = anl.CausalConvTranspose1d(out, 2 * r, r, trim_left=r, name="upsample", **kw)(x)
        for u, dilation in enumerate(self.dilations):
            x = ResidualUnit(out, self.kernel, dilation, name=f"residual_{u}", **kw)(x)
        return x


class Code2Wav(nn.Module):
    """codes [B, G, T] -> waveform [B, output_length(T)] in [-1, 1]. See the module docstring.

    `embeddings` [B, T, hidden_size] instead of codes skips the code embedding (an encoder that
    embeds its own codes feeds its latent: `audiolm.models.codec`, decoder "code2wav"); the
    module then has no `code_embedding` param.

    Params: `code_embedding` [G*codebook_size, D], `pre_transformer` (`layers_{i}`, `norm`),
    `upsample_{s}` (`conv`, `convnext`), `decoder_in`, `decoder_block_{b}`, `decoder_snake`,
    `decoder_out`.
    """
    config: Code2WavSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes: jax.Array | None = None, *,
                 embeddings: jax.Array | None = None) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if (codes is None) == (embeddings is None):
            raise ValueError("Code2Wav: pass either codes [B, G, T] or embeddings [B, T, "
                             "hidden_size], not both or neither")
        if codes is not None:
            check_codes(codes, c)
            g, card = c.num_codebooks, c.codebook_size
            offsets = (jnp.arange(g, dtype=codes.dtype) * card)[None, :, None]
            x = anl.Embed(g * card, c.hidden_size, name="code_embedding", **kw)(codes + offsets)
            x = jnp.mean(x, axis=1)  # [B, T, D]: the mean (not the sum) over codebooks
        else:
            shape = tuple(np.shape(embeddings))
            if len(shape) != 3 or shape[1] < 1 or shape[2] != c.hidden_size:
                raise ValueError(f"Code2Wav: embeddings shape {shape} must be [B, T>=1, "
                                 f"hidden_size={c.hidden_size}]")
            x = embeddings.astype(self.dtype)
        x = PreTransformer(c, name="pre_transformer", **kw)(x)
        for s, ratio in enumerate(c.upsampling_ratios):
            x = UpsampleStage(c, ratio, name=f"upsample_{s}", **kw)(x)
        x = anl.CausalConv1d(c.decoder_dim, c.decoder_kernel, name="decoder_in", **kw)(x)
        dim = c.decoder_dim
        for b, rate in enumerate(c.upsample_rates):
            x = DecoderBlock(dim, rate, c.decoder_kernel, tuple(c.residual_dilations),
                             name=f"decoder_block_{b}", **kw)(x)
            dim //= 2
        x = anl.SnakeBeta(dim, name="decoder_snake", **kw)(x)
        x = anl.CausalConv1d(1, c.decoder_kernel, name="decoder_out", **kw)(x)
        return jnp.clip(x[..., 0], -1.0, 1.0)


class PreTransformer(nn.Module):
    """Causal sliding-window decoder: RMSNorm pre-norm, LayerScale on both branches, RoPE."""
    config: Code2WavSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(c.num_layers):
            x, _, _ = anl.TransformerBlock(
                norm="rms", norm_eps=c.rms_norm_eps, num_heads=c.num_heads,
                num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, qk_norm=False,
                rope_style="rotate_half", rope_theta=c.rope_theta, causal=True,
                window=c.sliding_window, ffn="gated", ffn_hidden=c.ffn_hidden,
                activation="silu", layer_scale=c.layer_scale_init, name=f"layers_{i}", **kw)(x)
        return anl.RMSNorm(eps=c.rms_norm_eps, name="norm", **kw)(x)


class UpsampleStage(nn.Module):
    """Causal ConvTranspose (k = s = ratio) then a ConvNeXt block: [B, L, D] -> [B, L*ratio, D]."""
    config: Code2WavSpec
    ratio: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = anl.CausalConvTranspose1d(c.hidden_size, self.ratio, self.ratio, name="conv", **kw)(x)
        return anl.ConvNeXtBlock(c.hidden_size, kernel_size=c.convnext_kernel,
                                 mlp_ratio=c.convnext_mlp_ratio,
                                 layer_scale_init=c.convnext_scale_init, eps=c.convnext_eps,
                                 name="convnext", **kw)(x)


def build(cfg: Any, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> Code2Wav:
    """The Code2Wav module of a `Code2WavSpec` or a `model.code2wav` section."""
    return Code2Wav(spec_of(cfg), dtype=dtype, param_dtype=param_dtype)


def describe_params(cfg: Any) -> dict[str, dict[str, int]]:
    """{"code2wav": {"total", "active", "embedding"}} via eval_shape (nothing allocated)."""
    from audiolm.config import count_params

    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    return {"code2wav": count_params(shapes, embedding=lambda path: path[0] == "code_embedding")}


def init_params(cfg: Any, rng: jax.Array, dtype: Any = jnp.float32,
                param_dtype: Any = jnp.float32) -> Any:
    """Plain random params of the Code2Wav of `cfg` (use under jax.eval_shape for shapes)."""
    c = spec_of(cfg)
    codes = jnp.zeros((1, c.num_codebooks, 2), jnp.int32)
    return anl.init_params(build(c, dtype, param_dtype), rng, codes)


def start_trim(cfg: Any) -> int:
    """Samples the decoder blocks trim at the start of the waveform (each block drops r samples
    of its ConvTranspose output; later blocks scale them): output_length(T) =
    T * total_upsampling - start_trim. Published: 480 + 60 + 12 + 3 = 555."""
    trim, rates = 0, list(cfg.upsample_rates)
    for b, rate in enumerate(rates):
        trim += rate * math.prod(rates[b + 1:])
    return trim


def receptive_field(cfg: Any) -> int:
    """Frames of left context beyond which older codes cannot change a frame's samples (an
    upper bound): the attention window's reach over the layers plus every causal conv's reach
    and each ConvTranspose's one-sample overlap, in frames, rounded up, plus one frame for the
    start trim (start_trim < total_upsampling)."""
    reach = float(cfg.num_layers * (cfg.sliding_window - 1))
    rate = 1  # samples per frame at the current stage
    for ratio in cfg.upsampling_ratios:
        rate *= ratio
        reach += (cfg.convnext_kernel - 1) / rate
    reach += (cfg.decoder_kernel - 1) / rate
    for r in cfg.upsample_rates:
        reach += 1 / rate  # a ConvTranspose output sample also reads the previous input sample
        rate *= r
        reach += sum((cfg.decoder_kernel - 1) * d for d in cfg.residual_dilations) / rate
    reach += (cfg.decoder_kernel - 1) / rate
    return int(math.ceil(reach)) + 1


def chunked_decode(module: Code2Wav, params: Any, codes: jax.Array, chunk_size: int,
                   left_context: int) -> jax.Array:
    """Decodes `codes` [B, G, T] in chunks of `chunk_size` frames for streaming.

    Each chunk after the first is decoded together with up to `left_context` preceding frames;
    the samples of those context frames are dropped, aligned on the full decode's sample grid
    (sample n of the full decode belongs to frame (n + start_trim) // total_upsampling). The
    result has output_length(T) samples and equals the full decode when left_context >=
    receptive_field(config); shorter contexts trade exactness for latency. (transformers'
    `chunked_decode` drops context * total_upsampling samples instead, which loses start_trim
    samples per chunk.)
    """
    c = module.config
    check_codes(codes, c)
    if chunk_size < 1 or left_context < 1:
        raise ValueError(f"chunked_decode: chunk_size={chunk_size} and left_context="
                         f"{left_context} must be >= 1")
    per_frame, trim = total_upsampling(c), start_trim(c)
    total = codes.shape[-1]
    pieces = []
    for start in range(0, total, chunk_size):
        end = min(start + chunk_size, total)
        ctx = min(left_context, start)
        # `_decode` is jitted at module level with the (hashable) module static: each chunk
        # shape compiles once per process, not once per call.
        wav = _decode(module, params, codes[..., start - ctx:end])
        pieces.append(wav[:, ctx * per_frame - trim:] if start else wav)
    return jnp.concatenate(pieces, axis=-1)


# ---------------------------------------------------------------------------------------------
# Streaming: a stateful decoder fed a few frames at a time.


def _decode_impl(module: Code2Wav, params: Any, codes: jax.Array) -> jax.Array:
    return module.apply({"params": params}, codes)


_decode = jax.jit(_decode_impl, static_argnums=0)
# Short streams: the few context-length shapes make compile time dominate.
_decode_fast = fast_jit(_decode_impl, static_argnums=0)


def init_stream(cfg: Any, batch: int) -> dict[str, Any]:
    """Empty streaming state: no context frames yet, nothing emitted."""
    return {"context": np.zeros((batch, cfg.num_codebooks, 0), np.int32), "frames": 0}


def stream_step(module: Code2Wav, params: Any, state: dict[str, Any], codes: jax.Array,
                left_context: int | None = None,
                fast_compile: bool = False) -> tuple[dict[str, Any], jax.Array]:
    """Decodes the next frames `codes` [B, G, n] of a stream -> (state, waveform chunk).

    The state keeps the last `left_context` frames (default `receptive_field(config)`); each
    step decodes [context, codes] and keeps the samples of the new frames, aligned on the full
    decode's sample grid as in `chunked_decode`: the first chunk gives n * total_upsampling -
    start_trim samples, later ones n * total_upsampling, so the concatenated chunks have
    output_length(T) samples and equal the full decode once left_context >= receptive_field.
    Shapes vary only while the context fills (one compile per context length, then one);
    fast_compile compiles them with XLA's backend optimisation off (short streams).
    """
    c = module.config
    check_codes(codes, c)
    left_context = receptive_field(c) if left_context is None else left_context
    if left_context < 1:
        raise ValueError(f"stream_step: left_context={left_context} must be >= 1")
    ctx = state["context"]
    if ctx.shape[:2] != codes.shape[:2]:
        raise ValueError(f"stream_step: codes shape {tuple(codes.shape)} must be [B, G, n] with "
                         f"[B, G] = {tuple(ctx.shape[:2])} of the stream")
    k = ctx.shape[2]
    x = jnp.concatenate([jnp.asarray(ctx, jnp.int32), jnp.asarray(codes, jnp.int32)], axis=2)
    wav = (_decode_fast if fast_compile else _decode)(module, params, x)
    if state["frames"]:
        wav = wav[:, k * total_upsampling(c) - start_trim(c):]
    return {"context": x[:, :, -left_context:], "frames": state["frames"] + codes.shape[2]}, wav
