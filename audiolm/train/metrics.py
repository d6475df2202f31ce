"""Metrics: `metrics.jsonl` (one JSON object per write, read by tests, sweeps and notebooks),
TensorBoard event files under `workdir/tensorboard` (through tensorboardX: scalars, audio,
images, text, hparams) and an absl log line with steps/s, tokens/s and ETA.

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


def quiet_library_logs(*also_from: str) -> None:
    """Drops INFO/DEBUG records that come neither from audiolm nor from the files `also_from`
    (a launcher script) from absl's log handler: Orbax's and JAX's INFO lines go, warnings and
    errors of every library still show. The launchers call it unless --verbosity is given."""
    import logging as std_logging

    sources = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
               *(os.path.abspath(f) for f in also_from))

    def keep(record: std_logging.LogRecord) -> bool:
        return (record.levelno >= std_logging.WARNING
                or os.path.abspath(record.pathname).startswith(sources))

    logging.get_absl_handler().addFilter(keep)


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


# Colour map anchors (viridis at 0, 1/4, 1/2, 3/4, 1), interpolated linearly: spectrogram images
# without matplotlib.
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                    np.float32)


def spectrogram_image(features: Any, dynamic_range: float | None = None) -> np.ndarray:
    """[H=n_mels, W=frames, 3] uint8 image of log-mel features (low frequencies at the bottom).

    Args:
      features: [frames, n_mels] log-mel features (e.g. `audiolm.audio.features.log_mel` of one
        utterance, natural or base-10 log).
      dynamic_range: values more than this below the maximum are drawn as the darkest colour
        (None: the range of `features`, so the minimum is darkest).
    """
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or min(x.shape) < 1:
        raise ValueError(f"spectrogram_image: features must be [frames, n_mels] with both >= 1, "
                         f"got shape {x.shape}")
    if dynamic_range is not None and not dynamic_range > 0:
        raise ValueError(f"spectrogram_image: dynamic_range={dynamic_range!r} must be > 0")
    finite = x[np.isfinite(x)]
    top = float(finite.max()) if finite.size else 0.0
    if dynamic_range is None:
        dynamic_range = max(top - float(finite.min()), 1e-6) if finite.size else 1.0
    x = np.nan_to_num(x, nan=top - dynamic_range, posinf=top, neginf=top - dynamic_range)
    t = np.clip((x - (top - dynamic_range)) / dynamic_range, 0.0, 1.0).T[::-1]  # [n_mels, frames]
    pos = t * (len(_VIRIDIS) - 1)
    lo = np.minimum(pos.astype(np.int32), len(_VIRIDIS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of a (nested) config; lists and other leaves become strings."""
    out: dict[str, Any] = {}
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if hasattr(value, "keys"):
            out.update(flatten_config(value, path + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[path] = value
        else:
            out[path] = str(value)
    return out


class MetricsWriter:
    """Writes metrics to jsonl + TensorBoard and logs progress.

    Scalars go to both (`write`); audio, images, text and hparams to TensorBoard only. Every
    method is a no-op on processes other than 0 and for TensorBoard when `tensorboard=False`.

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
                from tensorboardX import SummaryWriter  # imported here: ~1 s, only when used

                self._tb = SummaryWriter(self.tensorboard_dir, flush_secs=30)

    @property
    def tensorboard_dir(self) -> str:
        return os.path.join(self.workdir, "tensorboard")

    def start(self, step: int) -> None:
        """Marks the clock at `step` (after compilation) for rates and ETA."""
        self._last_time = time.perf_counter()
        self._last_step = int(step)
        self._tokens = 0.0

    def add_tokens(self, n: float) -> None:
        self._tokens += float(n)

    def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict:
        """Writes one record; for `train` also adds steps/s, tokens/s and logs the ETA.

        `metrics` values may be device arrays: they are fetched here, so a loop that calls
        `write` only at log steps keeps the device asynchronous in between.
        """
        record: dict[str, Any] = {"step": int(step), "split": split, "time": time.time()}
        for key, value in jax.device_get(dict(metrics)).items():
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
                for k, v in record.items():
                    if k not in ("step", "split", "time") and isinstance(v, float):
                        self._tb.add_scalar(f"{split}/{k}", v, int(step))
                self._tb.flush()
        return record

    def hparams(self, config: Any, metrics: tuple[str, ...] = ("train/loss", "eval/loss")) -> None:
        """Records the run's hyper-parameters (a config, flattened to dotted paths) for
        TensorBoard's HParams dashboard, which relates them to the scalar tags `metrics`."""
        if self._tb is None:
            return
        from tensorboardX.summary import hparams as hparams_summary

        values = flatten_config(config) if hasattr(config, "keys") else dict(config)
        experiment, session_start, _ = hparams_summary(values, {m: 0.0 for m in metrics})
        self._tb.file_writer.add_summary(experiment)
        self._tb.file_writer.add_summary(session_start)

    def audio(self, tag: str, wav: Any, sample_rate: int, step: int) -> None:
        """One clip: `wav` [samples] or [samples, channels<=2] float in [-1, 1] (clipped)."""
        x = np.asarray(jax.device_get(wav), np.float32)
        if x.ndim not in (1, 2) or x.shape[0] < 1 or (x.ndim == 2 and x.shape[1] not in (1, 2)):
            raise ValueError(f"MetricsWriter.audio({tag!r}): wav must be [samples] or "
                             f"[samples, 1 or 2 channels], got shape {x.shape}")
        if not (isinstance(sample_rate, int) and sample_rate > 0):
            raise ValueError(f"MetricsWriter.audio({tag!r}): sample_rate={sample_rate!r} must be "
                             "a positive int")
        if self._tb is not None:
            x = np.clip(np.nan_to_num(x), -1.0, 1.0)
            self._tb.add_audio(tag, x if x.ndim == 2 else x[:, None], int(step),
                               sample_rate=sample_rate)

    def image(self, tag: str, hwc_uint8: Any, step: int) -> None:
        """One image, [H, W, C] uint8 with C in (1, 3, 4) (e.g. `spectrogram_image(...)`)."""
        x = np.asarray(hwc_uint8)
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] not in (1, 3, 4) or 0 in x.shape:
            raise ValueError(f"MetricsWriter.image({tag!r}): expected [H, W, C in (1, 3, 4)] "
                             f"uint8, got shape {x.shape} dtype {x.dtype}")
        if self._tb is not None:
            # tensorboardX scales float images by 255 and passes uint8 through.
            self._tb.add_image(tag, x, int(step), dataformats="HWC")

    def spectrogram(self, tag: str, features: Any, step: int) -> None:
        """Log-mel `features` [frames, n_mels] as an image (`spectrogram_image`)."""
        self.image(tag, spectrogram_image(np.asarray(jax.device_get(features))), step)

    def text(self, tag: str, text: str, step: int) -> None:
        """Markdown text (TensorBoard's Text dashboard), e.g. reference / hypothesis pairs."""
        if not isinstance(text, str):
            raise ValueError(f"MetricsWriter.text({tag!r}): text must be a str, got "
                             f"{type(text).__name__}")
        if self._tb is not None:
            self._tb.add_text(tag, text, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
