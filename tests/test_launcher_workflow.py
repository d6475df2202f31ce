"""`python -m audiolm.main` as a user runs it: quiet logs, the compilation cache from the config,
a profiler trace of the requested steps in the run's TensorBoard directory."""

import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_is_quiet_cached_and_profiled(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "audiolm.main", "--config=configs/pattern_lm.py:tiny",
         f"--workdir={workdir}", "--config.train.steps=3", "--config.train.log_every=1",
         "--config.train.eval_steps=1", "--config.train.warmup_steps=0",
         "--config.data.batch_size=2", "--config.train.profile_steps=2,3",
         f"--config.train.compilation_cache_dir={cache}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert "step 3/3" in log and "done:" in log  # audiolm's own lines stay
    # INFO lines come from audiolm's files only (Orbax's go; its warnings may stay)
    ours = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "audiolm", "**", "*.py"),
                                                   recursive=True)}
    info_sources = set(re.findall(r"^I\d{4} [\d:.]+ +\d+ (\S+\.py):\d+\]", log, re.M))
    assert "metrics.py" in info_sources and info_sources <= ours, info_sources - ours
    assert len(os.listdir(cache)) >= 1
    assert glob.glob(str(workdir / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
