"""The task contract: what a task module provides to the training loop and the sample runner.

A *family* is an architecture (`audiolm.models.family.Family`: build, init, describe, rules,
example batches). A *task* is what is learnt: its batches per split, its loss, its evaluators and
its sample writer. `config.task.name` picks the task module (`audiolm.config.TASKS`); the valid
(task, family) pairs are declared once in `audiolm.config.PAIRS`. The loop and the sample runner
call these functions only: they never branch on a family or task name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

Batch = Mapping[str, np.ndarray]
# metrics of one batch: eval_step(params, batch [host numpy, global], rng) -> {name: scalar}
EvalStep = Callable[[Any, Batch, Any], Mapping[str, Any]]


class BatchIterator(Protocol):
    """An iterator of global batches (dicts of numpy arrays) that checkpoints its position."""

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use; built once per run by the loop.

    Attributes:
      config: the validated experiment config.
      module: the family's flax module.
      workdir: where evaluators write their files (transcripts, WAVs, tables).
      eval_step: the compiled loss-and-metrics step of the task (sharding handled inside).
      writer: the run's metrics writer (`audiolm.train.metrics.MetricsWriter`) or None; an
        evaluator may add media summaries (audio, images, text) through it.
      step: the training step being evaluated.
    """

    config: Any
    module: Any
    workdir: str
    eval_step: EvalStep
    writer: Any = None
    step: int = 0


# Reserved key of a training loss_fn's metrics: a pytree of arrays with a leading batch axis
# (e.g. the latent of each row) that the train step removes from the metrics, concatenates over
# micro-batches and hands to the task's optional `update_buffers` hook.
BUFFER_INPUTS = "buffer_inputs"

# An evaluator: (context, params, split) -> {metric: float}; registered by name in
# `audiolm.tasks.evaluators` and chosen by config.task.evaluators / final_evaluators.
Evaluator = Callable[[EvalContext, Any, str], dict[str, float]]


@runtime_checkable
class Task(Protocol):
    """Module-level functions and constants of a task module (e.g. `audiolm.tasks.asr`)."""

    NAME: str
    EVALUATORS: tuple[str, ...]  # evaluator names this task supports

    def rules(self, config: Any) -> None:
        """Task-specific validation (loss weights, data fields); raises ConfigError."""

    def make_batches(self, config: Any, family: Any, split: str,
                     finite: bool = False) -> BatchIterator:
        """Endless shuffled batches for training; one ordered pass of `split` when `finite`."""

    def loss_fn(self, module: Any, params: Any, batch: Batch, rng: Any, config: Any,
                train: bool) -> tuple[Any, dict[str, Any]]:
        """Scalar loss and metrics of one (micro-)batch; pure and jittable."""

    def write_samples(self, module: Any, params: Any, config: Any, workdir: str) -> dict:
        """`--mode=sample`: writes samples under workdir/samples; returns a summary dict."""

    # Optional (a task without it has no buffers): a training step's new values of the params
    # leaves that are *buffers* (statistics such as EMA codebooks, not moved by the optimizer).
    #   update_buffers(module, params, inputs, rng, config) -> (buffers, metrics)
    # params: the params the batch was computed with (before the optimizer step); inputs: the
    # loss_fn's metrics[BUFFER_INPUTS] over the whole batch (None when it gave none); rng: the
    # step's key. buffers: a nested dict holding only the buffer leaves, at their params paths;
    # the train step (jitted, after the optimizer update) overwrites those leaves with it, so any
    # optimizer drift on them is discarded (their gradients must be zero: stop_gradient in the
    # forward). metrics: scalars added to the step's metrics.

    # Optional (a task without it starts from the family's init): the scratch params adapted to
    # the task (e.g. embeddings from a codec's codebooks); called once, before training, on a
    # fresh run only (a resumed run or init_from's subtrees keep their own values).
    #   init_params(params, config) -> params
