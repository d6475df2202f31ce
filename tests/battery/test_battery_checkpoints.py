"""Battery: checkpoints are saved only when finite, damaged ones are skipped by name on resume,
another optimizer or model is named, the last good step is found after a NaN, metrics.jsonl is
rewritten on every start. Tiny states (two arrays), no training loop."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import metrics as metrics_lib
from audiolm.train import optim
from audiolm.train.state import TrainState


def _train_config(optimizer="adamw", clip_norm=1.0, keep=5):
    return ml_collections.ConfigDict(dict(
        keep_checkpoints=keep, checkpoint_every=1, optimizer=optimizer, learning_rate=1e-3,
        warmup_steps=0, steps=10, min_lr_ratio=0.1, schedule="cosine", b1=0.9, b2=0.99, eps=1e-8,
        weight_decay=0.0, clip_norm=clip_norm))


def _params(scale=1.0, width=3):
    return {"w": jnp.full((4, width), scale, jnp.float32), "b": jnp.zeros((width,), jnp.float32)}


def _state(train, params):
    return TrainState.create(params, optim.make_optimizer(train), jax.random.PRNGKey(0))


def _abstract(train, width=3):
    return jax.eval_shape(lambda: _state(train, _params(width=width)))


def _write(workdir, steps=(1, 2, 3), train=None):
    """Checkpoints whose params are filled with their step number."""
    train = train or _train_config()
    ckpt = ckpt_lib.Checkpointer(workdir, train, async_save=False)
    for s in steps:
        assert ckpt.save(s, _state(train, _params(float(s))), {"index": s})
    ckpt.close()
    return os.path.join(workdir, "checkpoints")


def _restore(workdir, train=None, width=3):
    train = train or _train_config()
    ckpt = ckpt_lib.Checkpointer(workdir, train, async_save=False)
    try:
        state, data, step = ckpt.restore(_abstract(train, width))
        return state, data, step, list(ckpt.skipped)
    finally:
        ckpt.close()


def _truncate_files(step_dir):
    for path in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)


def _delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _delete_state(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def _delete_data(step_dir):
    shutil.rmtree(os.path.join(step_dir, "data"))


def _empty_folder(step_dir):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


def _delete_array_files(step_dir):
    for path in glob.glob(os.path.join(step_dir, "state", "d", "*")):
        os.remove(path)


def _garble_manifest(step_dir):
    with open(os.path.join(step_dir, "state", "manifest.ocdbt"), "wb") as f:
        f.write(b"\x00garbage")


DAMAGE = [_truncate_files, _delete_metadata, _delete_state, _delete_data, _empty_folder,
          _delete_array_files, _garble_manifest]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_resume_falls_back_past_a_damaged_latest_checkpoint(tmp_path, damage, caplog):
    directory = _write(str(tmp_path))
    damage(os.path.join(directory, "3"))
    state, data, step, skipped = _restore(str(tmp_path))
    assert step == 2 and data == {"index": 2}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((4, 3), 2.0))
    assert len(skipped) == 1 and f"{directory}/3" in skipped[0]
    assert "incomplete or corrupt" in skipped[0]


def test_resume_falls_back_past_two_damaged_checkpoints(tmp_path):
    directory = _write(str(tmp_path))
    _delete_metadata(os.path.join(directory, "3"))
    _truncate_files(os.path.join(directory, "2"))
    _, data, step, skipped = _restore(str(tmp_path))
    assert step == 1 and data == {"index": 1}
    assert [f"{directory}/{s}" in msg for s, msg in zip((3, 2), skipped)] == [True, True]


def test_every_checkpoint_damaged_names_each(tmp_path):
    directory = _write(str(tmp_path), steps=(1, 2))
    for s in (1, 2):
        _delete_metadata(os.path.join(directory, str(s)))
    with pytest.raises(ckpt_lib.CheckpointCorruptError) as info:
        _restore(str(tmp_path))
    assert f"{directory}/1" in str(info.value) and f"{directory}/2" in str(info.value)
    assert "fresh --workdir" in str(info.value)


def test_unfinished_save_folder_is_ignored(tmp_path):
    """A kill during a save leaves Orbax's temporary folder, never a step folder."""
    directory = _write(str(tmp_path), steps=(1,))
    shutil.copytree(os.path.join(directory, "1"),
                    os.path.join(directory, "2.orbax-checkpoint-tmp-12345"))
    _, _, step, skipped = _restore(str(tmp_path))
    assert step == 1 and skipped == []


@pytest.mark.parametrize("saved,resumed", [("adamw", "sgd"), ("sgd", "adamw"),
                                           ("adamw", "adafactor"), ("adafactor", "sgd")])
def test_resume_with_another_optimizer_names_train_optimizer(tmp_path, saved, resumed):
    _write(str(tmp_path), steps=(1,), train=_train_config(saved))
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"another optimizer.*train\."
                       r"optimizer") as info:
        _restore(str(tmp_path), train=_train_config(resumed))
    assert "User-provided restore item" not in str(info.value)


def test_resume_with_another_model_names_the_param(tmp_path):
    _write(str(tmp_path), steps=(1, 2))
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=r"shapes differ: .*w: checkpoint \(4, 3\) vs config \(4, 5\)"):
        _restore(str(tmp_path), width=5)


def test_mismatch_is_not_mistaken_for_damage(tmp_path):
    """Another model must raise, not fall back to older (equally mismatched) checkpoints."""
    directory = _write(str(tmp_path), steps=(1, 2))
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=f"{directory}/2"):
        _restore(str(tmp_path), width=5)


@pytest.mark.parametrize("where", ["params", "opt_state"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_refuses_a_non_finite_state(tmp_path, where, bad, caplog):
    train = _train_config()
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), train, async_save=False)
    try:
        assert ckpt.save(1, _state(train, _params()), {"index": 1})
        state = _state(train, _params(2.0))
        if where == "params":
            state = state.replace(params={**state.params, "w": state.params["w"].at[0, 1].set(bad)})
        else:
            state = state.replace(opt_state=jax.tree_util.tree_map(
                lambda x: x + bad if jnp.issubdtype(x.dtype, jnp.floating) else x,
                state.opt_state))
        with caplog.at_level("WARNING"):
            assert not ckpt.save(2, state, {"index": 2}, force=True)
        assert ckpt.refused == [2] and ckpt.all_steps() == [1]
        assert f"step 2 NOT saved" in caplog.text and f"{where}/" in caplog.text
    finally:
        ckpt.close()


def test_nonfinite_leaves_names_them():
    params = {"a": jnp.ones(3), "b": {"c": jnp.array([1.0, jnp.inf])}, "n": jnp.arange(3)}
    assert ckpt_lib.nonfinite_leaves(params) == ["params/b/c"]
    assert ckpt_lib.nonfinite_leaves({"a": jnp.ones(2)}, {"mu": jnp.ones(2)}) == []


def test_save_off_interval_does_not_check_or_save(tmp_path):
    train = _train_config()
    train.checkpoint_every = 5
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), train, async_save=False)
    try:
        assert ckpt.save(5, _state(train, _params()), {})
        nan_state = _state(train, _params(np.nan))
        assert not ckpt.save(7, nan_state, {})
        assert ckpt.refused == []  # not an interval step: nothing to refuse
    finally:
        ckpt.close()


def _loss_of(params):
    # Params filled with s give a finite loss for s < 3 and NaN from 3 on (a poisoned update).
    w = params["w"]
    return jnp.where(w.mean() >= 3.0, jnp.nan, w.mean())


def test_last_good_step_walks_back_to_params_with_a_finite_loss(tmp_path):
    train = _train_config()
    _write(str(tmp_path), steps=(1, 2, 3, 4), train=train)
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), train, async_save=False)
    try:
        abstract = _abstract(train).params
        assert ckpt_lib.last_good_step(ckpt, _loss_of, abstract) == 2
        assert ckpt_lib.last_good_step(ckpt, lambda p: jnp.float32(np.nan), abstract) is None
        assert ckpt_lib.last_good_step(ckpt, lambda p: p["w"].sum(), abstract) == 4
    finally:
        ckpt.close()


def test_last_good_step_on_the_checkpointer_that_saved(tmp_path):
    """As the loop calls it: on the run's own Checkpointer, right after its saves."""
    train = _train_config()
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), train, async_save=True)
    try:
        for s in (1, 2, 3):
            assert ckpt.save(s, _state(train, _params(float(s))), {"index": s})
        ckpt.wait()
        assert ckpt_lib.last_good_step(ckpt, _loss_of, _abstract(train).params) == 2
    finally:
        ckpt.close()


def test_last_good_step_skips_damaged_checkpoints(tmp_path):
    train = _train_config()
    directory = _write(str(tmp_path), steps=(1, 2), train=train)
    _delete_metadata(os.path.join(directory, "2"))
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), train, async_save=False)
    try:
        assert ckpt_lib.last_good_step(ckpt, _loss_of, _abstract(train).params) == 1
    finally:
        ckpt.close()


def _write_metrics(workdir, steps):
    with open(os.path.join(workdir, metrics_lib.METRICS_FILE), "a") as f:
        for s in steps:
            f.write(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n")


@pytest.mark.parametrize("resumed,kept", [(None, []), (0, []), (2, [1, 2]), (5, [1, 2, 3])])
def test_truncate_metrics_on_every_start(tmp_path, resumed, kept):
    """A run killed before its first checkpoint and started again must not read 1, 1, 2, ..."""
    _write_metrics(str(tmp_path), [1, 2, 3])
    metrics_lib.truncate_metrics(str(tmp_path), resumed)
    assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == kept
