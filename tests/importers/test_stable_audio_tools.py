"""create_audio_lm_from_config: our ConfigDict and the stable-audio-tools layout; every error
stable-audio-tools raises is a ConfigError naming the field."""

import copy
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.config import ConfigError
from audiolm.importers import stable_audio_tools as sat
from audiolm.models import pretransform
from audiolm.presets import pattern_lm as presets


def sat_config():
    """A small stable-audio-tools LM config (discrete DAC-RVQ autoencoder)."""
    return {
        "model_type": "lm",
        "sample_rate": 8000,
        "sample_size": 8000,
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "downsampling_ratio": 800,
                "bottleneck": {"type": "dac_rvq",
                               "config": {"n_codebooks": 3, "codebook_size": 10}}}},
            "conditioning": {"cond_dim": 8, "configs": [
                {"id": "seconds", "type": "number", "config": {"min_val": 0, "max_val": 10}},
                {"id": "genre", "type": "list", "config": {"options": ["rock", "jazz"]}},
                {"id": "bpm", "type": "int", "config": {"min_val": 60, "max_val": 70}},
                {"id": "prompt", "type": "text", "config": {
                    "max_length": 5, "num_layers": 0, "num_heads": 2, "ffn_hidden": 8}},
            ]},
            "lm": {"type": "continuous_transformer", "codebook_pattern": "delay",
                   "codebook_pattern_kwargs": {"delays": [0, 2, 3]},
                   "cross_attention_cond_ids": ["prompt"], "prepend_cond_ids": ["genre", "bpm"],
                   "global_cond_ids": ["seconds"],
                   "config": {"embed_dim": 16, "depth": 1, "dim_heads": 8,
                              "cross_attn_cond_dim": 8, "prepend_cond_dim": 8}},
        },
    }


def test_stable_audio_tools_layout_builds_and_runs(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(sat_config()))
    lm = sat.create_audio_lm_from_config(str(path))
    assert (lm.num_quantizers, lm.codebook_size, lm.sample_rate, lm.min_input_length) == \
        (3, 10, 8000, 800)
    assert lm.config.max_frames == 10
    assert lm.config.conditioning.conditioners.bpm.num_classes == 11
    assert lm.pattern(4).params == (("delays", (0, 2, 3)), ("empty_initial", 0),
                                    ("flatten_first", 0))
    assert lm.spec.lm.positional == "rope" and lm.spec.lm.ffn == "gated" and lm.spec.lm.head_bias
    conds = lm.prepare_conditions({"seconds": [3.0, 7.5], "genre": ["jazz", "pop"],
                                   "bpm": [60, 70], "prompt": ["hi", "there"]})
    np.testing.assert_array_equal(conds["cond.genre"], [2, 0])
    np.testing.assert_array_equal(conds["cond.bpm"], [0, 10])
    shapes = jax.eval_shape(lm.init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape).astype(np.float32)), shapes)
    seq = jnp.full((2, 3, 5), 10, jnp.int32)
    logits = jax.jit(lm.module.apply)({"params": params}, seq, conds)
    assert logits.shape == (2, 3, 5, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_our_config_dict_and_experiment_config():
    model = presets.tiny()
    lm = sat.create_audio_lm_from_config(model)
    assert lm.spec.n_q == model.pretransform.n_q
    exp = ml_collections.ConfigDict({"model": presets.tiny()})
    assert sat.create_audio_lm_from_config(exp).spec == lm.spec
    assert isinstance(lm.pretransform, pretransform.MuLawRVQ)


def _del(path):
    def f(c):
        node = c
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        del node[parts[-1]]
    return f


def _set(path, value):
    def f(c):
        node = c
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[parts[-1]] = value
    return f


CASES = [
    ("model missing", _del("model"), r"^model is missing"),
    ("sample_rate missing", _del("sample_rate"), r"^sample_rate is missing"),
    ("lm missing", _del("model.lm"), r"^model\.lm is missing"),
    ("pretransform missing", _del("model.pretransform"), r"^model\.pretransform is missing"),
    ("continuous bottleneck", _set("model.pretransform.config.bottleneck",
                                   {"type": "vae", "config": {}}),
     r"^model\.pretransform\.config\.bottleneck\.type='vae'.*discrete"),
    ("continuous pretransform", _set("model.pretransform", {"type": "pqmf", "config": {}}),
     r"^model\.pretransform\.type='pqmf'.*discrete"),
    ("unknown pattern", _set("model.lm.codebook_pattern", "spiral"),
     r"^model\.lm\.codebook_pattern='spiral'"),
    ("lm type missing", _del("model.lm.type"), r"^model\.lm\.type is missing"),
    ("lm config missing", _del("model.lm.config"), r"^model\.lm\.config is missing"),
    ("unknown lm type", _set("model.lm.type", "rnn"), r"^model\.lm\.type='rnn'"),
    ("mamba lm type", _set("model.lm.type", "mamba"), r"^model\.lm\.type='mamba'.*this port"),
    ("unknown conditioner", _set("model.conditioning.configs.1.type", "smell"),
     r"^model\.conditioning\.configs\[1\]\.type='smell'.*unknown"),
    ("unsupported conditioner", _set("model.conditioning.configs.0.type", "clap_text"),
     r"^model\.conditioning\.configs\[0\]\.type='clap_text'"),
    ("cross id not provided", _set("model.lm.cross_attention_cond_ids", ["prompt", "lyrics"]),
     r"^model\.lm\.cross_attention_cond_ids\[1\]='lyrics'.*no conditioner"),
    ("prepend id not provided", _set("model.lm.prepend_cond_ids", ["tempo"]),
     r"^model\.lm\.prepend_cond_ids\[0\]='tempo'.*no conditioner"),
    ("global id not provided", _set("model.lm.global_cond_ids", ["key"]),
     r"^model\.lm\.global_cond_ids\[0\]='key'.*no conditioner"),
    ("pattern kwargs", _set("model.lm.codebook_pattern_kwargs", {"delays": [0, 1]}),
     r"^model\.pattern\.kwargs=.*delays"),
    ("codec code space", _set("model.pretransform", {"type": "audiocraft_pretrained",
                                                    "config": {"model_type": "x"}}),
     r"^model\.pretransform\.config\.num_quantizers is missing"),
    ("model_type", _set("model_type", "diffusion_cond"), r"^model_type='diffusion_cond'"),
]


@pytest.mark.parametrize("name,edit,pattern", CASES, ids=[c[0] for c in CASES])
def test_stable_audio_tools_errors_name_the_field(name, edit, pattern):
    cfg = copy.deepcopy(sat_config())
    edit(cfg)
    with pytest.raises(ConfigError, match=pattern):
        sat.create_audio_lm_from_config(cfg)


def test_order_of_errors_follows_stable_audio_tools():
    # Both the pretransform and the lm type are missing: the pretransform is reported first.
    cfg = sat_config()
    del cfg["model"]["pretransform"], cfg["model"]["lm"]["type"]
    with pytest.raises(ConfigError, match=r"^model\.pretransform is missing"):
        sat.create_audio_lm_from_config(cfg)


OUR_CASES = [
    (lambda m: m.pretransform.update(type="spectrogram"), r"model\.pretransform\.type"),
    (lambda m: m.pattern.update(kind="spiral"), r"model\.pattern\.kind"),
    (lambda m: m.lm.update(num_kv_heads=3), r"model\.lm\.num_kv_heads"),
    (lambda m: m.conditioning.update(cross_attention_ids=["nope"]),
     r"model\.conditioning\.cross_attention_ids\[0\]='nope'"),
    (lambda m: m.conditioning.conditioners.bpm.update(type="smell"),
     r"model\.conditioning\.conditioners\.bpm\.type='smell'"),
    (lambda m: m.conditioning.conditioners.bpm.update(max_val=0.0),
     r"model\.conditioning\.conditioners\.bpm\.max_val"),
    (lambda m: m.lm.update(width=3), r"model\.lm\.width is not a known field"),
]


@pytest.mark.parametrize("edit,pattern", OUR_CASES)
def test_our_config_errors_name_the_field(edit, pattern):
    model = presets.tiny()
    edit(model)
    with pytest.raises(ConfigError, match=pattern):
        sat.create_audio_lm_from_config(model)


def test_stable_audio_tools_rvq_autoencoder_pretransform():
    """The pretransform section of stable-audio-tools' encodec_musicgen_rvq autoencoder (its
    `model` section nested under pretransform.config): code space 4 x 2048 at 50 Hz."""
    autoencoder = {
        "encoder": {"type": "seanet", "config": {"channels": 1, "dimension": 128,
                                                 "ratios": [4, 4, 5, 8]}},
        "decoder": {"type": "seanet", "config": {"channels": 1, "dimension": 128,
                                                 "ratios": [4, 4, 5, 8]}},
        "bottleneck": {"type": "rvq", "config": {"num_quantizers": 4, "codebook_size": 2048,
                                                 "dim": 128}},
        "latent_dim": 128, "downsampling_ratio": 640, "io_channels": 1,
    }
    cfg = {"model_type": "lm", "sample_rate": 32000,
           "model": {"pretransform": {"type": "autoencoder", "config": autoencoder},
                     "lm": {"type": "x-transformers", "config": {"embed_dim": 64, "depth": 2,
                                                                 "heads": 4}}}}
    lm = sat.create_audio_lm_from_config(cfg)
    assert (lm.num_quantizers, lm.codebook_size, lm.min_input_length) == (4, 2048, 640)
    assert lm.pretransform.frame_rate == 50.0 and not pretransform.is_codec(lm.pretransform)
    assert lm.config.max_frames == 1500  # no sample_size: 30 s of frames
    assert lm.spec.pattern.kind == "delay" and lm.spec.lm.num_heads == 4
    assert not lm.spec.conditioning.conditioners and not lm.spec.has_cross
