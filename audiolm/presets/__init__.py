"""Named presets of published models: the one place where published sizes are written.

One module per family (`thinker_talker`: Qwen3-Omni; `moshi`: Kyutai Moshi / Hibiki / STT /
TTS; `pattern_lm`: MusicGen, stable-audio-tools LMs; `codec`: Mimi and the speech codecs) with a
`PRESETS` table name -> function returning `config.model`. The typed specs live beside them
(`<family>_specs.py`): one frozen dataclass per component whose fields, each with its comment,
are the one declaration of that config section (`audiolm.config.spec_schema` derives the
section's schema, `spec_from_section` reads it, `spec_to_section` writes it); the presets
construct specs and write them.
`experiment` holds what every experiment config shares (`base_config`, the typed `parse_arg`,
`load_experiment_config`). Config files under `configs/` pick a preset here and set the
experiment (data, task, train, sample) around it; importers read presets from here too.
This package imports nothing of `audiolm.models` (it sits below them).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import ml_collections

FAMILIES = ("thinker_talker", "moshi", "pattern_lm", "codec")


def family_presets(family: str) -> ModuleType:
    """The presets module of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {list(FAMILIES)}")
    return importlib.import_module(f"audiolm.presets.{family}")


def get(family: str, name: str, **kwargs: Any) -> ml_collections.ConfigDict:
    """`config.model` of preset `name` of `family` (kwargs go to the preset function)."""
    table = family_presets(family).PRESETS
    if name not in table:
        raise ValueError(f"{family} preset {name!r} is unknown; expected one of {sorted(table)}")
    return table[name](**kwargs)
