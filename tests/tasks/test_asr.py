"""The ASR task's recogniser levers: CTC loss (against a brute-force sum over alignments),
SpecAugment masks, the config rules of every new field, the espeak test split's listening groups,
and the main-job recipe learning on a tiny budget (a few steps on a few utterances)."""

import itertools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.audio import features as features_lib
from audiolm.config import ConfigError
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import asr
from tests.config_helpers import set_field, small_asr


def _recipe(**data):
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny_asr")
    for key, value in data.items():
        config.data[key] = value
    return config


# ---------------------------------------------------------------------------------------------
# CTC


def _brute_force_nll(log_probs, labels, blank):
    """-log sum over every frame path that collapses (merge repeats, drop blanks) to labels."""
    t, v = log_probs.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
        if [k for k in merged if k != blank] == list(labels):
            total += math.exp(sum(log_probs[i, k] for i, k in enumerate(path)))
    return -math.log(total)


@pytest.mark.parametrize("labels,frames", [((1, 2), 4), ((1, 1), 3), ((2,), 5), ((1, 2, 1), 4)])
def test_ctc_loss_equals_brute_force(labels, frames):
    rng = np.random.default_rng(len(labels) * 10 + frames)
    t_max, n_max, vocab = 6, 4, 3
    logits = rng.normal(size=(1, t_max, vocab)).astype(np.float32) * 2
    frame_mask = np.arange(t_max)[None] < frames
    padded = np.zeros((1, n_max), np.int32)
    padded[0, :len(labels)] = labels
    label_mask = np.arange(n_max)[None] < len(labels)
    loss, feasible = asr.ctc_loss(jnp.asarray(logits), frame_mask, jnp.asarray(padded),
                                  label_mask, blank_id=0)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits[0, :frames]), axis=-1))
    expected = _brute_force_nll(log_probs, labels, blank=0) / len(labels)
    assert bool(feasible[0])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_ctc_loss_leaves_out_rows_without_an_alignment():
    # Row 0: "aa" in 2 frames needs a blank between the repeats (3 frames): infeasible.
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3)), jnp.float32)
    labels = jnp.asarray([[1, 1], [1, 2]], jnp.int32)
    frame_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    loss, feasible = asr.ctc_loss(logits, frame_mask, labels, np.ones((2, 2), bool), 0)
    assert feasible.tolist() == [False, True]
    alone, _ = asr.ctc_loss(logits[1:], frame_mask[1:], labels[1:], np.ones((1, 2), bool), 0)
    np.testing.assert_allclose(float(loss), float(alone), rtol=1e-6)
    assert float(loss) < 20  # not optax's log-epsilon floor


def test_ctc_collapse_merges_repeats_and_drops_blanks():
    ids = np.array([0, 5, 5, 0, 5, 7, 7, 0, 9, 9])
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)  # the last two frames are padding
    assert asr.ctc_collapse(ids, mask, blank_id=0) == [5, 5, 7]


# ---------------------------------------------------------------------------------------------
# SpecAugment


def test_spec_augment_masks_spans_inside_valid_frames():
    b, f, m = 64, 200, 32
    feats = jnp.ones((b, f, m), jnp.float32)
    lengths = jnp.asarray(np.random.default_rng(1).integers(100, f + 1, size=b), jnp.int32)
    out = np.asarray(features_lib.spec_augment(
        feats, lengths, jax.random.PRNGKey(0), time_masks=2, time_width=20, freq_masks=2,
        freq_width=8))
    assert out.shape == (b, f, m) and out.dtype == np.float32
    zero = out == 0
    time_masked = zero.all(axis=2)  # [B, F] whole frames
    freq_masked = zero.all(axis=1)  # [B, M] whole bands
    # Every zero is a masked frame or a masked band (rectangular masks, nothing else touched).
    np.testing.assert_array_equal(zero, time_masked[:, :, None] | freq_masked[:, None, :])
    assert (time_masked.sum(1) <= 40).all() and (freq_masked.sum(1) <= 16).all()
    for row in range(b):  # time masks lie inside the valid frames
        assert not time_masked[row, int(lengths[row]):].any()
    # Mean masked share: E[width] = 10 frames / 4 bins per mask (overlaps make it a bit less).
    time_share = (time_masked.sum(1) / np.asarray(lengths)).mean()
    assert 0.06 < time_share < 0.2, time_share
    assert 0.12 < freq_masked.mean() < 0.27, freq_masked.mean()
    # No masks: identity.
    same = features_lib.spec_augment(feats, lengths, jax.random.PRNGKey(0), time_masks=0,
                                     time_width=0, freq_masks=0, freq_width=0)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(feats))


# ---------------------------------------------------------------------------------------------
# Config rules of the new fields


_set = set_field


@pytest.mark.parametrize("path,value,message", [
    ("train.loss.ctc_weight", -0.1, r"train\.loss\.ctc_weight=-0\.1: must be >= 0"),
    ("model.aut.ctc_frames_per_token", 0,
     r"train\.loss\.ctc_weight=0\.3: needs a CTC head: model\.aut\.ctc_frames_per_token=0"),
    ("model.aut.ctc_frames_per_token", -1, r"model\.aut\.ctc_frames_per_token=-1: must be >= 0"),
    ("model.aut.ctc_frames_per_token", 2.0, r"model\.aut\.ctc_frames_per_token=2\.0: must be an int"),
    ("train.loss.spec_time_masks", -1, r"train\.loss\.spec_time_masks=-1: must be >= 0"),
    ("train.loss.spec_time_masks", 1.5, r"train\.loss\.spec_time_masks=1\.5: must be an int"),
    ("train.loss.spec_freq_masks", 17, r"train\.loss\.spec_freq_masks=17: must be <= 16"),
    ("train.loss.spec_time_width", 0,
     r"train\.loss\.spec_time_width=0: must be > 0 when train\.loss\.spec_time_masks=2"),
    ("train.loss.spec_freq_width", -3, r"train\.loss\.spec_freq_width=-3: must be >= 0"),
    ("train.loss.spec_freq_width", 128,
     r"train\.loss\.spec_freq_width=128: must be < model\.audio\.n_mels=128"),
])
def test_new_fields_are_validated(path, value, message):
    config = _recipe()
    config.train.loss.ctc_weight = 0.3
    config.train.loss.spec_time_masks = 2
    config.train.loss.spec_time_width = 10
    config_lib.validate(config)
    _set(config, path, value)
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_ctc_head_only_when_asked():
    from audiolm.models import thinker_talker as tt

    config = _recipe()
    r = config.model.aut.ctc_frames_per_token
    assert r > 0
    counts = tt.describe_params(config.model)
    vocab, width = config.model.thinker.vocab_size, config.model.thinker.hidden_size
    assert counts["ctc_head"]["total"] == width * r * vocab + r * vocab
    config.model.aut.ctc_frames_per_token = 0
    assert "ctc_head" not in tt.describe_params(config.model)
    del config.model.aut["ctc_frames_per_token"]  # imported configs have no such field
    config.train.loss.ctc_weight = 0.0
    config.task.decode_ctc_weight = 0.0  # joint decoding needs the head too
    config_lib.validate(config)


# ---------------------------------------------------------------------------------------------
# The test split measures listening


def test_test_split_groups_scrambled_sentences_and_unseen_voices():
    from audiolm.data import speech_synth

    gen = speech_synth.generation_config(600, 20, 40, num_speakers=16)
    plan = speech_synth.plan(gen)
    train_words = {w for r in plan["train"] for w in r["text"].split()}
    train_speakers = {r["speaker"] for r in plan["train"]}
    test = plan["test"]
    groups = speech_synth.utterance_groups(gen, "test")
    assert [groups[r["text"]]["sentence"] for r in test[:4]] == [
        "template", "scrambled", "template", "scrambled"]
    scrambled = [r for r in test if r["sentence"] == "scrambled"]
    assert len(scrambled) == 20
    for r in scrambled:  # every word heard in training, the sentence never
        assert set(r["text"].split()) <= train_words
    assert not {r["text"] for r in test} & {r["text"] for r in plan["train"]}
    unseen = [r for r in test if r["voice"] == "unseen"]
    assert len(unseen) == 20 and not {r["speaker"] for r in unseen} & train_speakers
    assert {r["speaker"] for r in test if r["voice"] == "seen"} <= train_speakers
    assert len(train_speakers) <= 16 - speech_synth.held_out_voices(16)
    # The cache key follows the design: another held-out count or grammar is another set.
    other = dict(gen, grammar="0" * 16)
    assert speech_synth.config_hash(other) != speech_synth.config_hash(gen)


# ---------------------------------------------------------------------------------------------
# The recipe learns on a tiny budget


def test_recipe_learns_and_scores_groups(tmp_path, capsys):
    from audiolm import data as data_lib
    from audiolm.models import thinker_talker as tt
    from audiolm.tasks.base import EvalContext

    pytest.importorskip("espeakng_loader")
    config = _recipe(num_train=8, num_validation=2, num_test=4, num_speakers=8, batch_size=4,
                     cache_dir=str(tmp_path / "cache"), num_workers=1)
    config.sample.max_new_tokens = 4
    small_asr(config)
    config_lib.validate(config)
    assert config.train.loss.ctc_weight > 0 and config.train.loss.spec_time_masks > 0
    module = tt.build(config.model)
    params = tt.init_params(config.model, jax.random.PRNGKey(0))
    batch = next(iter(data_lib.make_iterator(config.data, "train")))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    import optax

    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, rng):
        (loss, m), grads = jax.value_and_grad(
            lambda p: asr.loss_fn(module, p, batch, rng, config, True), has_aux=True)(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt, m

    history = []
    for i in range(12):
        params, opt, m = step(params, opt, jax.random.PRNGKey(i))
        history.append({k: float(v) for k, v in m.items()})
    first, last = history[0], history[-1]
    assert last["text_ce"] < 0.5 * first["text_ce"], (first, last)
    assert last["text_accuracy"] > first["text_accuracy"] + 0.05, (first, last)
    assert last["ctc_loss"] < 0.8 * first["ctc_loss"], (first, last)
    assert first["ctc_feasible"] == 1.0

    scores = asr.transcribe_and_score(
        EvalContext(config, module, str(tmp_path / "run"), None, None, 0), params, "test")
    assert scores["utterances"] == 4
    assert scores["utterances_template"] == 2 and scores["utterances_scrambled"] == 2
    assert scores["utterances_seen_voices"] == 2 and scores["utterances_unseen_voices"] == 2
    assert 0.0 <= scores["ctc_cer"]  # the CTC head's own transcripts are scored too
    out = capsys.readouterr().out
    assert "test CER" in out and "transcripts_test.jsonl" in out and "ref: " in out
    with open(tmp_path / "run" / "asr_test.json") as f:
        assert json.load(f)["cer_scrambled"] == scores["cer_scrambled"]
    assert os.path.isfile(tmp_path / "run" / "transcripts_test.jsonl")


def test_greedy_decoder_matches_full_forward_argmax():
    """The decoder (AuT once, Thinker per step) writes the argmax of the full model's logits."""
    from audiolm.models import thinker_talker as tt

    config = small_asr(_recipe())
    module = tt.build(config.model)
    params = tt.init_params(config.model, jax.random.PRNGKey(3))
    full = jax.jit(lambda p, t, f, n: module.apply({"params": p}, t, f, n)["logits"])
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    mask = np.ones((2, 16000), bool)
    mask[1, 12000:] = False
    max_new, bos = 3, 1
    ids = np.asarray(asr.make_greedy_decoder(module, config, max_new, bos)(
        params, jnp.asarray(audio), jnp.asarray(mask)))
    feats, frame_lengths = tt.features_from_batch(config.model, {"audio": audio,
                                                                 "audio_mask": mask})
    for row in range(2):
        length = int(mask[row].sum())
        text = np.zeros((1, max_new + 1), np.int32)
        text[0, 0] = bos
        tmask = np.zeros((1, max_new + 1), bool)
        tmask[0, 0] = True
        tokens, _ = tt.asr_sequence(config.model, jnp.asarray([length]), text, tmask, 16000)
        tokens = np.array(tokens)
        pos = int(tt.audio_token_count(config.model, length)) + 2
        for i in range(max_new):
            logits = full(params, jnp.asarray(tokens), feats[row:row + 1],
                          frame_lengths[row:row + 1])
            expected = int(jnp.argmax(logits[0, pos + i]))
            assert ids[row, i] == expected, (row, i)
            if expected == config.model.thinker.eos_token_id:
                break
            tokens[0, pos + i + 1] = expected
