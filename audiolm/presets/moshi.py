"""Kyutai temporal + depth transformer presets (Moshi, Hibiki, Kyutai STT/TTS).

The typed specs of `config.model` live here (this package sits below `audiolm.models`, and both
the presets and the model import them): `MoshiSpec` (the whole section) with `TemporalSpec`
(`model.temporal`), `DepformerSpec` (`model.depformer`), `ExtraHeadsSpec`
(`model.extra_heads`) and `ConditionerSpec` (`model.conditioners.<name>`). Each field is
declared once, with its comment, in these dataclasses; the section a preset writes is
`audiolm.config.spec_to_section(spec)`, and `audiolm.models.moshi` builds the same spec back
with `spec_from_section` after `rules` checked it (dotted paths such as
`model.temporal.hidden_size` in errors). Kyutai's spellings map onto the shared vocabulary in
`audiolm.importers.moshi`: `dim` -> `hidden_size`, `max_period` -> `rope_theta`, `kv_repeat` ->
`num_heads / num_kv_heads`, `dim_feedforward` -> `ffn_hidden` (after `kyutai_gated_hidden`).

Rules: `kyutai_gated_hidden` (Kyutai's gated FFN width), `stream_delays` (the per-stream delays
of a semantic/acoustic codebook grouping). Constructors: `lut`, `tensor_conditioner`;
`NO_DEPFORMER` (text-only models, e.g. STT).

Presets (`PRESETS`, each returning the `config.model` section): `tiny` (tests; `fusion` is an
argument), the Rust moshi-core `lm.rs` presets, then the released Hugging Face models.
`TOKENIZER_PRESETS` / `REPO_PRESETS` name the preset of an official file that carries no
architecture fields (`audiolm.importers.moshi`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import ml_collections
from flax.core import FrozenDict

from audiolm.config import spec_to_section

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


# ------------------------------------------------------------------------------------------
# Typed specs: one declaration (and one comment) per field of `config.model`.


@dataclasses.dataclass(frozen=True)
class TemporalSpec:
    """`model.temporal`: the temporal transformer (one position per column)."""
    hidden_size: int  # model width D
    num_layers: int
    num_heads: int  # attention heads (head width = hidden_size / num_heads)
    num_kv_heads: int  # key/value heads (Kyutai kv_repeat = num_heads / num_kv_heads)
    ffn_hidden: int  # FFN hidden width (gated: after Kyutai's rule, `kyutai_gated_hidden`)
    context: int  # attention window in frames (ring KV cache length)
    rope_theta: float  # RoPE base
    ffn: str = "gated"  # gated (SiLU-gated, Kyutai) | plain (linear-act-linear, no bias)
    activation: str = "silu"  # silu for gated, gelu (exact) for plain
    norm: str = "rms"  # rms (fp32, Kyutai rms_norm_f32) | layer; the depformer uses it too
    norm_eps: float = 1e-8  # 1e-8 for rms_norm_f32, 1e-5 for layer_norm
    positional: str = "rope"  # rope (interleaved pairs) | none
    layer_scale: float = 0.0  # LayerScale init; 0 disables
    cross_attention: bool = False  # LayerNorm + cross-attention branch in every layer


@dataclasses.dataclass(frozen=True)
class DepformerSpec:
    """`model.depformer`: the depth transformer over the codebooks of one frame (no window,
    full multi-head attention, the temporal transformer's norm)."""
    num_slices: int  # codebooks predicted per frame (Kyutai dep_q); 0 = no depformer
    hidden_size: int  # depformer width Dd
    num_layers: int
    num_heads: int
    ffn_hidden: int
    ffn: str = "gated"  # gated | plain, as model.temporal.ffn
    activation: str = "silu"
    weights_per_step: bool = True  # separate attention/FFN weights per slice
    schedule: tuple[int, ...] = ()  # slice -> weight set (shared sets); () = one set per slice
    multi_linear: bool = True  # one temporal->depformer projection per weight set
    low_rank: int = 0  # low-rank rows of the depformer embeddings; 0 = full width
    positional: str = "none"  # none (Kyutai) | rope
    rope_theta: float = 10000.0  # RoPE base (with positional='rope')
    layer_scale: float = 0.0  # LayerScale init; 0 disables


@dataclasses.dataclass(frozen=True)
class ExtraHeadsSpec:
    """`model.extra_heads`: linear heads on the temporal output (the VAD heads of STT 1B)."""
    num_heads: int = 0  # how many heads
    dim: int = 6  # outputs per head


@dataclasses.dataclass(frozen=True)
class ConditionerSpec:
    """`model.conditioners.<name>`: a Kyutai condition, projected to model.temporal.hidden_size
    (learnt padding where absent)."""
    type: str  # lut (a table of n_bins values + the absent row) | tensor ([B, S, dim] input)
    dim: int  # lut: embedding width; tensor: input width
    fuse: str  # sum (added to every input position; lut) | cross (cross-attention source)
    n_bins: int = 0  # lut: number of values (0 for tensor)
    possible_values: tuple[str, ...] = ()  # lut: the value names, id = index


@dataclasses.dataclass(frozen=True)
class MoshiSpec:
    """`config.model` of family moshi."""
    text_in_vocab_size: int  # text embedding rows (text_card + 1; the last id is the initial token)
    text_out_vocab_size: int  # text head outputs
    audio_vocab_size: int  # rows of each audio embedding (card + 1; id card is the initial token)
    audio_codebooks: int  # audio codebooks K read by the temporal transformer (Kyutai n_q)
    delays: tuple[int, ...]  # one delay per stream: text first, then each codebook
    temporal: TemporalSpec
    depformer: DepformerSpec
    family: str = "moshi"
    text_padding_id: int = 3  # Kyutai's text pad id
    text_end_padding_id: int = 0  # Kyutai's end-of-pad text id
    demux_second_text_stream: bool = False  # text ids = product of two text streams (TTS 1.6B)
    # add (Kyutai) | concat (text segment then audio segment) | cross_attention (the audio
    # stream cross-attends to the causal text stream) | interleave (text and audio alternate)
    fusion: str = "add"
    extra_heads: ExtraHeadsSpec = ExtraHeadsSpec()
    # name -> conditioner, fused by `sum` into the input or as a `cross` source
    conditioners: Mapping[str, ConditionerSpec] = FrozenDict()
    cross_pos_emb: bool = False  # sinusoidal positions added to the cross-attention source
    cross_pos_emb_scale: float = 1.0  # scale of those positions

    def __post_init__(self):  # hashable: a flax module field and a jit static argument
        object.__setattr__(self, "conditioners", FrozenDict(self.conditioners))

    @property
    def card(self) -> int:
        """Audio codebook size (head outputs); id `card` is the audio initial token."""
        return self.audio_vocab_size - 1

    @property
    def text_initial(self) -> int:
        return self.text_in_vocab_size - 1

    @property
    def dep_q(self) -> int:
        """Codebooks the depformer predicts per frame (model.depformer.num_slices)."""
        return self.depformer.num_slices

    @property
    def schedule(self) -> tuple[int, ...]:
        """Slice -> weight set of the depformer layers."""
        d = self.depformer
        if d.weights_per_step:
            return tuple(d.schedule) if len(d.schedule) else tuple(range(d.num_slices))
        return (0,) * d.num_slices

    @property
    def in_schedule(self) -> tuple[int, ...]:
        """Slice -> temporal->depformer projection: Kyutai has one per slice (or per scheduled
        set) with multi_linear, else one."""
        d = self.depformer
        if d.multi_linear:
            return tuple(d.schedule) if len(d.schedule) else tuple(range(d.num_slices))
        return (0,) * d.num_slices

    @property
    def num_sets(self) -> int:
        return max(self.schedule) + 1 if self.schedule else 1

    @property
    def num_in_proj(self) -> int:
        return max(self.in_schedule) + 1 if self.in_schedule else 1


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
