"""Neural audio codec: typed specs of `config.model` (family "codec") and the published sizes.

`CodecSpec` holds `model.sample_rate`, `model.seanet` (`SEANetSpec`), `model.transformer`
(`CodecTransformerSpec`), `model.downsample_stride`, `model.quantizer` (`QuantizerSpec`) and
`model.discriminator` (`DiscriminatorSpec`, adversarial training only), `model.decoder` with
`model.code2wav` (`Code2WavSpec`) or `model.istft` (`ISTFTSpec`) for the other decoders; the
family (`audiolm.models.codec`) derives the section schema from them and builds its module from
the spec.
Frame rate = sample_rate / prod(seanet.ratios) / downsample_stride.

Presets (the one place these sizes are written; `PRESETS` maps the names to `config.model`):
  * `MIMI` ("mimi"): Kyutai's Mimi (moshi 0.2.13 `loaders._mimi_config`): 24 kHz mono, SEANet with
    n_filters 64, ratios [8, 6, 5, 4] (applied in reverse in the encoder), ELU, kernel 7,
    residual kernel 3, last kernel 3, compress 2, one residual layer per stage, dimension 512;
    an 8-layer causal transformer (d 512, 8 heads, FFN 2048 GELU, LayerNorm, RoPE 1e4,
    LayerScale 0.01, context 250) on each side of the quantizer; a stride-2 conv from 25 Hz to
    12.5 Hz; split RVQ: 1 semantic + 31 acoustic codebooks of 2048 entries, dimension 256,
    learnt as Mimi's (moshi `EuclideanCodebook`): EMA decay 0.99, k-means init (50 iterations),
    dead codes below 0.1 x the mean usage restarted.
  * `TINY_MIMI` ("tiny_mimi"): Mimi's layout shrunk for the parity tests (SEANet dimension 32,
    n_filters 4, ratios [4, 4, 5, 6], quantizer 16-dim x 64 bins, transformer 32 wide / 2 heads /
    1 layer, context 10), with the stride-2 resampler kept (25 Hz) and 4 codebooks.
  * `TINY` ("tiny"): a 16 kHz codec small enough for CPU tests (2 codebooks x 32).
  * `SPEECH_16K` ("speech"): a small speech codec for the embedded 16 kHz speech set: 320x
    SEANet (50 Hz), stride 2 to 25 Hz, 8 codebooks x 1024 of dimension 8 with a cosine lookup (25 * 8 * 10 =
    2.0 kbps), one transformer layer; EMA codebooks with k-means init and dead-code restarts
    (lower mel loss than the codebook loss at every logged step of a 50-step run, and no collapse
    of codebook 0: perplexity 18 against 4 at step 50).
  * `ISTFT_DECODERS` / `with_istft(spec, name)`: Vocos-style inverse-STFT decoders for TINY and
    SPEECH_16K (`decoder="istft"`, `model.istft`); `CODE2WAV_DECODERS` / `with_code2wav`:
    Code2Wav decoders for them.
"""

from __future__ import annotations

import dataclasses
import math

from audiolm.config import spec_to_section
from audiolm.presets.thinker_talker_specs import Code2WavSpec

_spec = dataclasses.dataclass(frozen=True, kw_only=True)


@_spec
class SEANetSpec:
    """`model.seanet`: the causal convolutional encoder and its mirror decoder."""
    dimension: int  # latent width at the encoder rate (encoder output, decoder input)
    n_filters: int  # channels of the first conv; doubled after every downsampling stage
    ratios: tuple[int, ...]  # decoder-order upsampling ratios; the encoder uses them reversed
    n_residual_layers: int = 1  # residual blocks per stage (dilation dilation_base**j)
    kernel_size: int = 7  # first conv of the encoder and of the decoder
    last_kernel_size: int = 3  # last conv of the encoder and of the decoder
    residual_kernel_size: int = 3  # first conv of each residual block (the second is 1x1)
    dilation_base: int = 2  # dilation of residual block j is dilation_base**j
    compress: int = 2  # a residual block's hidden width is channels // compress


@_spec
class CodecTransformerSpec:
    """`model.transformer`: the causal transformer at the encoder rate on each side of the
    quantizer (width = seanet.dimension; LayerNorm eps 1e-5, GELU MLP without biases,
    interleaved RoPE, as Mimi). num_layers 0: none."""
    num_layers: int  # layers per side (0 = no transformer)
    num_heads: int  # attention heads; divide seanet.dimension
    ffn_hidden: int  # MLP hidden width
    context: int  # attention window in frames (keys t - context < s <= t)
    rope_theta: float = 10000.0  # RoPE max period
    layer_scale: float = 0.01  # LayerScale init on both residual branches (0 = none)


@_spec
class QuantizerSpec:
    """`model.quantizer`: residual vector quantizer with input/output projections."""
    dimension: int  # codebook vector width (the projections map seanet.dimension <-> it)
    codebook_size: int  # entries per codebook
    num_codebooks: int  # codebooks in all (semantic + acoustic)
    # 1: Mimi's split first codebook (a separate one-level RVQ with its own projections,
    # quantizing the same latent as the acoustic RVQ); 0: one plain RVQ.
    num_semantic: int = 0
    # True: codes are chosen by cosine similarity (latent and codebook rows L2-normalised for the
    # lookup only; the decoded vector is the raw row), as DAC's factorised codes: keeps many
    # entries in use without k-means or restarts. False: Euclidean nearest (Mimi).
    normalized_lookup: bool = False
    # How the codebooks learn. "loss": they are params moved by the codebook loss (VQ-VAE).
    # "ema": Mimi's / EnCodec's EMA statistics, buffers `embedding_sum` [L, K, d] and
    # `cluster_usage` [L, K] (codebook = embedding_sum / max(cluster_usage, 1e-5)) updated by the
    # train step's buffer hook, not by the optimizer.
    codebook_update: str = "loss"
    ema_decay: float = 0.99  # EMA decay of the statistics per step ("ema")
    # "ema" only: at the first training step (buffer `initialized` 0) each level's codebook is
    # set by kmeans_iters Lloyd iterations on that batch's residuals at that level.
    kmeans_init: bool = False
    kmeans_iters: int = 10
    # "ema" only: an entry whose cluster_usage falls below dead_code_threshold x the mean usage
    # (sum / codebook_size; batch-size free, as moshi's threshold_usage_ratio) is restarted
    # from a random residual of the batch with the mean usage. 0 = never.
    dead_code_threshold: float = 0.0


@_spec
class DiscriminatorSpec:
    """`model.discriminator`: multi-scale STFT discriminator for adversarial training (EnCodec's
    MS-STFTD layout): per scale, a 2-D conv stack over the complex STFT (real / imaginary as two
    channels) along (time, frequency). Only training uses it; n_ffts () = no discriminator (no
    params are created)."""
    n_ffts: tuple[int, ...] = ()  # one scale per STFT size (window n_fft, hop n_fft / 4)
    filters: int = 32  # channels of every conv but the last (1 logit channel)
    dilations: tuple[int, ...] = (1, 2, 4)  # time dilations of the stride-(1, 2) conv layers
    time_kernel: int = 3  # conv kernel along time frames
    freq_kernel: int = 9  # conv kernel along frequency bins (the last two convs use 3 x 3)
    negative_slope: float = 0.2  # LeakyReLU slope after every conv but the last


@_spec
class ISTFTSpec:
    """`model.istft`: the Vocos-style decoder of `decoder="istft"` (`audiolm.models.codec.
    ISTFTDecoder`): at the encoder rate (hop = prod(seanet.ratios) samples per frame), a causal
    conv from seanet.dimension to `width`, `num_blocks` causal ConvNeXt blocks, a linear head
    to the log-magnitude and phase of n_fft // 2 + 1 bins, then a causal inverse STFT."""
    width: int  # channels of the ConvNeXt blocks
    num_blocks: int  # ConvNeXt blocks (causal depthwise conv, LayerNorm, MLP, residual)
    kernel: int = 7  # depthwise conv kernel of each block (and of the input conv)
    mlp_ratio: int = 3  # MLP hidden width = mlp_ratio * width
    n_fft: int  # STFT window in samples: a multiple of the hop prod(seanet.ratios)


@_spec
class CodecSpec:
    """`config.model` of the codec family."""
    family: str = "codec"
    sample_rate: int  # Hz of the waveform
    seanet: SEANetSpec
    transformer: CodecTransformerSpec
    downsample_stride: int = 1  # learnt conv from the encoder rate to the frame rate (1 = none)
    quantizer: QuantizerSpec
    # adversarial training only (off by default; every preset leaves it off)
    discriminator: DiscriminatorSpec = DiscriminatorSpec()
    # "seanet": the SEANet mirror of the encoder (with the transformer and upsampler);
    # "code2wav": Qwen3-Omni's Code2Wav (`model.code2wav`, a `Code2WavSpec`) decodes the
    # quantized latent: its hidden_size = seanet.dimension, its total upsampling = hop_length,
    # its codebook count and size = the quantizer's (`audiolm.models.codec` says why).
    # "istft": a Vocos-style decoder (`model.istft`, an `ISTFTSpec`) predicts STFT magnitude
    # and phase at the encoder rate and synthesises by a causal inverse STFT, in place of the
    # SEANet decoder only (the upsampler and the decoder transformer stay).
    decoder: str = "seanet"
    code2wav: Code2WavSpec | None = None  # decoder "code2wav" only
    istft: ISTFTSpec | None = None  # decoder "istft" only


def hop_length(spec: CodecSpec) -> int:
    """Samples per code frame: prod(seanet.ratios) * downsample_stride."""
    return math.prod(spec.seanet.ratios) * spec.downsample_stride


def frame_rate(spec: CodecSpec) -> float:
    """Code frames per second: sample_rate / hop_length."""
    return spec.sample_rate / hop_length(spec)


def bitrate(spec: CodecSpec, num_codebooks: int | None = None) -> float:
    """Bits per second of `num_codebooks` (default all): frame_rate * n * log2(codebook_size)."""
    n = spec.quantizer.num_codebooks if num_codebooks is None else num_codebooks
    return frame_rate(spec) * n * math.log2(spec.quantizer.codebook_size)


MIMI = CodecSpec(
    sample_rate=24000,
    seanet=SEANetSpec(dimension=512, n_filters=64, ratios=(8, 6, 5, 4), n_residual_layers=1,
                      kernel_size=7, last_kernel_size=3, residual_kernel_size=3,
                      dilation_base=2, compress=2),
    transformer=CodecTransformerSpec(num_layers=8, num_heads=8, ffn_hidden=2048, context=250,
                                     rope_theta=10000.0, layer_scale=0.01),
    downsample_stride=2,
    quantizer=QuantizerSpec(dimension=256, codebook_size=2048, num_codebooks=32,
                            num_semantic=1, codebook_update="ema", ema_decay=0.99, kmeans_init=True,
                            kmeans_iters=50, dead_code_threshold=0.1),
)

TINY_MIMI = CodecSpec(
    sample_rate=24000,
    seanet=SEANetSpec(dimension=32, n_filters=4, ratios=(4, 4, 5, 6)),
    transformer=CodecTransformerSpec(num_layers=1, num_heads=2, ffn_hidden=64, context=10),
    downsample_stride=2,
    quantizer=QuantizerSpec(dimension=16, codebook_size=64, num_codebooks=4, num_semantic=1,
                            codebook_update="ema", kmeans_init=True,
                            dead_code_threshold=0.1),
)

SPEECH_16K = CodecSpec(
    sample_rate=16000,
    seanet=SEANetSpec(dimension=64, n_filters=16, ratios=(8, 5, 4, 2)),
    transformer=CodecTransformerSpec(num_layers=1, num_heads=4, ffn_hidden=128, context=50),
    downsample_stride=2,
    quantizer=QuantizerSpec(dimension=8, codebook_size=1024, num_codebooks=8, num_semantic=0,
                            normalized_lookup=True, codebook_update="ema", kmeans_init=True,
                            dead_code_threshold=0.1),
)

# A codec for CPU tests and the quick start: 16 kHz, 64x SEANet (250 Hz), stride 2 to 125 Hz,
# 2 codebooks x 32 (1.25 kbps), one transformer layer.
TINY = CodecSpec(
    sample_rate=16000,
    seanet=SEANetSpec(dimension=16, n_filters=4, ratios=(8, 4, 2)),
    transformer=CodecTransformerSpec(num_layers=1, num_heads=2, ffn_hidden=32, context=16),
    downsample_stride=2,
    quantizer=QuantizerSpec(dimension=8, codebook_size=32, num_codebooks=2, num_semantic=0),
)

# Code2Wav decoders (`decoder="code2wav"`) sized for the codecs above: hidden_size =
# seanet.dimension, total upsampling = hop_length, codebooks = the quantizer's.
# `with_code2wav(TINY)` and `with_code2wav(SPEECH_16K)` (configs/codec.py `decoder=code2wav`).
CODE2WAV_DECODERS = {
    "tiny": Code2WavSpec(  # 2 x 8*4*2 = 128 samples per frame; receptive field 15 frames
        codebook_size=32, num_codebooks=2, hidden_size=16, num_layers=1, num_heads=2,
        num_kv_heads=2, head_dim=8, ffn_hidden=32, sliding_window=8, upsampling_ratios=(2,),
        decoder_dim=16, upsample_rates=(8, 4, 2), decoder_kernel=5, residual_dilations=(1, 3),
        sample_rate=16000),
    "speech": Code2WavSpec(  # 2 x 8*5*4*2 = 640 samples per frame
        codebook_size=1024, num_codebooks=8, hidden_size=64, num_layers=1, num_heads=4,
        num_kv_heads=4, head_dim=16, ffn_hidden=128, sliding_window=50, upsampling_ratios=(2,),
        decoder_dim=128, upsample_rates=(8, 5, 4, 2), sample_rate=16000),
}


def with_code2wav(spec: CodecSpec, name: str) -> CodecSpec:
    """`spec` decoded by the Code2Wav `CODE2WAV_DECODERS[name]` instead of its SEANet mirror."""
    if name not in CODE2WAV_DECODERS:
        raise ValueError(f"with_code2wav: name={name!r}: expected one of "
                         f"{sorted(CODE2WAV_DECODERS)}")
    return dataclasses.replace(spec, decoder="code2wav", code2wav=CODE2WAV_DECODERS[name])


# iSTFT decoders (`decoder="istft"`) sized for the codecs above: `with_istft(TINY, "tiny")`,
# `with_istft(SPEECH_16K, "speech")` (configs/codec.py `decoder=istft`). n_fft = 2 hops: the
# causal overlap-add synthesises each hop from the frame that starts in it and the one before,
# so half its weight comes from a frame that has seen it (`audiolm.models.codec.ISTFTDecoder`).
ISTFT_DECODERS = {
    "tiny": ISTFTSpec(width=32, num_blocks=2, kernel=7, mlp_ratio=2, n_fft=128),  # hop 64
    "speech": ISTFTSpec(width=256, num_blocks=6, kernel=7, mlp_ratio=3, n_fft=640),  # hop 320
}


def with_istft(spec: CodecSpec, name: str) -> CodecSpec:
    """`spec` decoded by the iSTFT decoder `ISTFT_DECODERS[name]` instead of its SEANet mirror."""
    if name not in ISTFT_DECODERS:
        raise ValueError(f"with_istft: name={name!r}: expected one of {sorted(ISTFT_DECODERS)}")
    return dataclasses.replace(spec, decoder="istft", istft=ISTFT_DECODERS[name])


SPECS = {"tiny": TINY, "speech": SPEECH_16K, "mimi": MIMI, "tiny_mimi": TINY_MIMI}
# name -> function returning `config.model` (the table every presets module exposes)
PRESETS = {name: (lambda spec=spec: spec_to_section(spec)) for name, spec in SPECS.items()}
