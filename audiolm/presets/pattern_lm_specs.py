"""Typed specs of the pattern LM family (MusicGen / stable-audio-tools LMs): one frozen
dataclass per component of `config.model`.

Each field is declared here once, with its comment: `PatternSpec` (`model.pattern`),
`TransformerSpec` (`model.lm`), `ConditioningSpec` (`model.conditioning`), one spec per
conditioner type (`CONDITIONER_SPECS`: `model.conditioning.conditioners.<id>`), one per built-in
tokenizer type (`MuLawRVQSpec`, `CodeSpaceSpec`: `model.pretransform`); `PatternLMSpec` is
`config.model` itself.

The two views of the same fields: presets (`audiolm.presets.pattern_lm`) and the importers
(`audiolm.importers.musicgen`, `stable_audio_tools`) construct specs and write them with
`audiolm.config.spec_to_section`; `audiolm.models.pattern_lm` (with `conditioners` and
`pretransform`, whose `MuLawRVQ` / `CodeSpace` are these specs plus behaviour) derives the
schemas with `spec_schema` and builds the model from the spec read back by `spec_from_section`.
The classes live in the presets package, below the models, so that presets build them without
importing models.

Names follow the library's shared vocabulary (`hidden_size`, `num_layers`, `num_heads`,
`num_kv_heads`, `head_dim`, `ffn_hidden`, `rope_theta`, `norm_eps`); published spellings
(transformers' MusicGen `ffn_dim`, stable-audio-tools' `embed_dim` / `depth`) appear only in the
importers' mapping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from flax.core import FrozenDict


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
    # ids concatenated along the sequence and cross-attended by every layer
    cross_attention_ids: tuple[str, ...] = ()
    prepend_ids: tuple[str, ...] = ()  # ids projected and placed before the codes
    global_ids: tuple[str, ...] = ()  # ids pooled, projected and added to every position
    # Linear(C -> lm.hidden_size) on the cross-attention tokens
    project_cross_attention: bool = False
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
