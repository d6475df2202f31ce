"""Codec training through the loop (tiny synthetic variant of configs/codec.py): a run SIGKILLed
in the middle resumes from its last checkpoint to the same losses, step for step, and the same
params as an uninterrupted run."""

import jax
import numpy as np
import pytest

from audiolm.config import spec_to_section
from audiolm.presets import codec as presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.train import loop
from tests.resume_helpers import losses as _losses, restore, run_killed


def _config(arg="tiny", steps=6, ema=False):
    """`steps` steps of 8 rows, a checkpoint every 2, losses logged every step, no evaluation
    (the task's own tests cover its evaluators). `ema`: tiny_mimi's quantizer (split RVQ, EMA
    codebooks with k-means init at the first step and dead-code restarts: buffers rewritten by
    the task's update hook)."""
    config = load_experiment_config("configs/codec.py", f"{arg},steps={steps}")
    if ema:
        config.model.quantizer = spec_to_section(presets.TINY_MIMI.quantizer)
    config.data.batch_size = 8  # one row per device of the tests' 8-device mesh
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    config.train.eval_every = 100
    config.task.evaluators = ()
    config.task.final_evaluators = ()
    return config


def _final_params(config, workdir):
    state, _, step = restore(config, workdir)
    return state["params"], step


@pytest.mark.parametrize("ema", [False, True])
def test_codec_resume_after_sigkill_is_exact(tmp_path, ema):
    """The subprocess kills itself with SIGKILL after step 5 (checkpoint 4 may still be in its
    asynchronous write: then the resume starts from 2); the resumed run's losses (the metrics
    file keeps one record per step) and final params equal the uninterrupted run's."""
    config = _config(ema=ema)
    ref_dir, workdir = str(tmp_path / "reference"), str(tmp_path / "killed")
    loop.run(config, ref_dir)
    run_killed(workdir, __file__, "_config", ema=ema, step=5, timeout=600)
    assert [s for s, _ in _losses(workdir)] == [1, 2, 3, 4, 5]  # step 5 logged, not saved
    loop.run(config, workdir)
    ref = _losses(ref_dir)
    assert [s for s, _ in ref] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(l) for _, l in ref)
    assert _losses(workdir) == ref  # bit-identical, step for step
    p_ref, step_ref = _final_params(config, ref_dir)
    p_new, step_new = _final_params(config, workdir)
    assert step_ref == step_new == 6
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_new, p_ref)
    if ema:  # the buffers were learnt (k-means ran), and resumed exactly with the params
        assert float(p_ref["quantizer"]["acoustic"]["initialized"]) == 1.0
