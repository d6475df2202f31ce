"""Runs a hyper-parameter sweep defined as a plain function in a config file; writes a results
table (Markdown + CSV) and a plot of one metric against the swept value.

A sweep is a function of the config file that returns (or yields) override dicts (dotted config
paths -> values), big_vision style:

    def sweep_lr():
        for lr in (1e-3, 3e-3, 1e-2):
            yield {"train.learning_rate": lr}

  python experiments/sweep.py --config=configs/thinker_talker.py:variant=tiny_asr \
      --sweep=lr --workdir=runs/sweep_lr [--metric=eval/loss] [--config.train.steps=200]

`--sweep=NAME` resolves `sweep_NAME`, else `NAME`, in the `--config` file; `path/file.py:NAME`
takes it from another file. Each point trains with `audiolm.train.loop.run` in
`<workdir>/<index>_<overrides>`. A point whose loss turns non-finite is recorded as `diverged`, one
that raises as `failed` (with the error), and the sweep goes on. A rerun skips the points already
`done` or `diverged` (their status is in `<run>/sweep_point.json`), retries `failed` ones and
resumes interrupted ones from their checkpoints. Outputs in `<workdir>`: `results.md`,
`results.csv`, `<metric>.png` (the metric against the first override that varies; one line per
combination of the others; diverged and failed points marked on the x axis).
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Callable, Iterable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def _define_flags() -> None:
    """The command-line flags (defined when run as a script only, so that tests can import this
    module beside `audiolm.main`, which defines --config and --workdir too)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (+:arg).",
                                    lock_config=False)
    flags.DEFINE_string("sweep", None, "Sweep of the config file (NAME -> sweep_NAME or NAME), "
                                       "or file.py:NAME.")
    flags.DEFINE_string("workdir", None, "Parent directory of the sweep's runs.")
    flags.DEFINE_string("metric", "eval/loss", "split/name of metrics.jsonl tabulated and "
                                               "plotted (e.g. eval/loss, test/cer).")
    flags.DEFINE_bool("dry_run", False, "Only print the points.")


POINT_FILE = "sweep_point.json"
FINISHED = ("done", "diverged")  # not rerun; "failed" points are


def load_sweep(config_path: str, sweep: str) -> Callable[[], Iterable[dict[str, Any]]]:
    """The sweep function `sweep` ("NAME" of the config file, or "file.py:NAME")."""
    path, name = (sweep.rsplit(":", 1) if ":" in sweep else (config_path.split(":")[0], sweep))
    spec = importlib.util.spec_from_file_location("_audiolm_sweep_source", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ValueError(f"--sweep={sweep!r}: cannot load {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for candidate in (f"sweep_{name}", name):
        fn = getattr(module, candidate, None)
        if callable(fn):
            return fn
    available = sorted(n for n in vars(module) if n.startswith("sweep_")
                       and callable(getattr(module, n)))
    raise ValueError(f"--sweep={sweep!r}: {path!r} has no function sweep_{name} or {name}; "
                     f"its sweeps: {available}")


def points_of(fn: Callable[[], Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The override dicts of a sweep function, checked."""
    points = list(fn())
    if not points:
        raise ValueError(f"sweep {fn.__name__} yields no points")
    for i, p in enumerate(points):
        if not isinstance(p, dict) or not all(isinstance(k, str) for k in p):
            raise ValueError(f"sweep {fn.__name__} point {i}: {p!r} must be a dict of dotted "
                             "config paths -> values")
    return points


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


def _last_metrics(run_dir: str) -> dict[str, float]:
    """"split/name" -> value of the last record of each split in the run's metrics.jsonl."""
    from audiolm.train import metrics as metrics_lib

    out = {}
    for split in ("train", "eval", "test"):
        rows = metrics_lib.read_metrics(run_dir, split)
        if rows:
            out.update({f"{split}/{k}": v for k, v in rows[-1].items()
                        if k not in ("step", "split", "time") and isinstance(v, (int, float))})
            out[f"{split}/step"] = rows[-1]["step"]
    return out


def run_point(config: Any, run_dir: str) -> dict[str, Any]:
    """Trains one point; returns its status record (also written to run_dir/sweep_point.json)."""
    from audiolm.train import loop

    start = time.time()
    status, error = "done", ""
    try:
        loop.run(config, run_dir)
    except FloatingPointError as e:
        status, error = "diverged", str(e).split(";")[0]
    except Exception as e:  # noqa: BLE001 -- a broken point is recorded; the sweep goes on
        status, error = "failed", f"{type(e).__name__}: {e}"
        logging.error("sweep point %s failed:\n%s", run_dir, traceback.format_exc())
    record = {"status": status, "error": error, "seconds": round(time.time() - start, 1),
              "metrics": _last_metrics(run_dir)}
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, POINT_FILE), "w") as f:
        json.dump(record, f, indent=1)
    return record


def run_sweep(config: Any, points: list[dict[str, Any]], workdir: str, metric: str = "eval/loss",
              dry_run: bool = False) -> list[dict[str, Any]]:
    """Trains every point not finished yet; writes the table and plot; returns the rows
    ({index, overrides, run, status, error, seconds, metrics})."""
    configs = [apply_overrides(config, p) for p in points]  # every path checked before training
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for i, (point, cfg) in enumerate(zip(points, configs)):
        run_dir = os.path.join(workdir, point_name(i, point))
        if dry_run:
            print(run_dir, json.dumps(point))
            continue
        done_file = os.path.join(run_dir, POINT_FILE)
        record = None
        if os.path.exists(done_file):
            with open(done_file) as f:
                record = json.load(f)
            if record.get("status") in FINISHED:
                logging.info("sweep point %d/%d %s: %s already (skipped)", i + 1, len(points),
                             point, record["status"])
            else:
                record = None
        if record is None:
            logging.info("sweep point %d/%d: %s -> %s", i + 1, len(points), point, run_dir)
            record = run_point(cfg, run_dir)
            logging.info("sweep point %d/%d: %s %s", i + 1, len(points), record["status"],
                         record["error"])
        rows.append({"index": i, "overrides": point, "run": os.path.basename(run_dir), **record})
    if not dry_run:
        write_table(rows, workdir, metric)
        plot(rows, os.path.join(workdir, _metric_file(metric) + ".png"), metric)
    return rows


def _metric_file(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def table_columns(rows: list[dict[str, Any]], metric: str) -> tuple[list[str], list[str]]:
    """(override keys in first-seen order, metric columns: `metric` first, then train/loss and
    the other scores if present)."""
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    present = set(k for r in rows for k in r["metrics"])
    extra = [m for m in ("train/loss", "eval/loss", "test/cer", "test/wer", "train/step")
             if m in present and m != metric]
    return keys, [metric] + extra


def write_table(rows: list[dict[str, Any]], workdir: str, metric: str) -> str:
    """Writes results.csv and results.md (one row per point); returns the Markdown."""
    keys, metrics = table_columns(rows, metric)
    header = ["run"] + keys + ["status"] + metrics + ["seconds", "error"]
    body = []
    for r in rows:
        body.append([r["run"]] + [r["overrides"].get(k, "") for k in keys] + [r["status"]]
                    + [r["metrics"].get(m, "") for m in metrics] + [r["seconds"], r["error"]])
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in body:
        lines.append("| " + " | ".join(_fmt(v).replace("|", "/") for v in row) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return text


def varying_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between points, in first-seen order."""
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    return [k for k in keys if len({repr(r["overrides"].get(k)) for r in rows}) > 1]


def swept_key(rows: list[dict[str, Any]]) -> str:
    """The first override key whose value differs between points (the x axis)."""
    varying = varying_keys(rows)
    return varying[0] if varying else "index"


def plot(rows: list[dict[str, Any]], path: str, metric: str) -> str:
    """PNG of `metric` against the swept value; one line per combination of the other overrides;
    diverged / failed points as red crosses on the x axis. Returns `path`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("the sweep plot needs matplotlib: pip install matplotlib") from e
    x_key = swept_key(rows)

    def x_of(r):
        return r["overrides"].get(x_key, r["index"]) if x_key != "index" else r["index"]

    numeric = all(isinstance(x_of(r), (int, float)) and not isinstance(x_of(r), bool)
                  for r in rows)
    labels = sorted({repr(x_of(r)) for r in rows}) if not numeric else None
    position = (lambda r: x_of(r)) if numeric else (lambda r: labels.index(repr(x_of(r))))
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups: dict[str, list[dict[str, Any]]] = {}
    others = [k for k in varying_keys(rows) if k != x_key]
    for r in rows:
        rest = {k: r["overrides"].get(k) for k in others}
        groups.setdefault(", ".join(f"{k.split('.')[-1]}={v}" for k, v in rest.items()),
                          []).append(r)
    for name, group in groups.items():
        good = sorted((position(r), r["metrics"][metric]) for r in group
                      if r["status"] == "done" and isinstance(r["metrics"].get(metric), float)
                      and math.isfinite(r["metrics"][metric]))
        if good:
            ax.plot([g[0] for g in good], [g[1] for g in good], "o-", label=name or metric)
    bad = [position(r) for r in rows if r["status"] != "done"]
    if bad:
        ax.plot(bad, [0.0] * len(bad), "rx", markersize=10, clip_on=False,
                transform=ax.get_xaxis_transform(), label="diverged / failed")
    if numeric and all(x_of(r) > 0 for r in rows) and \
            max(x_of(r) for r in rows) / min(x_of(r) for r in rows) >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x_key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv):
    del argv
    from audiolm.parallel import runtime
    from audiolm.train.metrics import quiet_library_logs

    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:  # like audiolm.main: library INFO lines on request
        quiet_library_logs(__file__)
    fn = load_sweep(config_flags.get_config_filename(FLAGS["config"]), FLAGS.sweep)
    runtime.enable_compilation_cache(FLAGS.config.train.compilation_cache_dir)
    run_sweep(FLAGS.config, points_of(fn), FLAGS.workdir, FLAGS.metric, FLAGS.dry_run)


if __name__ == "__main__":
    _define_flags()
    flags.mark_flags_as_required(["config", "sweep", "workdir"])
    app.run(main)
