"""Evaluators chosen by config: `config.task.evaluators` run at every eval step on the
validation split, `config.task.final_evaluators` once at the end of training (and in
`--mode=eval`) on the test split. Each is `fn(ctx: EvalContext, params, split) -> {metric:
float}`, registered here by name (big_vision's evaluator registry in miniature); a task lists
the names it supports in its `EVALUATORS`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import tqdm

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.tasks.base import EvalContext, Evaluator

REGISTRY: dict[str, Evaluator] = {}


def register(name: str) -> Callable[[Evaluator], Evaluator]:
    def wrap(fn: Evaluator) -> Evaluator:
        REGISTRY[name] = fn
        return fn
    return wrap


def get(name: str, path: str = "task.evaluators") -> Evaluator:
    if name not in REGISTRY:
        raise ConfigError(f"{path} names {name!r}: no such evaluator; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


@register("loss")
def mean_loss(ctx: EvalContext, params: Any, split: str) -> dict[str, float]:
    """The task's loss and metrics averaged over `train.eval_steps` batches of `split` (0 =
    the whole split), with train=False (no dropout, no input noise)."""
    config = ctx.config
    task = config_lib.task_module(config.task.name)
    family = config_lib.family_module(config.model.family)
    it = task.make_batches(config, family, split, finite=True)
    limit = int(config.train.eval_steps)
    sums: dict[str, float] = {}
    n = 0
    rng = jax.random.PRNGKey(int(config.seed) + 1)
    bar = tqdm.tqdm(total=limit or None, desc=f"evaluating {split}", unit="batch", leave=False,
                    disable=None)  # shown on a terminal only
    for i, batch in enumerate(it):
        if limit and i >= limit:
            break
        bar.update()
        metrics = jax.device_get(ctx.eval_step(params, batch, jax.random.fold_in(rng, i)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(np.asarray(v))
        n += 1
    bar.close()
    return {k: v / max(n, 1) for k, v in sums.items()}
