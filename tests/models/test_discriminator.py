"""Multi-scale STFT discriminator and adversarial codec training: shapes, the split of gradients
between generator and discriminator in one differentiation, the optimizer groups, and a few
adversarial steps through the loop resuming exactly (both players in one checkpoint)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tests.compile_cache  # noqa: F401  (the loop tests compile the same programs)
from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.models import codec, discriminator
from audiolm.nn.compile import fast_jit
from audiolm.presets import codec as presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import codec as task
from audiolm.train import loop, metrics as metrics_lib
from tests.config_helpers import assert_rule
from tests.resume_helpers import losses, restore, run_crashed

SPEC = dataclasses.replace(presets.TINY, discriminator=presets.DiscriminatorSpec(
    n_ffts=(128, 64), filters=4, dilations=(1, 2)))


def _adversarial_config(steps=4):
    config = load_experiment_config("configs/codec.py", f"variant=tiny,adversarial=True,"
                                                        f"steps={steps}")
    # one small scale: compiling the train step dominates these tests
    config.model.discriminator.n_ffts = (128,)
    config.model.discriminator.dilations = (1,)
    config.model.discriminator.filters = 4
    config.data.batch_size = 8  # the tests' 8 fake devices shard the batch
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.eval_every = 1000
    config.task.evaluators = ()  # no eval step to compile
    config.task.final_evaluators = ()
    return config


def test_complex_stft_finds_a_bin_centred_tone():
    n_fft, rate = 64, 16000
    t = np.arange(1024) / rate
    wav = np.sin(2 * np.pi * (5 * rate / n_fft) * t)[None].astype(np.float32)  # bin 5
    x = np.asarray(discriminator.complex_stft(jnp.asarray(wav), n_fft))
    assert x.shape == (1, 1024 // 16 + 1, n_fft // 2 + 1, 2)
    magnitude = np.hypot(x[..., 0], x[..., 1])
    assert np.all(np.argmax(magnitude[:, 4:-4], axis=-1) == 5)  # frames clear of the padding


def test_shapes_and_param_tree():
    module = codec.build(SPEC)
    params = codec.init_params(SPEC, jax.random.PRNGKey(0))
    plain = codec.init_params(presets.TINY, jax.random.PRNGKey(0))
    assert set(params) == set(plain) | {"discriminator"}
    assert set(params["discriminator"]) == {"scale_0", "scale_1"}
    assert params["discriminator"]["scale_0"]["conv_0"]["kernel"].shape == (3, 9, 2, 4)
    assert params["discriminator"]["scale_0"]["conv_post"]["kernel"].shape == (3, 3, 4, 1)
    # the codec's own params do not depend on whether a discriminator is attached
    for key in plain:
        jax.tree_util.tree_map(np.testing.assert_array_equal, params[key], plain[key])
    out = module.apply({"params": params}, jnp.zeros((2, 1000)),
                       method=codec.Codec.discriminate)
    assert len(out) == 2
    for (logits, maps), n_fft in zip(out, (128, 64)):
        frames, bins = 1000 // (n_fft // 4) + 1, n_fft // 2 + 1
        assert logits.shape == (2, frames, -(-bins // 4)) and logits.dtype == jnp.float32
        assert [m.shape for m in maps] == [(2, frames, bins, 4), (2, frames, -(-bins // 2), 4),
                                           (2, frames, -(-bins // 4), 4),
                                           (2, frames, -(-bins // 4), 4)]
    assert codec.describe_params(SPEC)["discriminator"]["total"] == sum(
        x.size for x in jax.tree_util.tree_leaves(params["discriminator"]))
    assert "discriminator" not in codec.describe_params(presets.TINY)
    with pytest.raises(ValueError, match="model.discriminator.n_ffts is empty"):
        codec.build(presets.TINY).apply({"params": plain}, jnp.zeros((1, 256)),
                                        method=codec.Codec.discriminate)


def test_each_player_gets_gradient_from_its_own_terms_only():
    module = codec.build(SPEC)
    params = codec.init_params(SPEC, jax.random.PRNGKey(0))
    batch = codec.example_batch(SPEC, 2, np.random.default_rng(0))
    audio = jnp.asarray(batch["audio"])

    def terms(p):
        fake = module.apply({"params": p}, audio)["audio"]
        out = task.adversarial_terms(module, p, audio, fake)
        return jnp.stack([out["adv_loss"] + out["feat_loss"], out["disc_loss"]])

    # both gradients from one compiled reverse pass (row 0: generator terms, row 1: disc term)
    jac = fast_jit(jax.jacrev(terms))(params)
    gen = jax.tree_util.tree_map(lambda g: g[0], jac)
    disc = jax.tree_util.tree_map(lambda g: g[1], jac)

    def peak(tree):
        return max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(tree))

    codec_part = lambda g: {k: v for k, v in g.items() if k != "discriminator"}
    assert peak(gen["discriminator"]) == 0.0
    assert peak(codec_part(gen)) > 0.0 and peak(gen["decoder"]) > 0.0
    assert peak(codec_part(disc)) == 0.0
    assert peak(disc["discriminator"]) > 0.0
    values = task.adversarial_terms(module, params, audio,
                                    module.apply({"params": params}, audio)["audio"])
    for key in ("disc_acc_real", "disc_acc_fake"):
        assert 0.0 <= float(values[key]) <= 1.0
    assert float(values["disc_loss"]) > 0.0 and float(values["feat_loss"]) > 0.0


def test_optimizer_groups_keep_separate_state_and_settings():
    config = _adversarial_config()
    params = codec.init_params(config.model, jax.random.PRNGKey(0))
    tx = optim_tx(config)
    state = tx.init(params)
    inner = state.inner_states
    assert set(inner) == {"default", "discriminator"}
    # each group's Adam moments cover its own subtree only (the rest is masked out)
    default_mu = _adam(inner["default"]).mu
    disc_mu = _adam(inner["discriminator"]).mu
    assert jax.tree_util.tree_leaves(default_mu["discriminator"]) == []  # MaskedNodes
    assert jax.tree_util.tree_leaves(disc_mu["encoder"]) == []
    assert jax.tree_util.tree_structure(disc_mu["discriminator"]) == \
        jax.tree_util.tree_structure(params["discriminator"])
    # equal gradients, no warmup: Adam's first update is -lr per param, the group's own lr
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    config.train.warmup_steps = 0
    config.train.schedule = "constant"
    config.train.clip_norm = 0.0
    tx = optim_tx(config)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["discriminator"]["scale_0"]["conv_0"]["bias"]),
                               -3e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(updates["encoder"]["conv_in"]["conv"]["bias"]),
                               -float(config.train.learning_rate), rtol=1e-4)


def optim_tx(config):
    from audiolm.train import optim
    return optim.make_optimizer(config.train)


def _adam(chain_state):
    """The ScaleByAdamState inside a group's clip -> adamw chain state."""
    found = [s for s in jax.tree_util.tree_leaves(
        chain_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("path, value, message", [
    ("train.param_groups.discriminator.momentum", 0.9,
     r"train\.param_groups\.discriminator\.momentum is not a known field"),
    ("train.param_groups.discriminator.learning_rate", 0.0,
     r"train\.param_groups\.discriminator\.learning_rate=0\.0: must be > 0"),
    ("train.param_groups.discriminator.b2", 1.0,
     r"train\.param_groups\.discriminator\.b2=1\.0: must be < 1"),
    ("model.discriminator.n_ffts", (8,), r"model\.discriminator\.n_ffts\[0\]=8: must be "),
    ("model.discriminator.freq_kernel", 8, r"model\.discriminator\.freq_kernel=8: must be odd"),
])
def test_bad_settings_name_the_field(path, value, message):
    assert_rule(_adversarial_config(), {path: value}, message)


def test_adversarial_weights_need_a_discriminator_and_groups_a_subtree():
    config = load_experiment_config("configs/codec.py", "variant=tiny")
    config.train.loss.adv_weight = 1.0
    with pytest.raises(ConfigError, match=r"train\.loss\.adv_weight=1\.0: needs a discrim"):
        config_lib.validate(config)
    config.train.loss.adv_weight = 0.0
    config.train.param_groups.critic = {"learning_rate": 1e-4}
    config_lib.validate(config)  # the config alone cannot know the params' subtrees
    with pytest.raises(ConfigError, match=r"train\.param_groups\.critic: no top-level params "
                                          r"subtree 'critic'"):
        optim_tx(config).init(codec.init_params(config.model, jax.random.PRNGKey(0)))


def _losses(workdir):
    return losses(workdir, keys=("loss", "disc_loss", "adv_loss"))


def _final_state(config, workdir):
    state, _, step = restore(config, workdir)
    return state, step


def test_adversarial_steps_are_finite_and_resume_exactly(tmp_path):
    config = _adversarial_config(steps=4)
    ref_dir, new_dir = str(tmp_path / "ref"), str(tmp_path / "new")
    loop.run(config, ref_dir)
    rows = metrics_lib.read_metrics(ref_dir, "train")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        for key in ("loss", "adv_loss", "feat_loss", "disc_loss", "disc_acc_real",
                    "disc_acc_fake", "mel_loss"):
            assert np.isfinite(r[key]), (key, r)

    run_crashed(config, new_dir, step=3)  # after the step-2 checkpoint, before the next
    loop.run(config, new_dir)  # resumes from the step-2 checkpoint
    assert _losses(new_dir) == _losses(ref_dir)
    ref, step = _final_state(config, ref_dir)
    new, _ = _final_state(config, new_dir)
    assert step == 4 and "discriminator" in ref["params"]
    assert set(_inner(ref["opt_state"])) == {"default", "discriminator"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, new, ref)
    # the discriminator learnt: its params moved from their initial values
    init_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))[0]  # as loop.build
    init = codec.init_params(config.model, init_rng)
    moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                                   ref["params"]["discriminator"], init["discriminator"])
    assert max(jax.tree_util.tree_leaves(moved)) > 0.0


def _inner(opt_state):
    """inner_states of the MultiTransformState in a restored optimizer state."""
    found = [s for s in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda s: isinstance(s, optax.MultiTransformState))
        if isinstance(s, optax.MultiTransformState)]
    assert len(found) == 1, opt_state
    return found[0].inner_states
