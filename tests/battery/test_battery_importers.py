"""Battery: importer faults name the tensor, field or path (truncated safetensors, shape
mismatches, a Kyutai config with a quoted number or a width the weights lack), and the three
bugs: MusicGen's unused `scale_embedding`, `undelay_logits` on delays without a zero per group,
`create_audio_lm_from_config` with a `mulaw_rvq` pretransform."""

import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.config import ConfigError
from audiolm.importers import mapping
from audiolm.importers import moshi as kyutai
from audiolm.importers import stable_audio_tools as sat
from audiolm.models import moshi as M
from audiolm.presets.experiment import load_experiment_config

HERE = os.path.dirname(os.path.abspath(__file__))


def _safetensors(tmp_path, tensors=None):
    from safetensors.numpy import save_file

    path = str(tmp_path / "w.safetensors")
    save_file(tensors or {"a.weight": np.ones((64, 8), np.float32),
                          "b.bias": np.zeros((8,), np.float32)}, path)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_safetensors_names_the_file(tmp_path, keep):
    path = _safetensors(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(max(int(os.path.getsize(path) * keep), 3))
    with pytest.raises(mapping.CheckpointError, match=rf"{path}: not a readable safetensors "
                                                      r"file, truncated or corrupt"):
        mapping.TensorStore(path)


def test_garbage_safetensors_names_the_file(tmp_path):
    path = str(tmp_path / "junk.safetensors")
    with open(path, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(mapping.CheckpointError, match="junk.safetensors: not a readable"):
        mapping.TensorStore(str(tmp_path))


def test_reader_names_missing_and_misshapen_tensors(tmp_path):
    store = mapping.TensorStore(_safetensors(tmp_path))
    read = mapping.Reader(store.__getitem__, store.keys(), "lm")
    with pytest.raises(mapping.CheckpointError,
                       match=r"lm\.a\.weight has shape \(64, 8\), expected \(64, 16\)"):
        read("a.weight", (64, 16))
    with pytest.raises(mapping.CheckpointError, match=r"missing tensor lm\.c\.weight "
                                                      r"\(expected shape \(3,\)\)"):
        read("c.weight", (3,))
    read("a.weight", (64, 8))
    with pytest.raises(mapping.CheckpointError, match=r"1 checkpoint tensors are not used by "
                                                      r"the config's layout: b\.bias"):
        read.check_all_used()


# -- Kyutai configs -------------------------------------------------------------------------


def _kyutai_config(tmp_path, **edits):
    raw = {"dim": 32, "text_card": 32, "existing_text_padding_id": 3, "n_q": 4, "dep_q": 3,
           "card": 16, "num_heads": 4, "num_layers": 2, "hidden_scale": 4.125, "causal": True,
           "context": 16, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
           "positional_embedding": "rope", "depformer_dim": 16, "depformer_num_heads": 2,
           "depformer_num_layers": 1, "depformer_dim_feedforward": 64,
           "depformer_multi_linear": True, "depformer_pos_emb": "none",
           "depformer_weights_per_step": True, "delays": [0, 0, 1, 1, 1]}
    raw.update(edits)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_kyutai_base_config_loads(tmp_path):
    loaded = kyutai.load_config_file(_kyutai_config(tmp_path))
    assert loaded.model.audio_codebooks == 4


@pytest.mark.parametrize("key,value,rule", [
    ("dim", "32", "must be an int"), ("num_heads", 4.0, "must be an int"),
    ("num_layers", True, "must be an int"), ("card", "16", "must be an int"),
    ("depformer_dim", [16], "must be an int"), ("hidden_scale", "4", "must be a number"),
    ("max_period", "1e4", "must be a number"),
])
def test_kyutai_config_field_types_are_named(tmp_path, key, value, rule):
    with pytest.raises(ConfigError) as info:
        kyutai.load_config_file(_kyutai_config(tmp_path, **{key: value}))
    assert str(info.value) == f"config.json: {key}={value!r}: {rule}"


def test_kyutai_config_unknown_field_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config.json: dims=32: is not a known Kyutai config"):
        kyutai.load_config_file(_kyutai_config(tmp_path, dims=32))


@pytest.fixture(scope="module")
def kyutai_checkpoint(tmp_path_factory):
    ref_lib = pytest.importorskip("tests.reference_moshi")
    from audiolm.presets import moshi as cm

    m = cm.tiny()
    folder = str(tmp_path_factory.mktemp("kyutai") / "ckpt")
    return ref_lib.save_checkpoint(ref_lib.reference_model(m, seed=0), m, folder)


def _edited_copy(folder, tmp_path, **edits):
    import shutil

    out = str(tmp_path / "edited")
    shutil.copytree(folder, out)
    path = os.path.join(out, "config.json")
    with open(path) as f:
        raw = json.load(f)
    raw.update(edits)
    with open(path, "w") as f:
        json.dump(raw, f)
    return out


@pytest.mark.parametrize("field,delta", [("dim", 16), ("depformer_dim", 8)])
def test_kyutai_width_that_disagrees_with_the_weights(kyutai_checkpoint, tmp_path, field, delta):
    with open(os.path.join(kyutai_checkpoint, "config.json")) as f:
        raw = json.load(f)
    folder = _edited_copy(kyutai_checkpoint, tmp_path, **{field: raw[field] + delta})
    with pytest.raises(mapping.CheckpointError) as info:
        kyutai.load_pretrained(folder)
    message = str(info.value)
    assert f"{folder}/model.safetensors with {folder}/config.json" in message
    assert "do not fit the config" in message or "for the config's sizes" in message


def test_kyutai_truncated_weights(kyutai_checkpoint, tmp_path):
    folder = _edited_copy(kyutai_checkpoint, tmp_path)
    weights = os.path.join(folder, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 3)
    with pytest.raises(mapping.CheckpointError, match=f"{weights}: not a readable safetensors"):
        kyutai.load_pretrained(folder)


# -- Bug: undelay_logits ----------------------------------------------------------------------


@pytest.mark.parametrize("delays", [[0, 0, 1, 1, 1], [0, 2, 2, 2, 2], [1, 0, 1, 1, 0],
                                    [2, 0, 0, 0, 0], [0, 1, 2, 3, 0], [3, 1, 1, 2, 0]])
def test_undelay_logits_matches_the_delays(delays):
    """Code t of a stream with delay d is predicted by output t + d (NaN and masked past T);
    before the fix, delays without a 0 in a group ([0, 2, 2, 2], a delayed text) raised."""
    config = load_experiment_config("configs/moshi.py", "")
    config.model.delays = tuple(delays)
    spec = M.spec_from_config(config.model)
    T, B = 6, 2
    rng = np.random.default_rng(0)
    text_logits = rng.standard_normal((B, T, 5)).astype(np.float32)
    audio_logits = rng.standard_normal((B, 3, T, 4)).astype(np.float32)
    (text, tmask), (audio, amask) = M.undelay_logits(spec, jnp.asarray(text_logits),
                                                      jnp.asarray(audio_logits))
    groups = [(text_logits[:, None], text, tmask)] + [
        (audio_logits[:, i:i + 1], audio[:, i:i + 1], amask[i:i + 1]) for i in range(3)]
    for q, (given, out, mask) in enumerate(groups):
        d = delays[q]
        for t in range(T):
            if t + d < T:
                assert bool(mask[0, t]), (q, t)
                np.testing.assert_array_equal(np.asarray(out[:, 0, t]), given[:, 0, t + d])
            else:
                assert not bool(mask[0, t]) and np.isnan(np.asarray(out[:, 0, t])).all()


# -- Bug: stable-audio-tools mulaw_rvq ----------------------------------------------------------


def _sat_with(pretransform, delays):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "importers"))
    from test_stable_audio_tools import sat_config

    config = sat_config()
    config["model"]["pretransform"] = pretransform
    config["model"]["lm"]["codebook_pattern_kwargs"] = {"delays": delays}
    return config


def test_sat_mulaw_rvq_pretransform_builds():
    """Before the fix: AttributeError 'setdefault' (ConfigDict has none)."""
    config = _sat_with({"type": "mulaw_rvq", "config": {
        "n_q": 2, "codebook_size": 10, "frame_rate": 10.0, "mu": 255.0}}, [0, 1])
    lm = sat.create_audio_lm_from_config(config)
    assert (lm.num_quantizers, lm.codebook_size, lm.sample_rate) == (2, 10, 8000)
    assert type(lm.pretransform).__name__ == "MuLawRVQ"
    config["model"]["pretransform"]["config"]["sample_rate"] = 16000  # kept when given
    config["model"]["pretransform"]["config"]["frame_rate"] = 20.0
    assert sat.create_audio_lm_from_config(config).sample_rate == 16000


def test_sat_mulaw_rvq_bad_field_is_named():
    config = _sat_with({"type": "mulaw_rvq", "config": {
        "n_q": 2, "codebook_size": 10, "frame_rate": 10.0, "mu": -1.0}}, [0, 1])
    with pytest.raises(ConfigError, match=r"model\.pretransform\.mu=-1\.0"):
        sat.create_audio_lm_from_config(config)


# -- Bug: MusicGen scale_embedding --------------------------------------------------------------


def test_musicgen_scale_embedding_is_not_applied(tmp_path):
    """transformers' MusicGen defines embed_scale and never uses it: with the flag set, our
    logits must still equal theirs (before the fix they differed by ~8.7)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from audiolm import patterns
    from audiolm.importers import musicgen
    from audiolm.models import pattern_lm

    K, V, D, B, T = 2, 16, 64, 1, 4
    torch.manual_seed(0)
    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=4, ffn_dim=32,
        num_codebooks=K, max_position_embeddings=16, pad_token_id=V, bos_token_id=V,
        activation_function="gelu", dropout=0.0, scale_embedding=True)
    model = transformers.MusicgenForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    model.save_pretrained(str(tmp_path))
    config, params = musicgen.load_pretrained(str(tmp_path))
    assert config.lm.scale_embedding is False
    codes = np.random.default_rng(0).integers(0, V, (B, K, T))
    seq = np.array(patterns.build(patterns.make("delay", K, T), jnp.asarray(codes), V)[0])
    s = seq.shape[-1]
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(seq.reshape(B * K, s))).logits
    ref = ref.numpy().reshape(B, K, s, V)
    length = config.conditioning.conditioners[musicgen.CROSS_ID].max_length
    conds = {f"cond.{musicgen.CROSS_ID}": jnp.zeros((B, length, D)),
             f"cond.{musicgen.CROSS_ID}.mask": jnp.zeros((B, length), bool)}
    ours = np.asarray(pattern_lm.build(config).apply({"params": params}, jnp.asarray(seq), conds))
    assert np.abs(ours - ref).max() <= 1e-4
    config.lm.scale_embedding = True  # what the importer did: the test sees the difference
    scaled = np.asarray(pattern_lm.build(config).apply({"params": params}, jnp.asarray(seq),
                                                       conds))
    assert np.abs(scaled - ref).max() > 1e-2


def test_musicgen_shape_mismatch_names_the_param(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from audiolm.importers import musicgen

    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=32,
        num_codebooks=2, max_position_embeddings=16, pad_token_id=16, bos_token_id=16)
    transformers.MusicgenForCausalLM(cfg).save_pretrained(str(tmp_path))
    path = tmp_path / "config.json"
    raw = json.loads(path.read_text())
    raw["ffn_dim"] = 48  # the weights have 32
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"musicgen: param .*fc1.* has shape \(32, 32\), the "
                                         r"model expects \(32, 48\)"):
        musicgen.load_pretrained(str(tmp_path))
