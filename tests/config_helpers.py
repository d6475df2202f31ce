"""Helpers for tests that build invalid configs."""

import ml_collections
import pytest

from audiolm import config as config_lib


def set_field(config, path, value):
    """Sets the field at dotted `path`, bypassing ConfigDict's type safety (rebuilds the
    enclosing section), so that a test can give a field a value of the wrong type."""
    parts = path.split(".")
    parent = config
    for p in parts[:-2]:
        parent = parent[p]
    section = parent[parts[-2]].to_dict()
    section[parts[-1]] = value
    parent[parts[-2]] = ml_collections.ConfigDict(section)


def assert_rule(config, fields, match):
    """Sets each dotted path of `fields` ({path: value}) on `config` and checks that
    `validate(config)` names the broken rule: a ConfigError whose message matches `match`."""
    for path, value in fields.items():
        section, key = path.rsplit(".", 1)
        config_lib.get_path(config, section)[key] = value
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(config)


def small_asr(config):
    """The main job's asr config with a smaller AuT and Thinker (same layout, levers and data):
    fast compiles."""
    m = config.model
    m.aut.update(hidden_size=32, num_layers=1, num_heads=2, ffn_hidden=64, conv_channels=8,
                 output_dim=32)
    m.thinker.update(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                     ffn_hidden=64, moe_hidden=32)
    m.talker.thinker_hidden_size = 32
    return config
