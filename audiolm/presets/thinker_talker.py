"""Thinker-Talker presets (Qwen3-Omni style): AuT audio encoder, MoE Thinker, Talker, Code2Wav.

Section builders (each field declared here once, with its comment; their defaults are the tiny
sizes): `audio_section`, `aut_section`, `thinker_section`, `talker_section` (+
`code_predictor_section`), `code2wav_section`; `model(...)` assembles `config.model`.

Presets (`PRESETS`):
  tiny                 all four parts, tiny sizes (tests, smoke runs)
  tiny_asr             tiny AuT + Thinker only (`enable_audio_output=False`): the speech
                       recogniser of the main job; Talker / Code2Wav sections stay (validated) but
                       are neither built nor counted
  design_reference     the four-part design-reference table (AuT 1024/24/16; Thinker
                       4096/40/32, GQA 8, 64 experts top-4, MoE every 2nd layer; Talker
                       1536/24/12, GQA 4, 32 experts top-4, 4 codebooks x 2048; Code2Wav 512 wide,
                       upsampling [8, 5, 4, 2] = 320x at 16 kHz = 50 frames/s). Sizes the table
                       does not give are ours and marked "chosen".
  qwen3_omni_30b_a3b   the released Qwen3-Omni-30B-A3B (its config.json), vision tower excluded
"""

from __future__ import annotations

from typing import Any

import ml_collections

# Token ids of the tiny vocabularies: the data tokenizers' ids (audiolm.data.tokenizer: pad 0,
# bos 1, eos 2, bytes at 3..258 or alphabet characters from 4), then the three audio markers.
TINY_SPECIALS = dict(audio_token_id=259, audio_start_token_id=260, audio_end_token_id=261,
                     eos_token_id=2, pad_token_id=0)
TINY_VOCAB = 264  # 259 byte-tokenizer ids + 3 audio markers, rounded up to a multiple of 8


def _override(section: ml_collections.ConfigDict, overrides: dict[str, Any],
              builder: str) -> ml_collections.ConfigDict:
    unknown = sorted(set(overrides) - set(section))
    if unknown:
        raise TypeError(f"{builder}: unknown fields {unknown}; expected some of {sorted(section)}")
    section.update(overrides)
    return section


def audio_section(sample_rate=16000, n_fft=400, hop_length=160, n_mels=128, f_min=0.0,
                  f_max=8000.0):
    return ml_collections.ConfigDict(dict(
        sample_rate=sample_rate,  # input audio sample rate in Hz
        n_fft=n_fft,  # STFT size (Hann window of the same length)
        hop_length=hop_length,  # samples between frames (100 frames/s at 16 kHz)
        n_mels=n_mels,  # Slaney mel bands
        f_min=f_min,  # lowest mel edge in Hz
        f_max=f_max,  # highest mel edge in Hz (<= sample_rate / 2)
    ))


def aut_section(hidden_size, num_layers, num_heads, ffn_hidden, conv_channels, output_dim,
                chunk_frames=100, attention_window_frames=800, layer_norm_eps=1e-5,
                max_frames=3000, ctc_frames_per_token=0):
    return ml_collections.ConfigDict(dict(
        hidden_size=hidden_size,  # encoder width (HF d_model)
        num_layers=num_layers,  # encoder layers
        num_heads=num_heads,  # attention heads (MHA); divide hidden_size
        ffn_hidden=ffn_hidden,  # fc1 width (GELU MLP)
        conv_channels=conv_channels,  # channels of the three stride-2 Conv2d (HF downsample_hidden_size)
        chunk_frames=chunk_frames,  # mel frames per chunk (HF 2 * n_window); positions restart per chunk
        attention_window_frames=attention_window_frames,  # frames per attention window (HF n_window_infer)
        output_dim=output_dim,  # proj2 width; equals thinker.hidden_size
        layer_norm_eps=layer_norm_eps,  # LayerNorm epsilon
        max_frames=max_frames,  # static mel frames per example in training batches
        use_dot_product_attention=False,  # route attention through jax.nn.dot_product_attention
        # r > 0: a linear CTC head emits r character frames per output token (auxiliary loss
        # train.loss.ctc_weight of the asr task); 0: no head (the released models have none)
        ctc_frames_per_token=ctc_frames_per_token,
    ))


def thinker_section(vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim,
                    ffn_hidden, moe_hidden, num_experts, num_experts_per_tok,
                    decoder_sparse_step=1, mlp_only_layers=(), norm_topk_prob=True,
                    rope_theta=1e6, rms_norm_eps=1e-6, tie_embeddings=False, max_seq_len=4096,
                    audio_token_id=TINY_SPECIALS["audio_token_id"],
                    audio_start_token_id=TINY_SPECIALS["audio_start_token_id"],
                    audio_end_token_id=TINY_SPECIALS["audio_end_token_id"],
                    eos_token_id=TINY_SPECIALS["eos_token_id"],
                    pad_token_id=TINY_SPECIALS["pad_token_id"]):
    return ml_collections.ConfigDict(dict(
        vocab_size=vocab_size,  # text vocabulary (embedding rows and lm_head outputs)
        hidden_size=hidden_size,  # decoder width
        num_layers=num_layers,  # decoder layers
        num_heads=num_heads,  # query heads
        num_kv_heads=num_kv_heads,  # key/value heads (GQA); divides num_heads
        head_dim=head_dim,  # width of one attention head
        ffn_hidden=ffn_hidden,  # SwiGLU width of the dense (non-MoE) layers
        moe_hidden=moe_hidden,  # SwiGLU width of one routed expert
        num_experts=num_experts,  # routed experts per MoE layer (0: every layer dense)
        num_experts_per_tok=num_experts_per_tok,  # top-k experts per token
        norm_topk_prob=norm_topk_prob,  # renormalise the top-k routing weights
        decoder_sparse_step=decoder_sparse_step,  # layer i is MoE iff (i + 1) % step == 0 ...
        mlp_only_layers=tuple(mlp_only_layers),  # ... and i is not listed here
        rope_theta=rope_theta,  # RoPE base (rotate-half)
        rms_norm_eps=rms_norm_eps,  # epsilon of every RMSNorm (layers, final, q/k norms)
        tie_embeddings=tie_embeddings,  # lm_head shares the embedding table
        max_seq_len=max_seq_len,  # static tokens per example in training batches
        audio_token_id=audio_token_id,  # placeholder replaced by AuT embeddings, in order
        audio_start_token_id=audio_start_token_id,  # marks the start of an audio span
        audio_end_token_id=audio_end_token_id,  # marks the end of an audio span
        eos_token_id=eos_token_id,  # end of the transcript / answer
        pad_token_id=pad_token_id,  # padding (never a training target)
        moe_dispatch="dropless",  # dropless (sorted, grouped matmul) | capacity (einsum)
        moe_capacity_factor=2.0,  # capacity per expert = factor * tokens * top_k / experts
        use_dot_product_attention=False,  # route attention through jax.nn.dot_product_attention
    ))


def code_predictor_section(**overrides) -> ml_collections.ConfigDict:
    """`model.talker.code_predictor` (the Talker's "MTP"): tiny sizes unless overridden."""
    return _override(ml_collections.ConfigDict(dict(
        hidden_size=32,  # code predictor width; equals the Talker width (it reads its hidden)
        num_layers=2,  # dense decoder layers
        num_heads=4,  # query heads
        num_kv_heads=2,  # key/value heads (GQA)
        head_dim=8,  # width of one attention head
        ffn_hidden=64,  # SwiGLU hidden width
        rope_theta=1e6,  # RoPE base; positions restart at 0 in every frame
        rms_norm_eps=1e-6,  # epsilon of every RMSNorm
    )), overrides, "code_predictor_section")


def talker_section(**overrides) -> ml_collections.ConfigDict:
    """`model.talker`: tiny sizes unless overridden (the schema `audiolm.models.talker` checks)."""
    return _override(ml_collections.ConfigDict(dict(
        thinker_hidden_size=32,  # width of the Thinker states fed to both projections
        projection_hidden=48,  # hidden width of text_/hidden_projection (Linear-SiLU-Linear)
        hidden_size=32,  # Talker decoder width
        num_layers=2,  # Talker decoder layers (every layer is MoE with a shared expert)
        num_heads=4,  # query heads
        num_kv_heads=2,  # key/value heads (GQA); divides num_heads
        head_dim=8,  # width of one attention head
        rope_theta=1e6,  # RoPE base (rotate-half style)
        rms_norm_eps=1e-6,  # epsilon of every RMSNorm (layers, final norm, q/k norms)
        vocab_size=80,  # codec vocabulary of codebook 0: audio codes then special ids (EOS, pad...)
        codebook_size=64,  # ids per codebook (audio codes are < codebook_size in every codebook)
        num_codebooks=4,  # codes per frame (G): codebook 0 from codec_head, 1..G-1 from the predictor
        num_experts=4,  # routed experts per MoE layer
        num_experts_per_tok=2,  # experts picked per token (top-k)
        moe_hidden=16,  # hidden width of one routed expert (SwiGLU)
        shared_expert_hidden=24,  # hidden width of the shared expert (SwiGLU, sigmoid-gated)
        norm_topk_prob=True,  # renormalise the top-k routing weights to sum to 1
        moe_dispatch="dropless",  # dropless (sorted, grouped matmul) | capacity (einsum)
        moe_capacity_factor=2.0,  # capacity per expert = factor * tokens * top_k / experts
        accept_hidden_layer=1,  # Thinker layer whose output feeds hidden_projection
        codec_pad_id=64,  # codec id: padding
        codec_bos_id=65,  # codec id: beginning of speech
        codec_eos_id=66,  # codec id: end of speech (the only special id codec_head may emit)
        codec_nothink_id=67,  # codec id: prompt marker "no thinking"
        codec_think_bos_id=68,  # codec id: start of the thinking prompt
        codec_think_eos_id=69,  # codec id: end of the thinking prompt
        code_predictor=code_predictor_section(),
    )), overrides, "talker_section")


def code2wav_section(**overrides) -> ml_collections.ConfigDict:
    """`model.code2wav`: tiny sizes unless overridden (the schema `audiolm.models.code2wav`
    checks)."""
    return _override(ml_collections.ConfigDict(dict(
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
    )), overrides, "code2wav_section")


def model(audio, aut, thinker, talker, code2wav, *, enable_audio_output=True,
          codec_frame_rate) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        family="thinker_talker",
        enable_audio_output=enable_audio_output,  # build Talker + Code2Wav; False: AuT + Thinker
        # Talker codec frames per second: code2wav.sample_rate / its total upsampling
        codec_frame_rate=float(codec_frame_rate),
        audio=audio, aut=aut, thinker=thinker, talker=talker, code2wav=code2wav,
    ))


def tiny() -> ml_collections.ConfigDict:
    """All four parts at tiny sizes."""
    thinker = thinker_section(
        vocab_size=TINY_VOCAB, hidden_size=48, num_layers=4, num_heads=4, num_kv_heads=2,
        head_dim=16, ffn_hidden=96, moe_hidden=32, num_experts=8, num_experts_per_tok=2,
        decoder_sparse_step=1, mlp_only_layers=(1,), max_seq_len=128)
    aut = aut_section(hidden_size=32, num_layers=2, num_heads=4, ffn_hidden=64, conv_channels=8,
                      output_dim=thinker.hidden_size, attention_window_frames=400, max_frames=400)
    talker = talker_section(thinker_hidden_size=thinker.hidden_size)
    # 24 kHz / (2 * 2 * 4 * 3 = 48 samples per frame)
    return model(audio_section(), aut, thinker, talker, code2wav_section(),
                 codec_frame_rate=500.0)


def tiny_asr() -> ml_collections.ConfigDict:
    """Tiny AuT + Thinker speech recogniser (the main job); no speech output."""
    m = tiny()
    m.enable_audio_output = False
    # ctc_frames_per_token=3: 39 CTC frames/s for the auxiliary character CTC loss
    m.aut = aut_section(hidden_size=128, num_layers=3, num_heads=4, ffn_hidden=384,
                        conv_channels=32, output_dim=128, attention_window_frames=800,
                        max_frames=800, ctc_frames_per_token=3)
    m.thinker = thinker_section(
        vocab_size=TINY_VOCAB, hidden_size=128, num_layers=3, num_heads=4, num_kv_heads=2,
        head_dim=32, ffn_hidden=384, moe_hidden=192, num_experts=4, num_experts_per_tok=2,
        decoder_sparse_step=2, max_seq_len=256, tie_embeddings=True)
    m.talker.thinker_hidden_size = m.thinker.hidden_size
    return m


def design_reference() -> ml_collections.ConfigDict:
    """The four-part design-reference table (a second preset, distinct from the release)."""
    thinker = thinker_section(
        vocab_size=151936,  # chosen: the Qwen2/3 text vocabulary
        hidden_size=4096, num_layers=40, num_heads=32, num_kv_heads=8, head_dim=128,
        ffn_hidden=11008,  # chosen: dense SwiGLU width of the non-MoE layers
        moe_hidden=1408,  # chosen: expert width
        num_experts=64, num_experts_per_tok=4, decoder_sparse_step=2, max_seq_len=32768,
        audio_token_id=151646, audio_start_token_id=151647, audio_end_token_id=151648,
        eos_token_id=151645, pad_token_id=151643)
    aut = aut_section(hidden_size=1024, num_layers=24, num_heads=16, ffn_hidden=4096,
                      conv_channels=480, output_dim=thinker.hidden_size)
    talker = talker_section(
        thinker_hidden_size=thinker.hidden_size, projection_hidden=thinker.hidden_size,
        hidden_size=1536, num_layers=24, num_heads=12, num_kv_heads=4, head_dim=128,
        rope_theta=1e6, rms_norm_eps=1e-6, vocab_size=3072, codebook_size=2048,
        num_codebooks=4, num_experts=32, num_experts_per_tok=4,
        moe_hidden=768,  # chosen
        shared_expert_hidden=1536,  # chosen
        norm_topk_prob=True, accept_hidden_layer=20,  # chosen (half-way rule of the release: 24/48)
        codec_pad_id=2148, codec_bos_id=2149, codec_eos_id=2150, codec_nothink_id=2155,
        codec_think_bos_id=2156, codec_think_eos_id=2157,
        code_predictor=code_predictor_section(
            hidden_size=1536, num_layers=5, num_heads=12, num_kv_heads=4, head_dim=128,
            ffn_hidden=4096, rope_theta=1e6, rms_norm_eps=1e-6))
    code2wav = code2wav_section(
        codebook_size=2048, num_codebooks=4, hidden_size=512, num_layers=8, num_heads=8,
        num_kv_heads=8, head_dim=64, ffn_hidden=1536, rope_theta=1e4, sliding_window=72,
        layer_scale_init=0.01, rms_norm_eps=1e-5, upsampling_ratios=(), decoder_dim=512,
        upsample_rates=(8, 5, 4, 2), sample_rate=16000)
    # 16 kHz / (8 * 5 * 4 * 2 = 320 samples per frame)
    return model(audio_section(), aut, thinker, talker, code2wav, codec_frame_rate=50.0)


def qwen3_omni_30b_a3b() -> ml_collections.ConfigDict:
    """The released Qwen3-Omni-30B-A3B (config.json of Qwen/Qwen3-Omni-30B-A3B-Instruct)."""
    thinker = thinker_section(
        vocab_size=152064, hidden_size=2048, num_layers=48, num_heads=32, num_kv_heads=4,
        head_dim=128, ffn_hidden=768, moe_hidden=768, num_experts=128, num_experts_per_tok=8,
        decoder_sparse_step=1, mlp_only_layers=(), rope_theta=1e6, rms_norm_eps=1e-6,
        max_seq_len=65536, audio_token_id=151675, audio_start_token_id=151669,
        audio_end_token_id=151670, eos_token_id=151645, pad_token_id=151643)
    aut = aut_section(hidden_size=1280, num_layers=32, num_heads=20, ffn_hidden=5120,
                      conv_channels=480, output_dim=2048, chunk_frames=100,
                      attention_window_frames=800)
    talker = talker_section(
        thinker_hidden_size=2048, projection_hidden=2048, hidden_size=1024, num_layers=20,
        num_heads=16, num_kv_heads=2, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
        vocab_size=3072, codebook_size=2048, num_codebooks=16, num_experts=128,
        num_experts_per_tok=6, moe_hidden=384, shared_expert_hidden=768, norm_topk_prob=True,
        accept_hidden_layer=24, codec_pad_id=2148, codec_bos_id=2149, codec_eos_id=2150,
        codec_nothink_id=2155, codec_think_bos_id=2156, codec_think_eos_id=2157,
        code_predictor=code_predictor_section(
            hidden_size=1024, num_layers=5, num_heads=16, num_kv_heads=8, head_dim=128,
            ffn_hidden=3072, rope_theta=1e6, rms_norm_eps=1e-6))
    code2wav = code2wav_section(
        codebook_size=2048, num_codebooks=16, hidden_size=1024, num_layers=8, num_heads=16,
        num_kv_heads=16, head_dim=64, ffn_hidden=3072, rope_theta=1e4, sliding_window=72,
        layer_scale_init=0.01, rms_norm_eps=1e-5, upsampling_ratios=(2, 2),
        convnext_kernel=7, convnext_mlp_ratio=4, convnext_eps=1e-6, convnext_scale_init=1e-6,
        decoder_dim=1536, upsample_rates=(8, 5, 4, 3), decoder_kernel=7,
        residual_dilations=(1, 3, 9), sample_rate=24000)
    # 24 kHz / (2 * 2 * 8 * 5 * 4 * 3 = 1920 samples per frame)
    return model(audio_section(), aut, thinker, talker, code2wav, codec_frame_rate=12.5)


PRESETS = {f.__name__: f for f in (tiny, tiny_asr, design_reference, qwen3_omni_30b_a3b)}
