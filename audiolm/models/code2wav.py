"""Qwen3-Omni Code2Wav: causal codec decoder from G codebooks of codes to a waveform.

codes [B, G, T] -> embedding (one table of G * codebook_size rows, codebook q offset by
q * codebook_size) -> mean over the G codebooks -> causal sliding-window pre-transformer
(RMSNorm, LayerScale on both branches) -> len(upsampling_ratios) x [causal ConvTranspose
(k = s = ratio) -> ConvNeXt block] -> decoder: causal conv (hidden -> decoder_dim), one block per
upsample rate r [SnakeBeta -> ConvTranspose(k=2r, stride r, trimmed r samples on both ends) ->
residual units with dilations `residual_dilations`], SnakeBeta, causal conv to 1 channel,
clamp to [-1, 1].

Config: `DEFAULTS` (the tiny model) documents every field of `model.code2wav`;
`validate_code2wav` checks them. Sizes of the published model (Qwen3-Omni-30B-A3B config.json):

  codebook_size 2048, num_codebooks 16, hidden_size 1024, num_layers 8, num_heads 16,
  num_kv_heads 16, head_dim 64, ffn_hidden 3072, rope_theta 1e4, sliding_window 72,
  layer_scale_init 0.01, rms_norm_eps 1e-5, upsampling_ratios (2, 2), convnext_kernel 7,
  convnext_mlp_ratio 4, convnext_eps 1e-6, convnext_scale_init 1e-6, decoder_dim 1536,
  upsample_rates (8, 5, 4, 3), decoder_kernel 7, residual_dilations (1, 3, 9),
  sample_rate 24000 (1920 samples per frame: 12.5 frames/s).

Design-reference Code2Wav (REFERENCE.md: 512 wide, upsampling [8, 5, 4, 2] = 320x at 16 kHz,
50 frames/s, 4 codebooks x 2048): hidden_size 512, decoder_dim 512, upsampling_ratios () (no
ConvNeXt stage), upsample_rates (8, 5, 4, 2), sample_rate 16000, num_codebooks 4,
codebook_size 2048; the other fields as published.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from audiolm.config import ConfigError, check_float, check_int, check_schema, get_path, require

# The tiny Code2Wav: every size of the module is a field here (one comment per field).
DEFAULTS = ml_collections.ConfigDict(dict(
    codebook_size=64,  # ids per codebook
    num_codebooks=4,  # codebooks per frame (G); must match model.talker.num_codebooks
    hidden_size=32,  # pre-transformer and upsampler width
    num_layers=2,  # pre-transformer layers
    num_heads=4,  # query heads of the pre-transformer
    num_kv_heads=4,  # key/value heads (equal to num_heads in the published model: MHA)
    head_dim=8,  # width of one attention head
    ffn_hidden=64,  # SwiGLU hidden width of the pre-transformer
    rope_theta=1e4,  # RoPE base (rotate-half style)
    sliding_window=8,  # causal attention window in frames (query sees the last `window` keys)
    layer_scale_init=0.01,  # initial LayerScale on both residual branches
    rms_norm_eps=1e-5,  # epsilon of every RMSNorm of the pre-transformer
    upsampling_ratios=(2, 2),  # causal ConvTranspose (k = s = ratio) + ConvNeXt stages
    convnext_kernel=7,  # causal depthwise conv kernel of the ConvNeXt blocks
    convnext_mlp_ratio=4,  # ConvNeXt MLP width = ratio * hidden_size
    convnext_eps=1e-6,  # ConvNeXt LayerNorm epsilon
    convnext_scale_init=1e-6,  # ConvNeXt gamma (LayerScale) initial value
    decoder_dim=32,  # channels after the first decoder conv; halved by every decoder block
    upsample_rates=(4, 3),  # decoder block strides (ConvTranspose kernel 2r, stride r)
    decoder_kernel=7,  # kernel of the decoder's first/last causal convs and residual convs
    residual_dilations=(1, 3, 9),  # dilations of the residual units of every decoder block
    sample_rate=24000,  # output sample rate in Hz (frame rate = sample_rate / total upsampling)
))


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
    check_schema(config, path, DEFAULTS)
    check_int(config, f"{path}.codebook_size", lo=1)
    check_int(config, f"{path}.num_codebooks", lo=1)
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
    """A fresh copy of `DEFAULTS` (the tiny Code2Wav)."""
    return ml_collections.ConfigDict(DEFAULTS.to_dict())


def validate_codebook_sync(config: Any, talker_path: str = "model.talker",
                           code2wav_path: str = "model.code2wav") -> None:
    """The Talker emits the codes Code2Wav reads: codebook count and size must match."""
    for key in ("num_codebooks", "codebook_size"):
        a = get_path(config, f"{talker_path}.{key}")
        b = get_path(config, f"{code2wav_path}.{key}")
        if a != b:
            raise ConfigError(f"{talker_path}.{key}={a!r} but {code2wav_path}.{key}={b!r}: "
                              "they must match")
