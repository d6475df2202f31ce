"""audiolm launcher: flags only, then one library call.

  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny --workdir=/tmp/run
  python -m audiolm.main --config=configs/moshi.py:v0_1 --mode=describe
  python -m audiolm.main --config=configs/moshi.py:file=/path/to/config.json --mode=describe

Any field can be overridden: --config.train.steps=10 --config.model.thinker.num_layers=2.
Logs show audiolm's own messages and every warning; pass --verbosity=0 (or higher) to also see
the INFO lines of the libraries underneath (Orbax, JAX).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (+:arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and outputs go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "describe"],
                          "train (resumes from workdir), eval, sample or describe.")


def main(argv):
    from audiolm.config import ConfigError

    try:
        _main(argv)
    except ConfigError as e:  # the message names the field; a traceback would only add noise
        sys.exit(f"ConfigError: {e}")


def _quiet_library_logs() -> None:
    """Unless --verbosity was given, drops INFO/DEBUG records that do not come from audiolm."""
    if not flags.FLAGS["verbosity"].present:
        from audiolm.train.metrics import quiet_library_logs

        quiet_library_logs()


def _main(argv):
    del argv
    _quiet_library_logs()
    config = _CONFIG.value
    if _MODE.value == "describe":
        from audiolm import config as config_lib

        config_lib.print_description(config_lib.describe(config))
        return
    if _WORKDIR.value is None:
        raise app.UsageError(f"--workdir is required for --mode={_MODE.value}")
    from audiolm.parallel import runtime

    runtime.keep_host_memory()  # before any computation: XLA:CPU scratch stays mapped
    runtime.initialize_distributed()  # before any computation; a no-op on one host
    runtime.enable_compilation_cache(config.train.compilation_cache_dir)
    if _MODE.value in ("train", "eval"):
        from audiolm.train import loop

        loop.run(config, _WORKDIR.value, mode=_MODE.value)
    else:
        from audiolm.train import sampling as runner

        runner.run(config, _WORKDIR.value)
    logging.info("done: %s", _WORKDIR.value)


def parse_flags(argv):
    """absl's parser, but an override of a field the config lacks is a one-line error naming
    the dotted path (ml_collections raises a bare AttributeError/KeyError deep inside), and a
    config file that does not exist is named (ml_collections calls it `config_config`)."""
    for i, arg in enumerate(argv[1:], start=1):
        value = arg[len("--config="):] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        path = value.split(":", 1)[0] if value else None
        if path and not os.path.isfile(path):
            sys.exit(f"FATAL --config={value}: no such config file {path!r} (relative paths are "
                     f"from the current directory {os.getcwd()}); e.g. "
                     "--config=configs/thinker_talker.py:variant=tiny")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a.split("=", 1)[0][len("--config."):] for a in argv[1:]
                     if a.startswith("--config.")]
        named = [o for o in overrides if o.rsplit(".", 1)[-1] in str(e)] or overrides
        sys.exit(f"FATAL config override error: {', '.join(named) or 'config'}: "
                 f"{type(e).__name__}: {e}; the config has no such field, or the value does "
                 "not parse as the field's type (see --mode=describe or the config file)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
