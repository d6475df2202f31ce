"""The generic loop on a tiny toy family: loss decrease, metrics, exact resume, NaN guard,
checkpoint mismatch, init_from, gradient accumulation. Real families: test_families.py."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import loop, metrics as metrics_lib
from tests.resume_helpers import losses as _losses, restore, run_crashed, run_killed

sys.path.insert(0, os.path.dirname(__file__))
import toy_family  # noqa: E402


def _final_params(config, workdir):
    state, data_state, step = restore(config, workdir)
    return state["params"], data_state, step


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 6-step run (checkpoints every 2 steps)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    config = toy_family.get_config()
    loop.run(config, workdir)
    return config, workdir


def test_loss_decreases_and_metrics_file(reference_run):
    config, workdir = reference_run
    train = metrics_lib.read_metrics(workdir, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for r in train:
        assert {"loss", "accuracy", "grad_norm", "param_norm", "learning_rate"} <= set(r)
    for r in train[1:]:
        assert {"steps_per_sec", "tokens_per_sec"} <= set(r)
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    evals = metrics_lib.read_metrics(workdir, "eval")
    assert [r["step"] for r in evals] == [3, 6] and all(np.isfinite(r["loss"]) for r in evals)
    # keep-N (3) of the saved steps 2, 4, 6 and the resolved config beside them
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                  if d.isdigit()) == [2, 4, 6]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["family"] == "toy"
    _check_tensorboard(os.path.join(workdir, "tensorboard"))


def test_resume_after_exception_is_exact(reference_run, tmp_path):
    config, ref_dir = reference_run
    workdir = str(tmp_path)

    run_crashed(config, workdir, step=5)
    assert max(s for s, _ in _losses(workdir)) == 5  # step 5 was logged, not checkpointed
    loop.run(config, workdir)
    assert _losses(workdir) == _losses(ref_dir)  # bit-identical, step for step
    assert _losses(workdir, "eval") == _losses(ref_dir, "eval")
    p_ref, d_ref, _ = _final_params(config, ref_dir)
    p_new, d_new, _ = _final_params(config, workdir)
    assert d_new == d_ref == {"index": 6}
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_new, p_ref)


def test_resume_after_sigkill_is_exact(reference_run, tmp_path):
    """A subprocess is SIGKILLed in the middle of step 5; the resumed run matches exactly."""
    config, ref_dir = reference_run
    workdir = str(tmp_path)
    run_killed(workdir, toy_family.__file__, "get_config", step=5, timeout=600)
    loop.run(config, workdir)
    assert _losses(workdir) == _losses(ref_dir)
    p_ref, _, _ = _final_params(config, ref_dir)
    p_new, _, _ = _final_params(config, workdir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_new, p_ref)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # A huge constant learning rate blows the weights up after step 1: step 2's loss is NaN.
    # Checkpoint 1 holds finite parameters (it was saved), but they are the ones that give the
    # NaN, so no checkpoint is named good: the run says to start afresh.
    config = toy_family.get_config(learning_rate=1e30, schedule="constant", optimizer="sgd",
                                   checkpoint_every=1, eval_every=100, steps=5)
    workdir = str(tmp_path)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2.*Last good "
                                                 r"checkpoint.*: none \(start afresh\)"):
        loop.run(config, workdir)
    params, data_state, step = _final_params(config, workdir)
    assert step == 1 and data_state == {"index": 1}
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))
    assert [s for s, _ in _losses(workdir)] == [1]


def test_nan_loss_names_the_newest_checkpoint_whose_params_give_a_finite_loss(tmp_path):
    # Three sane steps (checkpoints 1..3), then the same run resumed with a huge learning rate:
    # update 4 (from checkpoint 3) gives finite but huge params, saved as checkpoint 4, whose
    # loss at step 5 is not finite. Checkpoint 3 is the last good one.
    workdir = str(tmp_path)
    loop.run(toy_family.get_config(checkpoint_every=1, steps=3, eval_every=100), workdir)
    config = toy_family.get_config(learning_rate=1e30, schedule="constant", checkpoint_every=1,
                                   eval_every=100, steps=8)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5.*Last good "
                                                 r"checkpoint \(finite params and loss\): "
                                                 r".*checkpoints/3\."):
        loop.run(config, workdir)


def test_checkpoint_of_another_config_is_rejected(reference_run):
    config, workdir = reference_run
    other = toy_family.get_config()
    other.model.width = 32
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"shapes differ: .*\(16, 16\)"):
        loop.run(other, workdir)


def test_init_from_checkpoint_then_scratch_order(reference_run, tmp_path):
    config, ref_dir = reference_run
    p_ref, _, _ = _final_params(config, ref_dir)
    fine = toy_family.get_config()
    fine.init_from = ref_dir
    exp = loop.build(fine)
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), fine.train)
    try:
        state = loop.restore_or_init(exp, ckpt, None, str(tmp_path))
    finally:
        ckpt.close()
    assert int(state.step) == 0  # params only: optimizer and step start fresh
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params), p_ref)
    # A mismatching init_from is rejected with the same clear error.
    fine.model.width = 8
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="init_from"):
        loop.run(fine, str(tmp_path / "other"))


def test_gradient_accumulation_matches_full_batch(tmp_path):
    full = toy_family.get_config(steps=3, eval_every=100)
    accum = toy_family.get_config(steps=3, eval_every=100, grad_accum_steps=4)
    loop.run(full, str(tmp_path / "full"))
    loop.run(accum, str(tmp_path / "accum"))
    a = np.array([l for _, l in _losses(str(tmp_path / "full"))])
    b = np.array([l for _, l in _losses(str(tmp_path / "accum"))])
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_eval_mode_reads_latest_checkpoint(reference_run):
    config, workdir = reference_run
    metrics = loop.run(config, workdir, mode="eval")
    last_eval = metrics_lib.read_metrics(workdir, "eval")[-2]
    assert last_eval["step"] == 6
    np.testing.assert_allclose(metrics["loss"], last_eval["loss"], rtol=1e-6)


def _check_tensorboard(logdir):
    """Event files parse as TensorBoard Event protos with the train scalars."""
    import struct

    from tensorboardX.proto import event_pb2

    (name,) = [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents")]
    data = open(os.path.join(logdir, name), "rb").read()
    tags, i = {}, 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append((event.step, value.simple_value))
        i += 12 + n + 4
    assert [s for s, _ in tags["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in tags["eval/loss"]] == [3, 6]
