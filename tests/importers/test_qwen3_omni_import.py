"""load_pretrained for Qwen3-Omni directories: config mapping, layouts equal to our init, every
tensor accounted for (unused / missing tensors are errors that list them), sharded and bf16
checkpoints, vision tower skipped and reported."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.models import thinker_talker as family


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from tests import reference_qwen as ref

    model, path = ref.tiny_checkpoint()
    return ref, model, path


def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), tree)


def test_config_mapping_and_layout(tiny):
    ref, model, path = tiny
    from audiolm.importers import qwen3_omni
    from audiolm.presets.experiment import load_experiment_config

    model_config, params, report = qwen3_omni.load_pretrained_with_report(path)
    a, th = model_config.aut, model_config.thinker
    assert (a.hidden_size, a.num_layers, a.num_heads, a.ffn_hidden, a.conv_channels,
            a.chunk_frames, a.attention_window_frames, a.output_dim) == (32, 2, 4, 64, 8, 100,
                                                                         400, 48)
    assert (th.vocab_size, th.hidden_size, th.num_layers, th.num_heads, th.num_kv_heads,
            th.head_dim, th.num_experts, th.num_experts_per_tok, th.moe_hidden,
            th.ffn_hidden) == (160, 48, 4, 4, 2, 16, 8, 2, 32, 96)
    assert tuple(th.mlp_only_layers) == (1,) and th.audio_token_id == 150
    assert model_config.talker.num_codebooks == model_config.code2wav.num_codebooks == 4
    # The imported model section is a valid experiment config (on synthetic batches: its
    # 160-id test vocabulary cannot hold the byte tokenizer of the speech set).
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny,data=synthetic")
    config.model = model_config
    config_lib.validate(config)
    # Same tree and shapes as our own initialisation of that config.
    init = jax.eval_shape(lambda r: family.init_params(model_config, r), jax.random.PRNGKey(0))
    assert _shapes(params) == _shapes(init)
    # Every tensor used except the vision tower, which is reported as skipped.
    store = qwen3_omni.TensorStore(path)
    n_visual = sum(1 for k in store.keys() if k.startswith("thinker.visual."))
    assert n_visual > 0 and report["skipped"]["thinker.visual."] == n_visual
    assert report["used"] + n_visual == len(store.keys())
    # Values: a transposed kernel and one stacked expert.
    np.testing.assert_array_equal(params["thinker"]["lm_head"]["kernel"],
                                  store.get("thinker.lm_head.weight").T)
    np.testing.assert_array_equal(
        params["thinker"]["layers_0"]["ffn"]["wi_up"][3],
        store.get("thinker.model.layers.0.mlp.experts.3.up_proj.weight").T)
    conv = store.get("thinker.audio_tower.conv2d2.weight")  # [out, in, k_mel, k_time]
    np.testing.assert_array_equal(params["aut"]["conv2"]["kernel"][2, 0], conv[:, :, 0, 2].T)


def _copy(path, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(path, out)
    return str(out)


def _rewrite(dirpath, fn):
    """Applies fn(dict of tensors) -> dict to the single model.safetensors of `dirpath`."""
    from safetensors.numpy import load_file, save_file

    file = os.path.join(dirpath, "model.safetensors")
    tensors = fn(load_file(file))
    save_file(tensors, file, metadata={"format": "pt"})


def test_unused_tensor_is_an_error(tiny, tmp_path):
    _, _, path = tiny
    from audiolm.importers import qwen3_omni

    d = _copy(path, tmp_path, "extra")

    def add(t):
        t["thinker.model.layers.0.self_attn.extra_bias"] = np.zeros(3, np.float32)
        t["talker.mystery.weight"] = np.zeros(2, np.float32)
        return t

    _rewrite(d, add)
    with pytest.raises(qwen3_omni.CheckpointError,
                       match=r"2 checkpoint tensors are not used.*"
                             r"talker\.mystery\.weight.*extra_bias|"
                             r"2 checkpoint tensors are not used.*extra_bias.*mystery"):
        qwen3_omni.load_pretrained(d)


def test_missing_tensor_is_an_error(tiny, tmp_path):
    _, _, path = tiny
    from audiolm.importers import qwen3_omni

    d = _copy(path, tmp_path, "missing")

    def drop(t):
        del t["thinker.model.layers.2.mlp.experts.5.up_proj.weight"]
        return t

    _rewrite(d, drop)
    with pytest.raises(qwen3_omni.CheckpointError,
                       match=r"missing tensor thinker\.model\.layers\.2\.mlp\.experts\.5\.up_proj"):
        qwen3_omni.load_pretrained(d)

    d2 = _copy(path, tmp_path, "missing_aut")
    _rewrite(d2, lambda t: {k: v for k, v in t.items() if k != "thinker.audio_tower.proj2.bias"})
    with pytest.raises(qwen3_omni.CheckpointError, match=r"audio_tower\.proj2\.bias"):
        qwen3_omni.load_pretrained(d2)


def test_wrong_shape_is_an_error(tiny, tmp_path):
    _, _, path = tiny
    from audiolm.importers import qwen3_omni

    d = _copy(path, tmp_path, "shape")

    def bad(t):
        t["thinker.model.norm.weight"] = np.ones(47, np.float32)
        return t

    _rewrite(d, bad)
    with pytest.raises(qwen3_omni.CheckpointError, match=r"model\.norm\.weight has shape \(47,\)"):
        qwen3_omni.load_pretrained(d)


def test_sharded_and_bf16_checkpoints(tiny, tmp_path):
    ref, model, path = tiny
    import copy

    import torch

    from audiolm import importers
    from audiolm.importers import qwen3_omni

    _, base = qwen3_omni.load_pretrained(path)
    sharded = str(tmp_path / "sharded")
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
    cfg, params = importers.load_pretrained(sharded)  # through the dispatcher
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, base)

    half = str(tmp_path / "bf16")
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(half)
    _, params16 = qwen3_omni.load_pretrained(half)
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12)), params16, base))
    assert max(diffs) < 1e-2  # bf16 rounding only


def test_not_a_checkpoint(tmp_path):
    pytest.importorskip("safetensors")
    from audiolm.importers import qwen3_omni

    with pytest.raises(FileNotFoundError, match="config.json"):
        qwen3_omni.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe"}))
    with pytest.raises(config_lib.ConfigError, match="thinker_config"):
        qwen3_omni.load_pretrained(str(tmp_path))
