"""task.codec.init_embeddings: the Moshi audio embeddings start as one linear view of the codec's
quantized latent (summed rows = M (latent(codes) - latent(0)) for one matrix M); the extra id
keeps its random row; a family without the hook gets a ConfigError naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from audiolm.presets import experiment  # noqa: E402
from audiolm.tasks import speech_codes  # noqa: E402
from audiolm.train import loop  # noqa: E402
from tests.config_helpers import assert_rule  # noqa: E402


def _config(path, variant, init, cache_dir):
    config = experiment.load_experiment_config(path, variant)
    config.data.update(num_workers=1, cache_dir=cache_dir)
    config.task.codec.init_embeddings = init
    return config


def _summed_rows_and_latents(config, table, num=64):
    """[num, W] summed embedding rows and [num, D] latent(codes) - latent(0) of random codes."""
    module, params, spec = speech_codes.load_codec(config)
    k, card = speech_codes.num_codebooks(config), spec.quantizer.codebook_size
    codes = np.random.default_rng(0).integers(0, card, (num, k))
    rows = np.asarray(table)[np.arange(k)[None], codes].sum(axis=1)
    decode = lambda c: module.apply({"params": params}, jnp.asarray(c, jnp.int32),
                                    method=lambda m, x: m.quantizer.decode(x))
    latent = np.asarray(decode(codes[:, :, None]) - decode(np.zeros((1, k, 1))))[:, 0]
    return rows, latent


def _linear_residual(rows, latent):
    m, *_ = np.linalg.lstsq(latent, rows, rcond=None)
    return float(np.linalg.norm(latent @ m - rows) / np.linalg.norm(rows))


@pytest.mark.parametrize("init", [True, False])
def test_stt_audio_embeddings_read_the_codec_latent(init, tmp_path):
    config = _config("configs/moshi.py", "stt_tiny", init, str(tmp_path))
    exp = loop.build(config)
    table = np.asarray(jax.device_get(exp.scratch_params()["audio_emb"]["embedding"]))
    plain = np.asarray(jax.device_get(jax.jit(exp.init_fn)(exp.init_rng)["audio_emb"]["embedding"]))
    card = speech_codes.codec_spec(config).quantizer.codebook_size
    rows, latent = _summed_rows_and_latents(config, table)
    assert rows.shape[0] > latent.shape[1]  # more codes than latent dims: not trivially linear
    if init:
        assert _linear_residual(rows, latent) < 1e-4
        np.testing.assert_array_equal(table[:, card:], plain[:, card:])  # the extra id
        np.testing.assert_allclose(np.sqrt(np.mean(table[:, :card] ** 2)),
                                   np.sqrt(np.mean(plain[:, :card] ** 2)), rtol=1e-4)
    else:
        np.testing.assert_array_equal(table, plain)
        assert _linear_residual(rows, latent) > 0.5


def test_a_family_without_the_hook_names_the_field(tmp_path):
    config = _config("configs/pattern_lm.py", "tts_tiny", False, str(tmp_path))
    assert_rule(config, {"task.codec.init_embeddings": True},
                "task.codec.init_embeddings.*family 'pattern_lm'")
