"""The training loop shared by every family: `run(config, workdir, mode="train" | "eval")`.

train: validate the config, build the mesh and the family's module, resume (workdir checkpoint,
else `config.init_from`, else scratch; see `audiolm.train.checkpoint`), then step until
`config.train.steps`, writing metrics every `train.log_every` steps, evaluating every
`train.eval_every` steps on `train.eval_steps` validation batches and checkpointing every
`train.checkpoint_every` steps (and at the end). A NaN/inf loss stops training with
`FloatingPointError`; the checkpoints already written (all from finite steps) are kept.
For the ASR task (family `thinker_talker` on speech data) the run ends by transcribing held-out
test utterances and writing their character error rate (`audiolm.train.asr`).

eval: restore the latest checkpoint of `workdir` and evaluate it (validation loss; ASR: test
transcripts and CER).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np
from absl import logging

from audiolm import config as config_lib
from audiolm import parallel
from audiolm.models import registry
from audiolm.train import batches as batches_lib
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

    def eval_step(self):
        """The jitted eval step (compiled once per experiment)."""
        if self._eval_step is None:
            self._eval_step = jax.jit(step_lib.make_eval_step(self.module, self.family.loss_fn,
                                                              self.config))
        return self._eval_step

    def make_state(self, params: Any) -> TrainState:
        """TrainState at step 0 around `params` (sharded like the abstract state)."""
        return jax.jit(lambda p: TrainState.create(p, self.tx, self.state_rng),
                       out_shardings=self.state_shardings)(params)

    def init_state(self) -> TrainState:
        params = jax.jit(self.init_fn, out_shardings=self.param_shardings)(self.init_rng)
        return self.make_state(params)


def build(config: Any) -> Experiment:
    """Validates `config` and builds module, mesh, optimizer and the sharded abstract state."""
    config_lib.validate(config)
    family = registry.family_module(config.model.family)
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.mesh)
    module = family.build(config.model)
    tx = optim.make_optimizer(config.train)
    lr_schedule = optim.learning_rate_schedule(config.train)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
    init_fn = functools.partial(family.init_params, config.model)
    shapes, specs = parallel.logical_param_specs(init_fn, init_rng)
    param_shardings = parallel.param_shardings(shapes, specs, mesh, rules)
    abstract_params = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
        param_shardings)
    make = jax.jit(lambda p: TrainState.create(p, tx, state_rng))
    lowered = make.lower(abstract_params)
    state_shardings = lowered.compile().output_shardings
    abstract_state = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        jax.eval_shape(make, abstract_params), state_shardings)
    return Experiment(config, family, module, mesh, rules, tx, lr_schedule, init_fn, init_rng,
                      state_rng, param_shardings, abstract_state, state_shardings)


def _state_from_dict(d: dict, like: TrainState) -> TrainState:
    return TrainState(step=d["step"], params=d["params"], opt_state=d["opt_state"], rng=d["rng"])


def restore_or_init(exp: Experiment, ckpt: ckpt_lib.Checkpointer, train_iter: Any,
                    workdir: str) -> TrainState:
    """Workdir checkpoint -> config.init_from -> scratch (see `audiolm.train.checkpoint`)."""
    latest = ckpt.latest_step()
    if latest is not None:
        state_dict, data_state, step = ckpt.restore(exp.abstract_state)
        state = _state_from_dict(state_dict, exp.abstract_state)
        if train_iter is not None and data_state is not None:
            train_iter.set_state(data_state)
        truncate_metrics(workdir, step)
        logging.info("resumed from %s/%d", ckpt.directory, step)
        return state
    if exp.config.init_from:
        params = ckpt_lib.load_init_params(exp.config.init_from, exp.abstract_state.params,
                                           exp.param_shardings)
        return exp.make_state(params)
    return exp.init_state()


def _batch_shardings(batch: dict, mesh) -> dict:
    return {k: v.sharding for k, v in batch.items()}


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(float(np.asarray(metrics[k]))) for k in ("loss", "grad_norm")
               if k in metrics)


def evaluate(exp: Experiment, params: Any, split: str = "validation") -> dict[str, float]:
    """Mean metrics over one pass of `split` (`train.eval_steps` batches; 0 = the whole split)."""
    eval_step = exp.eval_step()
    it = batches_lib.make_batches(exp.config, exp.family, split, finite=True)
    limit = int(exp.config.train.eval_steps)
    sums: dict[str, float] = {}
    n = 0
    rng = jax.random.PRNGKey(int(exp.config.seed) + 1)
    for i, batch in enumerate(it):
        if limit and i >= limit:
            break
        metrics = jax.device_get(eval_step(params, parallel.shard_batch(batch, exp.mesh),
                                           jax.random.fold_in(rng, i)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def _is_asr(config: Any) -> bool:
    return config.model.family == "thinker_talker" and not batches_lib.is_synthetic(config)


def train(config: Any, workdir: str, callbacks: Iterable[Callback] = ()) -> TrainState:
    """Trains to `config.train.steps`; returns the final state. See the module docstring."""
    exp = build(config)
    ckpt_lib.save_config(config, workdir)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    train_iter = batches_lib.make_batches(config, exp.family, "train")
    state = restore_or_init(exp, ckpt, train_iter, workdir)
    total = int(config.train.steps)
    step = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir, total)
    train_step = None
    last_good = ckpt.latest_step()
    t0 = time.perf_counter()
    try:
        while step < total:
            batch = next(train_iter)
            tokens = batches_lib.count_tokens(batch)
            batch = parallel.shard_batch(batch, exp.mesh)
            if train_step is None:
                train_step = step_lib.jit_train_step(
                    step_lib.make_train_step(exp.module, exp.family.loss_fn, exp.tx, config,
                                             exp.lr_schedule),
                    exp.state_shardings, _batch_shardings(batch, exp.mesh),
                    parallel.replicated(exp.mesh))
            state, metrics = train_step(state, batch)
            step += 1
            metrics = jax.device_get(metrics)
            if not _finite(metrics):
                ckpt.wait()
                raise FloatingPointError(
                    f"non-finite loss at step {step}: loss={float(metrics['loss'])}, "
                    f"grad_norm={float(metrics.get('grad_norm', float('nan')))}; training "
                    f"stopped. Last good checkpoint: "
                    f"{f'{ckpt.directory}/{last_good}' if last_good is not None else 'none'} "
                    "(kept). Lower train.learning_rate or check the data.")
            writer.add_tokens(tokens)
            if step == 1 or writer._last_time is None:
                writer.start(step)  # rates exclude compilation
            if step % int(config.train.log_every) == 0 or step == total:
                writer.write(step, metrics, "train")
            if int(config.train.eval_every) and step % int(config.train.eval_every) == 0 \
                    and step < total:
                writer.write(step, evaluate(exp, state.params), "eval")
            if ckpt.save(step, state, train_iter.get_state(), force=step == total):
                last_good = step
            for callback in callbacks:
                callback(step, state, metrics)
        ckpt.wait()
        if int(config.train.eval_steps) >= 0 and total > 0:
            writer.write(step, evaluate(exp, state.params), "eval")
        logging.info("trained %d steps in %.1f s", total, time.perf_counter() - t0)
        if _is_asr(config):
            from audiolm.train import asr

            writer.write(step, asr.transcribe_and_score(exp, state.params, workdir), "test")
    finally:
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
        metrics = evaluate(exp, state_dict["params"])
        writer.write(step, metrics, "eval")
        if _is_asr(config):
            from audiolm.train import asr

            scores = asr.transcribe_and_score(exp, state_dict["params"], workdir)
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
