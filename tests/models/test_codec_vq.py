"""Codec quantizer learning (model.quantizer.codebook_update "ema"): EMA statistics against a numpy
reference, k-means init, dead-code restarts, the train step's buffer hook (optimizer drift
discarded, micro-batches concatenated), training through the loop with exact resume, and the
config rules of the quantizer fields."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import tests.compile_cache  # noqa: F401  (the loop runs below compile the same programs)
from audiolm.config import ConfigError, spec_to_section
from audiolm.models import codec
from audiolm.presets import codec as presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks.base import BUFFER_INPUTS
from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import loop, metrics as metrics_lib
from audiolm.train import step as step_lib
from audiolm.train.state import TrainState
from tests.config_helpers import set_field


learn = jax.jit(codec.learn_codebooks, static_argnums=0)  # the spec is hashable


def _qspec(**kw) -> presets.QuantizerSpec:
    base = dict(dimension=2, codebook_size=3, num_codebooks=2, codebook_update="ema",
                ema_decay=0.9)
    return presets.QuantizerSpec(**{**base, **kw})


def _buffers(emb, usage, initialized=1.0):
    return {"embedding_sum": jnp.asarray(emb, jnp.float32),
            "cluster_usage": jnp.asarray(usage, jnp.float32),
            "initialized": jnp.asarray(initialized, jnp.float32)}


def test_ema_update_equals_numpy_reference():
    rng = np.random.default_rng(0)
    spec = _qspec()
    emb = rng.normal(size=(2, 3, 2)).astype(np.float32)
    usage = rng.uniform(0.5, 2.0, size=(2, 3)).astype(np.float32)
    z = rng.normal(size=(7, 2)).astype(np.float32)
    weight = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)  # two padding frames
    out, dead = learn(spec, _buffers(emb, usage), jnp.asarray(z),
                                      jnp.asarray(weight), jax.random.PRNGKey(0))
    # numpy: per level, nearest entry of the residual, weighted counts and sums, EMA.
    want_emb, want_usage, r = [], [], z.astype(np.float64)
    for level in range(2):
        book = emb[level] / np.maximum(usage[level], 1e-5)[:, None]
        idx = np.argmin(((r[:, None, :] - book[None]) ** 2).sum(-1), axis=1)
        onehot = np.eye(3)[idx] * weight[:, None]
        want_usage.append(0.9 * usage[level] + 0.1 * onehot.sum(0))
        want_emb.append(0.9 * emb[level] + 0.1 * onehot.T @ r)
        r = r - book[idx]
    np.testing.assert_allclose(np.asarray(out["cluster_usage"]), want_usage, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["embedding_sum"]), want_emb, rtol=1e-5,
                               atol=1e-6)
    assert float(out["initialized"]) == 1.0 and int(dead) == 0
    # a batch without valid frames changes nothing
    same, _ = learn(spec, _buffers(emb, usage, 0.0), jnp.asarray(z),
                                    jnp.zeros(7), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(same["embedding_sum"]), emb)
    assert float(same["initialized"]) == 0.0


def test_ema_step_matches_moshi_euclidean_codebook():
    """One training forward of moshi's EuclideanCodebook (initialised, decay 0.99; its first
    dead-code check comes at the 5th call) moves the buffers as one `learn_codebooks` level."""
    torch = pytest.importorskip("torch")
    core_vq = pytest.importorskip("moshi.quantization.core_vq")
    rng = np.random.default_rng(4)
    ref = core_vq.EuclideanCodebook(dim=4, codebook_size=16, decay=0.99)
    usage = rng.uniform(0.5, 3.0, 16).astype(np.float32)
    emb = (rng.normal(size=(16, 4)) * usage[:, None]).astype(np.float32)
    x = rng.normal(size=(2, 30, 4)).astype(np.float32)
    with torch.no_grad():
        ref.cluster_usage.copy_(torch.from_numpy(usage))
        ref.embedding_sum.copy_(torch.from_numpy(emb))
        ref._initialized.fill_(1.0)
        ref.train()
        ref(torch.from_numpy(x))
    spec = _qspec(dimension=4, codebook_size=16, num_codebooks=1, ema_decay=0.99)
    out, _ = learn(spec, _buffers(emb[None], usage[None]), jnp.asarray(x.reshape(-1, 4)),
                   jnp.ones(60), jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(out["cluster_usage"])[0], ref.cluster_usage.numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["embedding_sum"])[0], ref.embedding_sum.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_split_quantizer_learns_both_groups_and_only_buffers():
    """TINY_MIMI (semantic + acoustic RVQs): the hook returns the buffers of both groups, from
    each group's own projection of the latent; nothing else."""
    spec = presets.TINY_MIMI
    params = codec.init_params(spec, jax.random.PRNGKey(0))
    latent = jax.random.normal(jax.random.PRNGKey(1), (2, 5, spec.seanet.dimension))
    mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
    buffers, metrics = jax.jit(codec.learn_quantizer, static_argnums=0)(
        spec, params, latent, mask, jax.random.PRNGKey(2))
    assert set(buffers) == {"quantizer"} and set(buffers["quantizer"]) == {"semantic",
                                                                            "acoustic"}
    for group, levels in (("semantic", 1), ("acoustic", 3)):
        new = buffers["quantizer"][group]
        assert set(new) == {"embedding_sum", "cluster_usage", "initialized"}
        assert new["embedding_sum"].shape == (levels, 64, 16)
        assert float(new["initialized"]) == 1.0  # k-means ran (TINY_MIMI: kmeans_init)
        # k-means on 7 valid frames: the used entries sum to the 7 frames (usage floored at 1)
        z = np.einsum("nc,cd->nd", np.asarray(latent).reshape(10, -1)[np.asarray(mask).ravel()],
                      np.asarray(params["quantizer"][group]["input_proj"]))
        books = np.asarray(codec.ema_codebooks(new["embedding_sum"], new["cluster_usage"]))[0]
        nearest = np.min(((z[:, None] - books[None]) ** 2).sum(-1), axis=1)
        assert np.all(nearest < 1e-3 * (z ** 2).sum(-1).mean())  # each frame is a centroid
    assert float(metrics["dead_codes"]) >= 0
    with pytest.raises(ValueError, match="codebook_update='loss'"):
        codec.learn_quantizer(presets.TINY, codec.init_params(presets.TINY, jax.random.PRNGKey(0)),
                              latent, mask, jax.random.PRNGKey(0))


def test_mimi_import_keeps_the_ema_buffers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("moshi")
    from audiolm.importers import mimi as mimi_import
    from tests.models.test_codec import reference_mimi

    spec = presets.TINY_MIMI
    state = {k: v.detach().numpy() for k, v in reference_mimi(spec).state_dict().items()}
    name = "quantizer.rvq_rest.vq.layers.1._codebook"
    params = mimi_import.params_from_state(state.__getitem__, state.keys(), spec)
    acoustic = params["quantizer"]["acoustic"]
    np.testing.assert_array_equal(acoustic["embedding_sum"][1], state[f"{name}.embedding_sum"])
    np.testing.assert_array_equal(acoustic["cluster_usage"][1], state[f"{name}.cluster_usage"])
    assert float(acoustic["initialized"]) == 0.0  # moshi's fresh model: k-means still to run
    for key in state:
        if key.endswith("_initialized"):
            state[key] = np.ones_like(state[key])
    params = mimi_import.params_from_state(state.__getitem__, state.keys(), spec)
    assert float(params["quantizer"]["semantic"]["initialized"]) == 1.0
    # update "loss": the same checkpoint as plain codebooks, Mimi's embedding
    loss_spec = dataclasses.replace(spec, quantizer=dataclasses.replace(
        spec.quantizer, codebook_update="loss", kmeans_init=False, dead_code_threshold=0.0))
    plain = mimi_import.params_from_state(state.__getitem__, state.keys(), loss_spec)
    np.testing.assert_allclose(plain["quantizer"]["acoustic"]["codebooks"][1],
                               state[f"{name}.embedding_sum"]
                               / np.maximum(state[f"{name}.cluster_usage"], 1e-5)[:, None],
                               rtol=1e-6)
    assert "embedding_sum" not in plain["quantizer"]["acoustic"]


def _quant_error(z, books):
    """Mean squared residual of the RVQ of z [N, d] by books [L, K, d]."""
    r = z
    for book in books:
        r = r - book[np.argmin(((r[:, None] - book[None]) ** 2).sum(-1), axis=1)]
    return float(np.mean(r ** 2))


def test_kmeans_init_lowers_the_quantization_error_and_runs_once():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(8, 4))
    z = (centres[rng.integers(0, 8, 400)] + 0.1 * rng.normal(size=(400, 4))).astype(np.float32)
    spec = _qspec(dimension=4, codebook_size=8, num_codebooks=2, kmeans_init=True,
                  kmeans_iters=10, ema_decay=0.99)
    start = _buffers(rng.normal(size=(2, 8, 4)), np.ones((2, 8)), initialized=0.0)
    weight = jnp.ones(400)
    out, _ = learn(spec, start, jnp.asarray(z), weight, jax.random.PRNGKey(0))
    books = np.asarray(codec.ema_codebooks(out["embedding_sum"], out["cluster_usage"]))
    random_error = _quant_error(z, np.asarray(start["embedding_sum"]))
    kmeans_error = _quant_error(z, books)
    assert kmeans_error < 0.05 * random_error, (kmeans_error, random_error)
    assert float(out["initialized"]) == 1.0
    # initialised: a second step is a plain EMA step (no second k-means from other data)
    other = jnp.asarray(rng.normal(size=(400, 4)), jnp.float32)
    again, _ = learn(spec, out, other, weight, jax.random.PRNGKey(1))
    plain, _ = learn(dataclasses.replace(spec, kmeans_init=False), out, other,
                                     weight, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(again["embedding_sum"]),
                                  np.asarray(plain["embedding_sum"]))


def test_dead_code_is_restarted_from_a_batch_residual():
    rng = np.random.default_rng(2)
    spec = _qspec(num_codebooks=1, dead_code_threshold=0.1, ema_decay=0.5)
    emb = np.array([[[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]]], np.float32)  # entry 2: far away
    usage = np.array([[4.0, 4.0, 0.01]], np.float32)
    z = rng.normal(scale=0.5, size=(6, 2)).astype(np.float32)
    weight = np.array([1, 1, 1, 1, 0, 0], np.float32)
    out, dead = learn(spec, _buffers(emb, usage), jnp.asarray(z),
                                      jnp.asarray(weight), jax.random.PRNGKey(3))
    assert int(dead) == 1
    # without restarts: the plain EMA (entry 2, never chosen, decays to 0.005 < 0.1 x mean)
    ema = np.asarray(learn(dataclasses.replace(spec, dead_code_threshold=0.0),
                           _buffers(emb, usage), jnp.asarray(z), jnp.asarray(weight),
                           jax.random.PRNGKey(3))[0]["cluster_usage"])[0]
    new_usage = np.asarray(out["cluster_usage"])[0]
    np.testing.assert_allclose(new_usage[:2], ema[:2], rtol=1e-6)  # live entries: the EMA
    assert new_usage[2] == pytest.approx(ema.sum() / 3, rel=1e-5)  # restarted: mean usage
    restarted = np.asarray(out["embedding_sum"])[0, 2] / new_usage[2]
    # its vector is one of the valid rows of the batch (never a padding row)
    assert np.min(np.abs(z[:4] - restarted).max(axis=1)) < 1e-5


def test_train_step_hook_overwrites_buffers_and_sees_the_whole_batch():
    """Optimizer drift (weight decay) on a buffer is discarded; with 2 micro-batches the hook
    gets every row of the batch once."""
    def loss_fn(module, params, batch, rng, config, train):
        x = batch["x"]
        loss = jnp.mean((x * params["w"]) ** 2) + 0.0 * jnp.sum(jax.lax.stop_gradient(
            params["buf"]))
        return loss, {"loss": loss, BUFFER_INPUTS: {"x": x}}

    def hook(module, params, inputs, rng, config):
        return {"buf": params["buf"] + jnp.sum(inputs["x"], axis=0)}, {
            "rows": jnp.asarray(inputs["x"].shape[0], jnp.float32)}

    batch = {"x": jnp.arange(12.0).reshape(4, 3)}
    params = {"w": jnp.ones(3), "buf": jnp.full(3, 2.0)}
    tx = optax.adamw(0.1, weight_decay=0.5)
    for accum in (1, 2):
        config = ml_collections.ConfigDict({"train": {"grad_accum_steps": accum}})
        step = jax.jit(step_lib.make_train_step(None, loss_fn, tx, config, None, hook))
        state = TrainState.create(params, tx, jax.random.PRNGKey(0))
        state, metrics = step(state, batch)
        np.testing.assert_array_equal(np.asarray(state.params["buf"]), [20.0, 24.0, 28.0])
        assert float(metrics["rows"]) == 4.0
        assert np.all(np.asarray(state.params["w"]) < 1.0)  # the optimizer did step
    with pytest.raises(KeyError, match="buffer paths"):
        step_lib.overwrite_leaves(params, {"missing": jnp.zeros(3)})
    # eval: the buffer inputs never reach the metrics
    metrics = step_lib.make_eval_step(None, loss_fn, config)(params, batch, None)
    assert set(metrics) == {"loss"}


def _ema_config(workdir_steps=6):
    config = load_experiment_config("configs/codec.py", "tiny")
    q = config.model.quantizer
    q.codebook_update, q.kmeans_init, q.kmeans_iters, q.dead_code_threshold = "ema", True, 5, 0.1
    assert config.model.quantizer.codebook_update == "ema"  # a field, not ConfigDict.update
    config.train.steps = workdir_steps
    config.train.log_every = 1
    config.train.eval_every = 100  # no evaluation inside the 6 steps
    config.train.checkpoint_every = 2
    config.task.evaluators = ()
    config.task.final_evaluators = ()
    config.mesh.axes.data = 1  # one device: the batch of 4 is not split over 8
    return config


def _train_rows(workdir):
    return metrics_lib.read_metrics(workdir, "train")


def _final_params(config, workdir):
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    try:
        state, _, _ = ckpt.restore(loop.build(config).abstract_state)
    finally:
        ckpt.close()
    return jax.device_get(state["params"])


def test_ema_codec_trains_and_resumes_exactly(tmp_path):
    config = _ema_config()
    ref_dir, resumed_dir = str(tmp_path / "ref"), str(tmp_path / "resumed")
    loop.run(config, ref_dir)
    rows = _train_rows(ref_dir)
    # step 1 quantizes with random codebooks; k-means (in step 1's hook) and EMA cut the error
    assert rows[-1]["commit_loss"] < 0.5 * rows[0]["commit_loss"], [r["commit_loss"]
                                                                   for r in rows]
    assert all("dead_codes" in r and r["dead_codes"] >= 0 for r in rows)
    # The same run cut after checkpoint 4 (as a crash in step 5 or 6) resumes to the same
    # losses and params: the buffers (and the k-means flag) come back from the checkpoint.
    shutil.copytree(ref_dir, resumed_dir)
    shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "6"))
    loop.run(config, resumed_dir)
    assert [(r["step"], r["loss"]) for r in _train_rows(resumed_dir)] == [
        (r["step"], r["loss"]) for r in rows]
    finals = [_final_params(config, d) for d in (ref_dir, resumed_dir)]
    jax.tree_util.tree_map(np.testing.assert_array_equal, finals[0], finals[1])
    rvq = finals[0]["quantizer"]["rvq"]
    assert float(rvq["initialized"]) == 1.0 and "codebooks" not in rvq


@pytest.mark.parametrize("field, value, needle", [
    ("codebook_update", "adam", "model.quantizer.codebook_update='adam'"),
    ("ema_decay", 1.0, "model.quantizer.ema_decay=1.0"),
    ("kmeans_iters", 0, "model.quantizer.kmeans_iters=0"),
    ("dead_code_threshold", -0.1, "model.quantizer.dead_code_threshold=-0.1"),
    ("kmeans_init", 1, "model.quantizer.kmeans_init=1"),
])
def test_quantizer_rules_name_the_field(field, value, needle):
    config = ml_collections.ConfigDict({"model": spec_to_section(presets.TINY_MIMI).to_dict()})
    set_field(config, f"model.quantizer.{field}", value)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        codec.rules(config)


@pytest.mark.parametrize("field, value", [("kmeans_init", True), ("dead_code_threshold", 0.1)])
def test_kmeans_and_restarts_need_ema(field, value):
    config = ml_collections.ConfigDict({"model": spec_to_section(presets.TINY).to_dict()})
    set_field(config, f"model.quantizer.{field}", value)
    with pytest.raises(ConfigError, match=f"model.quantizer.{field}.*needs model.quantizer"
                                          r"\.codebook_update='ema'"):
        codec.rules(config)
