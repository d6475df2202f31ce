"""Blocks run under a device mesh with logical-axis rules (8 fake CPU devices) and give the
same numbers as unsharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm import nn as ann

from tests.nn.helpers import rand_params

RULES = (("batch", "data"), ("length", None), ("embed", None), ("heads", "tensor"),
         ("kv_heads", "tensor"), ("head_dim", None), ("mlp", "tensor"), ("experts", "expert"),
         ("vocab", "tensor"))


@pytest.mark.parametrize("dispatch", ["dropless", "capacity"])
def test_moe_block_sharded_equals_unsharded(dispatch):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 2, 2), ("data", "expert", "tensor"))
    m = ann.TransformerBlock(num_heads=4, num_kv_heads=2, qk_norm=True, rope_style="rotate_half",
                             ffn="moe", num_experts=4, top_k=2, expert_hidden=8,
                             shared_expert_hidden=8, dispatch=dispatch, capacity_factor=2.0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 16)), jnp.float32)
    params = rand_params(m, x)
    axes = ann.logical_params_axes(m, jax.random.PRNGKey(0), x)
    ref, _, ref_aux = jax.jit(lambda p, x: m.apply({"params": p}, x))(params, x)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        shardings = jax.tree_util.tree_map(
            lambda names: NamedSharding(mesh, nn.logical_to_mesh_axes(names)), axes,
            is_leaf=lambda a: isinstance(a, tuple))
        p_sh = jax.device_put(params, shardings)
        x_sh = jax.device_put(x, NamedSharding(mesh, P("data")))
        y, _, aux = jax.jit(lambda p, x: m.apply({"params": p}, x))(p_sh, x_sh)
        # Init under the mesh: every weight's logical names must fit its true rank.
        p_init = ann.init_params(m, jax.random.PRNGKey(0), x_sh)
    assert jax.tree_util.tree_map(jnp.shape, p_init) == jax.tree_util.tree_map(jnp.shape, params)
    assert p_sh["ffn"]["wi_gate"].sharding.spec == P("expert", None, "tensor")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["load_balance_loss"], ref_aux["load_balance_loss"], rtol=1e-5)
