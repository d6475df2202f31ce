"""Battery: out-of-range ids, NaN conditions and empty batches at the public entry points (module
apply, samplers, streaming steps, conditioners) raise before any computation, naming the
argument, the value and the rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.models import conditioners as cond_lib
from audiolm.models import moshi as M
from audiolm.models import pattern_lm as lm
from audiolm.models import thinker_talker as tt
from audiolm.presets.experiment import load_experiment_config
from audiolm.sample import moshi as moshi_sample
from audiolm.sample import pattern_lm as plm_sample


def _zero_params(init, model_config):
    """Params of the right tree, without running the initialisers (the checks come first)."""
    shapes = jax.eval_shape(lambda r: init(model_config, r), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@pytest.fixture(scope="module")
def moshi():
    config = load_experiment_config("configs/moshi.py", "")
    module = M.build(config.model)
    return config.model, module, _zero_params(M.init_params, config.model)


@pytest.fixture(scope="module")
def plm():
    config = load_experiment_config("configs/pattern_lm.py", "")
    module = lm.build(config.model)
    params = _zero_params(lm.init_params, config.model)
    cond = cond_lib.example_inputs(module.spec.conditioning.conditioners, 1,
                                   np.random.default_rng(0))
    return module, params, {k: np.asarray(v) for k, v in cond.items()}


@pytest.fixture(scope="module")
def thinker_talker():
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny")
    return config.model, tt.build(config.model), _zero_params(tt.init_params, config.model)


# -- Moshi ------------------------------------------------------------------------------------


def _moshi_tokens(model, where=None, value=None, shape=None):
    k = model.audio_codebooks
    tokens = np.zeros(shape or (1, 1 + k, 4), np.int32)
    if where is not None:
        tokens[where] = value
    return jnp.asarray(tokens)


@pytest.mark.parametrize("where,value,pattern", [
    ((0, 2, 1), 16 + 6, r"tokens\[0, 2, 1\] = 22: audio ids must be in -1..16"),
    ((0, 1, 0), 17, r"tokens\[0, 1, 0\] = 17: audio ids must be in -1..16"),
    ((0, 3, 3), -2, r"tokens\[0, 3, 3\] = -2: audio ids must be in -1..16"),
    ((0, 0, 1), -7, r"tokens\[0, 0, 1\] = -7: text ids must be in -1..32"),
    ((0, 0, 2), 33, r"tokens\[0, 0, 2\] = 33: text ids must be in -1..32"),
    ((0, 0, 0), 10_000, r"text ids must be in -1..32"),
])
def test_moshi_apply_out_of_range_ids(moshi, where, value, pattern):
    model, module, params = moshi
    with pytest.raises(ValueError, match=pattern):
        module.apply({"params": params}, _moshi_tokens(model, where, value))


@pytest.mark.parametrize("shape", [(0, 5, 4), (1, 5, 0), (2, 5, 0)])
def test_moshi_apply_empty(moshi, shape):
    model, module, params = moshi
    with pytest.raises(ValueError, match=r"the batch B and the length T must be >= 1"):
        module.apply({"params": params}, _moshi_tokens(model, shape=shape))


def test_moshi_apply_float_tokens(moshi):
    _, module, params = moshi
    with pytest.raises(ValueError, match="must be integer ids, got float32"):
        module.apply({"params": params}, jnp.zeros((1, 5, 2), jnp.float32))


def test_moshi_step_column_checked(moshi):
    model, module, params = moshi
    state = module.init_state(1)
    with pytest.raises(ValueError, match=r"column\[0, 1, 0\] = 99: audio ids"):
        module.apply({"params": params}, _moshi_tokens(model, (0, 1, 0), 99, (1, 5, 1)), state,
                     method=M.MoshiLM.step)


@pytest.mark.parametrize("value", [16, 22, -2, -100])
def test_moshi_sampler_generate_user_codes(moshi, value):
    _, module, params = moshi
    user = np.zeros((1, moshi_sample.num_user_streams(module.spec), 3), np.int32)
    user[0, 0, 2] = value
    with pytest.raises(ValueError, match=rf"user codes\[0, 0, 2\] = {value}: must be -1 "
                                         r"\(absent\) or an id in 0..15"):
        moshi_sample.Sampler(module).generate(params, user, jax.random.PRNGKey(0))


def test_moshi_sampler_generate_empty(moshi):
    _, module, params = moshi
    sampler = moshi_sample.Sampler(module)
    with pytest.raises(ValueError, match=r"the batch B must be >= 1"):
        sampler.generate(params, np.zeros((0, 1, 3), np.int32), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"at least one frame"):
        sampler.generate(params, np.zeros((1, 1, 0), np.int32), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="must be integer ids"):
        sampler.generate(params, np.zeros((1, 1, 2), np.float32), jax.random.PRNGKey(0))


@pytest.mark.parametrize("value", [16, -3])
def test_moshi_streaming_step_user_codes(moshi, value):
    _, module, params = moshi
    sampler = moshi_sample.Sampler(module)
    state = sampler.init_stream(1)
    with pytest.raises(ValueError, match=rf"user codes\[0, 0\] = {value}"):
        sampler.step(params, state, np.full((1, 1), value, np.int32), jax.random.PRNGKey(0))


def test_moshi_streaming_step_batch_mismatch(moshi):
    _, module, params = moshi
    sampler = moshi_sample.Sampler(module)
    with pytest.raises(ValueError, match=r"user codes shape \(2, 1\) must be \[B, K_user\].*B = 1"):
        sampler.step(params, sampler.init_stream(1), np.zeros((2, 1), np.int32),
                     jax.random.PRNGKey(0))


@pytest.mark.parametrize("batch", [0, -1, 1.5])
def test_moshi_init_stream_batch(moshi, batch):
    _, module, _ = moshi
    with pytest.raises(ValueError, match=rf"init_stream: batch={batch!r} must be a positive int"):
        moshi_sample.init_stream(module, batch)


@pytest.mark.parametrize("where,value,pattern", [
    ((0, 0, 0), -7, r"\(text\) has id -7"),
    ((0, 2, 1), 16, r"codes\[0, 2, 1\] \(audio codebook 1\) = 16"),
    ((0, 4, 1), 22, r"codes\[0, 4, 1\] \(audio codebook 3\) = 22"),
])
def test_moshi_check_tokens(moshi, where, value, pattern):
    model, module, _ = moshi
    codes = np.zeros((1, 1 + model.audio_codebooks, 3), np.int32)
    codes[where] = value
    with pytest.raises(ValueError, match=pattern):
        M.check_tokens(model, codes)


# -- pattern LM and conditioners --------------------------------------------------------------


@pytest.mark.parametrize("value", [999, 16, -3, -1])
def test_pattern_lm_sample_prompt_out_of_range(plm, value):
    module, params, cond = plm
    prompt = np.zeros((1, module.spec.n_q, 2), np.int32)
    prompt[0, 1, 1] = value
    with pytest.raises(ValueError, match=rf"prompt\[0, 1, 1\] = {value}: must be in 0..15"):
        plm_sample.sample(module, params, cond, frames=4, prompt=prompt, temperature=0.0)


@pytest.mark.parametrize("kw,pattern", [
    (dict(frames=0), r"frames=0 must be a positive int"),
    (dict(frames=4, batch=0), r"batch=0 must be a positive int"),
    (dict(frames=4, prompt=np.zeros((1, 4, 0), np.int32)), r"prompt shape \(1, 4, 0\)"),
    (dict(frames=4, prompt=np.zeros((1, 3, 2), np.int32)), r"prompt shape \(1, 3, 2\) must be "
                                                           r"\[B, K=4, T\]"),
])
def test_pattern_lm_sample_bad_sizes(plm, kw, pattern):
    module, params, cond = plm
    with pytest.raises(ValueError, match=pattern):
        plm_sample.sample(module, params, cond, temperature=0.0, **kw)


@pytest.mark.parametrize("key,value,pattern", [
    ("cond.bpm", np.array([np.nan], np.float32), r"'cond.bpm'.*has nan at row 0: values must "
                                                 r"be finite"),
    ("cond.bpm", np.array([np.inf], np.float32), r"has inf at row 0"),
    ("cond.genre", np.array([99], np.int32), r"cond.genre'\]\[0\] = 99: must be in 0..4"),
    ("cond.genre", np.array([-1], np.int32), r"cond.genre'\]\[0\] = -1: must be in 0..4"),
    ("cond.genre", np.array([1.0], np.float32), r"must be integer ids, got float32"),
    ("cond.prompt", np.full((1, 12), 300, np.int32), r"cond.prompt'\]\[0, 0\] = 300: must be "
                                                     r"in 0..256"),
    ("cond.bpm", np.zeros((0,), np.float32), r"needs a batch axis B >= 1"),
])
def test_conditioner_arrays_checked_in_apply_and_sample(plm, key, value, pattern):
    module, params, cond = plm
    bad = {**cond, key: value}
    codes = jnp.zeros((1, module.spec.n_q, 3), jnp.int32)
    with pytest.raises(ValueError, match=pattern):
        module.apply({"params": params}, codes, bad)
    with pytest.raises(ValueError, match=pattern):
        plm_sample.sample(module, params, bad, frames=4, temperature=0.0)


@pytest.mark.parametrize("value,pattern", [(float("nan"), "values must be finite"),
                                           (7, r"item 0=7 is out of range"),
                                           (2.0, "must be an int class id")])
def test_conditioner_prepare_raw_values(plm, value, pattern):
    module, _, _ = plm
    specs = module.spec.conditioning.conditioners
    raw = {"bpm": [120.0], "genre": [1], "prompt": ["x"], "style": np.zeros((1, 2, 6))}
    raw["bpm" if isinstance(value, float) and np.isnan(value) else "genre"] = [value]
    with pytest.raises(ValueError, match=pattern):
        cond_lib.prepare(specs, raw)


@pytest.mark.parametrize("value", [17, 25, -2])
def test_pattern_lm_apply_sequence_out_of_range(plm, value):
    module, params, cond = plm
    seq = np.zeros((1, module.spec.n_q, 3), np.int32)
    seq[0, 2, 1] = value
    # The grouped condition tensors decode reads, by shape only (no conditioner run).
    shapes = jax.eval_shape(lambda c: module.apply({"params": params}, c,
                                                   method=module.condition), cond)
    grouped = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    with pytest.raises(ValueError, match=rf"seq\[0, 2, 1\] = {value}: must be in 0..16"):
        module.apply({"params": params}, jnp.asarray(seq), grouped, method=module.decode)


@pytest.mark.parametrize("shape", [(1, 4, 0), (0, 4, 3)])
def test_pattern_lm_apply_empty(plm, shape):
    module, params, cond = plm
    if shape[0] == 0:  # the conditions are checked first
        with pytest.raises(ValueError, match=r"'cond.bpm'\] shape \(0,\): needs a batch axis"):
            module.apply({"params": params}, jnp.zeros(shape, jnp.int32),
                         {k: v[:0] for k, v in cond.items()})
        return
    shapes = jax.eval_shape(lambda c: module.apply({"params": params}, c,
                                                   method=module.condition), cond)
    grouped = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    with pytest.raises(ValueError, match=r"seq shape \(1, 4, 0\): the batch B and the length T"):
        module.apply({"params": params}, jnp.zeros(shape, jnp.int32), grouped,
                     method=module.decode)


# -- Thinker ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 0), (0, 4)])
def test_thinker_empty_tokens(thinker_talker, shape):
    _, module, params = thinker_talker
    with pytest.raises(ValueError, match=r"Thinker: tokens shape .*: the batch B and the length "
                                         r"T must be >= 1"):
        module.apply({"params": params}, jnp.zeros(shape, jnp.int32))


@pytest.mark.parametrize("value", [999, 264, -1])
def test_thinker_out_of_range_tokens(thinker_talker, value):
    _, module, params = thinker_talker
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=264\); got "
                                         rf"\[{value}"):
        module.apply({"params": params}, jnp.full((1, 4), value, jnp.int32))
