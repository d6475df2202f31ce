"""The command line shared by the experiment scripts that read an experiment config
(prepare_data, tts_eval, codec_eval): `--config=configs/<file>.py:<arg>`, its fields set by
`--config.<path>=<value>`. The scripts define their flags when run, so that tests can import
their functions."""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.disclaim_key_flags()  # the flags defined here belong to the script, shown by its --help


def define_config(default: str, help_text: str) -> None:
    """Defines --config: an experiment config file (+:arg), by default `configs/<default>`
    (e.g. "codec.py:variant=speech"); unlocked, so that a script may set fields on it."""
    config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", default), help_text,
                                    lock_config=False)
