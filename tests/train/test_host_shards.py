"""Host shards in the training loop: process p of P feeds only its rows [p B/P, (p+1) B/P) of
each global batch (`parallel.process_rows`, `local_batch`, `shard_local_batch`); grain decodes
only those rows. The 2-host cases are simulated by passing the process index / count, and proved
by a real run of two JAX processes on CPU (`jax.distributed`, 2 fake devices each) that train the
toy LM on grain host shards through `loop.run`, stop and resume: the losses are one process's."""

import json
import operator
import os
import socket
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm import data as data_lib
from audiolm import parallel
from audiolm.config import ConfigError
from audiolm.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(__file__))
import toy_family  # noqa: E402


def mesh_config(**axes):
    from audiolm.presets.experiment import default_mesh_rules

    sizes = {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1, **axes}
    return ml_collections.ConfigDict({"axes": sizes, "rules": default_mesh_rules()})


def global_batch(rows=8):
    rng = np.random.default_rng(0)
    return {"tokens": rng.integers(0, 16, (rows, 9)).astype(np.int32),
            "audio": rng.normal(size=(rows, 5, 2)).astype(np.float32),
            "scale": np.float32(2.0)}


def test_hosts_take_disjoint_rows_that_make_up_the_global_batch():
    batch = global_batch()
    assert parallel.local_batch(batch, 8, process_count=1) is batch  # one process: unchanged
    for count in (2, 4):
        slices = [parallel.process_rows(8, p, count) for p in range(count)]
        assert [(s.start, s.stop) for s in slices] == [(p * 8 // count, (p + 1) * 8 // count)
                                                        for p in range(count)]
        hosts = [parallel.local_batch(batch, 8, process_index=p, process_count=count)
                 for p in range(count)]
        for key in ("tokens", "audio"):
            assert all(h[key].shape[0] == 8 // count for h in hosts)
            np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts]), batch[key])
        assert all(h["scale"] == 2.0 for h in hosts)  # 0-d fields pass through
        # A host's own rows (what grain reads) are kept as they are.
        own = parallel.local_batch(hosts[1], 8, process_index=1, process_count=count)
        np.testing.assert_array_equal(own["tokens"], hosts[1]["tokens"])
    with pytest.raises(ValueError, match=r"'tokens' has shape \(3, 9\).*data.batch_size=8 rows"
                                         r".*this process's 4 rows"):
        parallel.local_batch({"tokens": batch["tokens"][:3]}, 8, process_index=0,
                             process_count=2)


def fake_mesh(process_ids, **axes):
    """A stand-in for a multi-host Mesh: devices [data, fsdp, expert, tensor] that know only
    their process index (what `process_batch_shards` reads)."""
    sizes = {"data": 1, "fsdp": 1, "expert": 1, "tensor": 1, **axes}
    ids = np.asarray(process_ids).reshape(tuple(sizes.values()))
    devices = np.empty(ids.shape, dtype=object)
    for where, p in np.ndenumerate(ids):
        devices[where] = types.SimpleNamespace(process_index=int(p))
    return types.SimpleNamespace(devices=devices, shape=sizes)


def test_batch_size_and_mesh_must_give_each_process_its_own_rows():
    with pytest.raises(ConfigError, match=r"data.batch_size=6: must be a multiple of the 4 "
                                          r"processes"):
        parallel.rows_per_process(6, 4)
    # 2 hosts x 2 devices on data=4: host 0 holds batch shards 0, 1 and host 1 shards 2, 3.
    by_data = fake_mesh([0, 0, 1, 1], data=4)
    assert parallel.process_batch_shards(by_data) == {0: (0, 1), 1: (2, 3)}
    assert parallel.check_batch_layout(8, by_data, process_count=2) == 4
    with pytest.raises(ConfigError, match=r"data.batch_size=6: must be a multiple of the 4"):
        parallel.check_batch_layout(6, fake_mesh([0, 1, 2, 3], data=4), process_count=4)
    # tensor across the hosts: both hold the same batch shards, so neither may feed half a batch.
    across = fake_mesh([0, 1, 0, 1], data=2, tensor=2)
    assert parallel.process_batch_shards(across) == {0: (0, 1), 1: (0, 1)}
    with pytest.raises(ConfigError, match=r"mesh.axes=.*\{0: \(0, 1\), 1: \(0, 1\)\}.*multiple "
                                          r"of the process count"):
        parallel.check_batch_layout(8, across, process_count=2)
    # A mesh on the devices of one host only leaves the other without rows to feed.
    with pytest.raises(ConfigError, match="each process must hold its own"):
        parallel.check_batch_layout(8, fake_mesh([0, 0], data=2), process_count=2)


def test_local_rows_become_the_global_array():
    mesh = parallel.make_mesh(mesh_config(data=2, fsdp=2, tensor=2))
    batch = global_batch()
    local = parallel.local_batch(batch, 8)  # one process: its rows are the global batch
    out = parallel.shard_local_batch(local, mesh)
    for key in ("tokens", "audio"):
        assert out[key].shape == batch[key].shape
        np.testing.assert_array_equal(np.asarray(out[key]), batch[key])
        for shard in out[key].addressable_shards:  # each device holds its 2 rows
            assert shard.data.shape[0] == 2
            np.testing.assert_array_equal(np.asarray(shard.data), batch[key][shard.index])
    assert out["scale"].sharding.is_fully_replicated and float(out["scale"]) == 2.0
    same = parallel.shard_batch(batch, mesh, 8)
    np.testing.assert_array_equal(np.asarray(same["tokens"]), batch["tokens"])
    with pytest.raises(ValueError, match=r"'tokens' has shape \(6, 9\): its 6 rows on this "
                                         r"process must split evenly over the 4 batch shards"):
        parallel.shard_local_batch({"tokens": batch["tokens"][:6]}, mesh)


# ---------------------------------------------------------------------------------------------
# grain: each host decodes its rows; one iterator state resumes every host


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.data.test_streaming import write_corpus

    return write_corpus(str(tmp_path_factory.mktemp("hosts")), 24)


def grain_config(manifest, **kw):
    return {"name": "manifest", "manifest": manifest, "loader": "grain", "batch_size": 8,
            "holdout_fraction": 0.0, "loader_workers": 0, **kw}


def test_grain_hosts_read_the_rows_the_loop_would_slice(corpus):
    grain = pytest.importorskip("grain")
    config = grain_config(corpus)
    single = data_lib.make_iterator(config, "train")  # one process: the whole batch
    memory = data_lib.make_iterator({**config, "loader": "memory"}, "train")
    hosts = [data_lib.make_iterator(config, "train", shard=grain.sharding.ShardOptions(p, 2))
             for p in range(2)]
    assert len(single) == 2
    for _ in range(3):  # into the second epoch
        whole, sliced = next(single), next(memory)
        rows = [next(h) for h in hosts]
        assert not set(rows[0]["index"]) & set(rows[1]["index"])
        for p, host in enumerate(rows):
            assert host["index"].shape == (4,)
            mine = parallel.local_batch(sliced, 8, process_index=p, process_count=2)
            for key in whole:
                np.testing.assert_array_equal(host[key], mine[key], err_msg=key)
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([r[key] for r in rows]), whole[key],
                                          err_msg=key)
    # The checkpoint holds one state (process 0 writes it): it is every host's state.
    state = hosts[0].get_state()
    assert hosts[1].get_state() == state and state["hosts"] == 2
    assert single.get_state()["hosts"] == 1
    resumed = data_lib.make_iterator(config, "train", shard=grain.sharding.ShardOptions(1, 2))
    resumed.set_state(state)
    for _ in range(2):
        a, b = next(resumed), next(hosts[1])
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with pytest.raises(ValueError, match="hosts=2 but this iterator has hosts=1"):
        single.set_state(state)
    for it in (single, resumed, *hosts):
        it.close()


# ---------------------------------------------------------------------------------------------
# Two real JAX processes (jax.distributed on CPU, 2 fake devices each)


def speech_tokens_loss(module, params, batch, rng, config, train):
    """The toy LM's next-token loss on tokens read off each row's audio [B, S] (every 97th
    sample, 16 levels): a speech task as cheap to compile as the toy LM."""
    length = int(config.model.length) + 1
    audio = batch["audio"][:, ::97][:, :length]
    tokens = jnp.clip(jnp.floor((audio / 0.3 + 1.0) * 8.0), 0, 15).astype(jnp.int32)
    return toy_family.toy_loss(module, params, {"tokens": tokens}, rng, config, train)


def register_speech_task(setitem=operator.setitem):
    """Task "toy_speech" (`speech_tokens_loss` on the data pipeline's batches) for the toy
    family, entered with `setitem` (the test's monkeypatch.setitem undoes it afterwards)."""
    from audiolm import config as config_lib

    toy_family.register()
    task = types.ModuleType("toy_speech")
    task.EVALUATORS = ("loss",)
    task.rules = lambda config: None
    task.make_batches = lambda config, family, split, finite=False: data_lib.make_iterator(
        config.data, split, train=not finite)
    task.loss_fn = speech_tokens_loss
    setitem(sys.modules, "toy_speech", task)
    setitem(config_lib.TASKS, "toy_speech", "toy_speech")
    setitem(config_lib.PAIRS, "toy_speech", ("toy",))


def speech_config(manifest, steps):
    """The toy LM on grain batches of `manifest`, mesh data=4 (2 processes x 2 devices: each
    process holds 2 of the 4 batch shards); a constant learning rate; a checkpoint every 2
    steps; the "loss" evaluator on the validation split at the end."""
    config = toy_family.get_config(steps=steps, eval_every=100, checkpoint_every=2,
                                   schedule="constant")  # a stop at step 2 changes nothing
    config.task.name = "toy_speech"
    config.task.evaluators = ("loss",)
    config.task.final_evaluators = ()
    config.data.update(name="manifest", manifest=manifest, loader="grain", batch_size=8,
                       holdout_fraction=0.2, loader_workers=0)
    config.mesh.axes.data = 4
    return config


def train_losses(config, workdir):
    losses = []
    from audiolm.train import loop

    loop.run(config, workdir,
             callbacks=[lambda s, st, m: losses.append(float(np.asarray(m["loss"])))])
    return losses


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_on_their_own_rows_and_resume(tmp_path, corpus, monkeypatch):
    """Two processes train 2 steps, stop, resume to step 4 from the checkpoint (one saved data
    state for both hosts): the losses and the validation loss are those of one process that
    trains 4 steps on the whole batches; the hosts read disjoint rows that make up the batch."""
    pytest.importorskip("grain")
    register_speech_task(monkeypatch.setitem)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    workdir = str(tmp_path / "two")
    procs = [subprocess.Popen([sys.executable, __file__, str(p), str(port), workdir, corpus],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in range(2)]
    try:
        # Meanwhile one process, the same mesh shape on 4 of the 8 test devices, 4 steps.
        one = str(tmp_path / "one")
        losses = train_losses(speech_config(corpus, 4), one)
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    results = []
    for proc, out in zip(procs, outputs):
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, out[-3000:]
        results.append(json.loads(lines[-1][len("RESULT "):]))
    assert len(losses) == 4 and results[0]["losses"] == results[1]["losses"]
    np.testing.assert_allclose(results[0]["losses"], losses, rtol=1e-6, atol=1e-6)
    evals = [metrics_lib.read_metrics(w, "eval")[-1] for w in (workdir, one)]
    assert evals[0]["step"] == evals[1]["step"] == 4
    np.testing.assert_allclose(evals[0]["loss"], evals[1]["loss"], rtol=1e-6, atol=1e-6)
    # The first batch of each host: disjoint rows that are the single process's batch.
    data = data_lib.resolve_config(speech_config(corpus, 4).data)
    whole = next(data_lib.make_iterator(data, "train"))
    local = [r["local"] for r in results]
    assert len(local[0]) == len(local[1]) == 4 and not set(local[0]) & set(local[1])
    assert local[0] + local[1] == whole["index"].tolist()
    assert results[0]["global"] == results[1]["global"] == whole["index"].tolist()


def _process_main(process_id, port, workdir, manifest):
    """One of the two processes of the test above; prints RESULT {json}."""
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=process_id)
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    register_speech_task()
    losses = train_losses(speech_config(manifest, 2), workdir)
    losses += train_losses(speech_config(manifest, 4), workdir)  # resumes at step 2
    config = speech_config(manifest, 4)
    it = data_lib.make_iterator(config.data, "train")  # this process's rows, as in the loop
    batch = next(it)
    it.close()
    mesh = parallel.make_mesh(config.mesh)
    sharded = parallel.shard_local_batch(batch, mesh)
    whole = jax.jit(lambda x: x, out_shardings=parallel.replicated(mesh))(sharded["index"])
    print("RESULT " + json.dumps({"losses": losses, "local": batch["index"].tolist(),
                                  "global": np.asarray(whole).tolist()}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.modules["torch"] = None  # tensorboardX imports torch when it can: seconds, not needed
    _process_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
