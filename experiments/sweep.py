"""Runs a hyper-parameter sweep defined as a plain function in a config file.

A sweep is a function of the config file that returns a list of override dicts (dotted config
paths -> values), big_vision style:

    def sweep_lr():
        return [{"train.learning_rate": lr, "seed": s} for lr in (1e-3, 3e-3) for s in (0, 1)]

  python experiments/sweep.py --config=configs/thinker_talker.py:variant=tiny_asr \
      --sweep=sweep_lr --workdir=runs/sweep_lr [--config.train.steps=200] [--dry_run]

`--sweep` names a function of the `--config` file, or `path/to/file.py:function` for a sweep kept
elsewhere. Each point trains with `audiolm.train.loop.run` in `<workdir>/<index>_<overrides>`
(re-running resumes finished / interrupted points from their checkpoints) and the last train /
eval / test metrics of every point go to `<workdir>/sweep.jsonl`, one line per point.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import sys
from typing import Any, Callable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (+:arg).",
                                          lock_config=False)
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep function of the config file, or file.py:fn.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the sweep's runs.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Only print the points.")


def load_sweep(config_path: str, sweep: str) -> Callable[[], list[dict[str, Any]]]:
    """The sweep function `sweep` ("name" of the config file or "file.py:name")."""
    path, name = (sweep.rsplit(":", 1) if ":" in sweep else (config_path.split(":")[0], sweep))
    spec = importlib.util.spec_from_file_location("_audiolm_sweep_source", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--sweep={sweep!r}: cannot load {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--sweep={sweep!r}: {path!r} has no function {name!r}")
    return fn


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Copy of `config` with dotted-path overrides; unknown paths raise ConfigError."""
    from audiolm.config import ConfigError

    config = copy.deepcopy(config)
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if part not in node:
                raise ConfigError(f"sweep override {dotted}: {'.'.join(parents[:i + 1])} "
                                  "does not exist")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"sweep override {dotted}={value!r}: no such config field")
        node[leaf] = value
    return config


def point_name(index: int, overrides: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=,-]", "_", f"{index:03d}_" + ",".join(parts))[:120]


def run_sweep(config: Any, points: list[dict[str, Any]], workdir: str,
              dry_run: bool = False) -> list[dict[str, Any]]:
    """Trains every point; returns (and writes to sweep.jsonl) their final metrics."""
    from audiolm.train import loop, metrics as metrics_lib

    configs = [apply_overrides(config, p) for p in points]  # all validated paths first
    results = []
    os.makedirs(workdir, exist_ok=True)
    for i, (point, cfg) in enumerate(zip(points, configs)):
        run_dir = os.path.join(workdir, point_name(i, point))
        logging.info("sweep point %d/%d: %s -> %s", i + 1, len(points), point, run_dir)
        if dry_run:
            print(run_dir, json.dumps(point))
            continue
        loop.run(cfg, run_dir)
        record = {"index": i, "overrides": point, "workdir": run_dir}
        for split in ("train", "eval", "test"):
            rows = metrics_lib.read_metrics(run_dir, split)
            if rows:
                record[split] = {k: v for k, v in rows[-1].items() if k not in ("split", "time")}
        results.append(record)
        with open(os.path.join(workdir, "sweep.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
    return results


def main(argv):
    del argv
    points = load_sweep(config_flags.get_config_filename(flags.FLAGS["config"]), _SWEEP.value)()
    run_sweep(_CONFIG.value, points, _WORKDIR.value, _DRY_RUN.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "sweep", "workdir"])
    app.run(main)
