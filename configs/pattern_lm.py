"""Pattern LM experiments: MusicGen / stable-audio-tools audio LM over interleaved codebooks.

Launch (tiny, CPU, synthetic codes):
  python -m audiolm.main --config=configs/pattern_lm.py:variant=tiny --workdir=/tmp/pattern_lm_tiny
Describe the MusicGen-small-shaped preset (parameters, bytes, FLOPs; nothing is allocated):
  python -m audiolm.main --config=configs/pattern_lm.py:variant=musicgen_small --mode=describe
A stable-audio-tools LM JSON (model_type "lm"):
  python -m audiolm.main --config=configs/pattern_lm.py:file=/path/to/model_config.json --mode=describe

arg: variant=<preset of audiolm.presets.pattern_lm> (tiny | musicgen_small),
file=<stable-audio-tools LM JSON>. `audiolm.presets.pattern_lm` documents every field of
`config.model`; the task is "codes" on synthetic code batches (no audio set ships for it).
"""

from __future__ import annotations

from audiolm.importers import stable_audio_tools
from audiolm.presets import experiment
from audiolm.presets import pattern_lm as presets


def get_config(arg=None):
    arg = experiment.parse_arg(arg, variant="tiny", file="")
    config = experiment.base_config()
    if arg.file:
        config.model = stable_audio_tools.model_config_from_json(arg.file)
    elif arg.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={arg.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS)}")
    else:
        config.model = presets.PRESETS[arg.variant]()
    config.data.name = "synthetic"  # the family's example code batches
    config.task.name = "codes"
    config.sample.temperature = 1.0  # MusicGen default
    config.sample.top_k = 250
    config.sample.cfg_scale = 3.0  # MusicGen default guidance
    if arg.variant == "tiny" and not arg.file:
        config.train.steps = 50
        config.train.warmup_steps = 5
        config.sample.max_new_tokens = 8
    return config


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate, e.g.
    python experiments/sweep.py --config=configs/pattern_lm.py:tiny --sweep=lr \
        --workdir=runs/pattern_lm_lr"""
    for lr in (1e-4, 3e-4, 1e-3, 3e-3):
        yield {"train.learning_rate": lr}


def sweep_pattern():
    """Codebook interleaving pattern (audiolm.patterns) at the same budget."""
    for kind in ("parallel", "delay", "coarse_first", "unroll"):
        yield {"model.pattern.kind": kind}
