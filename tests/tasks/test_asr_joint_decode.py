"""Joint CTC / attention beam decoding of the ASR task: the CTC prefix scores against the full
CTC likelihood (optax) and a brute-force sum over frame paths, the search on constructed CTC
posteriors, beam 1 without CTC equal to the greedy decoder, and the decode_* config rules."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import asr
from tests.config_helpers import set_field, small_asr

BLANK, EOS = 0, 1  # the test vocabularies' blank (pad) and eos ids


def _recipe():
    return load_experiment_config("configs/thinker_talker.py", "variant=tiny_asr")


def _prefix_state(log_probs, mask, labels):
    """Extends the empty prefix label by label (one hypothesis, one candidate per step);
    returns the psi of each prefix and the final forward variables."""
    r_label, r_blank = asr.ctc_prefix_start(log_probs, mask, BLANK, 1)
    b = log_probs.shape[0]
    last = jnp.zeros((b, 1), jnp.int32)
    psis = []
    for i in range(labels.shape[1]):
        cand = labels[:, i].reshape(b, 1, 1)
        psi, r_label, r_blank = asr.ctc_prefix_scores(log_probs, mask, r_label, r_blank, last,
                                                      jnp.asarray(i == 0), cand, BLANK)
        r_label, r_blank, last = r_label[:, :, 0], r_blank[:, :, 0], cand[:, :, 0]
        psis.append(psi[:, 0, 0])
    return psis, r_label, r_blank


def test_full_prefix_score_equals_ctc_likelihood():
    rng = np.random.default_rng(0)
    b, t, v = 3, 9, 5
    logits = jnp.asarray(2 * rng.standard_normal((b, t, v)), jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    lengths = np.array([9, 7, 6])
    mask = np.arange(t)[None] < lengths[:, None]
    labels = jnp.asarray([[2, 3, 3, 4], [4, 2, 4, 4], [3, 3, 2, 2]], jnp.int32)  # repeats
    _, r_label, r_blank = _prefix_state(log_probs, jnp.asarray(mask), labels)
    full = asr.ctc_full_score(r_label, r_blank)[:, 0]
    expected = -optax.ctc_loss(logits, jnp.asarray(~mask, jnp.float32), labels,
                               jnp.zeros(labels.shape, jnp.float32), blank_id=BLANK)
    np.testing.assert_allclose(np.asarray(full), np.asarray(expected), atol=1e-4, rtol=0)


def _brute_force_prefix(log_probs, prefix):
    """log of the total probability of the frame paths whose labels start with `prefix`."""
    t, v = log_probs.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
        out = [k for k in merged if k != BLANK]
        if out[:len(prefix)] == list(prefix):
            total += math.exp(sum(log_probs[i, k] for i, k in enumerate(path)))
    return math.log(total)


def test_prefix_scores_equal_brute_force():
    rng = np.random.default_rng(1)
    t, v = 6, 3
    log_probs = jax.nn.log_softmax(jnp.asarray(rng.standard_normal((1, t, v)), jnp.float32))
    mask = jnp.asarray(np.arange(t)[None] < 5)  # the last frame is padding
    labels = jnp.asarray([[1, 2, 2]], jnp.int32)
    psis, _, _ = _prefix_state(log_probs, mask, labels)
    lp = np.asarray(log_probs[0, :5], np.float64)
    for n, psi in enumerate(psis, 1):
        np.testing.assert_allclose(float(psi[0]), _brute_force_prefix(lp, [1, 2, 2][:n]),
                                   atol=1e-4)
    # The blank is never a label.
    psi, _, _ = asr.ctc_prefix_scores(log_probs, mask, *asr.ctc_prefix_start(log_probs, mask,
                                                                             BLANK, 1),
                                      jnp.zeros((1, 1), jnp.int32), jnp.asarray(True),
                                      jnp.full((1, 1, 1), BLANK, jnp.int32), BLANK)
    assert float(psi[0, 0, 0]) == -np.inf


@functools.partial(jax.jit, static_argnames=("max_new", "beam"))
def _search_ctc_only(log_probs, mask, max_new, beam):
    """The joint search with a uniform Thinker and ctc_weight 1: CTC prefix beam search."""
    b, _, v = log_probs.shape
    tokens = jnp.zeros((b, max_new + 1), jnp.int32)  # bos at 0, outputs after it
    uniform = lambda tok: jnp.zeros(tok.shape + (v,), jnp.float32)  # noqa: E731
    return asr.joint_beam_search(
        uniform, tokens, jnp.zeros((b,), jnp.int32), log_probs, mask, max_new=max_new,
        beam=beam, candidates=v, ctc_weight=1.0, eos_id=EOS, pad_id=BLANK)


def test_ctc_only_search_returns_the_most_probable_transcript():
    v = 5
    # Row 0: frames peaked on the path 2 2 _ 3 _ 3 4 4 (labels 2 3 3 4), the last 2 frames
    # padding. Row 1: each of 2 frames is blank 0.6 / label 2 0.4: the best path is all blank
    # (""), but "2" is likelier (0.64 against 0.36): prefix search, not best path.
    path = [2, 2, BLANK, 3, BLANK, 3, 4, 4, 2, 2]
    peaked = np.full((10, v), -8.0, np.float32)
    peaked[np.arange(10), path] = 0.0
    soft = np.full((10, v), -30.0, np.float32)
    soft[:, BLANK], soft[:, 2] = math.log(0.6), math.log(0.4)
    log_probs = jax.nn.log_softmax(jnp.asarray(np.stack([peaked, soft])), axis=-1)
    mask = jnp.asarray(np.arange(10)[None] < np.array([[8], [2]]))
    ids = _search_ctc_only(log_probs, mask, max_new=6, beam=4)
    assert ids[0].tolist() == [2, 3, 3, 4, EOS, BLANK]
    assert ids[1].tolist() == [2, EOS, BLANK, BLANK, BLANK, BLANK]


def _brute_force_argmax(log_probs):
    """The most probable transcript of [T, V] log-probs: every frame path's probability added to
    the transcript it collapses to."""
    t, v = log_probs.shape
    totals = {}
    for path in itertools.product(range(v), repeat=t):
        merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
        seq = tuple(k for k in merged if k != BLANK)
        totals[seq] = totals.get(seq, 0.0) + math.exp(sum(log_probs[i, k]
                                                          for i, k in enumerate(path)))
    return list(max(totals, key=totals.get))


def test_ctc_only_search_finds_the_brute_force_argmax():
    t, v = 4, 4  # labels 2, 3; eos (1) never emitted by the head
    greedy_misses = 0
    for seed in range(8):
        logits = np.random.default_rng(seed).standard_normal((t, v)).astype(np.float32) * 1.5
        logits[:, EOS] = -30.0
        log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)), np.float64)
        best = _brute_force_argmax(log_probs)
        found = {beam: _search_ctc_only(jnp.asarray(log_probs[None], jnp.float32),
                                        jnp.ones((1, t), bool), max_new=t + 1, beam=beam)[0]
                 for beam in (1, 8)}
        found = {beam: np.asarray(ids) for beam, ids in found.items()}
        assert found[8][:len(best) + 1].tolist() == best + [EOS], seed
        greedy_misses += found[1][:len(best) + 1].tolist() != best + [EOS]
    assert greedy_misses >= 2  # the beam is what finds them (seeds 3, 6, 7)


def test_wider_beam_finds_the_likelier_sentence():
    """A Thinker whose greedy path is not its most probable sentence: after bos, A 0.6 / B 0.4;
    after A, eos 0.5 / C 0.5 (A eos: 0.3); after B, eos 1.0 (B eos: 0.4)."""
    a, b_, c = 2, 3, 4
    table = np.full((5, 5), -30.0, np.float32)
    table[0, a], table[0, b_] = math.log(0.6), math.log(0.4)
    table[a, EOS], table[a, c] = math.log(0.5), math.log(0.5)
    table[b_, EOS] = table[c, EOS] = table[EOS, BLANK] = 0.0
    table = jnp.asarray(table)
    tokens = jnp.zeros((1, 5), jnp.int32)  # bos (0) at 0; logits[p] reads tokens[p]

    def search(beam):
        return np.asarray(asr.joint_beam_search(
            lambda tok: table[tok], tokens, jnp.zeros((1,), jnp.int32), None, None, max_new=4,
            beam=beam, candidates=3, ctc_weight=0.0, eos_id=EOS, pad_id=BLANK))[0].tolist()

    assert search(1)[0] == a  # greedy: A, then a sentence of probability 0.3
    assert search(2) == [b_, EOS, BLANK, BLANK]
    assert search(4) == [b_, EOS, BLANK, BLANK]


@pytest.fixture(scope="module")
def tiny_model():
    from audiolm.models import thinker_talker as tt

    config = small_asr(_recipe())
    module = tt.build(config.model)
    params = tt.init_params(config.model, jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)
    mask = np.ones((3, 16000), bool)
    mask[1, 12000:] = False
    mask[2, 9000:] = False
    return config, module, params, jnp.asarray(audio), jnp.asarray(mask)


def test_beam_one_without_ctc_is_the_greedy_decoder(tiny_model):
    config, module, params, audio, mask = tiny_model
    max_new, bos = 6, 1
    greedy = np.asarray(asr.make_greedy_decoder(module, config, max_new, bos)(params, audio,
                                                                               mask))
    for candidates in (1, 8):
        joint = asr.make_joint_decoder(module, config, max_new, bos, beam=1, ctc_weight=0.0,
                                       candidates=candidates)
        np.testing.assert_array_equal(np.asarray(joint(params, audio, mask)), greedy)


def test_joint_beam_ids_end_like_the_greedy_ones(tiny_model):
    """A wide joint search on the real model: ids in the vocabulary, never the blank before
    eos, pad after it."""
    config, module, params, audio, mask = tiny_model
    th = config.model.thinker
    ids = np.asarray(asr.make_joint_decoder(module, config, 6, 1, beam=3, ctc_weight=0.5,
                                            candidates=4)(params, audio, mask))
    assert ids.shape == (3, 6) and ((0 <= ids) & (ids < th.vocab_size)).all()
    for row in ids.tolist():
        end = row.index(th.eos_token_id) if th.eos_token_id in row else len(row)
        assert th.pad_token_id not in row[:end]  # the CTC blank scores -inf as a label
        assert all(i == th.pad_token_id for i in row[end + 1:])


def test_joint_decoder_arguments_are_checked(tiny_model):
    config, module, _, _, _ = tiny_model
    with pytest.raises(ValueError, match=r"beam=0: must be an int >= 1"):
        asr.make_joint_decoder(module, config, 4, 1, beam=0, ctc_weight=0.0, candidates=2)
    with pytest.raises(ValueError, match=r"ctc_weight=1\.5: must be in \[0, 1\]"):
        asr.make_joint_decoder(module, config, 4, 1, beam=2, ctc_weight=1.5, candidates=2)


@pytest.mark.parametrize("path,value,message", [
    ("task.decode_beam", 0, r"task\.decode_beam=0: must be >= 1"),
    ("task.decode_beam", 2.0, r"task\.decode_beam=2\.0: must be an int"),
    ("task.decode_ctc_weight", -0.1, r"task\.decode_ctc_weight=-0\.1: must be >= 0"),
    ("task.decode_ctc_weight", 1.5, r"task\.decode_ctc_weight=1\.5: must be <= 1"),
    ("task.decode_candidates", 0, r"task\.decode_candidates=0: must be >= 1"),
])
def test_decode_fields_are_validated(path, value, message):
    config = _recipe()
    config_lib.validate(config)
    set_field(config, path, value)
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_ctc_weight_needs_the_ctc_head():
    config = _recipe()
    config.train.loss.ctc_weight = 0.0
    config.model.aut.ctc_frames_per_token = 0
    for key in asr.DECODE_DEFAULTS:  # the fields are optional
        if key in config.task:
            del config.task[key]
    config_lib.validate(config)  # no decode fields: greedy
    assert asr.decode_options(config) == (1, 0.0, 8)
    assert asr.decoding_name(config) == "greedy decoding"
    config.task.update(decode_beam=4, decode_ctc_weight=0.3, decode_candidates=8)
    with pytest.raises(ConfigError, match=r"task\.decode_ctc_weight=0\.3: needs a CTC head: "
                                          r"model\.aut\.ctc_frames_per_token=0"):
        config_lib.validate(config)
    config.task.decode_ctc_weight = 0.0
    config_lib.validate(config)  # attention-only beam search needs no head
    assert asr.decoding_name(config).startswith("joint CTC/attention beam search: beam 4")
