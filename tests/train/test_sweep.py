"""experiments/sweep.py: a sweep defined as a plain function in a config file, with a diverging
point, a results table and a plot; a rerun skips finished points."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, os.path.dirname(__file__))
import sweep  # noqa: E402
import toy_family  # noqa: E402


def _run(config_file, workdir, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
         f"--config={config_file}", "--sweep=lr", f"--workdir={workdir}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sweep_with_a_diverging_point_writes_table_and_plot(tmp_path):
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import toy_family

        def get_config(arg=None):
            return toy_family.get_config(steps=2, eval_every=100)

        def sweep_lr():  # the last point's updates overflow: a non-finite loss at step 2
            for lr in (1e-2, 3e-2, 1e30):
                yield {{"train.learning_rate": lr, "train.clip_norm": 0.0}}
    """))
    workdir = tmp_path / "sweep"
    _run(config_file, workdir)
    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train.learning_rate"]) for r in rows] == [1e-2, 3e-2, 1e30]
    assert [r["status"] for r in rows] == ["done", "done", "diverged"]
    assert "non-finite loss" in rows[2]["error"]
    assert float(rows[0]["eval/loss"]) > 0 and rows[0]["eval/loss"] != rows[1]["eval/loss"]
    assert [r["train/step"] for r in rows[:2]] == ["2", "2"]
    md = (workdir / "results.md").read_text().splitlines()
    assert md[0].startswith("| run | train.learning_rate | train.clip_norm | status | eval/loss")
    assert len(md) == 2 + 3 and "diverged" in md[4]
    png = (workdir / "eval_loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # a rerun skips the finished points (the diverged one included) and rewrites the table
    stamps = {r["run"]: os.path.getmtime(workdir / r["run"] / sweep.POINT_FILE) for r in rows}
    proc = _run(config_file, workdir)
    assert proc.stderr.count("already (skipped)") == 3
    for run, stamp in stamps.items():
        assert os.path.getmtime(workdir / run / sweep.POINT_FILE) == stamp
    with open(workdir / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["done", "done", "diverged"]


def test_sweep_names_resolve_and_errors_list_the_sweeps(tmp_path):
    config_file = tmp_path / "c.py"
    config_file.write_text("def get_config(arg=None):\n    return None\n\n"
                           "def sweep_lr():\n    return [{'seed': 1}]\n\n"
                           "def other():\n    return []\n")
    assert sweep.load_sweep(str(config_file), "lr").__name__ == "sweep_lr"
    assert sweep.load_sweep(str(config_file), "sweep_lr").__name__ == "sweep_lr"
    assert sweep.load_sweep(f"x.py:arg", f"{config_file}:other").__name__ == "other"
    with pytest.raises(ValueError, match=r"no function sweep_wd or wd; its sweeps: \['sweep_lr'\]"):
        sweep.load_sweep(str(config_file), "wd")
    with pytest.raises(ValueError, match="yields no points"):
        sweep.points_of(sweep.load_sweep(str(config_file), "other"))


def test_bad_override_path_is_a_config_error():
    from audiolm.config import ConfigError

    config = toy_family.get_config()
    with pytest.raises(ConfigError, match="train.learning_rat"):
        sweep.apply_overrides(config, {"train.learning_rat": 1.0})
    assert sweep.apply_overrides(config, {"train.steps": 9}).train.steps == 9
    assert config.train.steps == 6  # the base config is untouched


def test_plot_of_categorical_values_and_failures(tmp_path):
    rows = [{"index": i, "overrides": {"train.optimizer": o, "seed": s}, "run": f"r{i}",
             "status": st, "error": "", "seconds": 1.0, "metrics": {"eval/loss": v}}
            for i, (o, s, st, v) in enumerate([("adamw", 0, "done", 1.0), ("sgd", 0, "done", 2.0),
                                               ("adamw", 1, "done", 1.5),
                                               ("sgd", 1, "failed", float("nan"))])]
    assert sweep.swept_key(rows) == "train.optimizer"
    path = sweep.plot(rows, str(tmp_path / "p.png"), "eval/loss")
    assert open(path, "rb").read(4) == b"\x89PNG"
    text = sweep.write_table(rows, str(tmp_path), "eval/loss")
    assert text.splitlines()[5].startswith("| r3 | sgd | 1 | failed | nan")
