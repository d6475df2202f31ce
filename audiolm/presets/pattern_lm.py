"""Pattern LM presets: MusicGen / stable-audio-tools audio LMs over interleaved codebooks.

The typed specs of `config.model` (`PatternLMSpec` with `PatternSpec`, `TransformerSpec`,
`ConditioningSpec`, the conditioner specs of `CONDITIONER_SPECS` and the tokenizer specs
`MuLawRVQSpec` / `CodeSpaceSpec`) are declared, field by field with their comments, in
`audiolm.presets.pattern_lm_specs` and re-exported here; `model(...)` writes a PatternLMSpec with
`audiolm.config.spec_to_section`.

Presets (`PRESETS`): `tiny` (every conditioning type; tests) and `musicgen_small`. Format facts
the importers share: `ENCODEC_32KHZ` (MusicGen's codec rates), `T5_DIMS` (T5 encoder widths).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from audiolm.config import spec_to_section
from audiolm.presets.pattern_lm_specs import (  # the importers and tests build them from here
    CONDITIONER_SPECS, CodeSpaceSpec, ConditioningSpec, LookupConditionerSpec, MuLawRVQSpec,
    NumberConditionerSpec, PatternLMSpec, PatternSpec, T5ConditionerSpec, TensorConditionerSpec,
    TextConditionerSpec, TransformerSpec)

__all__ = ["CONDITIONER_SPECS", "CodeSpaceSpec", "ConditioningSpec", "LookupConditionerSpec",
           "MuLawRVQSpec", "NumberConditionerSpec", "PatternLMSpec", "PatternSpec",
           "T5ConditionerSpec", "TensorConditionerSpec", "TextConditionerSpec", "TransformerSpec",
           "ENCODEC_32KHZ", "T5_DIMS", "model", "tiny", "musicgen_small", "PRESETS"]

# The codec MusicGen checkpoints are trained on (a decoder-only checkpoint does not carry it).
ENCODEC_32KHZ = {"sample_rate": 32000, "frame_rate": 50.0}

# Widths of the public T5 encoders stable-audio-tools names (its T5Conditioner.T5_MODEL_DIMS).
T5_DIMS = {
    "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
    "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
    "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096, "google/t5-v1_1-xl": 2048,
    "google/t5-v1_1-xxl": 4096,
}


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
