"""audiolm launcher: flags only, then one library call.

  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny --workdir=/tmp/run
  python -m audiolm.main --config=configs/moshi.py:v0_1 --mode=describe
  python -m audiolm.main --config=configs/moshi.py:file=/path/to/config.json --mode=describe

Any field can be overridden: --config.train.steps=10 --config.model.thinker.num_layers=2.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (+:arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and outputs go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "describe"],
                          "train (resumes from workdir), eval, sample or describe.")


def main(argv):
    del argv
    config = _CONFIG.value
    if _MODE.value == "describe":
        from audiolm import config as config_lib

        config_lib.print_description(config_lib.describe(config))
        return
    if _WORKDIR.value is None:
        raise app.UsageError(f"--workdir is required for --mode={_MODE.value}")
    if _MODE.value in ("train", "eval"):
        from audiolm.train import loop

        loop.run(config, _WORKDIR.value, mode=_MODE.value)
    else:
        from audiolm.sample import runner

        runner.run(config, _WORKDIR.value)
    logging.info("done: %s", _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
