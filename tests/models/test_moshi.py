"""Kyutai family model: presets, validation, fusion modes, decode API, loss (tiny, fp32)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.models import moshi as M
from audiolm.nn.compile import fast_jit
from audiolm.tasks import codes as codes_task
from audiolm.presets import moshi as cm
from audiolm.presets.experiment import load_experiment_config


def _rules(model):
    M.rules(ml_collections.ConfigDict({"model": model}))


def _params(model, seed=0):
    return M.init_params(model, jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=None)
def _tiny(fusion="add"):
    """(model config, params) of the tiny preset, initialised once per fusion mode."""
    model = cm.tiny(fusion)
    return model, _params(model)


def _codes(model, batch=2, frames=6, seed=0):
    return M.example_batch(model, batch, np.random.default_rng(seed), frames=frames)["codes"]


@functools.lru_cache(maxsize=None)
def _forward_fn(spec):
    module = M.MoshiLM(spec)
    return fast_jit(lambda params, inputs: module.apply({"params": params}, inputs))


@functools.lru_cache(maxsize=None)
def _depformer_fn(spec):
    module = M.MoshiLM(spec)
    return fast_jit(lambda p, targets, hidden: module.apply(
        {"params": p}, targets, hidden, method=M.MoshiLM.depformer_forward))


@pytest.mark.parametrize("name", sorted(cm.PRESETS))
def test_every_preset_validates(name):
    model = cm.PRESETS[name]()
    _rules(model)
    spec = M.spec_from_config(model)
    assert len(spec.delays) == 1 + spec.audio_codebooks
    assert spec.temporal.hidden_size % spec.temporal.num_heads == 0


def test_get_config_validates_and_describes():
    config = load_experiment_config("configs/moshi.py", "variant=tiny")
    desc = config_lib.describe(config)
    params = _tiny()[1]
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert desc["total_params"] == n
    # init_params is traceable (the trainer's sharded init runs it under eval_shape / jit).
    shapes = jax.eval_shape(lambda r: M.init_params(config.model, r), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_map(lambda x: x.shape, shapes) == \
        jax.tree_util.tree_map(lambda x: x.shape, params)
    streaming = load_experiment_config("configs/moshi.py", "variant=v0_1_streaming,slices=4")
    assert streaming.model.depformer.num_slices == 4
    config_lib.validate(streaming)
    with pytest.raises(ValueError, match="variant='nope'"):
        load_experiment_config("configs/moshi.py", "variant=nope")


BAD = [
    (lambda m: setattr(m, "audio_vocab_size", 0), r"model.audio_vocab_size=0: must be an int > 0"),
    (lambda m: setattr(m, "audio_codebooks", 65), r"model.audio_codebooks=65: must be <= 64"),
    (lambda m: setattr(m, "audio_codebooks", 0), r"model.audio_codebooks=0: must be >= 1"),
    (lambda m: setattr(m, "delays", (0, 0, 1)), r"model.delays=\[0, 0, 1\]: needs one delay per "
     r"stream: 1 text \+ model.audio_codebooks=4 = 5, got 3"),
    (lambda m: setattr(m, "delays", (0, 0, -1, 1, 1)), r"model.delays\[2\]=-1: must be an int >= 0"),
    (lambda m: setattr(m, "delays", (1, 1, 1, 1, 1)), r"model.delays=.*must contain a 0"),
    (lambda m: setattr(m.temporal, "num_heads", 5), r"model.temporal.hidden_size=32: must be "
     r"divisible by model.temporal.num_heads=5"),
    (lambda m: setattr(m.depformer, "num_slices", 5), r"model.depformer.num_slices=5: must be <= "
     r"model.audio_codebooks=4"),
    (lambda m: setattr(m.depformer, "schedule", (0, 1)), r"model.depformer.schedule=\[0, 1\]: needs "
     r"one weight set per slice"),
    (lambda m: setattr(m.depformer, "schedule", (0, 2, 2)), r"model.depformer.schedule.*every weight"),
    (lambda m: setattr(m, "fusion", "mix"), r"model.fusion='mix': must be one of"),
    (lambda m: setattr(m, "fusion", "cross_attention"), r"model.temporal.cross_attention=False: must "
     r"be True when model.fusion='cross_attention'"),
    (lambda m: setattr(m.temporal, "cross_attention", True), r"model.temporal.cross_attention=True: "
     r"needs a cross-attention source"),
    (lambda m: setattr(m.temporal, "num_kv_heads", 3), r"model.temporal.num_kv_heads=3: must divide"),
    (lambda m: setattr(m.temporal, "norm", "batch"), r"model.temporal.norm='batch'"),
    (lambda m: setattr(m, "text_padding_id", 33), r"model.text_padding_id=33: must be <= 32"),
    (lambda m: m.__setitem__("conditioners", {"x": config_lib.spec_to_section(
        cm.lut(2, 4, ("a", "b", "c")))}),
     r"model.conditioners.x.possible_values=.*more values than"),
    (lambda m: m.temporal.__setitem__("extra", 1), r"model.temporal.extra is not a known field"),
]


@pytest.mark.parametrize("mutate,match", BAD)
def test_validation_errors_name_the_path(mutate, match):
    model = cm.tiny()
    mutate(model)
    with pytest.raises(ConfigError, match=match):
        _rules(model)


@pytest.mark.parametrize("fusion", M.FUSIONS)
def test_fusion_mode(fusion):
    """Each fusion mode: decode API == full forward; causality; text/audio dependence."""
    model, params = _tiny(fusion)
    _rules(model)
    spec = M.spec_from_config(model)
    module = M.MoshiLM(spec)
    inputs, targets, _ = M.delayed_inputs(spec, jnp.asarray(_codes(model, frames=5)))
    fwd = _forward_fn(spec)
    out = fwd(params, inputs)
    assert out["text_logits"].shape == (2, 5, 32) and np.isfinite(out["text_logits"]).all()

    steps = {part: fast_jit(functools.partial(
        lambda p, col, st, part: module.apply({"params": p}, col, st, part=part,
                                              method=M.MoshiLM.step), part=part))
        for part in ("text", "audio", "frame")}
    state = module.init_state(2)
    text, hidden = [], []
    for part in (("text", "audio") if fusion == "concat" else ("frame",)):
        for s in range(inputs.shape[2]):
            logits, h, state = steps[part](params, inputs[:, :, s:s + 1], state)
            if part in ("frame", "text"):
                text.append(logits)
            if part in ("frame", "audio"):
                hidden.append(h)
    np.testing.assert_allclose(np.stack(text, 1), out["text_logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.stack(hidden, 1), out["hidden"], atol=1e-4, rtol=1e-4)

    # Text logits depend on the audio tokens (concat: text comes first, so the audio segment
    # depends on the text instead), and never on later columns.
    audio_changed = inputs.at[:, 1:, 2:].set((inputs[:, 1:, 2:] + 3) % spec.card)
    text_changed = inputs.at[:, 0, 2:].set((inputs[:, 0, 2:] + 3) % 32)
    diff = lambda a, b, key: float(jnp.max(jnp.abs(fwd(params, a)[key] - fwd(params, b)[key])))
    if fusion == "concat":
        assert diff(audio_changed, inputs, "text_logits") == 0.0
        assert diff(text_changed, inputs, "hidden") > 1e-3
    else:
        assert diff(audio_changed, inputs, "text_logits") > 1e-3
        future = inputs.at[:, :, 4:].set((inputs[:, :, 4:] + 5) % spec.card)
        np.testing.assert_allclose(fwd(params, future)["text_logits"][:, :4],
                                   out["text_logits"][:, :4], atol=1e-5)
    # The training loss runs in every mode (text + audio CE, finite, about log(vocab)).
    loss, metrics = fast_jit(lambda p, b: codes_task.moshi_loss(module, p, b, None, _loss_config(model),
                                                    True))(params, {"codes": _codes(model)})
    assert np.isfinite(loss) and 1.0 < float(metrics["text_loss"]) < 10.0
    if fusion == "add":
        # The depformer per-frame loop equals its teacher-forced form.
        logits = _depformer_fn(spec)(params, targets, out["hidden"])
        cache = module.init_depformer_cache(2)
        for k in range(spec.dep_q):
            dstep = fast_jit(lambda p, prev, h, c, k=k: module.apply(
                {"params": p}, k, prev, h, c, method=M.MoshiLM.depformer_step))
            lg, cache = dstep(params, targets[:, k, 2], out["hidden"][:, 2], cache)
            np.testing.assert_allclose(lg, logits[:, k, 2], atol=1e-4, rtol=1e-4)


def test_partial_codebooks_and_zero_token():
    model, params = _tiny()
    spec = M.spec_from_config(model)
    rng = np.random.default_rng(3)
    text = rng.integers(0, 32, (2, 6))
    audio = [rng.integers(0, 16, (2, 6)), None, None, rng.integers(0, 16, (2, 6))]
    codes = M.stack_streams(model, text, audio)
    assert (codes[:, 2] == -1).all() and (codes[:, 3] == -1).all()
    inputs, targets, valid = M.delayed_inputs(spec, jnp.asarray(codes))
    out = _forward_fn(spec)(params, inputs)
    assert np.isfinite(out["text_logits"]).all()
    assert not bool(valid[:, 2:4].any())  # absent codebooks are never scored
    # An absent codebook contributes exactly nothing: same as a model without its table rows.
    zeroed = jax.tree_util.tree_map(lambda x: x, params)
    table = zeroed["audio_emb"]["embedding"]
    zeroed["audio_emb"]["embedding"] = table.at[1:3, 0].set(0.0)
    filled = inputs.at[:, 2:4].set(jnp.where(inputs[:, 2:4] == -1, 0, inputs[:, 2:4]))
    np.testing.assert_allclose(_forward_fn(spec)(zeroed, filled)["text_logits"],
                               out["text_logits"], atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = cm.tiny()
    codes = _codes(model)
    bad = codes.copy()
    bad[1, 3, 2] = 16  # == card (the initial token is not a valid audio id)
    with pytest.raises(ValueError, match=r"codes\[1, 3, 2\] \(audio codebook 2\) = 16: expected -1 "
                                         r"or an id in 0..15"):
        M.check_tokens(model, bad)
    with pytest.raises(ValueError, match=r"K=model.audio_codebooks=4 \(got 3 codebooks\)"):
        M.check_tokens(model, codes[:, :4])
    with pytest.raises(ValueError, match="audio has 3 codebooks"):
        M.stack_streams(model, codes[:, 0], [None] * 3)
    params = _tiny()[1]
    module = M.build(model)
    with pytest.raises(ValueError, match=r"tokens shape \(2, 4, 6\) must be \[B, 1\+K=5, S\]"):
        module.apply({"params": params}, jnp.asarray(codes[:, :4]))


def _loss_config(model):
    config = ml_collections.ConfigDict()
    config.model = model
    config.train = ml_collections.ConfigDict(
        {"loss": load_experiment_config("configs/moshi.py").train.loss})
    return config


def test_loss_matches_manual_cross_entropy_and_masks_zero_ids():
    model, params = _tiny()
    spec = M.spec_from_config(model)
    module = M.build(model)
    config = _loss_config(model)
    codes = _codes(model, frames=6, seed=5)
    codes[0, 0, :3] = -1  # zero text ids are not scored
    codes[1, 2, :] = -1
    loss, metrics = fast_jit(lambda p, b: codes_task.moshi_loss(module, p, b, None, config, True))(
        params, {"codes": jnp.asarray(codes)})
    # Manual: undelayed logits vs codes, masked where the reference masks.
    inputs, targets, valid = M.delayed_inputs(spec, jnp.asarray(codes))
    out = _forward_fn(spec)(params, inputs)
    audio = _depformer_fn(spec)(params, targets, out["hidden"])
    (text, tmask), (alog, amask) = M.undelay_logits(spec, out["text_logits"], audio)

    def ce(logits, ids, mask):
        logp = jax.nn.log_softmax(jnp.nan_to_num(logits), -1)
        nll = -jnp.take_along_axis(logp, jnp.maximum(ids, 0)[..., None], -1)[..., 0]
        return float(jnp.sum(nll * mask) / jnp.sum(mask)), int(jnp.sum(mask))

    tm = np.asarray(tmask)[None] & (codes[:, :1] != -1)
    text_ce, n_text = ce(text, codes[:, :1], tm)
    am = np.asarray(amask)[None] & (codes[:, 1:4] != -1)
    per_q = [ce(alog[:, k], codes[:, 1 + k], am[:, k])[0] for k in range(spec.dep_q)]
    assert int(metrics["text_tokens"]) == n_text == 12 - 3
    np.testing.assert_allclose(metrics["text_loss"], text_ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["audio_loss"], np.mean(per_q), rtol=1e-5)
    np.testing.assert_allclose(loss, text_ce + np.mean(per_q), rtol=1e-5)


def test_loss_decreases_with_adam():
    model, params = _tiny()
    module = M.build(model)
    config = _loss_config(model)
    batch = {"codes": jnp.asarray(_codes(model, batch=4, frames=8, seed=7))}
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @fast_jit
    def train_step(params, state):
        (loss, _), grads = jax.value_and_grad(
            lambda p: codes_task.moshi_loss(module, p, batch, None, config, True), has_aux=True)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(15):
        params, state, loss = train_step(params, state)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses


def test_conditioned_model_requires_tensor_condition():
    model = cm.tts_1_6b_en_fr()
    _rules(model)
    tiny = cm.tiny()
    tiny.temporal.cross_attention = True
    tiny.conditioners = {"spk": config_lib.spec_to_section(cm.tensor_conditioner(6)),
                       "cfg": config_lib.spec_to_section(cm.lut(3, 4))}
    _rules(tiny)
    params = _params(tiny)
    module = M.build(tiny)
    spec = M.spec_from_config(tiny)
    inputs, _, _ = M.delayed_inputs(spec, jnp.asarray(_codes(tiny)))
    with pytest.raises(ValueError, match=r"conditions\['spk'\] is required"):
        module.apply({"params": params}, inputs, {"cfg": np.array([0, 1])})
    batch = M.example_batch(tiny, 2, np.random.default_rng(0))
    loss, _ = fast_jit(lambda p, b: codes_task.moshi_loss(module, p, b, None, _loss_config(tiny), True))(
        params, batch)
    assert np.isfinite(loss)
