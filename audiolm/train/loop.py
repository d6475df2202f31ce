"""The training loop shared by every family and task: `run(config, workdir, mode)`.

train: validate the config, build the mesh, the family's module and the task, resume (workdir
checkpoint, else `config.init_from`, else scratch; see `audiolm.train.checkpoint`), then step
until `config.train.steps`. Every `train.log_every` steps the metrics leave the device (and only
then: no per-step sync), are checked for a non-finite loss and written; every
`train.eval_every` steps the task's `config.task.evaluators` run on the validation split;
checkpoints every `train.checkpoint_every` steps (and at the end); `train.profile_steps` traces a
window of steps into the TensorBoard directory. At the end the evaluators run
once more, then `config.task.final_evaluators` on the test split (e.g. the ASR task's CER).
A NaN/inf loss stops training with `FloatingPointError` naming the newest checkpoint whose
parameters are finite and give a finite loss.

eval: restore the latest checkpoint of `workdir` and run the task's evaluators (validation) and
final evaluators (test).

The loop knows neither family nor task by name: it asks `audiolm.config.family_module` for the
module and `audiolm.config.task_module` for batches, loss and evaluators.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from audiolm import config as config_lib
from audiolm import parallel
from audiolm.parallel import runtime
from audiolm.tasks import evaluators as evaluators_lib
from audiolm.tasks.base import EvalContext
from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import optim, step as step_lib
from audiolm.train.metrics import MetricsWriter, truncate_metrics
from audiolm.train.state import TrainState

Callback = Callable[[int, TrainState, dict], None]


@dataclasses.dataclass
class Experiment:
    """Everything built from a config before any step runs (shared by train, eval, notebooks)."""

    config: Any
    family: Any
    task: Any
    module: Any
    mesh: Any
    rules: Any
    tx: Any
    lr_schedule: Any
    init_fn: Any
    init_rng: Any
    state_rng: Any
    param_shardings: Any
    abstract_state: TrainState
    state_shardings: Any
    _eval_step: Any = None

    def eval_step(self, params: Any, batch: dict, rng: Any) -> dict:
        """Task loss and metrics of one host batch (the global batch or this host's rows,
        `parallel.local_batch`; sharded over the mesh, compiled once)."""
        if self._eval_step is None:
            self._eval_step = jax.jit(step_lib.make_eval_step(self.module, self.task.loss_fn,
                                                              self.config))
        sharded = parallel.shard_batch(batch, self.mesh, int(self.config.data.batch_size))
        return self._eval_step(params, sharded, rng)

    def batches(self, split: str, finite: bool = False):
        """The task's batch iterator of `split`."""
        return self.task.make_batches(self.config, self.family, split, finite)

    def eval_context(self, workdir: str, writer: Any = None, step: int = 0) -> EvalContext:
        return EvalContext(self.config, self.module, workdir, self.eval_step, writer, step)

    def make_state(self, params: Any) -> TrainState:
        """TrainState at step 0 around `params` (sharded like the abstract state)."""
        return jax.jit(lambda p: TrainState.create(p, self.tx, self.state_rng),
                       out_shardings=self.state_shardings)(params)

    def scratch_params(self) -> Any:
        """The family's params initialised from `config.seed` (sharded), through the task's
        optional `init_params` hook."""
        params = jax.jit(self.init_fn, out_shardings=self.param_shardings)(self.init_rng)
        adapt = getattr(self.task, "init_params", None)
        return params if adapt is None else adapt(params, self.config)

    def init_state(self) -> TrainState:
        return self.make_state(self.scratch_params())


def init_rngs(config: Any) -> tuple[Any, Any]:
    """(the params' init key, the train state's key), both from `config.seed`."""
    return tuple(jax.random.split(jax.random.PRNGKey(int(config.seed))))


def build(config: Any) -> Experiment:
    """Validates `config` and builds module, task, mesh, optimizer and the sharded state."""
    config_lib.validate(config)
    family = config_lib.family_module(config.model.family)
    task = config_lib.task_module(config.task.name)
    mesh = parallel.make_mesh(config.mesh)
    parallel.check_batch_layout(int(config.data.batch_size), mesh)  # hosts feed their own rows
    rules = parallel.logical_rules(config.mesh)
    # Mixed precision: params (and optimizer state) stay float32, the module computes in
    # train.dtype; norms, softmax, router and losses upcast to float32 inside the blocks.
    module = family.build(config.model, dtype=jnp.dtype(config.train.dtype))
    tx = optim.make_optimizer(config.train)
    lr_schedule = optim.learning_rate_schedule(config.train)
    init_rng, state_rng = init_rngs(config)
    init_fn = functools.partial(family.init_params, config.model)
    abstract_params, param_shardings = sharded_abstract_params(init_fn, init_rng, mesh, rules)
    make = jax.jit(lambda p: TrainState.create(p, tx, state_rng))
    lowered = make.lower(abstract_params)
    state_shardings = lowered.compile().output_shardings
    abstract_state = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        jax.eval_shape(make, abstract_params), state_shardings)
    return Experiment(config, family, task, module, mesh, rules, tx, lr_schedule, init_fn,
                      init_rng, state_rng, param_shardings, abstract_state, state_shardings)


def sharded_abstract_params(init_fn: Callable[[Any], Any], rng: Any, mesh: Any,
                            rules: Any) -> tuple[Any, Any]:
    """(ShapeDtypeStructs carrying their shardings, the shardings) of `init_fn(rng)`'s params
    under the logical-axis `rules` on `mesh`; nothing is allocated."""
    shapes, specs = parallel.logical_param_specs(init_fn, rng)
    shardings = parallel.param_shardings(shapes, specs, mesh, rules)
    abstract = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return abstract, shardings


def restore_or_init(exp: Experiment, ckpt: ckpt_lib.Checkpointer, train_iter: Any,
                    workdir: str) -> TrainState:
    """Workdir checkpoint -> config.init_from -> scratch (see `audiolm.train.checkpoint`).

    metrics.jsonl is cut back to the step the run starts from, so a restarted run never
    repeats rows."""
    latest = ckpt.latest_step()
    if latest is not None:
        state_dict, data_state, step = ckpt.restore(exp.abstract_state)
        state = TrainState(step=state_dict["step"], params=state_dict["params"],
                           opt_state=state_dict["opt_state"], rng=state_dict["rng"])
        if train_iter is not None and data_state is not None:
            train_iter.set_state(data_state)
        truncate_metrics(workdir, step)
        logging.info("resumed from %s/%d", ckpt.directory, step)
        return state
    truncate_metrics(workdir, 0)
    if exp.config.init_from:
        subtrees = tuple(exp.config.init_from_subtrees)
        params = ckpt_lib.load_init_params(
            exp.config.init_from, exp.abstract_state.params, exp.param_shardings, subtrees,
            exp.scratch_params() if subtrees else None)
        return exp.make_state(params)
    return exp.init_state()


def count_tokens(batch: dict[str, np.ndarray]) -> int:
    """Target positions in a batch, for tokens/s: the sum of `target_mask` / `text_mask` when
    present, else batch x length of the first 2-d (or more) integer field."""
    for key in ("target_mask", "text_mask"):
        if key in batch:
            return int(np.asarray(batch[key]).sum())
    for key in sorted(batch):
        value = np.asarray(batch[key])
        if np.issubdtype(value.dtype, np.integer) and value.ndim >= 2:
            return int(value.shape[0] * value.shape[-1])
    return int(np.asarray(next(iter(batch.values()))).shape[0])


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(float(np.asarray(metrics[k]))) for k in ("loss", "grad_norm")
               if k in metrics)


def run_evaluators(ctx: EvalContext, params: Any, names: Iterable[str],
                   split: str) -> dict[str, float]:
    """Runs the named evaluators on `split`; their metrics merged (later names win)."""
    out: dict[str, float] = {}
    for name in names:
        out.update(evaluators_lib.get(name)(ctx, params, split))
    return out


def _non_finite_error(exp, ckpt, step, metrics, batch, rng) -> FloatingPointError:
    ckpt.wait()
    good = ckpt_lib.last_good_step(
        ckpt, lambda p: exp.eval_step(p, batch, rng)["loss"], exp.abstract_state.params)
    where = f"{ckpt.directory}/{good}" if good is not None else "none (start afresh)"
    return FloatingPointError(
        f"non-finite loss at step {step}: loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics.get('grad_norm', float('nan')))}; training stopped. Last "
        f"good checkpoint (finite params and loss): {where}. Lower train.learning_rate, set "
        "train.clip_norm, or check the data.")


def train(config: Any, workdir: str, callbacks: Iterable[Callback] = ()) -> TrainState:
    """Trains to `config.train.steps`; returns the final state. See the module docstring."""
    exp = build(config)
    ckpt_lib.save_config(config, workdir)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    train_iter = exp.batches("train")
    state = restore_or_init(exp, ckpt, train_iter, workdir)
    total = int(config.train.steps)
    step = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir, total)
    writer.hparams(config)
    profiler = runtime.Profiler(writer.tensorboard_dir, config.train.profile_steps)
    log_every, eval_every = int(config.train.log_every), int(config.train.eval_every)
    ckpt_every = int(config.train.checkpoint_every)
    batch_size = int(config.data.batch_size)
    train_step = None
    t0 = time.perf_counter()
    try:
        while step < total:
            # This host's rows of the step (read alone by data.loader='grain', else sliced from
            # the global batch); tokens: its count times the hosts (exact with one process).
            batch = parallel.local_batch(next(train_iter), batch_size)
            tokens = count_tokens(batch) * jax.process_count()
            sharded = parallel.shard_local_batch(batch, exp.mesh)
            if train_step is None:
                train_step = step_lib.jit_train_step(
                    step_lib.make_train_step(exp.module, exp.task.loss_fn, exp.tx, config,
                                             exp.lr_schedule,
                                             getattr(exp.task, "update_buffers", None)),
                    exp.state_shardings, {k: v.sharding for k, v in sharded.items()},
                    parallel.replicated(exp.mesh))
            state, metrics = train_step(state, sharded)
            step += 1
            writer.add_tokens(tokens)
            if step == 1 or writer._last_time is None:
                writer.start(step)  # rates exclude compilation
            # Metrics leave the device only at log / checkpoint / last steps (no per-step sync).
            if step % log_every == 0 or step % ckpt_every == 0 or step == total:
                metrics = jax.device_get(metrics)
                if not _finite(metrics):
                    raise _non_finite_error(exp, ckpt, step, metrics, batch,
                                            jax.random.fold_in(state.rng, step))
                if step % log_every == 0 or step == total:
                    writer.write(step, metrics, "train")
            if eval_every and step % eval_every == 0 and step < total and config.task.evaluators:
                ctx = exp.eval_context(workdir, writer, step)
                writer.write(step, run_evaluators(ctx, state.params, config.task.evaluators,
                                                  "validation"), "eval")
            ckpt.save(step, state, train_iter.get_state(), force=step == total)
            profiler.step(step, state)
            for callback in callbacks:
                callback(step, state, metrics)
        ckpt.wait()
        ctx = exp.eval_context(workdir, writer, step)
        if total > 0 and config.task.evaluators:
            writer.write(step, run_evaluators(ctx, state.params, config.task.evaluators,
                                              "validation"), "eval")
        logging.info("trained %d steps in %.1f s", total, time.perf_counter() - t0)
        if config.task.final_evaluators:
            writer.write(step, run_evaluators(ctx, state.params, config.task.final_evaluators,
                                              "test"), "test")
    finally:
        profiler.close()
        ckpt.close()
        writer.close()
    return state


def eval_only(config: Any, workdir: str) -> dict[str, float]:
    """Evaluates the latest checkpoint of `workdir`; returns (and writes) the metrics."""
    exp = build(config)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f"--mode=eval: no checkpoint in {ckpt.directory}; train first")
        state_dict, _, step = ckpt.restore(exp.abstract_state)
    finally:
        ckpt.close()
    writer = MetricsWriter(workdir, int(config.train.steps))
    try:
        ctx = exp.eval_context(workdir, writer, step)
        params = state_dict["params"]
        metrics = run_evaluators(ctx, params, config.task.evaluators, "validation")
        writer.write(step, metrics, "eval")
        if config.task.final_evaluators:
            scores = run_evaluators(ctx, params, config.task.final_evaluators, "test")
            writer.write(step, scores, "test")
            metrics.update({f"test_{k}": v for k, v in scores.items()})
    finally:
        writer.close()
    return metrics


def run(config: Any, workdir: str, mode: str = "train",
        callbacks: Iterable[Callback] = ()) -> Any:
    """Entry point of `audiolm.main` for --mode=train | eval."""
    if mode == "train":
        return train(config, workdir, callbacks)
    if mode == "eval":
        return eval_only(config, workdir)
    raise ValueError(f"mode={mode!r}: must be 'train' or 'eval'")
