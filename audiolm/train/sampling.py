"""`--mode=sample`: `run(config, workdir)` restores params and writes samples.

Params come from, in this order: the latest checkpoint in `workdir/checkpoints` (params only),
else `config.init_from` (a checkpoint directory, or a pretrained model directory read by
`audiolm.importers.load_pretrained`; with `init_from_subtrees`, only those subtrees, the rest
from the scratch init of `config.seed`, as training starts), else a ConfigError naming
`init_from`. Both go through
`audiolm.train.checkpoint` (the trainer's restore: shapes checked against the config's model,
params sharded over the config's mesh). Then the task's `write_samples(module, params, config,
workdir)` writes into `workdir/samples/` and returns a summary, which is printed and written to
`workdir/samples/summary.json`.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
from absl import logging

from audiolm import config as config_lib
from audiolm import parallel
from audiolm.config import ConfigError
from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import loop

__all__ = ["run", "load_params"]


def _has_checkpoint(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(
        d.isdigit() and os.path.isdir(os.path.join(directory, d)) for d in os.listdir(directory))


def load_params(config: Any, workdir: str) -> tuple[Any, Any, str]:
    """(module, params, source) for a validated `config`; see the module docstring."""
    family = config_lib.family_module(config.model.family)
    module = family.build(config.model)
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.mesh)
    init_fn = functools.partial(family.init_params, config.model)
    rng, _ = loop.init_rngs(config)  # the scratch params of training
    abstract, shardings = loop.sharded_abstract_params(init_fn, rng, mesh, rules)
    if _has_checkpoint(workdir):
        source = os.path.abspath(os.path.join(workdir, "checkpoints"))
        params = ckpt_lib.load_init_params(workdir, abstract, shardings)
    elif config.init_from:
        source = str(config.init_from)
        subtrees = tuple(config.init_from_subtrees)
        scratch = jax.jit(init_fn, out_shardings=shardings)(rng) if subtrees else None
        params = ckpt_lib.load_init_params(source, abstract, shardings, subtrees, scratch)
    else:
        raise ConfigError(
            f"init_from={config.init_from!r}: --mode=sample needs trained or imported params, but "
            f"{os.path.join(workdir, 'checkpoints')} holds no checkpoint and init_from is empty. "
            "Train in this --workdir first, or set --config.init_from=<checkpoint dir or "
            "pretrained model dir>")
    return module, params, source


def run(config: Any, workdir: str) -> dict:
    """Entry point of `audiolm.main --mode=sample`; returns the summary dict."""
    config_lib.validate(config)
    task = config_lib.task_module(config.task.name)
    module, params, source = load_params(config, workdir)
    logging.info("sampling %s / %s with params from %s", config.model.family, config.task.name,
                 source)
    summary = dict(task.write_samples(module, params, config, workdir))
    summary["params_from"] = source
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        f.write(text + "\n")
    print(text)
    return summary
