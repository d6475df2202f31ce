"""Kyutai temporal + depth transformer presets (Moshi, Hibiki, Kyutai STT/TTS).

The typed specs of `config.model` (`MoshiSpec`, `TemporalSpec`, `DepformerSpec`,
`ExtraHeadsSpec`, `ConditionerSpec`) are declared, field by field with their comments, in
`audiolm.presets.moshi_specs` and re-exported here; a preset builds a MoshiSpec and writes it
with `audiolm.config.spec_to_section`.

Rules: `kyutai_gated_hidden` (Kyutai's gated FFN width), `stream_delays` (the per-stream delays
of a semantic/acoustic codebook grouping). Constructors: `lut`, `tensor_conditioner`;
`NO_DEPFORMER` (text-only models, e.g. STT), `KYUTAI_DEPFORMER` (the released depformer).

Presets (`PRESETS`, each returning the `config.model` section): `tiny` (tests; `fusion` is an
argument), the Rust moshi-core `lm.rs` presets, then the released Hugging Face models.
`TOKENIZER_PRESETS` / `REPO_PRESETS` name the preset of an official file that carries no
architecture fields (`audiolm.importers.moshi`).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from audiolm.config import spec_to_section
from audiolm.presets.moshi_specs import (ConditionerSpec, DepformerSpec, ExtraHeadsSpec,
                                         MoshiSpec, TemporalSpec)

# Kyutai's published gated hidden-size rule (Python `ActivationGating`; Rust uses 11d/4 for the
# dim_ff == 4d case). The two agree whenever dim_ff = 4.125 d.
HIDDEN_SCALE = 4.125


def kyutai_gated_hidden(dim: int, dim_feedforward: int, rust: bool = False) -> int:
    """Gated FFN hidden size from Kyutai's `dim_feedforward` (Python or Rust rule)."""
    if dim_feedforward == 4 * dim:
        return (11 * dim) // 4 if rust else (21 * dim) // 8
    return (2 * dim_feedforward) // 3


def stream_delays(audio_codebooks: int, group: int, acoustic_delay: int) -> tuple:
    """Text delay 0, then per group of `group` codebooks: 0 for the semantic one, then acoustic."""
    audio = []
    for q in range(audio_codebooks):
        audio.append(0 if group <= 0 or q % group == 0 else acoustic_delay)
    return tuple([0] + audio)


def lut(n_bins: int, dim: int, possible_values=(), fuse: str = "sum") -> ConditionerSpec:
    return ConditionerSpec(type="lut", dim=dim, fuse=fuse, n_bins=n_bins,
                           possible_values=tuple(possible_values))


def tensor_conditioner(dim: int, fuse: str = "cross") -> ConditionerSpec:
    return ConditionerSpec(type="tensor", dim=dim, fuse=fuse)


NO_DEPFORMER = DepformerSpec(num_slices=0, hidden_size=1, num_layers=0, num_heads=1,
                             ffn_hidden=1, weights_per_step=False, multi_linear=False)


# ------------------------------------------------------------------------------------------
# Presets. Rust moshi-core `lm.rs` presets first (dim_feedforward 4d -> gated hidden 11d/4),
# then the released Hugging Face models (Python configs, hidden_scale 4.125).

# The depformer of every released Kyutai LM unless a preset says otherwise (Kyutai `depformer_dim`
# 1024, 16 heads, 6 layers, dim_feedforward 4d -> gated hidden 2816).
KYUTAI_DEPFORMER = DepformerSpec(num_slices=8, hidden_size=1024, num_layers=6, num_heads=16,
                                 ffn_hidden=2816)


def _temporal(hidden_size, num_heads, num_layers, ffn_hidden, context, rope_theta, **kw):
    """A TemporalSpec in the order Kyutai's configs list the sizes (dim, heads, layers, ffn,
    context, max_period); full multi-head attention unless num_kv_heads is given."""
    kw.setdefault("num_kv_heads", num_heads)
    return TemporalSpec(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                        ffn_hidden=ffn_hidden, context=context, rope_theta=float(rope_theta), **kw)


def _depformer(num_slices, **kw):
    return dataclasses.replace(KYUTAI_DEPFORMER, num_slices=num_slices, **kw)


def _model(**kw) -> ml_collections.ConfigDict:
    return spec_to_section(MoshiSpec(**kw))


TEMPORAL_7B = _temporal(4096, 32, 32, 11264, 3000, 10000)
TEMPORAL_2B = _temporal(2560, 20, 24, 7040, 3000, 100000)
TEMPORAL_1B = _temporal(2048, 16, 16, 5632, 3000, 100000)
MOSHI_LUT = lut(31, 16, ("very_bad", "bad", "neutral", "good", "very_good"))


def tiny(fusion="add"):
    return _model(text_in_vocab_size=33, text_out_vocab_size=32, audio_vocab_size=17,
                  audio_codebooks=4, delays=(0, 0, 1, 2, 1),
                  temporal=_temporal(32, 4, 2, 48, 16, 10000,
                                     cross_attention=fusion == "cross_attention"),
                  depformer=DepformerSpec(num_slices=3, hidden_size=16, num_layers=2, num_heads=2,
                                          ffn_hidden=24, schedule=(0, 1, 1), low_rank=8),
                  fusion=fusion)


def v0_1():
    return _model(text_in_vocab_size=32001, text_out_vocab_size=32000, audio_vocab_size=2049,
                  audio_codebooks=8, delays=stream_delays(8, 8, 1), temporal=TEMPORAL_7B,
                  depformer=_depformer(8))


def v0_1_streaming(slices=8):
    return _model(text_in_vocab_size=32001, text_out_vocab_size=32000, audio_vocab_size=2049,
                  audio_codebooks=16, delays=stream_delays(16, 8, 1), temporal=TEMPORAL_7B,
                  depformer=_depformer(slices))


def v0_1_asr():
    return _model(text_in_vocab_size=32001, text_out_vocab_size=32000, audio_vocab_size=2049,
                  audio_codebooks=16, delays=(0,) * 17, temporal=TEMPORAL_7B,
                  depformer=NO_DEPFORMER)


def s2s_v0_1():
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=16, delays=stream_delays(16, 8, 1),
                  temporal=_temporal(2048, 16, 16, 5632, 3000, 10000), depformer=_depformer(16))


def asr_v0_1_1b():
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=8, delays=(0,) * 9,
                  temporal=_temporal(2048, 16, 16, 5632, 750, 100000), depformer=NO_DEPFORMER)


def asr_300m_202501():
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=(0,) * 33,
                  temporal=_temporal(1024, 8, 16, 2816, 750, 100000), depformer=NO_DEPFORMER)


def tts_v0_1():
    # LayerNorm + plain GELU MLP (no gating), cross-attention speaker conditioning off.
    return _model(text_in_vocab_size=32001, text_out_vocab_size=32001, audio_vocab_size=2050,
                  audio_codebooks=16, delays=(0, 0) + (2,) * 15,
                  temporal=_temporal(2048, 32, 48, 8192, 4096, 10000, ffn="plain",
                                     activation="gelu", norm="layer", norm_eps=1e-5),
                  depformer=_depformer(16, ffn_hidden=4096, ffn="plain", activation="gelu"))


def tts_202501():
    return _model(text_in_vocab_size=8001, text_out_vocab_size=8000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=(0, 0) + (2,) * 31,
                  temporal=_temporal(2048, 32, 48, 5632, 500, 10000, cross_attention=True),
                  depformer=_depformer(32),
                  conditioners={"speaker_wavs": tensor_conditioner(512, fuse="cross")})


def s2s_2b_16rvq_202501():
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=stream_delays(32, 16, 2), temporal=TEMPORAL_2B,
                  depformer=_depformer(16))


def s2st_1b():
    """The model of the Rust config `s2st-1b.toml` (Hibiki-style speech translation, 1B)."""
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=16, delays=stream_delays(16, 8, 1), temporal=TEMPORAL_1B,
                  depformer=_depformer(8), conditioners={"description": MOSHI_LUT})


def moshi_7b_202409():
    return _model(text_in_vocab_size=32001, text_out_vocab_size=32000, audio_vocab_size=2049,
                  audio_codebooks=16, delays=stream_delays(16, 8, 1), temporal=TEMPORAL_7B,
                  depformer=_depformer(8))


def moshi_dev_2b():
    return _model(text_in_vocab_size=48001, text_out_vocab_size=48000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=stream_delays(32, 16, 2), temporal=TEMPORAL_2B,
                  depformer=_depformer(16), conditioners={"description": MOSHI_LUT})


def stt_2_6b_en():
    return _model(text_in_vocab_size=4001, text_out_vocab_size=4000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=(0,) * 33,
                  temporal=_temporal(2048, 32, 48, 5632, 375, 100000), depformer=NO_DEPFORMER)


def stt_1b_en_fr():
    return _model(text_in_vocab_size=8001, text_out_vocab_size=8000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=(0,) * 33,
                  temporal=_temporal(2048, 16, 16, 5632, 750, 100000), depformer=NO_DEPFORMER,
                  extra_heads=ExtraHeadsSpec(num_heads=4, dim=6))


def tts_1_6b_en_fr():
    schedule = tuple(range(8)) + (8,) * 8 + (9,) * 8 + (10,) * 8
    return _model(text_in_vocab_size=8001, text_out_vocab_size=8000, audio_vocab_size=2049,
                  audio_codebooks=32, delays=(0, 0) + (2,) * 31,
                  temporal=_temporal(2048, 16, 16, 5632, 500, 10000, cross_attention=True),
                  depformer=_depformer(32, num_layers=4, ffn_hidden=2048, schedule=schedule,
                                       low_rank=128),
                  demux_second_text_stream=True, cross_pos_emb=True,
                  conditioners={
                      "control": lut(1, 2048, ("ok",)),
                      "cfg": lut(7, 16, ("1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0")),
                      "speaker_wavs": tensor_conditioner(512, fuse="cross"),
                  })


PRESETS = {f.__name__: f for f in (
    tiny, v0_1, v0_1_streaming, v0_1_asr, s2s_v0_1, asr_v0_1_1b, asr_300m_202501, tts_v0_1,
    tts_202501, s2s_2b_16rvq_202501, s2st_1b, moshi_7b_202409, moshi_dev_2b, stt_2_6b_en,
    stt_1b_en_fr, tts_1_6b_en_fr)}

# Files without architecture fields name the released model through their tokenizer or repo.
TOKENIZER_PRESETS = {
    "tokenizer_en_audio_4000.model": "stt_2_6b_en",
    "tokenizer_en_fr_audio_8000.model": "stt_1b_en_fr",
    "tokenizer_spm_8k_en_fr_audio.model": "tts_1_6b_en_fr",
}
REPO_PRESETS = {
    "kyutai/stt-2.6b-en": "stt_2_6b_en", "kyutai/stt-2.6b-en-candle": "stt_2_6b_en",
    "kyutai/stt-1b-en_fr": "stt_1b_en_fr", "kyutai/stt-1b-en_fr-candle": "stt_1b_en_fr",
    "kyutai/tts-1.6b-en_fr": "tts_1_6b_en_fr",
    "kyutai/moshiko-pytorch-bf16": "moshi_7b_202409",
    "kyutai/moshika-pytorch-bf16": "moshi_7b_202409",
}
