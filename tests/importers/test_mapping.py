"""The shared importer pieces: `TensorStore` (safetensors file, directory, index shards, bf16)
and `Reader` (shape checks, torch Linear transpose, missing and leftover tensors)."""

import json
import os

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from audiolm.importers.mapping import CheckpointError, Reader, TensorStore  # noqa: E402

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.array([1.5, -2.0], np.float32)


def test_store_reads_a_file_a_directory_and_index_shards(tmp_path):
    single = str(tmp_path / "one.safetensors")
    safetensors_numpy.save_file({"a": A, "b": B}, single)
    for store in (TensorStore(single), TensorStore(str(tmp_path))):
        assert list(store) == ["a", "b"] and len(store) == 2 and "a" in store
        np.testing.assert_array_equal(store["a"], A)
        assert store["b"].dtype == np.float32
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    safetensors_numpy.save_file({"a": A}, str(sharded / "s1.safetensors"))
    safetensors_numpy.save_file({"b": B.astype(np.float16)}, str(sharded / "s2.safetensors"))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    store = TensorStore(str(sharded))
    np.testing.assert_array_equal(store["b"], B)  # fp16 widened to float32
    assert store["b"].dtype == np.float32
    os.remove(sharded / "s2.safetensors")
    with pytest.raises(FileNotFoundError, match="lists shard .*s2.safetensors.*missing"):
        TensorStore(str(sharded))


def test_store_reads_bfloat16_as_float32(tmp_path):
    import jax.numpy as jnp
    flax_io = pytest.importorskip("safetensors.flax")

    path = str(tmp_path / "bf16.safetensors")
    flax_io.save_file({"w": jnp.asarray(B, jnp.bfloat16)}, path)
    out = TensorStore(path)["w"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, B)  # both values are exact in bfloat16


def test_store_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no \\*.safetensors weights"):
        TensorStore(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a safetensors file nor a directory"):
        TensorStore(str(tmp_path / "nope"))


def test_reader_maps_checks_and_reports_leftovers():
    state = {"fc.weight": A, "fc.bias": np.zeros(2, np.float32), "norm": B, "extra": B}
    r = Reader(state.__getitem__, state, "part")
    lin = r.linear("fc", 3, 2, bias=True)
    np.testing.assert_array_equal(lin["kernel"], A.T)  # torch [out, in] -> [in, out]
    np.testing.assert_array_equal(r.vector("norm", 2), B)
    assert r.used == {"fc.weight", "fc.bias", "norm"}
    with pytest.raises(CheckpointError, match=r"1 checkpoint tensors are not used .*: extra"):
        r.check_all_used()
    r("extra")
    r.check_all_used()
    with pytest.raises(CheckpointError, match=r"missing tensor part\.gone \(expected shape \(4,\)\)"):
        r("gone", (4,))
    with pytest.raises(CheckpointError, match=r"part\.norm has shape \(2,\), expected \(3,\)"):
        r.vector("norm", 3)
