"""train.dtype=bfloat16: params and optimizer state stay float32, the forward computes in
bfloat16, and a few steps track the float32 losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.presets.experiment import load_experiment_config
from audiolm.train import loop, metrics as metrics_lib


def _config(dtype):
    config = load_experiment_config("configs/moshi.py", "tiny")
    config.data.batch_size = 2
    config.data.num_train = 2
    config.data.num_validation = 2
    config.train.steps = 4
    config.train.warmup_steps = 0
    config.train.schedule = "constant"
    config.train.learning_rate = 3e-3
    config.train.log_every = 1
    config.train.eval_every = 4
    config.train.checkpoint_every = 4
    config.mesh.axes.data = 1
    config.train.dtype = dtype
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for dtype in ("float32", "bfloat16"):
        workdir = str(tmp_path_factory.mktemp(dtype))
        state = loop.run(_config(dtype), workdir)
        out[dtype] = (state, [r["loss"] for r in metrics_lib.read_metrics(workdir, "train")])
    return out


def test_bf16_losses_track_fp32(runs):
    fp32, bf16 = np.array(runs["float32"][1]), np.array(runs["bfloat16"][1])
    assert len(fp32) == len(bf16) == 4 and np.isfinite(bf16).all()
    # bf16 keeps ~3 significant digits: the losses agree to 2 % over the first steps
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
    assert bf16[-1] < bf16[0]


def test_params_and_optimizer_state_stay_fp32(runs):
    state = runs["bfloat16"][0]
    leaves = jax.tree_util.tree_leaves(state.params) + [
        x for x in jax.tree_util.tree_leaves(state.opt_state) if hasattr(x, "dtype")
        and jnp.issubdtype(x.dtype, jnp.floating)]
    assert leaves and all(x.dtype == jnp.float32 for x in leaves)


def _dot_dtypes(jaxpr):
    """Operand dtypes of every dot_general in `jaxpr` and its sub-jaxprs (pjit, scan, ...)."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    out += _dot_dtypes(getattr(inner, "jaxpr", inner))
    return out


def test_forward_computes_in_bf16():
    config = _config("bfloat16")
    exp = loop.build(config)
    batch = next(iter(exp.batches("validation", finite=True)))
    params = exp.init_state().params
    loss, _ = exp.task.loss_fn(exp.module, params, batch, None, config, False)
    assert loss.dtype == jnp.float32  # the loss is upcast
    jaxpr = jax.make_jaxpr(lambda p: exp.task.loss_fn(exp.module, p, batch, None, config,
                                                      False))(params).jaxpr
    dots = _dot_dtypes(jaxpr)
    bf16 = [d for d in dots if d == ("bfloat16", "bfloat16")]
    # every projection of the temporal transformer and depformer runs in bf16
    assert len(bf16) >= 0.8 * len(dots) and len(bf16) >= 8, dots
