"""Typed specs of the Kyutai family (Moshi, Hibiki, Kyutai STT / TTS): one frozen dataclass per
component of `config.model`.

Each field is declared here once, with its comment: `TemporalSpec` (`model.temporal`),
`DepformerSpec` (`model.depformer`), `ExtraHeadsSpec` (`model.extra_heads`),
`ConditionerSpec` (`model.conditioners.<name>`); `MoshiSpec` is `config.model` itself.

The two views of the same fields: presets (`audiolm.presets.moshi`) and the importer
(`audiolm.importers.moshi`) construct specs and write them with `audiolm.config.spec_to_section`;
`audiolm.models.moshi` derives its schema with `spec_schema` and builds the model from the spec
read back by `spec_from_section` (a MoshiSpec is hashable: a flax module field and a jit static
argument). The classes live in the presets package, below the models, so that presets build
them without importing models.

Names follow the library's shared vocabulary (`hidden_size`, `num_layers`, `num_heads`,
`num_kv_heads`, `ffn_hidden`, `rope_theta`, `norm_eps`); Kyutai's spellings (`dim`,
`max_period`, `kv_repeat`, `dim_feedforward`, `n_q`, `dep_q`) appear only in the importer's
mapping.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from flax.core import FrozenDict


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
