"""Thinker-Talker tts: prompt ids from every preset, the teacher-forced loss against the sampler,
learning, a frozen Thinker, bad configs, and the streamed chain against the offline decode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.models import codec as codec_lib
from audiolm.models import thinker_talker as family
from audiolm.presets import codec as codec_presets
from audiolm.presets import thinker_talker as tt_presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.sample import thinker_talker as tt_sample
from audiolm.tasks import speech_codes
from audiolm.tasks import tts_thinker_talker as tts
from audiolm.train import optim
from audiolm.train import step as step_lib
from audiolm.train.state import TrainState

TEXTS = ["hello there", "a cat sat"]


def tiny_config(**loss):
    config = load_experiment_config("configs/thinker_talker.py", "variant=tts_tiny")
    config.unlock()
    config.train.loss.update(loss)
    config.sample.temperature = 0.0
    config.sample.max_new_tokens = 8
    return config


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    config_lib.validate(config)
    module = family.build(config.model)
    params = family.init_params(config.model, jax.random.PRNGKey(0))
    return config, module, params


def make_batch(config, texts, speakers, frames, seed=0):
    """A tts batch in speech_codes' layout: codes [B, K, T] counting up per codebook."""
    from audiolm import data as data_lib

    tok = data_lib.make_tokenizer(config.data)
    tk = config.model.talker
    b, t, length = len(texts), max(frames), int(config.data.max_text_len)
    rng = np.random.default_rng(seed)
    batch = {"text": np.zeros((b, length), np.int32), "text_mask": np.zeros((b, length), bool),
             "codes": np.zeros((b, tk.num_codebooks, t), np.int32),
             "codes_mask": np.zeros((b, t), bool), "speaker": np.asarray(speakers, np.int32)}
    for i, (text, n) in enumerate(zip(texts, frames)):
        ids = tok.encode_with_specials(text)
        batch["text"][i, :len(ids)] = ids
        batch["text_mask"][i, :len(ids)] = True
        start = rng.integers(0, tk.codebook_size, (tk.num_codebooks, 1))
        step = np.arange(1, tk.num_codebooks + 1)[:, None]
        batch["codes"][i, :, :n] = (start + step * np.arange(n)) % tk.codebook_size
        batch["codes_mask"][i, :n] = True
    return batch


def test_every_preset_gives_the_talker_prompt_ids():
    for name in tt_presets.PRESETS:
        config = load_experiment_config("configs/thinker_talker.py", f"variant={name}")
        opts = tt_sample.speech_options_from_config(config)
        ids = tt_presets.SPEECH_PROMPTS[name]
        assert (opts.tts_bos_id, opts.tts_eos_id, opts.tts_pad_id) == (
            ids["tts_bos_token_id"], ids["tts_eos_token_id"], ids["tts_pad_token_id"])
        assert opts.speaker_id == ids["speaker_ids"][0]
        th, tk = config.model.thinker, config.model.talker
        assert len({opts.tts_bos_id, opts.tts_eos_id, th.audio_token_id, th.eos_token_id}) == 4
        assert all(tk.codec_think_eos_id < v < tk.vocab_size for v in opts.speaker_ids)
    # The locked config takes an override of a default id.
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny")
    config.sample.extra.speaker_id = 71
    assert tt_sample.speech_options_from_config(config).speaker_id == 71


def test_teacher_forcing_matches_the_sampler(setup):
    """Greedy frames of the sampler are the argmax of the training forward on those frames:
    the loss sees exactly the prompt, positions and trailing text that generation uses."""
    config, module, params = setup
    speakers = [3, 5]
    codes = tts.generate_codes(module, params, config, TEXTS, speakers, jax.random.PRNGKey(1))
    frames = [c.shape[1] for c in codes]
    assert max(frames) > 0 and all(c.shape[0] == 2 for c in codes)
    batch = make_batch(config, TEXTS, speakers, [max(n, 1) for n in frames])
    for i, c in enumerate(codes):
        batch["codes"][i, :, :c.shape[1]] = c
        batch["codes_mask"][i] = np.arange(batch["codes"].shape[2]) < c.shape[1]
    out = tts.forward(module, params, batch, tts.speech_options(config))
    pred0 = np.asarray(jnp.argmax(out["logits0"], -1))
    pred = np.asarray(jnp.argmax(out["predictor_logits"], -1))  # [B, T, K-1]
    eos = config.model.talker.codec_eos_id
    for i, c in enumerate(codes):
        n = c.shape[1]
        np.testing.assert_array_equal(pred0[i, :n], c[0])
        np.testing.assert_array_equal(pred[i, :n].T, c[1:])
        if n < config.sample.max_new_tokens:  # the row stopped: codec_eos came next
            assert pred0[i, n] == eos


def _train(config, module, params, batch, steps):
    tx = optim.make_optimizer(config.train)
    state = TrainState.create(params, tx, jax.random.PRNGKey(0))
    fn = jax.jit(step_lib.make_train_step(module, tts.loss_fn, tx, config))
    losses = []
    for _ in range(steps):
        state, metrics = fn(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


def test_loss_decreases_and_frozen_thinker_is_not_updated(setup):
    _, module, params = setup
    config = tiny_config(train_thinker=0.0)
    config.train.update(learning_rate=3e-3, warmup_steps=0, schedule="constant")
    config_lib.validate(config)
    batch = make_batch(config, TEXTS * 2, [0, 1, 2, 7], [12, 9, 12, 5])
    state, losses = _train(config, module, params, batch, 12)
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, state.params)
    for part in ("thinker", "aut", "code2wav"):
        assert all(jax.tree_util.tree_leaves(same[part])), part  # zero updates
    assert not all(jax.tree_util.tree_leaves(same["talker"]))
    # Trained Thinker (with its text CE): its params move.
    config = tiny_config(train_thinker=1.0, text_weight=1.0)
    state, _ = _train(config, module, params, batch, 2)
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)),
                                   params["thinker"], state.params["thinker"])
    assert not all(jax.tree_util.tree_leaves(moved))


@pytest.mark.parametrize("fields,match", [
    ({"train.loss.train_thinker": 0.5}, r"train.loss.train_thinker=0.5"),
    ({"train.weight_decay": 0.1}, r"train.weight_decay=0.1: must be 0 with "
                                  r"train.loss.train_thinker=0"),
    ({"model.talker.num_codebooks": 3, "model.code2wav.num_codebooks": 3},
     r"model.talker.num_codebooks=3: must equal task.codec.num_codebooks=2"),
    ({"sample.extra.speaker_ids": (38, 39)},
     r"sample.extra.speaker_ids=\(38, 39\): needs a codec id for each of the "
     r"data.num_speakers=8"),
    ({"sample.extra.prompt_projection": "audio"}, r"sample.extra.prompt_projection='audio'"),
])
def test_bad_config_names_the_field(fields, match):
    config = tiny_config(train_thinker=0.0)
    for field, value in fields.items():
        section, key = field.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[key] = value
    with pytest.raises(ConfigError, match=match):
        config_lib.validate(config)


def test_stream_equals_offline_decode(setup):
    config, module, params = setup
    codec = speech_codes.load_codec(config)
    rng = jax.random.PRNGKey(1)
    speakers = [3, 5]
    codes = tts.generate_codes(module, params, config, TEXTS, speakers, rng)
    pieces = list(tts.stream(module, params, config, codec, TEXTS, speakers, rng, chunk=3))
    assert [p["codes"].shape[2] for p in pieces[:-1]] == [3] * (len(pieces) - 1)
    streamed = np.concatenate([p["codes"] for p in pieces], axis=2)
    wav = np.concatenate([p["wav"] for p in pieces], axis=1)
    hop = codec_presets.hop_length(codec[2])
    for i, c in enumerate(codes):
        n = c.shape[1]
        np.testing.assert_array_equal(streamed[i, :, :n], c)
        if n:
            offline = np.asarray(codec_lib.decode(codec[0], codec[1], c[None]))[0]
            np.testing.assert_allclose(wav[i, :n * hop], offline[:n * hop], atol=1e-5)


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(tmp_path):
    """tts_tiny through the loop (speech-set codes of a random tiny codec): a run SIGKILLed in
    step 3 resumes from its step-2 checkpoint to the losses (bit for bit) and params of an
    unbroken run."""
    import os
    import subprocess
    import sys
    import textwrap

    from audiolm.train import checkpoint as ckpt_lib
    from audiolm.train import loop, metrics as metrics_lib

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    overrides = dict(steps=4, checkpoint_every=2, eval_every=100, log_every=1)

    def config():
        c = load_experiment_config("configs/thinker_talker.py", "variant=tts_tiny")
        c.unlock()
        c.train.update(overrides)
        c.data.cache_dir = str(tmp_path / "data")
        return c

    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    loop.run(config(), ref)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {root!r})
        from audiolm.presets.experiment import load_experiment_config
        from audiolm.train import loop

        def kill(step, state, metrics):
            if step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        c = load_experiment_config("configs/thinker_talker.py", "variant=tts_tiny")
        c.unlock()
        c.train.update({overrides!r})
        c.data.cache_dir = {str(tmp_path / "data")!r}
        loop.run(c, {killed!r}, callbacks=[kill])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == -9, proc.stderr[-3000:]
    loop.run(config(), killed)

    def losses(workdir):
        return [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(workdir, "train")]

    assert losses(killed) == losses(ref) and len(losses(ref)) == 4

    def params(workdir):
        exp = loop.build(config())
        ckpt = ckpt_lib.Checkpointer(workdir, exp.config.train)
        try:
            return jax.device_get(ckpt.restore(exp.abstract_state)[0]["params"])
        finally:
            ckpt.close()

    # Losses are bit-identical step for step (the restored state and data position are
    # exact); a few entries of the code predictor's embedding were seen to differ in the last
    # bit (1.5e-8) after the resumed run's final update. Cause not pinned down (a summation
    # order in a recompiled step is the likely one), hence the tolerance on params only.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           params(killed), params(ref))
