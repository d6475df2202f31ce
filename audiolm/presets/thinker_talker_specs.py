"""Typed specs of the Thinker-Talker family (Qwen3-Omni): one frozen dataclass per component.

Each field of a `config.model` section of the family is declared here once, with its comment:
`AudioSpec` (`model.audio`, the log-mel front end), `AuTSpec` (`model.aut`), `ThinkerSpec`
(`model.thinker`), `TalkerSpec` (`model.talker`, with `CodePredictorSpec` as
`model.talker.code_predictor`) and `Code2WavSpec` (`model.code2wav`); `ThinkerTalkerSpec` is
`config.model` itself (its switches and the parts).

The two views of the same fields: presets (`audiolm.presets.thinker_talker`) and importers
(`audiolm.importers.qwen3_omni*`) construct specs and write them into the config with
`audiolm.config.spec_to_section`; the models (`audiolm.models.aut`, `thinker`, `talker`,
`code2wav`, which re-export these classes) derive their section schema with
`audiolm.config.spec_schema` and build their modules from the spec read back by
`audiolm.config.spec_from_section`. The classes live in the presets package, which sits below
the models, so that presets can build them without importing models.

Names follow the library's shared vocabulary (`hidden_size`, `num_layers`, `num_heads`,
`num_kv_heads`, `head_dim`, `ffn_hidden`, `rope_theta`, `num_experts`, `num_experts_per_tok`,
`rms_norm_eps` / `norm_eps`); the Hugging Face spellings appear only in the importers' mapping.
Defaults are given only where they are the family's architecture constants or switches; sizes
have none. Fields are keyword-only.
"""

from __future__ import annotations

import dataclasses

_spec = dataclasses.dataclass(frozen=True, kw_only=True)


@_spec
class AudioSpec:
    """`model.audio`: the Whisper-style log-mel front end (defaults: Qwen3-Omni's extractor)."""
    sample_rate: int = 16000  # input audio sample rate in Hz
    n_fft: int = 400  # STFT size (Hann window of the same length)
    hop_length: int = 160  # samples between frames (100 frames/s at 16 kHz)
    n_mels: int = 128  # Slaney mel bands
    f_min: float = 0.0  # lowest mel edge in Hz
    f_max: float = 8000.0  # highest mel edge in Hz (<= sample_rate / 2)


@_spec
class AuTSpec:
    """`model.aut`: the AuT audio encoder (`audiolm.models.aut`)."""
    hidden_size: int  # encoder width
    num_layers: int  # encoder layers
    num_heads: int  # attention heads (MHA); divide hidden_size
    ffn_hidden: int  # fc1 width (GELU MLP)
    conv_channels: int  # channels of the three stride-2 Conv2d of the stem
    chunk_frames: int = 100  # mel frames per chunk; positions restart per chunk
    attention_window_frames: int = 800  # frames per attention window (whole chunks)
    output_dim: int  # proj2 width; equals thinker.hidden_size
    norm_eps: float = 1e-5  # LayerNorm epsilon
    max_frames: int = 3000  # static mel frames per example in training batches
    use_dot_product_attention: bool | None = None  # fused attention; None = on GPU/TPU only
    # r > 0: a linear CTC head emits r character frames per output token (auxiliary loss
    # train.loss.ctc_weight of the asr task); 0: no head (the released models have none). The
    # one optional field of the section: a section without it means 0.
    ctc_frames_per_token: int = 0


@_spec
class ThinkerSpec:
    """`model.thinker`: the MoE text decoder (`audiolm.models.thinker`)."""
    vocab_size: int  # text vocabulary (embedding rows and lm_head outputs)
    hidden_size: int  # decoder width
    num_layers: int  # decoder layers
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (GQA); divides num_heads
    head_dim: int  # width of one attention head
    ffn_hidden: int  # SwiGLU width of the dense (non-MoE) layers
    moe_hidden: int  # SwiGLU width of one routed expert
    num_experts: int  # routed experts per MoE layer (0: every layer dense)
    num_experts_per_tok: int  # top-k experts per token
    norm_topk_prob: bool = True  # renormalise the top-k routing weights
    decoder_sparse_step: int = 1  # layer i is MoE iff (i + 1) % step == 0 ...
    mlp_only_layers: tuple[int, ...] = ()  # ... and i is not listed here
    rope_theta: float = 1e6  # RoPE base (rotate-half)
    rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm (layers, final, q/k norms)
    tie_embeddings: bool = False  # lm_head shares the embedding table
    max_seq_len: int  # static tokens per example in training batches
    audio_token_id: int  # placeholder replaced by AuT embeddings, in order
    audio_start_token_id: int  # marks the start of an audio span
    audio_end_token_id: int  # marks the end of an audio span
    eos_token_id: int  # end of the transcript / answer
    pad_token_id: int  # padding (never a training target)
    moe_dispatch: str = "dropless"  # dropless | tiles | ragged_dot | gmm | capacity (nn.moe)
    moe_capacity_factor: float = 2.0  # capacity per expert = factor * tokens * top_k / experts
    use_dot_product_attention: bool | None = None  # fused attention; None = on GPU/TPU only


@_spec
class CodePredictorSpec:
    """`model.talker.code_predictor`: the Talker's dense code predictor ("MTP")."""
    hidden_size: int  # code predictor width; equals the Talker width (it reads its hidden)
    num_layers: int  # dense decoder layers
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (GQA)
    head_dim: int  # width of one attention head
    ffn_hidden: int  # SwiGLU hidden width
    rope_theta: float = 1e6  # RoPE base; positions restart at 0 in every frame
    rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm


@_spec
class TalkerSpec:
    """`model.talker`: the Talker (`audiolm.models.talker`)."""
    thinker_hidden_size: int  # width of the Thinker states fed to both projections
    projection_hidden: int  # hidden width of text_/hidden_projection (Linear-SiLU-Linear)
    hidden_size: int  # Talker decoder width
    num_layers: int  # Talker decoder layers (every layer is MoE with a shared expert)
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (GQA); divides num_heads
    head_dim: int  # width of one attention head
    rope_theta: float = 1e6  # RoPE base (rotate-half style)
    rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm (layers, final norm, q/k norms)
    vocab_size: int  # codec vocabulary of codebook 0: audio codes then special ids (EOS, pad...)
    codebook_size: int  # ids per codebook (audio codes are < codebook_size in every codebook)
    num_codebooks: int  # codes per frame (G): codebook 0 from codec_head, 1..G-1 from the predictor
    num_experts: int  # routed experts per MoE layer
    num_experts_per_tok: int  # experts picked per token (top-k)
    moe_hidden: int  # hidden width of one routed expert (SwiGLU)
    shared_expert_hidden: int  # hidden width of the shared expert (SwiGLU, sigmoid-gated)
    norm_topk_prob: bool = True  # renormalise the top-k routing weights to sum to 1
    moe_dispatch: str = "dropless"  # dropless | tiles | ragged_dot | gmm | capacity (nn.moe)
    moe_capacity_factor: float = 2.0  # capacity per expert = factor * tokens * top_k / experts
    accept_hidden_layer: int  # Thinker layer whose output feeds hidden_projection
    codec_pad_id: int  # codec id: padding
    codec_bos_id: int  # codec id: beginning of speech
    codec_eos_id: int  # codec id: end of speech (the only special id codec_head may emit)
    codec_nothink_id: int  # codec id: prompt marker "no thinking"
    codec_think_bos_id: int  # codec id: start of the thinking prompt
    codec_think_eos_id: int  # codec id: end of the thinking prompt
    code_predictor: CodePredictorSpec  # predicts codebooks 1..G-1 of each frame


@_spec
class Code2WavSpec:
    """`model.code2wav`: the causal codec decoder (`audiolm.models.code2wav`). Defaults are the
    architecture constants of the published decoder (its config.json does not carry them)."""
    codebook_size: int  # ids per codebook
    num_codebooks: int  # codebooks per frame (G); must match model.talker.num_codebooks
    hidden_size: int  # pre-transformer and upsampler width
    num_layers: int  # pre-transformer layers
    num_heads: int  # query heads of the pre-transformer
    num_kv_heads: int  # key/value heads (equal to num_heads in the published model: MHA)
    head_dim: int  # width of one attention head
    ffn_hidden: int  # SwiGLU hidden width of the pre-transformer
    rope_theta: float = 1e4  # RoPE base (rotate-half style)
    sliding_window: int  # causal attention window in frames (query sees the last `window` keys)
    layer_scale_init: float = 0.01  # initial LayerScale on both residual branches
    rms_norm_eps: float = 1e-5  # epsilon of every RMSNorm of the pre-transformer
    upsampling_ratios: tuple[int, ...]  # causal ConvTranspose (k = s = ratio) + ConvNeXt stages
    convnext_kernel: int = 7  # causal depthwise conv kernel of the ConvNeXt blocks
    convnext_mlp_ratio: int = 4  # ConvNeXt MLP width = ratio * hidden_size
    convnext_eps: float = 1e-6  # ConvNeXt LayerNorm epsilon
    convnext_scale_init: float = 1e-6  # ConvNeXt gamma (LayerScale) initial value
    decoder_dim: int  # channels after the first decoder conv; halved by every decoder block
    upsample_rates: tuple[int, ...]  # decoder block strides (ConvTranspose kernel 2r, stride r)
    decoder_kernel: int = 7  # kernel of the decoder's first/last causal convs and residual convs
    residual_dilations: tuple[int, ...] = (1, 3, 9)  # dilations of every block's residual units
    sample_rate: int = 24000  # output rate in Hz (frame rate = sample_rate / total upsampling)


@_spec
class ThinkerTalkerSpec:
    """`config.model` of the family. With enable_audio_output False, the talker / code2wav /
    codec_frame_rate sections may be left out of a config (they come together)."""
    family: str = "thinker_talker"  # the family name (audiolm.config.FAMILIES)
    enable_audio_output: bool = True  # build Talker + Code2Wav; False: AuT + Thinker
    codec_frame_rate: float  # Talker codec frames per second: code2wav.sample_rate / upsampling
    audio: AudioSpec
    aut: AuTSpec
    thinker: ThinkerSpec
    talker: TalkerSpec
    code2wav: Code2WavSpec
