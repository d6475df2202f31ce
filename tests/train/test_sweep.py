"""experiments/sweep.py: a sweep defined as a plain function in a config file."""

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


def test_sweep_runs_every_point_from_a_config_file(tmp_path):
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import toy_family

        def get_config(arg=None):
            return toy_family.get_config(steps=2, eval_every=100)

        def sweep_lr():
            return [{{"train.learning_rate": lr}} for lr in (1e-2, 3e-2)]
    """))
    workdir = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
         f"--config={config_file}", "--sweep=sweep_lr", f"--workdir={workdir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "sweep.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["overrides"]["train.learning_rate"] for r in rows] == [1e-2, 3e-2]
    for r in rows:
        assert r["train"]["step"] == 2 and r["eval"]["step"] == 2
    # same schedule, peaks 1e-2 and 3e-2: the logged learning rates differ by 3x
    assert abs(rows[1]["train"]["learning_rate"] / rows[0]["train"]["learning_rate"] - 3) < 1e-4
    assert rows[0]["train"]["loss"] != rows[1]["train"]["loss"]


def test_bad_override_path_is_a_config_error():
    from audiolm.config import ConfigError

    config = toy_family.get_config()
    with pytest.raises(ConfigError, match="train.learning_rat"):
        sweep.apply_overrides(config, {"train.learning_rat": 1.0})
    assert sweep.apply_overrides(config, {"train.steps": 9}).train.steps == 9
    assert config.train.steps == 6  # the base config is untouched
