"""Kyutai temporal + depth transformer experiments (Moshi, Hibiki, Kyutai STT/TTS).

Launch (tiny, CPU; trains on synthetic example batches):
  python -m audiolm.main --config=configs/moshi.py:variant=tiny --workdir=/tmp/moshi_tiny
Describe a published variant (parameters, bytes, FLOPs; nothing is allocated):
  python -m audiolm.main --config=configs/moshi.py:variant=moshi_7b_202409 --mode=describe
Slices of the streaming v0.1 model are an arg:
  python -m audiolm.main --config=configs/moshi.py:variant=v0_1_streaming,slices=16 --mode=describe
An official Kyutai config file (Python JSON or Rust/server TOML):
  python -m audiolm.main --config=configs/moshi.py:file=/path/to/moshi_7b_202409.json --mode=describe

arg: variant=<preset of audiolm.presets.moshi>, slices=<n> (v0_1_streaming), fusion=<add |
concat | cross_attention | interleave> (tiny only), file=<official Kyutai JSON/TOML config>.
`audiolm.presets.moshi` documents every field of `config.model`; the task is "codes".
"""

from __future__ import annotations

import ml_collections

from audiolm.importers import moshi as kyutai_files
from audiolm.presets import experiment
from audiolm.presets import moshi as presets


def train_loss() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        text_weight=1.0,  # weight of the text cross-entropy
        audio_weight=1.0,  # weight of the mean audio cross-entropy over depformer slices
        semantic_weight=1.0,  # extra factor on the first audio codebook (Kyutai used 100)
    ))


def get_config(arg=None):
    arg = experiment.parse_arg(arg, variant="tiny", slices=8, fusion="add", file="")
    config = experiment.base_config()
    if arg.file:
        loaded = kyutai_files.load_config_file(arg.file)
        config.model = loaded.model
        config.sample.extra = loaded.sample_extra
    elif arg.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={arg.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS)}")
    elif arg.variant == "v0_1_streaming":
        config.model = presets.v0_1_streaming(arg.slices)
    elif arg.variant == "tiny":
        config.model = presets.tiny(arg.fusion)
    else:
        config.model = presets.PRESETS[arg.variant]()
    # No Kyutai-format dataset ships with audiolm yet: train on the family's example batches.
    config.data.name = "synthetic"
    config.task.name = "codes"
    config.train.loss = train_loss()
    config.sample.temperature = 0.8  # audio temperature (Kyutai default)
    config.sample.top_k = 250  # audio top-k
    if "text_temperature" not in config.sample.extra:
        config.sample.extra.text_temperature = 0.7
        config.sample.extra.text_top_k = 25
    if arg.variant == "tiny" and not arg.file:
        config.train.steps = 50
        config.train.warmup_steps = 5
    return config


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate, e.g.
    python experiments/sweep.py --config=configs/moshi.py:tiny --sweep=lr --workdir=runs/moshi_lr"""
    for lr in (1e-4, 3e-4, 1e-3, 3e-3):
        yield {"train.learning_rate": lr}


def sweep_semantic_weight():
    """Extra weight of the first (semantic) audio codebook (Kyutai trained with 100)."""
    for weight in (1.0, 10.0, 100.0):
        yield {"train.loss.semantic_weight": weight}
