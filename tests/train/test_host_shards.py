"""Host shards in the training loop: process p of P feeds only its rows [p B/P, (p+1) B/P) of
each global batch (`parallel.process_rows`, `local_batch`, `shard_local_batch`); grain decodes
only those rows. The 2-host cases are simulated by passing the process index / count, and proved
by a real run of two JAX processes on CPU (`jax.distributed`, 2 fake devices each) that trains
the toy LM through `loop.run` and assembles grain host shards into one global batch."""

import json
import os
import socket
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

from audiolm import data as data_lib
from audiolm import parallel
from audiolm.config import ConfigError

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
# Two real JAX processes (jax.distributed on CPU)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


TOY_STEPS = 3


def toy_config():
    config = toy_family.get_config(steps=TOY_STEPS, eval_every=100, checkpoint_every=TOY_STEPS)
    config.mesh.axes.data = 4  # 2 processes x 2 devices: each process holds 2 batch shards
    return config


def test_two_processes_train_on_their_own_rows(tmp_path, corpus):
    pytest.importorskip("grain")
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, __file__, str(p), str(port),
                               str(tmp_path / "run"), corpus], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in range(2)]
    try:
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    results = []
    for proc, out in zip(procs, outputs):
        lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, out[-3000:]
        results.append(json.loads(lines[-1][len("RESULT "):]))
    # One process on 4 devices of the same mesh shape: the reference losses and batch.
    losses = []
    from audiolm.train import loop

    loop.run(toy_config(), str(tmp_path / "one"),
             callbacks=[lambda s, st, m: losses.append(float(np.asarray(m["loss"])))])
    assert results[0]["losses"] == results[1]["losses"]
    np.testing.assert_allclose(results[0]["losses"], losses, rtol=1e-6, atol=1e-6)
    whole = next(data_lib.make_iterator(grain_config(corpus), "train"))
    local = [r["local"] for r in results]
    assert not set(local[0]) & set(local[1])
    assert local[0] + local[1] == whole["index"].tolist()
    assert results[0]["global"] == results[1]["global"] == whole["index"].tolist()
    energy = float((whole["audio"].astype(np.float64) ** 2).sum())
    assert results[0]["energy"] == results[1]["energy"]
    np.testing.assert_allclose(results[0]["energy"], energy, rtol=1e-5)


def _process_main(process_id, port, workdir, manifest):
    """One of the two processes of the test above: trains the toy LM through the loop (its
    synthetic global batches sliced to this host's rows), then reads its grain shard of the
    corpus and assembles the global batch; prints RESULT {json}."""
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=process_id)
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    from audiolm.train import loop

    losses = []
    config = toy_config()
    loop.run(config, workdir,
             callbacks=[lambda s, st, m: losses.append(float(np.asarray(m["loss"])))])
    it = data_lib.make_iterator(grain_config(manifest), "train")  # this process's shard
    batch = next(it)
    it.close()
    mesh = parallel.make_mesh(config.mesh)
    sharded = parallel.shard_local_batch(batch, mesh)
    whole = jax.jit(lambda x: x, out_shardings=parallel.replicated(mesh))(sharded["index"])
    energy = jax.jit(lambda a: (a.astype(np.float32) ** 2).sum())(sharded["audio"])
    print("RESULT " + json.dumps({"losses": losses, "local": batch["index"].tolist(),
                                  "global": np.asarray(whole).tolist(),
                                  "energy": float(energy)}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    _process_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
