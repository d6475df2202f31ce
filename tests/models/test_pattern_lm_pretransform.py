"""Discrete pretransform interface and the mu-law residual scalar tokenizer."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.config import ConfigError
from audiolm.models import pretransform
from audiolm.presets import pattern_lm as presets


def test_codes_round_trip_exact():
    tok = pretransform.MuLawRVQ(n_q=3, codebook_size=16, sample_rate=1600, frame_rate=50.0)
    assert isinstance(tok, pretransform.DiscretePretransform) and pretransform.is_codec(tok)
    assert tok.hop_length == 32
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (2, 3, 40))
    audio = tok.decode(jnp.asarray(codes))
    assert audio.shape == (2, 40 * 32)
    np.testing.assert_array_equal(np.asarray(tok.encode(audio)), codes)


def test_audio_round_trip_within_last_cell():
    tok = pretransform.MuLawRVQ(n_q=3, codebook_size=16, sample_rate=1600, frame_rate=50.0)
    rng = np.random.default_rng(1)
    n = 50 * 32 - 7  # a partial last frame (zero padded)
    t = np.arange(n) / 1600.0
    x = (0.6 * np.sin(2 * np.pi * 3.0 * t) + 0.05 * rng.standard_normal(n))[None]
    x = np.clip(x, -1, 1).astype(np.float32)
    codes = tok.encode(x)
    assert codes.shape == (1, 3, 50) and codes.dtype == jnp.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    y = np.asarray(tok.decode(codes))
    # In the mu-law domain the decoded frame equals the frame mean to half the last cell.
    padded = np.pad(x, ((0, 0), (0, 7)))
    means = np.asarray(tok.compress(jnp.asarray(padded))).reshape(1, 50, 32).mean(-1)
    decoded = np.asarray(tok.compress(jnp.asarray(y))).reshape(1, 50, 32)[..., 0]
    half_cell = tok.stages()[-1][1] / 2
    assert np.abs(decoded - means).max() <= half_cell + 1e-6
    # More stages -> finer reconstruction.
    coarse = pretransform.MuLawRVQ(n_q=1, codebook_size=16, sample_rate=1600, frame_rate=50.0)
    y1 = np.asarray(coarse.decode(coarse.encode(x)))
    dec1 = np.asarray(coarse.compress(jnp.asarray(y1))).reshape(1, 50, 32)[..., 0]
    assert np.abs(dec1 - means).max() > 10 * np.abs(decoded - means).max()


def test_sample_level_quantiser():
    tok = pretransform.MuLawRVQ(n_q=2, codebook_size=64, sample_rate=800, frame_rate=800.0)
    x = np.linspace(-0.9, 0.9, 400, dtype=np.float32)[None]
    y = np.asarray(tok.decode(tok.encode(x)))
    assert y.shape == x.shape
    assert np.abs(y - x).max() < 2e-3  # 4096 mu-law levels


def test_build_and_validate():
    model = presets.tiny()
    cfg = ml_collections.ConfigDict({"model": model})
    pretransform.validate(cfg)
    tok = pretransform.build(model.pretransform)
    assert (tok.n_q, tok.codebook_size, tok.sample_rate) == (4, 16, 1600)
    space = pretransform.build(presets.musicgen_small().pretransform)
    assert isinstance(space, pretransform.CodeSpace) and not pretransform.is_codec(space)
    assert (space.n_q, space.codebook_size, space.hop_length) == (4, 2048, 640)
    bad = ml_collections.ConfigDict({"model": presets.tiny()})
    bad.model.pretransform.frame_rate = 70.0
    with pytest.raises(ConfigError, match=r"model\.pretransform\.frame_rate=70\.0"):
        pretransform.validate(bad)
    bad.model.pretransform.type = "vae"
    with pytest.raises(ConfigError, match=r"model\.pretransform\.type='vae'"):
        pretransform.validate(bad)


def test_bad_inputs():
    tok = pretransform.MuLawRVQ(n_q=2, codebook_size=4, sample_rate=100, frame_rate=10.0)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        tok.encode(np.zeros((1, 2, 30), np.float32))
    with pytest.raises(ValueError, match=r"n_q=2"):
        tok.decode(np.zeros((1, 3, 5), np.int32))
    with pytest.raises(ValueError, match="positive integer"):
        pretransform.MuLawRVQ(n_q=2, codebook_size=4, sample_rate=100, frame_rate=30.0)
