"""Thinker-Talker presets (Qwen3-Omni style): AuT audio encoder, MoE Thinker, Talker, Code2Wav.

The fields of every section, with their comments, are declared once by the typed specs of
`audiolm.presets.thinker_talker_specs` (`AudioSpec`, `AuTSpec`, `ThinkerSpec`, `TalkerSpec` +
`CodePredictorSpec`, `Code2WavSpec`); a preset constructs the specs and `model(...)` writes them
into `config.model` (`audiolm.config.spec_to_section`). `TINY_TALKER` / `TINY_CODE2WAV` are the
tiny speech-output parts (`dataclasses.replace` them to change a field).

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

import dataclasses

import ml_collections

from audiolm.config import spec_to_section
from audiolm.presets.thinker_talker_specs import (AudioSpec, AuTSpec, Code2WavSpec,
                                                  CodePredictorSpec, TalkerSpec, ThinkerSpec,
                                                  ThinkerTalkerSpec)

# Token ids of the tiny vocabularies: the data tokenizers' ids (audiolm.data.tokenizer: pad 0,
# bos 1, eos 2, bytes at 3..258 or alphabet characters from 4), then the three audio markers.
TINY_SPECIALS = dict(audio_token_id=259, audio_start_token_id=260, audio_end_token_id=261,
                     eos_token_id=2, pad_token_id=0)
TINY_VOCAB = 264  # 259 byte-tokenizer ids + 3 audio markers, rounded up to a multiple of 8

# The tiny Talker (64 codes x 4 codebooks; special codec ids right above the codes).
TINY_TALKER = TalkerSpec(
    thinker_hidden_size=32, projection_hidden=48, hidden_size=32, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=8, vocab_size=80, codebook_size=64, num_codebooks=4,
    num_experts=4, num_experts_per_tok=2, moe_hidden=16, shared_expert_hidden=24,
    accept_hidden_layer=1, codec_pad_id=64, codec_bos_id=65, codec_eos_id=66,
    codec_nothink_id=67, codec_think_bos_id=68, codec_think_eos_id=69,
    code_predictor=CodePredictorSpec(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                     head_dim=8, ffn_hidden=64))
# The tiny Code2Wav: 24 kHz / (2 * 2 * 4 * 3 = 48 samples per frame) = 500 frames/s.
TINY_CODE2WAV = Code2WavSpec(
    codebook_size=64, num_codebooks=4, hidden_size=32, num_layers=2, num_heads=4,
    num_kv_heads=4, head_dim=8, ffn_hidden=64, sliding_window=8, upsampling_ratios=(2, 2),
    decoder_dim=32, upsample_rates=(4, 3))


def model(audio: AudioSpec, aut: AuTSpec, thinker: ThinkerSpec, talker: TalkerSpec,
          code2wav: Code2WavSpec, *, enable_audio_output: bool = True,
          codec_frame_rate: float) -> ml_collections.ConfigDict:
    """`config.model` of the family from the specs of its parts (`ThinkerTalkerSpec`)."""
    return spec_to_section(ThinkerTalkerSpec(
        enable_audio_output=enable_audio_output, codec_frame_rate=float(codec_frame_rate),
        audio=audio, aut=aut, thinker=thinker, talker=talker, code2wav=code2wav))


def _tiny_thinker(**fields) -> ThinkerSpec:
    return ThinkerSpec(vocab_size=TINY_VOCAB, num_heads=4, num_kv_heads=2,
                       **TINY_SPECIALS, **fields)


def tiny() -> ml_collections.ConfigDict:
    """All four parts at tiny sizes."""
    thinker = _tiny_thinker(hidden_size=48, num_layers=4, head_dim=16, ffn_hidden=96,
                            moe_hidden=32, num_experts=8, num_experts_per_tok=2,
                            decoder_sparse_step=1, mlp_only_layers=(1,), max_seq_len=128)
    aut = AuTSpec(hidden_size=32, num_layers=2, num_heads=4, ffn_hidden=64, conv_channels=8,
                  output_dim=thinker.hidden_size, attention_window_frames=400, max_frames=400)
    talker = dataclasses.replace(TINY_TALKER, thinker_hidden_size=thinker.hidden_size)
    return model(AudioSpec(), aut, thinker, talker, TINY_CODE2WAV, codec_frame_rate=500.0)


def tiny_asr() -> ml_collections.ConfigDict:
    """Tiny AuT + Thinker speech recogniser (the main job); no speech output."""
    thinker = _tiny_thinker(hidden_size=128, num_layers=3, head_dim=32, ffn_hidden=384,
                            moe_hidden=192, num_experts=4, num_experts_per_tok=2,
                            decoder_sparse_step=2, max_seq_len=256, tie_embeddings=True)
    # ctc_frames_per_token=3: 39 CTC frames/s for the auxiliary character CTC loss
    aut = AuTSpec(hidden_size=128, num_layers=3, num_heads=4, ffn_hidden=384, conv_channels=32,
                  output_dim=128, attention_window_frames=800, max_frames=800,
                  ctc_frames_per_token=3)
    talker = dataclasses.replace(TINY_TALKER, thinker_hidden_size=thinker.hidden_size)
    return model(AudioSpec(), aut, thinker, talker, TINY_CODE2WAV, enable_audio_output=False,
                 codec_frame_rate=500.0)


def design_reference() -> ml_collections.ConfigDict:
    """The four-part design-reference table (a second preset, distinct from the release)."""
    thinker = ThinkerSpec(
        vocab_size=151936,  # chosen: the Qwen2/3 text vocabulary
        hidden_size=4096, num_layers=40, num_heads=32, num_kv_heads=8, head_dim=128,
        ffn_hidden=11008,  # chosen: dense SwiGLU width of the non-MoE layers
        moe_hidden=1408,  # chosen: expert width
        num_experts=64, num_experts_per_tok=4, decoder_sparse_step=2, max_seq_len=32768,
        audio_token_id=151646, audio_start_token_id=151647, audio_end_token_id=151648,
        eos_token_id=151645, pad_token_id=151643)
    aut = AuTSpec(hidden_size=1024, num_layers=24, num_heads=16, ffn_hidden=4096,
                  conv_channels=480, output_dim=thinker.hidden_size)
    talker = TalkerSpec(
        thinker_hidden_size=thinker.hidden_size, projection_hidden=thinker.hidden_size,
        hidden_size=1536, num_layers=24, num_heads=12, num_kv_heads=4, head_dim=128,
        rope_theta=1e6, rms_norm_eps=1e-6, vocab_size=3072, codebook_size=2048,
        num_codebooks=4, num_experts=32, num_experts_per_tok=4,
        moe_hidden=768,  # chosen
        shared_expert_hidden=1536,  # chosen
        norm_topk_prob=True, accept_hidden_layer=20,  # chosen (half-way rule of the release: 24/48)
        codec_pad_id=2148, codec_bos_id=2149, codec_eos_id=2150, codec_nothink_id=2155,
        codec_think_bos_id=2156, codec_think_eos_id=2157,
        code_predictor=CodePredictorSpec(
            hidden_size=1536, num_layers=5, num_heads=12, num_kv_heads=4, head_dim=128,
            ffn_hidden=4096, rope_theta=1e6, rms_norm_eps=1e-6))
    code2wav = Code2WavSpec(
        codebook_size=2048, num_codebooks=4, hidden_size=512, num_layers=8, num_heads=8,
        num_kv_heads=8, head_dim=64, ffn_hidden=1536, rope_theta=1e4, sliding_window=72,
        layer_scale_init=0.01, rms_norm_eps=1e-5, upsampling_ratios=(), decoder_dim=512,
        upsample_rates=(8, 5, 4, 2), sample_rate=16000)
    # 16 kHz / (8 * 5 * 4 * 2 = 320 samples per frame)
    return model(AudioSpec(), aut, thinker, talker, code2wav, codec_frame_rate=50.0)


def qwen3_omni_30b_a3b() -> ml_collections.ConfigDict:
    """The released Qwen3-Omni-30B-A3B (config.json of Qwen/Qwen3-Omni-30B-A3B-Instruct)."""
    thinker = ThinkerSpec(
        vocab_size=152064, hidden_size=2048, num_layers=48, num_heads=32, num_kv_heads=4,
        head_dim=128, ffn_hidden=768, moe_hidden=768, num_experts=128, num_experts_per_tok=8,
        decoder_sparse_step=1, mlp_only_layers=(), rope_theta=1e6, rms_norm_eps=1e-6,
        max_seq_len=65536, audio_token_id=151675, audio_start_token_id=151669,
        audio_end_token_id=151670, eos_token_id=151645, pad_token_id=151643)
    aut = AuTSpec(hidden_size=1280, num_layers=32, num_heads=20, ffn_hidden=5120,
                  conv_channels=480, output_dim=2048, chunk_frames=100,
                  attention_window_frames=800)
    talker = TalkerSpec(
        thinker_hidden_size=2048, projection_hidden=2048, hidden_size=1024, num_layers=20,
        num_heads=16, num_kv_heads=2, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
        vocab_size=3072, codebook_size=2048, num_codebooks=16, num_experts=128,
        num_experts_per_tok=6, moe_hidden=384, shared_expert_hidden=768, norm_topk_prob=True,
        accept_hidden_layer=24, codec_pad_id=2148, codec_bos_id=2149, codec_eos_id=2150,
        codec_nothink_id=2155, codec_think_bos_id=2156, codec_think_eos_id=2157,
        code_predictor=CodePredictorSpec(
            hidden_size=1024, num_layers=5, num_heads=16, num_kv_heads=8, head_dim=128,
            ffn_hidden=3072, rope_theta=1e6, rms_norm_eps=1e-6))
    code2wav = Code2WavSpec(
        codebook_size=2048, num_codebooks=16, hidden_size=1024, num_layers=8, num_heads=16,
        num_kv_heads=16, head_dim=64, ffn_hidden=3072, rope_theta=1e4, sliding_window=72,
        layer_scale_init=0.01, rms_norm_eps=1e-5, upsampling_ratios=(2, 2),
        convnext_kernel=7, convnext_mlp_ratio=4, convnext_eps=1e-6, convnext_scale_init=1e-6,
        decoder_dim=1536, upsample_rates=(8, 5, 4, 3), decoder_kernel=7,
        residual_dilations=(1, 3, 9), sample_rate=24000)
    # 24 kHz / (2 * 2 * 8 * 5 * 4 * 3 = 1920 samples per frame)
    return model(AudioSpec(), aut, thinker, talker, code2wav, codec_frame_rate=12.5)


PRESETS = {f.__name__: f for f in (tiny, tiny_asr, design_reference, qwen3_omni_30b_a3b)}


# The Talker prompt's ids of each preset (`config.sample.extra`, read by
# `audiolm.sample.thinker_talker.speech_options_from_config`): tts_bos / tts_eos / tts_pad are
# Thinker-vocabulary ids around the text the Talker speaks (text_projection of their
# embeddings); speaker_ids are the codec ids of the selectable voices (voice v = speaker_ids[v],
# the conditioning id in the Talker prompt), speaker_id the voice used when none is chosen.
_QWEN_TTS = dict(tts_bos_token_id=151672, tts_eos_token_id=151673, tts_pad_token_id=151671,
                 # the release's talker_config.speaker_id: chelsie, ethan, aiden
                 speaker_ids=(2301, 2302, 2303))
# Tiny vocabularies keep two free ids above the audio markers (262, 263: bos / eos of the
# spoken text); tts_pad shares the text pad id. Voices: the 10 codec ids above the tiny
# Talker's special ids (70..79 of its 80).
_TINY_TTS = dict(tts_bos_token_id=262, tts_eos_token_id=263,
                 tts_pad_token_id=TINY_SPECIALS["pad_token_id"],
                 speaker_ids=tuple(range(TINY_TALKER.codec_think_eos_id + 1,
                                         TINY_TALKER.vocab_size)))
SPEECH_PROMPTS = {"tiny": _TINY_TTS, "tiny_asr": _TINY_TTS,
                  "design_reference": _QWEN_TTS,  # chosen: the release's ids
                  "qwen3_omni_30b_a3b": _QWEN_TTS}


def speech_prompt(name: str) -> dict:
    """`config.sample.extra` entries of preset `name`: the tts_* ids, speaker_ids and
    speaker_id (the first voice)."""
    ids = dict(SPEECH_PROMPTS[name])
    ids["speaker_id"] = ids["speaker_ids"][0]
    return ids
