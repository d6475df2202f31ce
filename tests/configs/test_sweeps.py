"""Every config file ships at least one sweep, and every point of every sweep validates."""

import glob
import importlib.util
import os
import sys

import pytest

from audiolm.config import validate
from audiolm.presets import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import sweep  # noqa: E402

# The variant each sweep is meant for (the one in its docstring's command).
VARIANT = {"thinker_talker.py": "tiny_asr", "moshi.py": "tiny", "pattern_lm.py": "tiny",
           "codec.py": "tiny"}
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_every_config_file_is_covered():
    assert sorted(os.path.basename(p) for p in CONFIG_FILES) == sorted(VARIANT)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_sweeps_of_config_file_validate(path):
    spec = importlib.util.spec_from_file_location("_config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [n[len("sweep_"):] for n in vars(module) if n.startswith("sweep_")]
    assert names, f"{path} ships no sweep_* function"
    base = experiment.load_experiment_config(path, VARIANT[os.path.basename(path)])
    for name in names:
        points = sweep.points_of(sweep.load_sweep(path, name))
        assert len(points) >= 2 and sweep.swept_key(
            [{"index": i, "overrides": p} for i, p in enumerate(points)]) != "index"
        for point in points:
            validate(sweep.apply_overrides(base, point))
