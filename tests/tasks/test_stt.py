"""Moshi stt through the training loop: the loss decreases, the stt_cer evaluator writes its
transcripts and the streaming delay, a SIGKILLed run resumes exactly; the streaming decoder
equals the offline forward; the config rules name their field."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from audiolm import data as data_lib  # noqa: E402
from audiolm.models import moshi as moshi_lib  # noqa: E402
from audiolm.presets import experiment  # noqa: E402
from audiolm.tasks import speech_codes, stt  # noqa: E402
from audiolm.train import loop  # noqa: E402
from tests.config_helpers import assert_rule  # noqa: E402
from tests.resume_helpers import (  # noqa: E402
    losses as _losses, restored_params as _params, run_killed)


def tiny_config(cache_dir):
    cfg = experiment.load_experiment_config("configs/moshi.py", "stt_tiny")
    cfg.data.update(num_workers=1, cache_dir=cache_dir)
    cfg.train.update(steps=6, checkpoint_every=2, eval_every=6, log_every=1,
                     compilation_cache_dir="")
    return cfg


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("speech"))
    workdir = str(tmp_path_factory.mktemp("stt_reference"))
    config = tiny_config(cache)
    loop.run(config, workdir)
    return config, workdir


def test_loss_decreases_and_the_cer_evaluator_reports_the_delay(reference_run):
    config, workdir = reference_run
    losses = [loss for _, loss in _losses(workdir)]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    with open(os.path.join(workdir, "stt_test.json")) as f:
        scores = json.load(f)
    assert scores["delay_frames"] == 3 and scores["delay_seconds"] == pytest.approx(3 / 125)
    assert scores["utterances"] == 4 and scores["cer"] > 0
    dataset = data_lib.make_dataset(config.data, "test")
    with open(os.path.join(workdir, "stt_test.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["reference"] for r in rows] == [dataset.text(i) for i in range(4)]


def test_resume_after_sigkill_is_exact(reference_run, tmp_path):
    config, ref_dir = reference_run
    workdir = str(tmp_path)
    run_killed(workdir, __file__, "tiny_config", config.data.cache_dir, step=5)
    loop.run(config, workdir)
    assert _losses(workdir) == _losses(ref_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _params(config, workdir),
                           _params(config, ref_dir))


def test_streaming_decoder_equals_the_offline_forward(reference_run):
    config, workdir = reference_run
    module = moshi_lib.build(config.model)
    params = _params(config, workdir)
    batch = next(speech_codes.make_batches(config, "validation", finite=True))
    audio = np.where(batch["codes_mask"][:, None], batch["codes"], -1).astype(np.int32)
    pad = int(config.model.text_padding_id)
    stream = np.asarray(stt.compiled_transcriber(module, pad)(params, jnp.asarray(audio)))
    # Teacher-forced on its own output, the full forward predicts the same tokens.
    b, k, t = audio.shape
    d = stt.delay_frames(config)
    codes = np.concatenate([np.concatenate([stream[:, None], audio], axis=1),
                            np.full((b, 1 + k, d), -1, np.int32)], axis=2)
    inputs, _, _ = moshi_lib.delayed_inputs(module.spec, jnp.asarray(codes))
    logits = module.apply({"params": params}, inputs)["text_logits"]
    offline = np.asarray(jnp.argmax(logits, axis=-1))[:, d:d + t]
    np.testing.assert_array_equal(stream, offline)


def test_stream_text_reads_words_between_pads():
    tokenizer = data_lib.make_tokenizer({"tokenizer": "bytes"})
    p, e = 259, 260
    ids = [p, e] + tokenizer.encode("the") + [p, p, e] + tokenizer.encode("dog") + [e, p]
    assert stt.stream_text(ids, tokenizer, p, e) == "the dog"


@pytest.mark.parametrize("fields,match", [
    ({"model.delays": (0, 0, 0)}, "model.delays=.*audio leading"),
    ({"model.delays": (2, 1, 0)}, "model.delays=.*audio leading"),
    ({"model.audio_codebooks": 1, "model.delays": (3, 0)},
     "model.audio_codebooks=1: must equal task.codec.num_codebooks"),
    ({"model.text_end_padding_id": 7}, "model.text_end_padding_id=7: must be in \\[259, "),
    ({"task.final_evaluators": ("cer",)}, "task 'stt' has no evaluator 'cer'"),
    ({"task.codec.num_codebooks": 5}, "task.codec.num_codebooks=5: must be <= 2"),
])
def test_bad_fields_are_named(reference_run, fields, match):
    assert_rule(reference_run[0].copy_and_resolve_references(), fields, match)


def test_audio_time_masks_blank_spans_inside_each_rows_audio_only():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 50, (6, 1 + 3, 40)).astype(np.int32)
    lengths = np.array([40, 30, 12, 5, 1, 0])
    for row, n in enumerate(lengths):
        codes[row, 1:, n:] = moshi_lib.ZERO_TOKEN  # absent past the row's audio
    out = np.asarray(stt.mask_audio(jnp.asarray(codes), jax.random.PRNGKey(3), 2, 8))
    np.testing.assert_array_equal(out[:, 0], codes[:, 0])  # the text stream is never masked
    hit = (out[:, 1:] != codes[:, 1:])
    assert hit.any()
    assert np.all(out[:, 1:][hit] == moshi_lib.ZERO_TOKEN)
    assert np.all(hit == hit[:, :1])  # a masked frame is masked in every codebook
    frames = hit[:, 0]
    for row, n in enumerate(lengths):
        assert not frames[row, n:].any() and frames[row].sum() <= 2 * 8
    identity = stt.mask_audio(jnp.asarray(codes), jax.random.PRNGKey(3), 0, 8)
    np.testing.assert_array_equal(np.asarray(identity), codes)


def test_audio_time_mask_fields_are_validated(tmp_path):
    config = tiny_config(str(tmp_path))
    assert_rule(config, {"train.loss.audio_time_masks": -1}, "train.loss.audio_time_masks")
