"""Importers: official / Hugging Face / Kyutai / stable-audio-tools checkpoints and config files
-> our `(config, params)`. They sit above `audiolm.models` (they read model code, never the
reverse) and take published sizes from `audiolm.presets`. Every importer reads tensors through
`mapping.TensorStore` and maps names with `mapping.Reader` (missing and leftover tensors are
errors); `stable_audio_tools` turns a stable-audio-tools LM config into a pattern LM.

`load_pretrained(path)` looks at the directory's config file and dispatches:
  * `config.json` with `model_type` "qwen3_omni_moe"  -> `audiolm.importers.qwen3_omni`
  * `config.json` with `model_type` "musicgen" / "musicgen_decoder" -> `audiolm.importers.musicgen`
  * a Kyutai config (JSON with `text_card` / `dim`, or a TOML file) -> `audiolm.importers.moshi`
Each returns `(config, params)`: an experiment-ready model ConfigDict and a plain params pytree.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

_BY_MODEL_TYPE = {
    "qwen3_omni_moe": "audiolm.importers.qwen3_omni",
    "musicgen": "audiolm.importers.musicgen",
    "musicgen_decoder": "audiolm.importers.musicgen",
}
_KYUTAI = "audiolm.importers.moshi"


def importer_for(path: str) -> str:
    """Name of the importer module for the checkpoint at `path` (a directory or config file)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_pretrained: path {path!r} does not exist")
    if os.path.isfile(path):
        if path.endswith(".toml"):
            return _KYUTAI
        config_file = path
    else:
        config_file = os.path.join(path, "config.json")
        if not os.path.exists(config_file):
            tomls = [f for f in os.listdir(path) if f.endswith(".toml")]
            if tomls:
                return _KYUTAI
            raise FileNotFoundError(
                f"load_pretrained: {path!r} has no config.json (nor a Kyutai .toml config)")
    with open(config_file) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"load_pretrained: {config_file!r} is not valid JSON: {e}") from None
    model_type = cfg.get("model_type")
    if model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    if "text_card" in cfg or ("dim" in cfg and "n_q" in cfg):
        return _KYUTAI
    raise ValueError(
        f"load_pretrained: {config_file!r} has model_type={model_type!r}; expected one of "
        f"{sorted(_BY_MODEL_TYPE)} or a Kyutai config (with 'text_card')")


def load_pretrained(path: str) -> tuple[Any, Any]:
    """Loads `(model_config, params)` from an official / Hugging Face checkpoint at `path`."""
    return importlib.import_module(importer_for(path)).load_pretrained(path)
