"""`init_from_subtrees`: the Thinker-Talker tts starts from a tiny asr run's AuT + Thinker (an
Orbax partial restore), the rest of its params from the scratch init; every error names the
field, the subtree and the rule; a workdir checkpoint still wins over init_from."""

import json
import logging

import jax
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.presets.experiment import load_experiment_config
from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import loop
from tests.resume_helpers import restore, restored_params
from tests.train.test_families import tiny_synthetic_config


def _asr_config():
    """The tiny recogniser (task asr, synthetic batches): params {aut, thinker} only."""
    config = tiny_synthetic_config("thinker_talker", steps=2)
    config.model.enable_audio_output = False
    return config


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory):
    """2 steps of the tiny asr config, checkpointed at step 2."""
    workdir = str(tmp_path_factory.mktemp("asr"))
    config = _asr_config()
    loop.run(config, workdir)
    return config, workdir, jax.device_get(restored_params(config, workdir))


def _tts_config(init_from="", subtrees=()):
    config = load_experiment_config("configs/thinker_talker.py", "variant=tts_tiny")
    config.init_from = init_from
    config.init_from_subtrees = tuple(subtrees)
    return config


def _start(config, workdir):
    """The run's starting state (restore_or_init; no batches needed), on the host."""
    exp = loop.build(config)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    try:
        state = loop.restore_or_init(exp, ckpt, None, workdir)
    finally:
        ckpt.close()
    return jax.device_get(state)


def _leaves(tree):
    return {ckpt_lib._key_str(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    """The tts config's experiment and its scratch start (no init_from), on the host."""
    config = _tts_config()
    exp = loop.build(config)
    return exp, _start(config, str(tmp_path_factory.mktemp("tts_scratch")))


def _load(tts, init_from, subtrees, abstract=None):
    """load_init_params into the tts experiment's params (or `abstract`), on the host."""
    exp, _ = tts
    return jax.device_get(ckpt_lib.load_init_params(
        init_from, exp.abstract_state.params if abstract is None else abstract,
        exp.param_shardings, subtrees, exp.scratch_params()))


def _assert_from(params, subtrees, ckpt_params, scratch_params):
    """Leaves under `subtrees` equal the checkpoint's, every other leaf the scratch init's."""
    got, ckpt, scratch = _leaves(params), _leaves(ckpt_params), _leaves(scratch_params)
    assert set(got) == set(scratch)
    restored = [k for k in got if any(k == s or k.startswith(s + "/") for s in subtrees)]
    assert restored and len(restored) < len(got)
    for key, value in got.items():
        np.testing.assert_array_equal(value, ckpt[key] if key in restored else scratch[key],
                                      err_msg=key)
    # not vacuous: the trained checkpoint differs from the scratch init on restored leaves
    assert any(not np.array_equal(ckpt[k], scratch[k]) for k in restored)


def test_tts_starts_from_the_asr_runs_aut_and_thinker(asr_run, tts, tmp_path):
    _, asr_dir, asr_params = asr_run
    _, scratch = tts
    subtrees = ("aut", "thinker")
    state = _start(_tts_config(asr_dir, subtrees), str(tmp_path))
    assert int(state.step) == 0  # params only: step and optimizer start fresh
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.opt_state, scratch.opt_state)
    _assert_from(state.params, subtrees, asr_params, scratch.params)


def test_a_slash_joined_path_restores_that_subtree_only(asr_run, tts, caplog):
    _, asr_dir, asr_params = asr_run
    subtrees = ("thinker/layers_1", "aut/conv1")
    with caplog.at_level(logging.INFO, logger="absl"):
        params = _load(tts, asr_dir, subtrees)
    _assert_from(params, subtrees, asr_params, tts[1].params)
    assert (f"initialised params thinker/layers_1, aut/conv1 from {asr_dir}/checkpoints step 2; "
            "aut (but aut/conv1), code2wav, talker, thinker (but thinker/layers_1) from the "
            "scratch init (config.seed)") in caplog.text


def test_resume_in_the_new_workdir_ignores_init_from(asr_run, tmp_path):
    config, asr_dir, asr_params = asr_run
    fine = _asr_config()
    fine.init_from, fine.init_from_subtrees = asr_dir, ("thinker",)
    workdir = str(tmp_path)
    loop.run(fine, workdir)  # 2 steps from the asr run's Thinker, checkpointed at step 2
    own, _, own_step = restore(fine, workdir)
    assert own_step == 2
    state = _start(fine, workdir)
    assert int(state.step) == 2
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, own["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.opt_state, own["opt_state"])
    # trained on: the Thinker is no longer the one of init_from
    assert not np.array_equal(_leaves(state.params)["thinker/embed_tokens/embedding"],
                              _leaves(asr_params)["thinker/embed_tokens/embedding"])


def test_subtree_missing_in_the_model(asr_run, tts):
    _, asr_dir, _ = asr_run
    with pytest.raises(config_lib.ConfigError,
                       match=r"init_from_subtrees=\('thinkr',\): 'thinkr' is not a subtree of "
                             r"the model's params \(no 'thinkr'; there: \['aut', 'code2wav'"):
        _load(tts, asr_dir, ("thinkr",))
    with pytest.raises(config_lib.ConfigError, match=r"'thinker/layer_9' is not a subtree .*"
                                                     r"no 'layer_9'; there: \['embed_tokens'"):
        _load(tts, asr_dir, ("thinker/layer_9",))


def test_subtree_missing_in_the_checkpoint(asr_run, tts):
    _, asr_dir, _ = asr_run
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=rf"init_from={asr_dir}: init_from_subtrees 'talker' is not in its "
                             r"params \(no 'talker'; there: \['aut', 'thinker'\]\)"):
        _load(tts, asr_dir, ("aut", "talker"))


def _changed(tts, leaf, shape=None, dtype=None):
    """The tts abstract params with `leaf` given another shape or dtype."""
    return jax.tree_util.tree_map_with_path(
        lambda p, s: jax.ShapeDtypeStruct(shape or s.shape, dtype or s.dtype, sharding=s.sharding)
        if ckpt_lib._key_str(p) == leaf else s, tts[0].abstract_state.params)


def test_subtree_shape_mismatch_names_the_leaf_and_both_shapes(asr_run, tts):
    _, asr_dir, _ = asr_run
    abstract = _changed(tts, "aut/layers_0/ffn/fc1/kernel", shape=(32, 128))
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=r"init_from_subtrees 'aut' differs from the config's model: shape"
                             r"/dtype differs: aut/layers_0/ffn/fc1/kernel: checkpoint "
                             r"\(\(32, 64\), 'float32'\) vs config \(\(32, 128\), 'float32'\)"):
        _load(tts, asr_dir, ("thinker", "aut"), abstract)


def test_subtree_dtype_mismatch(asr_run, tts):
    _, asr_dir, _ = asr_run
    abstract = _changed(tts, "thinker/norm/scale", dtype="bfloat16")
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=r"'thinker' differs .*thinker/norm/scale: checkpoint \(\(48,\), "
                             r"'float32'\) vs config \(\(48,\), 'bfloat16'\)"):
        _load(tts, asr_dir, ("thinker",), abstract)


def test_pretrained_dir_gives_its_subtrees(asr_run, tts, tmp_path, monkeypatch):
    """A pretrained (importer) dir: the subtrees are selected from the imported tree."""
    from audiolm import importers

    _, _, asr_params = asr_run
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe"}))
    monkeypatch.setattr(importers, "load_pretrained", lambda path: (None, asr_params))
    _assert_from(_load(tts, str(folder), ("thinker",)), ("thinker",), asr_params, tts[1].params)
    with pytest.raises(ckpt_lib.CheckpointMismatchError,
                       match=r"init_from=\S+ \(pretrained\): init_from_subtrees 'code2wav' is "
                             r"not in its params"):
        _load(tts, str(folder), ("code2wav",))


@pytest.mark.parametrize("init_from, subtrees, rule", [
    ("", ("thinker",), r"init_from_subtrees=\('thinker',\): needs init_from .* which is empty"),
    ("x", "thinker", r"init_from_subtrees='thinker': must be a tuple of param subtree names"),
    ("x", ("thinker", 3), r"init_from_subtrees=\('thinker', 3\): must be a tuple"),
    ("x", ("thinker/",), r"'thinker/' has an empty name"),
    ("x", ("/aut",), r"'/aut' has an empty name"),
    ("x", ("aut", "aut"), r"init_from_subtrees=\('aut', 'aut'\): lists a subtree twice"),
    ("x", ("thinker/norm", "thinker"), r"'thinker/norm' lies inside 'thinker'"),
])
def test_config_errors(init_from, subtrees, rule):
    config = _tts_config()
    config.init_from = init_from
    with config.unlocked():  # a value of any type, as a config file could give
        del config["init_from_subtrees"]
        config.init_from_subtrees = subtrees
    with pytest.raises(config_lib.ConfigError, match=rule):
        config_lib.validate(config)


def test_default_is_the_whole_tree():
    config = _tts_config()
    assert tuple(config.init_from_subtrees) == ()
    config_lib.validate(config)


def test_sample_mode_loads_the_subtrees_as_training_starts(asr_run, tts, tmp_path):
    """--mode=sample without a workdir checkpoint: the named subtrees from init_from, the rest
    from the same scratch init as the first training step."""
    from audiolm.train import sampling

    _, asr_dir, asr_params = asr_run
    subtrees = ("aut", "thinker")
    _, params, source = sampling.load_params(_tts_config(asr_dir, subtrees), str(tmp_path))
    assert source == asr_dir
    _assert_from(jax.device_get(params), subtrees, asr_params, tts[1].params)
