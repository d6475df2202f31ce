"""Metrics: `metrics.jsonl` (one JSON object per write, read by tests and notebooks),
TensorBoard event files (`tb_events`, readable by TensorBoard / tensorboardX) and an absl log line with steps/s, tokens/s and ETA.

Each jsonl record is `{"step": int, "split": "train" | "eval" | "test", "time": float, <metric>:
float, ...}`. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from audiolm.train.tb_events import EventWriter

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
    """Records of `workdir/metrics.jsonl` (optionally only one split), in file order."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                record = json.loads(line)
                if split is None or record.get("split") == split:
                    out.append(record)
    return out


def truncate_metrics(workdir: str, last_step: int | None) -> None:
    """Drops records after `last_step` (written by a run that crashed after its last checkpoint),
    so a resumed run's file matches an uninterrupted run's step for step.

    Call it on every start: with the resumed step, or with 0 (or None) when the run starts from
    scratch / `init_from`, so a run killed before its first checkpoint does not leave its steps
    in front of the new ones (1, 1, 2, ...)."""
    last_step = 0 if last_step is None else int(last_step)
    path = os.path.join(workdir, METRICS_FILE)
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class MetricsWriter:
    """Writes metrics to jsonl + TensorBoard and logs progress.

    Args:
      workdir: output directory (created).
      total_steps: `config.train.steps`, for the ETA.
      tensorboard: also write TensorBoard event files under `workdir/tensorboard`.
    """

    def __init__(self, workdir: str, total_steps: int, tensorboard: bool = True):
        self.workdir = workdir
        self.total_steps = int(total_steps)
        self.active = jax.process_index() == 0
        self._tb = None
        self._last_time: float | None = None
        self._last_step: int | None = None
        self._tokens = 0.0
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                self._tb = EventWriter(os.path.join(workdir, "tensorboard"))

    def start(self, step: int) -> None:
        """Marks the clock at `step` (after compilation) for rates and ETA."""
        self._last_time = time.perf_counter()
        self._last_step = int(step)
        self._tokens = 0.0

    def add_tokens(self, n: float) -> None:
        self._tokens += float(n)

    def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict:
        """Writes one record; for `train` also adds steps/s, tokens/s and logs the ETA."""
        record: dict[str, Any] = {"step": int(step), "split": split, "time": time.time()}
        for key, value in metrics.items():
            value = np.asarray(value)
            if value.size == 1:
                record[key] = float(value)
        if split == "train" and self._last_time is not None:
            now = time.perf_counter()
            dt = max(now - self._last_time, 1e-9)
            steps = int(step) - self._last_step
            if steps > 0:
                record["steps_per_sec"] = steps / dt
                record["tokens_per_sec"] = self._tokens / dt
                eta = (self.total_steps - int(step)) / record["steps_per_sec"]
                logging.info("step %d/%d  loss %.4f  %.2f steps/s  %.0f tokens/s  ETA %s",
                             step, self.total_steps, record.get("loss", float("nan")),
                             record["steps_per_sec"], record["tokens_per_sec"],
                             _format_seconds(eta))
            self._last_time, self._last_step, self._tokens = now, int(step), 0.0
        elif split != "train":
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                              if k not in ("step", "split", "time") and isinstance(v, float))
            logging.info("step %d %s: %s", step, split, shown)
        if self.active:
            with open(os.path.join(self.workdir, METRICS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
            if self._tb is not None:
                self._tb.scalars(int(step), {
                    f"{split}/{k}": v for k, v in record.items()
                    if k not in ("step", "split", "time") and isinstance(v, float)})
                self._tb.flush()
        return record

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
