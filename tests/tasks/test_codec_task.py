"""Codec task: metric functions on known signals, code statistics, config rules, and the tiny
codec learning through the loop with its evaluator and WAV sample pairs."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import codec as task
from tests.config_helpers import assert_rule


def _config(variant="tiny"):
    return load_experiment_config("configs/codec.py", variant)


def test_si_snr_and_mel_distance_on_known_signals():
    rate, n = 16000, 4000
    t = np.arange(n) / rate
    ref = np.sin(2 * np.pi * 400 * t)[None].astype(np.float32)  # 100 whole periods
    noise = 0.1 * np.cos(2 * np.pi * 400 * t)[None].astype(np.float32)  # orthogonal to ref
    mask = np.ones((1, n), bool)
    snr = np.asarray(task.si_snr(jnp.asarray(ref), jnp.asarray(3.0 * ref + 3.0 * noise), mask))
    np.testing.assert_allclose(snr, [20.0], atol=0.01)  # scale-invariant: 10 log10(1 / 0.01)
    # padding beyond the mask does not count
    pad = np.concatenate([ref, np.ones((1, 1000), np.float32)], axis=1)
    est = np.concatenate([ref + noise, -np.ones((1, 1000), np.float32)], axis=1)
    pmask = np.arange(n + 1000)[None] < n
    np.testing.assert_allclose(np.asarray(task.si_snr(pad, est, pmask)), [20.0], atol=0.01)
    same = np.asarray(task.mel_distance(jnp.asarray(ref), jnp.asarray(ref), mask, rate))
    assert same[0] == 0.0
    louder = np.asarray(task.mel_distance(jnp.asarray(ref), jnp.asarray(2 * ref), mask, rate))
    # power x4 in every band where the tone's energy dominates the 1e-5 floor: log 4 there
    assert 0.1 < louder[0] <= np.log(4.0) + 1e-4


def test_code_statistics_perplexity_and_usage():
    k = 8
    codes = np.stack([np.tile(np.arange(k), 2),  # every entry twice: perplexity k
                      np.zeros(2 * k, int),  # one entry: perplexity 1
                      np.tile(np.arange(k), 2)])[None].astype(np.int32)  # [1, 3, 16]
    mask = np.ones((1, 2 * k), bool)
    stats = task.code_statistics(jnp.asarray(codes), mask, k, jnp.asarray(2))
    assert float(stats["perplexity_q0"]) == pytest.approx(k, rel=1e-5)
    assert float(stats["usage_q0"]) == 1.0
    assert float(stats["perplexity_q1"]) == pytest.approx(1.0)
    assert float(stats["usage_q1"]) == 1.0 / k
    assert float(stats["perplexity_q2"]) == 0.0  # beyond the active prefix
    half = np.arange(2 * k)[None] < k // 2  # frames 0..3 only: entries 0..3 once each
    stats = task.code_statistics(jnp.asarray(codes), half, k, jnp.asarray(3))
    assert float(stats["perplexity_q0"]) == pytest.approx(k // 2, rel=1e-5)
    assert float(stats["usage_q0"]) == 0.5


@pytest.mark.parametrize("path, value, message", [
    ("data.sample_rate", 24000, r"data\.sample_rate=24000: must equal model\.sample_rate=16000"),
    ("train.loss.quantizer_dropout", 1.5, r"train\.loss\.quantizer_dropout=1\.5"),
    ("train.loss.min_n_fft", 30, r"train\.loss\.min_n_fft=30: must be divisible by 4"),
    ("train.loss.segment_seconds", 0.001, r"train\.loss\.segment_seconds=0\.001: must be 0"),
    ("model.quantizer.num_codebooks", 0, r"model\.quantizer\.num_codebooks=0"),
])
def test_rules_name_the_field(path, value, message):
    assert_rule(_config("speech"), {path: value}, message)


def test_the_pair_is_registered():
    config = _config()
    config.task.name = "codes"
    with pytest.raises(ConfigError, match=r"model.family 'codec' can learn \['codec'\]"):
        config_lib.validate(config)


def test_tiny_codec_learns_and_writes_wav_pairs(tmp_path):
    """40 Adam steps of the task's loss on one synthetic batch (jitted directly: the loop's own
    tests cover the loop) lower the mel loss; the straight-through estimator sends gradients to
    the encoder and the codebook term to the codebooks; the "codec" evaluator and the sample
    writer run on the trained params."""
    from audiolm.tasks.base import EvalContext
    from tests.codec_helpers import adam_steps

    config = _config("tiny")
    config_lib.validate(config)
    module, params, grads, history = adam_steps(config, 40)
    enc = grads["encoder"]["conv_in"]["conv"]["kernel"]
    books = grads["quantizer"]["rvq"]["codebooks"]
    assert float(jnp.abs(enc).max()) > 0 and float(jnp.abs(books).max()) > 0
    first = np.mean([m["mel_loss"] for m in history[:3]])
    last = np.mean([m["mel_loss"] for m in history[-3:]])
    assert last < 0.9 * first, (first, last)
    assert 1.0 <= history[-1]["perplexity_q0"] <= 32.0 and 0 < history[-1]["usage_q0"] <= 1.0
    assert {float(m["active_codebooks"]) for m in history} <= {1.0, 2.0}

    workdir = str(tmp_path)
    ctx = EvalContext(config=config, module=module, workdir=workdir, eval_step=None)
    scores = task.codec_evaluator(ctx, params, "validation")
    assert np.isfinite(scores["mel_distance"]) and np.isfinite(scores["si_snr"])
    assert scores["bitrate"] == 1250.0  # 125 frames/s x 2 codebooks x 5 bits

    config.sample.num_samples = 3
    summary = task.write_samples(module, params, config, workdir)
    assert len(summary["samples"]) == 3
    for k in range(3):
        orig, rate = sf.read(os.path.join(workdir, "samples", f"{k:03d}_original.wav"))
        recon, _ = sf.read(os.path.join(workdir, "samples", f"{k:03d}_reconstructed.wav"))
        assert rate == 16000 and orig.shape == recon.shape and orig.shape[0] >= 512
        assert np.abs(orig).max() > 0.01 and np.all(np.isfinite(recon))
