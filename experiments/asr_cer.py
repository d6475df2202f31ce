"""Main-job CER: trains the tiny AuT + Thinker recogniser and reports held-out CER vs wall time.

  python experiments/asr_cer.py --workdir=/tmp/asr_cer
  python experiments/asr_cer.py --workdir=/tmp/asr_cer --config.train.steps=600 \
      --config.data.num_train=2000 --out=/tmp/asr_cer.json

Runs `audiolm.train.loop.run` on `configs/thinker_talker.py:variant=tiny_asr` (any override
works), which trains, checkpoints and transcribes the held-out espeak test sentences (disjoint
from the training sentences), then prints one row: steps, training minutes, end-to-end minutes
(data synthesis and transcription included), test CER / WER, final train / eval loss. Pin the
cores to compare with the 2-core goal: `taskset -c 0,1 python experiments/asr_cer.py ...`.
A re-run in the same workdir resumes from its last checkpoint (the times then cover the resumed
part only).
"""

from __future__ import annotations

import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "thinker_talker.py") + ":variant=tiny_asr",
    "Experiment config file (+:arg); the main job by default.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, transcripts).")
_OUT = flags.DEFINE_string("out", "", "Also write the result row as JSON here.")


def last_metrics(workdir: str, split: str) -> dict:
    from audiolm.train import metrics as metrics_lib

    rows = metrics_lib.read_metrics(workdir, split)
    return rows[-1] if rows else {}


def measure(config, workdir: str) -> dict:
    """Trains + transcribes; returns the result row (times in minutes)."""
    from audiolm.train import loop

    t0 = time.perf_counter()
    train_times = []

    def on_step(step, state, metrics):
        del state, metrics
        train_times.append((step, time.perf_counter()))

    loop.run(config, workdir, callbacks=[on_step])
    total = time.perf_counter() - t0
    with open(os.path.join(workdir, "asr_test.json")) as f:
        scores = json.load(f)
    train_s = (train_times[-1][1] - t0) if train_times else 0.0
    return {
        "steps": int(config.train.steps),
        "num_train": int(config.data.num_train),
        "train_minutes": round(train_s / 60, 2),
        "total_minutes": round(total / 60, 2),
        "cer": scores["cer"], "wer": scores["wer"], "utterances": scores["utterances"],
        "train_loss": last_metrics(workdir, "train").get("loss"),
        "eval_loss": last_metrics(workdir, "eval").get("loss"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def main(argv):
    del argv
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required")
    row = measure(_CONFIG.value, _WORKDIR.value)
    print("steps  num_train  cpus  train_min  total_min  CER     WER     train_loss  eval_loss")
    print(f"{row['steps']:<6} {row['num_train']:<10} {row['cpus']:<5} {row['train_minutes']:<10} "
          f"{row['total_minutes']:<10} {row['cer']:.4f}  {row['wer']:.4f}  "
          f"{row['train_loss'] or float('nan'):<11.4f} {row['eval_loss'] or float('nan'):.4f}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    app.run(main)
