"""Kyutai temporal + depth transformer presets (Moshi, Hibiki, Kyutai STT/TTS).

Section builders: `temporal`, `depformer`, `lut`, `tensor_conditioner`; `model(...)` assembles
`config.model`. Rules: `kyutai_gated_hidden` (Kyutai's gated FFN width), `stream_delays` (the
per-stream delays of a semantic/acoustic codebook grouping).

`config.model` fields (dotted paths used in errors):
  text_in_vocab_size   rows of the text embedding (text_card + 1; the last id is the initial token)
  text_out_vocab_size  text head outputs
  audio_vocab_size     rows of each audio embedding (card + 1; id card is the initial token)
  audio_codebooks      audio codebooks read by the temporal transformer (n_q)
  delays               one delay per stream: text first, then each codebook (Moshi convention)
  text_padding_id / text_end_padding_id   Kyutai's pad / end-of-pad text ids
  demux_second_text_stream   text ids are the cartesian product of two text streams (TTS 1.6B)
  fusion               add (Kyutai) | concat (text segment then audio segment) |
                       cross_attention (audio stream cross-attends to the causal text stream) |
                       interleave (text and audio positions alternate)
  temporal.*           the temporal transformer (ffn_hidden is the gated hidden size after
                       Kyutai's rule, see `kyutai_gated_hidden`)
  depformer.*          the depth transformer over codebooks (num_slices=0: none, e.g. STT)
  extra_heads.*        linear heads on the temporal output (VAD heads of STT 1B)
  conditioners.<name>  lut/tensor conditioners, fused by `sum` into the input or `cross`

Presets (`PRESETS`): `tiny` (tests; `fusion` is an argument), the Rust moshi-core `lm.rs`
presets, then the released Hugging Face models. `TOKENIZER_PRESETS` / `REPO_PRESETS` name the
preset of an official file that carries no architecture fields (`audiolm.importers.moshi`).
"""

from __future__ import annotations

import ml_collections

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


def temporal(dim, num_heads, num_layers, ffn_hidden, context, max_period, *, ffn="gated",
             activation="silu", norm="rms", norm_eps=1e-8, cross_attention=False,
             num_kv_heads=None, layer_scale=0.0, positional="rope"):
    return ml_collections.ConfigDict(dict(
        dim=dim,  # model width
        num_heads=num_heads,  # attention heads (head width = dim / num_heads)
        num_kv_heads=num_kv_heads or num_heads,  # key/value heads (Kyutai kv_repeat = heads / this)
        num_layers=num_layers,
        ffn=ffn,  # gated (SiLU-gated, Kyutai) | plain (linear-act-linear, no bias)
        ffn_hidden=ffn_hidden,  # FFN hidden width
        activation=activation,  # silu for gated, gelu (exact) for plain
        norm=norm,  # rms (fp32, Kyutai rms_norm_f32) | layer
        norm_eps=norm_eps,  # 1e-8 for rms_norm_f32, 1e-5 for layer_norm
        context=context,  # attention window in frames (ring KV cache length)
        positional=positional,  # rope (interleaved pairs) | none
        max_period=float(max_period),  # RoPE theta
        layer_scale=float(layer_scale),  # LayerScale init; 0 disables
        cross_attention=cross_attention,  # LayerNorm + cross-attention branch in every layer
    ))


def depformer(num_slices, dim=1024, num_heads=16, num_layers=6, ffn_hidden=2816, *,
              ffn="gated", activation="silu", weights_per_step=True, schedule=(),
              multi_linear=True, low_rank=0, positional="none", max_period=10000.0,
              layer_scale=0.0):
    return ml_collections.ConfigDict(dict(
        num_slices=num_slices,  # codebooks predicted per frame (dep_q); 0 = no depformer
        dim=dim, num_heads=num_heads, num_layers=num_layers,
        ffn=ffn, ffn_hidden=ffn_hidden, activation=activation,
        weights_per_step=weights_per_step,  # separate attention/FFN weights per slice
        schedule=tuple(schedule),  # slice -> weight set (shared sets); () = one set per slice
        multi_linear=multi_linear,  # one temporal->depformer projection per weight set
        low_rank=low_rank,  # low-rank rows of the depformer embeddings; 0 = full width
        positional=positional,  # none (Kyutai) | rope
        max_period=float(max_period),
        layer_scale=float(layer_scale),
    ))


def lut(n_bins, dim, possible_values=(), fuse="sum"):
    return ml_collections.ConfigDict(dict(type="lut", n_bins=n_bins, dim=dim,
                                          possible_values=tuple(possible_values), fuse=fuse))


def tensor_conditioner(dim, fuse="cross"):
    return ml_collections.ConfigDict(dict(type="tensor", n_bins=0, dim=dim, possible_values=(),
                                          fuse=fuse))


def model(*, text_in, text_out, audio_vocab, codebooks, delays, temporal_cfg, depformer_cfg,
          extra_heads=0, extra_heads_dim=6, conditioners=None, cross_pos_emb=False,
          demux=False, fusion="add"):
    m = ml_collections.ConfigDict()
    m.family = "moshi"
    m.text_in_vocab_size = text_in  # text embedding rows (text_card + 1: initial token last)
    m.text_out_vocab_size = text_out  # text head outputs
    m.audio_vocab_size = audio_vocab  # rows of each audio embedding (card + 1: initial token)
    m.audio_codebooks = codebooks  # audio codebooks read by the temporal transformer (n_q)
    m.delays = tuple(delays)  # one delay per stream: text first, then each codebook
    m.text_padding_id = 3  # Kyutai's text pad id
    m.text_end_padding_id = 0  # Kyutai's end-of-pad text id
    m.demux_second_text_stream = demux  # text ids = product of two text streams (TTS 1.6B)
    m.fusion = fusion  # add | concat | cross_attention | interleave (text/audio fusion)
    m.temporal = temporal_cfg
    m.depformer = depformer_cfg
    # linear heads on the temporal output (VAD heads of STT 1B): count and output width
    m.extra_heads = ml_collections.ConfigDict(dict(num_heads=extra_heads, dim=extra_heads_dim))
    m.conditioners = ml_collections.ConfigDict(conditioners or {})  # name -> lut | tensor
    m.cross_pos_emb = cross_pos_emb  # sinusoidal positions added to the cross-attention source
    m.cross_pos_emb_scale = 1.0  # scale of those positions
    return m


NO_DEPFORMER = dict(num_slices=0, dim=1, num_heads=1, num_layers=0, ffn_hidden=1,
                    weights_per_step=False, multi_linear=False)


# ------------------------------------------------------------------------------------------
# Presets. Rust moshi-core `lm.rs` presets first (dim_feedforward 4d -> gated hidden 11d/4),
# then the released Hugging Face models (Python configs, hidden_scale 4.125).


def tiny(fusion="add"):
    cross = fusion == "cross_attention"
    return model(text_in=33, text_out=32, audio_vocab=17, codebooks=4, delays=(0, 0, 1, 2, 1),
                 temporal_cfg=temporal(32, 4, 2, 48, 16, 10000, cross_attention=cross),
                 depformer_cfg=depformer(3, 16, 2, 2, 24, schedule=(0, 1, 1), low_rank=8),
                 fusion=fusion)


def v0_1():
    return model(text_in=32001, text_out=32000, audio_vocab=2049, codebooks=8,
                 delays=stream_delays(8, 8, 1),
                 temporal_cfg=temporal(4096, 32, 32, 11264, 3000, 10000),
                 depformer_cfg=depformer(8))


def v0_1_streaming(slices=8):
    return model(text_in=32001, text_out=32000, audio_vocab=2049, codebooks=16,
                 delays=stream_delays(16, 8, 1),
                 temporal_cfg=temporal(4096, 32, 32, 11264, 3000, 10000),
                 depformer_cfg=depformer(slices))


def v0_1_asr():
    return model(text_in=32001, text_out=32000, audio_vocab=2049, codebooks=16,
                 delays=(0,) * 17, temporal_cfg=temporal(4096, 32, 32, 11264, 3000, 10000),
                 depformer_cfg=depformer(**NO_DEPFORMER))


def s2s_v0_1():
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=16,
                 delays=stream_delays(16, 8, 1),
                 temporal_cfg=temporal(2048, 16, 16, 5632, 3000, 10000),
                 depformer_cfg=depformer(16))


def asr_v0_1_1b():
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=8,
                 delays=(0,) * 9, temporal_cfg=temporal(2048, 16, 16, 5632, 750, 100000),
                 depformer_cfg=depformer(**NO_DEPFORMER))


def asr_300m_202501():
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=32,
                 delays=(0,) * 33, temporal_cfg=temporal(1024, 8, 16, 2816, 750, 100000),
                 depformer_cfg=depformer(**NO_DEPFORMER))


def tts_v0_1():
    # LayerNorm + plain GELU MLP (no gating), cross-attention speaker conditioning off.
    return model(text_in=32001, text_out=32001, audio_vocab=2050, codebooks=16,
                 delays=(0, 0) + (2,) * 15,
                 temporal_cfg=temporal(2048, 32, 48, 8192, 4096, 10000, ffn="plain",
                                       activation="gelu", norm="layer", norm_eps=1e-5),
                 depformer_cfg=depformer(16, ffn_hidden=4096, ffn="plain", activation="gelu"))


def tts_202501():
    return model(text_in=8001, text_out=8000, audio_vocab=2049, codebooks=32,
                 delays=(0, 0) + (2,) * 31,
                 temporal_cfg=temporal(2048, 32, 48, 5632, 500, 10000, cross_attention=True),
                 depformer_cfg=depformer(32),
                 conditioners={"speaker_wavs": tensor_conditioner(512, fuse="cross")})


def s2s_2b_16rvq_202501():
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=32,
                 delays=stream_delays(32, 16, 2),
                 temporal_cfg=temporal(2560, 20, 24, 7040, 3000, 100000),
                 depformer_cfg=depformer(16))


def s2st_1b():
    """The model of the Rust config `s2st-1b.toml` (Hibiki-style speech translation, 1B)."""
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=16,
                 delays=stream_delays(16, 8, 1),
                 temporal_cfg=temporal(2048, 16, 16, 5632, 3000, 100000),
                 depformer_cfg=depformer(8),
                 conditioners={"description": lut(
                     31, 16, ("very_bad", "bad", "neutral", "good", "very_good"))})


def moshi_7b_202409():
    return model(text_in=32001, text_out=32000, audio_vocab=2049, codebooks=16,
                 delays=stream_delays(16, 8, 1),
                 temporal_cfg=temporal(4096, 32, 32, 11264, 3000, 10000),
                 depformer_cfg=depformer(8))


def moshi_dev_2b():
    return model(text_in=48001, text_out=48000, audio_vocab=2049, codebooks=32,
                 delays=stream_delays(32, 16, 2),
                 temporal_cfg=temporal(2560, 20, 24, 7040, 3000, 100000),
                 depformer_cfg=depformer(16),
                 conditioners={"description": lut(
                     31, 16, ("very_bad", "bad", "neutral", "good", "very_good"))})


def stt_2_6b_en():
    return model(text_in=4001, text_out=4000, audio_vocab=2049, codebooks=32, delays=(0,) * 33,
                 temporal_cfg=temporal(2048, 32, 48, 5632, 375, 100000),
                 depformer_cfg=depformer(**NO_DEPFORMER))


def stt_1b_en_fr():
    return model(text_in=8001, text_out=8000, audio_vocab=2049, codebooks=32, delays=(0,) * 33,
                 temporal_cfg=temporal(2048, 16, 16, 5632, 750, 100000),
                 depformer_cfg=depformer(**NO_DEPFORMER), extra_heads=4, extra_heads_dim=6)


def tts_1_6b_en_fr():
    schedule = tuple(range(8)) + (8,) * 8 + (9,) * 8 + (10,) * 8
    return model(text_in=8001, text_out=8000, audio_vocab=2049, codebooks=32,
                 delays=(0, 0) + (2,) * 31,
                 temporal_cfg=temporal(2048, 16, 16, 5632, 500, 10000, cross_attention=True),
                 depformer_cfg=depformer(32, num_layers=4, ffn_hidden=2048, schedule=schedule,
                                         low_rank=128),
                 demux=True, cross_pos_emb=True,
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
