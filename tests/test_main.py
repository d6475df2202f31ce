"""The launcher (`python -m audiolm.main`) end to end: train, resume, eval; and the main job
(tiny AuT + Thinker speech recogniser on the embedded espeak set) on a shrunken config."""

import json
import os
import subprocess
import sys

import pytest

from audiolm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, timeout=1500):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device, like `make main`
    proc = subprocess.run([sys.executable, "-m", "audiolm.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_launcher_trains_resumes_and_evaluates(tmp_path):
    workdir = str(tmp_path)
    common = ["--config=configs/moshi.py:variant=tiny", f"--workdir={workdir}",
              "--config.data.name=synthetic", "--config.data.batch_size=2",
              "--config.data.num_train=2", "--config.data.num_validation=2",
              "--config.train.log_every=1", "--config.train.checkpoint_every=2",
              "--config.train.eval_steps=1", "--config.train.warmup_steps=0"]
    _main(*common, "--config.train.steps=2")
    _main(*common, "--config.train.steps=3")  # resumes at step 2
    train = metrics_lib.read_metrics(workdir, "train")
    assert [r["step"] for r in train] == [1, 2, 3]
    _main(*common, "--config.train.steps=3", "--mode=eval")
    assert metrics_lib.read_metrics(workdir, "eval")[-1]["step"] == 3
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["steps"] == 3


@pytest.mark.slow
def test_main_job_shrunken(tmp_path):
    """`make main` with few steps and few utterances: trains, checkpoints, transcribes, scores."""
    workdir = str(tmp_path / "run")
    proc = _main("--config=configs/thinker_talker.py:variant=tiny_asr", f"--workdir={workdir}",
                 "--config.train.steps=6", "--config.train.warmup_steps=2",
                 "--config.train.log_every=2", "--config.train.eval_every=6",
                 "--config.train.checkpoint_every=3", "--config.train.eval_steps=1",
                 "--config.data.batch_size=4", "--config.data.num_train=16",
                 "--config.data.num_validation=4", "--config.data.num_test=4",
                 f"--config.data.cache_dir={tmp_path / 'cache'}",
                 "--config.sample.max_new_tokens=8")
    assert "test CER" in proc.stdout
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == 6
    with open(os.path.join(workdir, "asr_test.json")) as f:
        scores = json.load(f)
    assert scores["utterances"] == 4 and scores["cer"] >= 0.0
    with open(os.path.join(workdir, "transcripts_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 4 and all(r["reference"] for r in rows)
    (test,) = metrics_lib.read_metrics(workdir, "test")
    assert test["step"] == 6 and abs(test["cer"] - scores["cer"]) < 1e-9
