"""Pattern LM presets: MusicGen / stable-audio-tools audio LMs over interleaved codebooks.

The typed specs of `config.model` live here (this package sits below `audiolm.models`, and both
the presets and the model import them): `PatternLMSpec` (the whole section) with
`PatternSpec` (`model.pattern`), `TransformerSpec` (`model.lm`) and `ConditioningSpec`
(`model.conditioning`). Each field is declared once, with its comment, in these dataclasses; a
preset writes `audiolm.config.spec_to_section(spec)`, and `audiolm.models.pattern_lm` builds the
spec back with `spec_from_section` after its rules checked it. Published spellings map onto the
shared vocabulary in the importers (`audiolm.importers.musicgen`: `hidden_size`, `ffn_dim` ->
`ffn_hidden`; `audiolm.importers.stable_audio_tools`: `embed_dim` -> `hidden_size`, `depth` ->
`num_layers`).

Pretransform sections (`model.pretransform`): one spec per tokenizer type of the
`audiolm.models.pretransform` registry (`MuLawRVQSpec`: mulaw_rvq, `CodeSpaceSpec`: codes; a
codec module registers its own).
Conditioner sections (`model.conditioning.conditioners.<id>`): one spec per type
(`CONDITIONER_SPECS`: number, lookup, text, t5, tensor), run by `audiolm.models.conditioners`.

Presets (`PRESETS`): `tiny` (every conditioning type; tests) and `musicgen_small`. Format facts
the importers share: `ENCODEC_32KHZ` (MusicGen's codec rates), `T5_DIMS` (T5 encoder widths).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections
from flax.core import FrozenDict

from audiolm.config import spec_to_section

# The codec MusicGen checkpoints are trained on (a decoder-only checkpoint does not carry it).
ENCODEC_32KHZ = {"sample_rate": 32000, "frame_rate": 50.0}

# Widths of the public T5 encoders stable-audio-tools names (its T5Conditioner.T5_MODEL_DIMS).
T5_DIMS = {
    "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
    "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
    "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096, "google/t5-v1_1-xl": 2048,
    "google/t5-v1_1-xxl": 4096,
}


# ------------------------------------------------------------------------------------------
# Typed specs: one declaration (and one comment) per field of `config.model`.


@dataclasses.dataclass(frozen=True)
class MuLawRVQSpec:
    """`model.pretransform` of `type: mulaw_rvq`: the built-in deterministic tokenizer
    (`audiolm.models.pretransform.MuLawRVQ` is this spec with its encode / decode)."""
    n_q: int  # codebooks K read by the LM
    codebook_size: int  # codes per codebook (card; the pattern's special token is card)
    sample_rate: int  # Hz
    frame_rate: float  # code frames per second (sample_rate / frame_rate samples per frame)
    mu: float = 255.0  # mu-law parameter
    type: str = "mulaw_rvq"


@dataclasses.dataclass(frozen=True)
class CodeSpaceSpec:
    """`model.pretransform` of `type: codes`: the code space of a codec that runs elsewhere
    (e.g. MusicGen's EnCodec 32 kHz; `audiolm.models.pretransform.CodeSpace`)."""
    n_q: int  # codebooks K read by the LM
    codebook_size: int  # codes per codebook (card)
    sample_rate: int  # Hz of the codec's audio
    frame_rate: float  # code frames per second
    name: str = ""  # the codec's name (shown, not read)
    type: str = "codes"


@dataclasses.dataclass(frozen=True)
class PatternSpec:
    """`model.pattern`: how codebooks are laid out in time (`audiolm.patterns.make`)."""
    kind: str = "delay"  # parallel | delay | unroll | coarse_first | musiclm
    # keyword arguments of audiolm.patterns.make (delays, flatten_first, empty_initial,
    # flattening, group_by)
    kwargs: Mapping[str, Any] = FrozenDict()


@dataclasses.dataclass(frozen=True)
class TransformerSpec:
    """`model.lm`: the pre-norm causal transformer over [prepend tokens; pattern sequence]."""
    hidden_size: int  # model width
    num_layers: int
    num_heads: int  # query heads
    ffn_hidden: int  # FFN hidden width
    num_kv_heads: int = 0  # key/value heads (GQA when fewer); 0 = num_heads
    head_dim: int = 0  # per-head width; 0 = hidden_size // num_heads
    ffn: str = "plain"  # plain: fc1-act-fc2 (MusicGen) | gated: SwiGLU (stable-audio-tools)
    activation: str = "gelu"  # gelu = exact erf GELU (MusicGen)
    norm: str = "layer"  # layer | rms
    norm_eps: float = 1e-5
    attn_bias: bool = False  # q/k/v/o biases
    mlp_bias: bool = False
    head_bias: bool = False  # per-codebook output head bias (stable-audio-tools has one)
    positional: str = "sinusoidal"  # sinusoidal ([cos, sin], MusicGen) | rope | none
    rope_theta: float = 10000.0  # RoPE base (positional='rope')
    scale_embedding: bool = False  # multiply summed code embeddings by sqrt(hidden_size)
    final_norm: bool = True  # norm before the heads

    def __post_init__(self):  # the derived defaults, written out in the section
        if not self.num_kv_heads:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if not self.head_dim and self.num_heads:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)


class _Conditioner:
    """What every conditioner spec answers (its fields are its type's)."""

    @property
    def is_sequence(self) -> bool:
        """True for types whose batch array has a sequence axis (and a mask)."""
        return self.type in ("text", "t5", "tensor")


@dataclasses.dataclass(frozen=True)
class NumberConditionerSpec(_Conditioner):
    """`type: number`: floats clipped to [min_val, max_val] and normalised to [0, 1], learned
    Fourier features + a linear layer (stable-audio-tools' NumberConditioner). One token."""
    min_val: float
    max_val: float
    type: str = "number"


@dataclasses.dataclass(frozen=True)
class LookupConditionerSpec(_Conditioner):
    """`type: lookup`: class ids (ints in [min_val, min_val + num_classes), or strings from
    `options`, unknown -> 0) through a table. One token."""
    num_classes: int  # table rows (with options: len(options) + 1, row 0 = an unknown option)
    min_val: int = 0  # the integer class id (>= 0) of row 0 (without options)
    options: tuple[str, ...] = ()  # option strings, row = index + 1; () = integer class ids
    type: str = "lookup"


@dataclasses.dataclass(frozen=True)
class TextConditionerSpec(_Conditioner):
    """`type: text`: the built-in byte-level encoder (UTF-8 bytes + 1, 0 = padding, byte
    embeddings + sinusoidal positions + bidirectional layers of width cond_dim)."""
    max_length: int  # bytes kept (condition tokens)
    num_layers: int  # bidirectional layers; 0 = embeddings and positions only
    num_heads: int
    ffn_hidden: int
    type: str = "text"


@dataclasses.dataclass(frozen=True)
class T5ConditionerSpec(_Conditioner):
    """`type: t5`: a frozen T5 encoder run on the host (`conditioners.T5TextEncoder`); the model
    holds only the projection to cond_dim."""
    path: str  # local T5 directory (transformers `save_pretrained` layout + tokenizer)
    dim: int  # the encoder's output width (T5 d_model)
    max_length: int  # tokens kept
    project: bool = False  # Linear(dim -> cond_dim) also when dim == cond_dim
    type: str = "t5"


@dataclasses.dataclass(frozen=True)
class TensorConditionerSpec(_Conditioner):
    """`type: tensor`: pre-computed embeddings [B, S, dim] with a mask."""
    dim: int  # input width
    max_length: int  # tokens kept (inputs are padded to it)
    project: bool = False  # Linear(dim -> cond_dim) also when dim == cond_dim
    type: str = "tensor"


# `model.conditioning.conditioners.<id>.type` -> its spec.
CONDITIONER_SPECS = {cls.type: cls for cls in (
    NumberConditionerSpec, LookupConditionerSpec, TextConditionerSpec, T5ConditionerSpec,
    TensorConditionerSpec)}


@dataclasses.dataclass(frozen=True)
class ConditioningSpec:
    """`model.conditioning`: conditioners and how their tokens reach the transformer."""
    cond_dim: int  # width C of every conditioner's output
    # id -> a conditioner spec of CONDITIONER_SPECS (its section carries `type`)
    conditioners: Mapping[str, Any] = FrozenDict()
    cross_attention_ids: tuple[str, ...] = ()  # ids concatenated along the sequence, cross-attended
    prepend_ids: tuple[str, ...] = ()  # ids projected and placed before the codes
    global_ids: tuple[str, ...] = ()  # ids pooled, projected and added to every position
    project_cross_attention: bool = False  # Linear(C -> hidden_size) on the cross-attention tokens
    cfg_dropout: float = 0.1  # per-sample, per-type null-condition probability (training)

    def __post_init__(self):  # hashable: a flax module field and a jit static argument
        object.__setattr__(self, "conditioners", FrozenDict(self.conditioners))


@dataclasses.dataclass(frozen=True)
class PatternLMSpec:
    """`config.model` of family pattern_lm. Built by `audiolm.models.pattern_lm.spec_from_config`
    it is the model's static description: `pretransform` then holds the built tokenizer (its
    n_q and codebook_size are the LM's codebooks K and card)."""
    max_frames: int  # code frames per training example (pattern length; example batches)
    # the discrete tokenizer: a section of its type (MuLawRVQSpec, CodeSpaceSpec, a codec's);
    # the LM reads n_q and codebook_size
    pretransform: Any
    lm: TransformerSpec
    conditioning: ConditioningSpec
    pattern: PatternSpec = PatternSpec()
    family: str = "pattern_lm"

    @property
    def n_q(self) -> int:
        return int(self.pretransform.n_q)

    @property
    def card(self) -> int:
        """Codes per codebook; id `card` is the pattern's special token."""
        return int(self.pretransform.codebook_size)

    @property
    def has_cross(self) -> bool:
        return bool(self.conditioning.cross_attention_ids)


def model(**fields: Any) -> ml_collections.ConfigDict:
    """`config.model` of the PatternLMSpec with `fields`."""
    return spec_to_section(PatternLMSpec(**fields))


def tiny():
    """All three conditioning types, every conditioner type except t5 (it needs a local model)."""
    conds = {
        "prompt": TextConditionerSpec(max_length=12, num_layers=1, num_heads=2, ffn_hidden=32),
        "genre": LookupConditionerSpec(num_classes=5),
        "bpm": NumberConditionerSpec(min_val=40.0, max_val=200.0),
        "style": TensorConditionerSpec(dim=6, max_length=3, project=True),
    }
    return model(
        max_frames=12,
        pretransform=MuLawRVQSpec(n_q=4, codebook_size=16, sample_rate=1600, frame_rate=50.0),
        lm=TransformerSpec(hidden_size=32, num_layers=2, num_heads=4, ffn_hidden=64),
        conditioning=ConditioningSpec(16, conds, cross_attention_ids=("prompt", "style"),
                                      prepend_ids=("genre",), global_ids=("bpm",),
                                      project_cross_attention=True),
        pattern=PatternSpec("delay"))


def musicgen_small():
    """MusicGen small: 24 x 1024 (16 heads, FFN 4096), 4 codebooks of 2048 (EnCodec 32 kHz,
    50 Hz), delay pattern, cross-attention to T5-base (768) projected to the width."""
    conds = {"description": T5ConditionerSpec(path="t5-base", dim=768, max_length=64)}
    return model(
        max_frames=1500,  # 30 s at 50 Hz
        pretransform=CodeSpaceSpec(n_q=4, codebook_size=2048, sample_rate=32000, frame_rate=50.0,
                                   name="encodec_32khz"),
        lm=TransformerSpec(hidden_size=1024, num_layers=24, num_heads=16, ffn_hidden=4096),
        conditioning=ConditioningSpec(768, conds, cross_attention_ids=("description",),
                                      project_cross_attention=True, cfg_dropout=0.1),
        pattern=PatternSpec("delay"))


PRESETS = {"tiny": tiny, "musicgen_small": musicgen_small}
