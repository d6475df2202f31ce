"""Mesh construction, sharded init and sharded training equal to one device (8 fake CPU devices
from tests/conftest.py). Tolerance: fp32 losses and params within 1e-5 (reduction order differs
between shardings)."""

import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

from audiolm import parallel
from audiolm.config import ConfigError
from audiolm.train import loop, metrics as metrics_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "train"))
import toy_family  # noqa: E402


def _mesh_config(**axes):
    sizes = {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1, **axes}
    from audiolm.presets.experiment import default_mesh_rules

    return ml_collections.ConfigDict({"axes": sizes, "rules": default_mesh_rules()})


def test_mesh_shape_fills_the_auto_axis_and_rejects_bad_sizes():
    assert len(jax.devices()) == 8
    assert parallel.mesh_shape(_mesh_config(data=-1, tensor=2), 8) == \
        {"data": 4, "fsdp": 1, "expert": 1, "tensor": 2}
    assert parallel.make_mesh(_mesh_config(fsdp=-1)).shape["fsdp"] == 8
    with pytest.raises(ConfigError, match="does not divide"):
        parallel.mesh_shape(_mesh_config(data=-1, tensor=3), 8)
    with pytest.raises(ConfigError, match="needs 16 devices"):
        parallel.mesh_shape(_mesh_config(data=4, tensor=4), 8)


def test_params_are_created_sharded_by_logical_rules():
    config = toy_family.get_config()
    mesh = parallel.make_mesh(_mesh_config(data=2, fsdp=2, tensor=2))
    init = lambda r: toy_family.init_params(config.model, r)  # noqa: E731
    params, _ = parallel.init_sharded(init, jax.random.PRNGKey(0), mesh,
                                      parallel.logical_rules(_mesh_config()))
    # embedding [vocab, embed] -> (tensor, fsdp); w1 [embed, mlp] -> (fsdp, tensor)
    assert params["embedding"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert params["w1"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(params["w1"].addressable_shards) == 8
    assert params["w1"].addressable_shards[0].data.shape == (8, 16)
    batch = parallel.shard_batch({"tokens": np.zeros((8, 9), np.int32)}, mesh)
    assert batch["tokens"].addressable_shards[0].data.shape == (2, 9)
    with pytest.raises(ConfigError, match="data.batch_size"):
        parallel.shard_batch({"tokens": np.zeros((6, 9), np.int32)}, mesh)


def _train(config, workdir):
    loop.run(config, workdir)
    return np.array([r["loss"] for r in metrics_lib.read_metrics(workdir, "train")])


@pytest.mark.parametrize("axes", [dict(data=8), dict(data=2, fsdp=2, tensor=2),
                                  dict(data=2, fsdp=2, expert=2), dict(fsdp=4, tensor=2)])
def test_sharded_training_matches_one_device(axes, tmp_path):
    one = toy_family.get_config(steps=4, eval_every=100)
    sharded = toy_family.get_config(steps=4, eval_every=100)
    sharded.mesh.axes.update(axes)
    ref = _train(one, str(tmp_path / "one"))
    got = _train(sharded, str(tmp_path / "mesh"))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_tiny_moe_thinker_sharded_matches_one_device(tmp_path):
    """The tiny MoE Thinker-Talker on (data=2, fsdp=2, tensor=2) vs one device."""
    from test_families import tiny_synthetic_config

    one = tiny_synthetic_config("thinker_talker", steps=3, batch_size=4)
    sharded = tiny_synthetic_config("thinker_talker", steps=3, batch_size=4)
    sharded.mesh.axes.update(dict(data=2, fsdp=2, tensor=2))
    ref = _train(one, str(tmp_path / "one"))
    got = _train(sharded, str(tmp_path / "mesh"))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
