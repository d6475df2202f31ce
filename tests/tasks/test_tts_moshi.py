"""Moshi tts: the aligned text stream, stream batches, learning, forced-transcript generation,
and its config rules."""

import jax
import numpy as np
import optax
import pytest

pytest.importorskip("espeakng_loader")

from audiolm import config as config_lib  # noqa: E402
from audiolm import data as data_lib  # noqa: E402
from audiolm.models import moshi as moshi_lib  # noqa: E402
from audiolm.presets import experiment  # noqa: E402
from audiolm.sample import moshi as moshi_sample  # noqa: E402
from audiolm.tasks import tts_moshi  # noqa: E402

P, E = 259, 260  # PAD, EPAD of the tiny config (after the 259 byte-tokenizer ids)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cfg = experiment.load_experiment_config("configs/moshi.py", "tts_tiny")
    cfg.data.update(num_workers=1, cache_dir=str(tmp_path_factory.mktemp("speech")))
    return cfg


def test_aligned_text_puts_an_epad_before_each_word_and_at_the_end():
    out = tts_moshi.aligned_text([[5, 6], [7]], starts=[0, 2], end=5, frames=8, pad_id=P,
                                 epad_id=E)
    # word 1 needs its EPAD first (frame 0), word 2 is pushed past word 1's tokens
    np.testing.assert_array_equal(out, [E, 5, 6, E, 7, E, P, P])
    out = tts_moshi.aligned_text([[5], [6]], starts=[2, 6], end=8, frames=10, pad_id=P,
                                 epad_id=E)
    np.testing.assert_array_equal(out, [P, E, 5, P, P, E, 6, P, E, P])


def test_stream_batches_hold_the_transcript_on_the_codes(config):
    it = tts_moshi.make_batches(config, None, "train")
    raw_state = it.get_state()
    batch = next(it)
    codes = batch["codes"]
    assert codes.shape[:2] == (8, 3) and codes.dtype == np.int32
    assert batch["speaker"].shape == (8,)
    tokenizer = data_lib.make_tokenizer(config.data)
    inner = tts_moshi.speech_codes.make_batches(config, "train")
    inner.set_state(raw_state)
    raw = next(inner)
    dataset = data_lib.make_dataset(config.data, "train")
    for row in range(8):
        n = int(raw["codes_mask"][row].sum())
        text = codes[row, 0]
        assert (text[n:] == -1).all() and (codes[row, 1:, n:] == -1).all()
        np.testing.assert_array_equal(codes[row, 1:, :n], raw["codes"][row, :, :n])
        # the words between EPADs spell the transcript; one more EPAD ends the speech
        words, cur = [], []
        for t in text[:n]:
            if t in (P, E):
                if cur:
                    words.append(tokenizer.decode(cur))
                cur = []
            else:
                cur.append(int(t))
        assert not cur
        assert " ".join(words) == dataset.text(int(raw["index"][row]))
        assert (text[:n] == E).sum() == len(words) + 1
        assert raw["speaker"][row] == batch["speaker"][row]


def _train(config, steps=12):
    module = moshi_lib.build(config.model)
    params = moshi_lib.init_params(config.model, jax.random.PRNGKey(0))
    batch = next(tts_moshi.make_batches(config, None, "train"))
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def update(params, opt_state):
        def loss(p):
            return tts_moshi.loss_fn(module, p, batch, jax.random.PRNGKey(0), config, True)
        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    history = []
    for _ in range(steps):
        params, opt_state, metrics = update(params, opt_state)
        history.append({k: float(v) for k, v in metrics.items()})
    return module, params, history


@pytest.fixture(scope="module")
def trained(config):
    return _train(config)


def test_loss_decreases(trained):
    _, _, history = trained
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["audio_loss"] < history[0]["audio_loss"]
    assert history[-1]["text_loss"] < history[0]["text_loss"]


def test_generation_speaks_the_transcript_in_order(config, trained):
    module, params, _ = trained
    texts = ["the red dog sleeps", "anna has two cats"]
    codes = tts_moshi.generate_codes(module, params, config, texts, [0, 3],
                                     jax.random.PRNGKey(1))
    limit = config.sample.max_new_tokens - 2  # the largest stream delay + 1
    assert len(codes) == 2
    for c in codes:
        assert c.dtype == np.int32 and c.shape[0] == 2 and 0 < c.shape[1] <= limit
        assert c.min() >= 0 and c.max() < 32
    # the text the loop fed the model: each started word complete, in the transcript's order
    table, lengths = tts_moshi._word_table(config, texts)
    generate = tts_moshi.make_generator(module, config, config.sample.max_new_tokens)
    tokens, end = generate(params, table, lengths, np.asarray([0, 3], np.int32),
                           jax.random.PRNGKey(1))
    tokenizer = data_lib.make_tokenizer(config.data)
    for row, text in enumerate(texts):
        stream = np.asarray(tokens[row, 0])
        spoken = tokenizer.decode([int(t) for t in stream if t not in (P, E)])
        assert "".join(text.split()).startswith(spoken), (spoken, text)
        if int(end[row]) < config.sample.max_new_tokens:  # ended: every word was spoken
            assert spoken == "".join(text.split())


def test_generation_rejects_unknown_speakers(config, trained):
    module, params, _ = trained
    with pytest.raises(ValueError, match="speakers \\[9\\]: each must be a profile index"):
        tts_moshi.generate_codes(module, params, config, ["the dog"], [9],
                                 jax.random.PRNGKey(0))


def _set(cfg, field, value):
    section, key = field.rsplit(".", 1)
    config_lib.get_path(cfg, section)[key] = value


@pytest.mark.parametrize("field,value,match", [
    ("model.audio_codebooks", 3, "model.audio_codebooks=3: must equal task.codec.num_codebooks"),
    ("model.audio_vocab_size", 17, "model.audio_vocab_size=17: must be the codec's"),
    ("model.delays", (1, 0, 2), "model.delays=.*text leading"),
    ("model.text_padding_id", 35, "model.text_padding_id=35: must be in \\[259, "),
    ("model.text_end_padding_id", 259, "model.text_end_padding_id=259: must differ"),
    ("model.conditioners.speaker.n_bins", 5,
     "model.conditioners.speaker.n_bins=5: must equal data.num_speakers=4"),
    ("sample.max_new_tokens", 3, "sample.max_new_tokens=3: must exceed"),
])
def test_bad_fields_are_named(config, field, value, match):
    bad = config.copy_and_resolve_references()
    _set(bad, field, value)
    with pytest.raises(config_lib.ConfigError, match=match):
        tts_moshi.rules(bad)


def test_the_tiny_config_validates_and_trains_through_the_streaming_step(config):
    config_lib.validate(config)
    spec = moshi_lib.spec_from_config(config.model)
    assert list(moshi_sample.stream_lags(spec)) == [0, 1, 2]
