"""Family registry: maps `config.model.family` to the module that builds it.

A family module defines:
  build(model_config) -> flax.linen.Module
  describe_params(model_config) -> {component: {"total", "active", "embedding"}} via eval_shape
and registers its validation rules with `audiolm.config.register_rules` at import time.
Modules are imported lazily so that validating a Moshi config never imports the Qwen code.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

FAMILIES = {
    "thinker_talker": "audiolm.models.thinker_talker",
    "moshi": "audiolm.models.moshi",
    "pattern_lm": "audiolm.models.pattern_lm",
}


def family_module(family: str) -> ModuleType:
    """Imports and returns the module of `family` (registers its config rules)."""
    from audiolm.config import ConfigError

    if family not in FAMILIES:
        raise ConfigError(f"model.family={family!r}: must be one of {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def build(model_config: Any):
    """Builds the flax module of `model_config.family` (validate the full config first)."""
    return family_module(model_config.family).build(model_config)
