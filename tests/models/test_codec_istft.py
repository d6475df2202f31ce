"""The codec's Vocos-style iSTFT decoder (`model.decoder="istft"`): the causal overlap-add inverts
a matching analysis STFT (the stream's first samples included, up to the normaliser's floor),
the decoder is causal on the [B, T * hop] grid, streaming equals offline for several chunk
sizes, a tiny istft codec learns through the codec task's loss and resumes through the loop,
and its config errors name the field."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

import tests.compile_cache  # noqa: F401  (the loop runs below compile the same programs)
from audiolm.config import ConfigError, spec_to_section
from audiolm.models import codec
from audiolm.presets import codec as presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.train import loop
from tests.codec_helpers import adam_steps
from tests.models.test_codec_streaming import STREAM_TOL, _stream
from tests.resume_helpers import losses, restore


def _spec(r=2):
    """The tiny codec with its iSTFT decoder, n_fft = r encoder hops."""
    spec = presets.with_istft(presets.TINY, "tiny")
    hop = int(np.prod(spec.seanet.ratios))
    return dataclasses.replace(spec, istft=dataclasses.replace(spec.istft, n_fft=r * hop))


@pytest.mark.parametrize("r", [1, 2, 4])
def test_overlap_add_inverts_the_analysis_stft(r):
    """Analysis frames x[t * hop : t * hop + n_fft] * Hann through rfft / irfft (the decoder's
    unnormalised-inverse convention) and `overlap_add` give x back wherever the squared windows
    of the frames present sum to at least NORM_FLOOR, and x scaled by sum / NORM_FLOOR where
    they do not (only the first samples: there no earlier frame overlaps)."""
    hop, t = 16, 10
    n_fft = r * hop
    x = np.random.default_rng(0).normal(size=(2, (t + r - 1) * hop))
    w = np.asarray(codec.hann_window(n_fft), np.float64)
    frames = np.stack([x[:, i * hop:i * hop + n_fft] * w for i in range(t)], axis=1)
    frames = np.fft.irfft(np.fft.rfft(frames, norm="forward"), n=n_fft, norm="forward")
    wav, tail = codec.overlap_add(jax.numpy.asarray(frames, np.float32), hop)
    assert wav.shape == (2, t * hop) and tail.shape == (2, (r - 1) * hop)
    covered = np.zeros(t * hop)
    for i in range(t):
        seg = slice(i * hop, min(i * hop + n_fft, t * hop))
        covered[seg] += np.square(w[:seg.stop - seg.start])
    expected = x[:, :t * hop] * covered / np.maximum(covered, codec.NORM_FLOOR)
    np.testing.assert_allclose(np.asarray(wav), expected, atol=2e-5, rtol=0)
    if r > 1:  # the floor bites only inside the first hop
        assert np.all(covered[hop:] >= codec.NORM_FLOOR)
        np.testing.assert_allclose(np.asarray(wav)[:, hop:], x[:, hop:t * hop], atol=2e-5)


def test_decoder_is_causal_on_the_sample_grid():
    """Changing the latent (ISTFTDecoder alone) or the codes (the whole decode: upsampler and
    transformer too) from frame t + 1 on leaves every sample before (t + 1) * hop unchanged,
    and changes later ones."""
    spec = _spec(r=4)
    hop = int(np.prod(spec.seanet.ratios))
    dec = codec.ISTFTDecoder(spec.istft, hop)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, spec.seanet.dimension)).astype(np.float32)
    params = dec.init(jax.random.PRNGKey(0), x)
    for t in (0, 3, 6):
        y = x.copy()
        y[:, t + 1:] = rng.normal(size=y[:, t + 1:].shape)
        a, b = (np.asarray(dec.apply(params, v)[0]) for v in (x, y))
        np.testing.assert_array_equal(a[:, :(t + 1) * hop], b[:, :(t + 1) * hop])
        assert np.abs(a[:, (t + 1) * hop:] - b[:, (t + 1) * hop:]).max() > 1e-6

    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(1))
    frame = codec.hop_length(spec)
    codes = rng.integers(0, spec.quantizer.codebook_size, (1, 2, 8)).astype(np.int32)
    ref = np.asarray(codec.decode(module, params, codes, fast_compile=True))
    later = codes.copy()
    later[:, :, 5:] = (later[:, :, 5:] + 1) % spec.quantizer.codebook_size
    out = np.asarray(codec.decode(module, params, later, fast_compile=True))
    np.testing.assert_array_equal(out[:, :5 * frame], ref[:, :5 * frame])
    assert np.abs(out[:, 5 * frame:] - ref[:, 5 * frame:]).max() > 1e-6


@pytest.mark.parametrize("r", [2, 4])
def test_streaming_equals_offline(r):
    """encode_step / decode_step in chunks of 1, 2 and 5 code frames (1 code frame = 2 STFT
    frames: with r = 4 the overlap-add tail spans more than a chunk) give the offline codes and
    audio; the decode state has fixed shapes (the tail is n_fft - hop samples)."""
    spec = _spec(r)
    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(1))
    assert "istft_decoder" in params and "decoder" not in params
    hop, frames = codec.hop_length(spec), 12
    wav = np.random.default_rng(0).normal(0, 0.3, (2, frames * hop)).astype(np.float32)
    ref_codes = np.asarray(codec.encode(module, params, wav, fast_compile=True))
    ref_audio = np.asarray(codec.decode(module, params, ref_codes, fast_compile=True))
    assert np.abs(ref_audio).max() > 1e-3
    tail = codec.init_stream(module, 2)["decode"]["istft_decoder"]["tail"]
    assert tail.shape == (2, spec.istft.n_fft - int(np.prod(spec.seanet.ratios)))
    for chunk in (1, 2, 5):
        codes, audio = _stream(module, params, wav, chunk)
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_allclose(audio, ref_audio, atol=STREAM_TOL, rtol=0)


def test_istft_codec_learns():
    """decoder=istft (configs/codec.py tiny): 40 Adam steps of the codec task's loss on one
    synthetic batch lower the mel loss, with gradient reaching the encoder (straight-through)
    and the iSTFT head."""
    config = load_experiment_config("configs/codec.py", "tiny,decoder=istft")
    module, _, grads, history = adam_steps(config, 40)
    assert module.spec.decoder == "istft"
    assert float(np.abs(grads["encoder"]["conv_in"]["conv"]["kernel"]).max()) > 0
    assert float(np.abs(grads["istft_decoder"]["phase"]["kernel"]).max()) > 0
    mel = [float(m["mel_loss"]) for m in history]
    assert np.mean(mel[-3:]) < 0.85 * np.mean(mel[:3]), mel


def test_istft_codec_trains_and_resumes_through_the_loop(tmp_path):
    """4 loop steps (checkpoint every 2, one device); the same run cut after checkpoint 2 (as a
    crash in step 3 or 4) resumes to the same losses and params, step for step."""
    config = load_experiment_config("configs/codec.py", "tiny,decoder=istft,steps=4")
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    config.train.eval_every = 100
    config.task.evaluators = ()
    config.task.final_evaluators = ()
    config.mesh.axes.data = 1  # one device: the batch of 4 is not split over 8
    ref_dir, new_dir = str(tmp_path / "ref"), str(tmp_path / "new")
    loop.run(config, ref_dir)
    ref = losses(ref_dir)
    assert [s for s, _ in ref] == [1, 2, 3, 4] and all(np.isfinite(l) for _, l in ref)
    shutil.copytree(ref_dir, new_dir)
    shutil.rmtree(os.path.join(new_dir, "checkpoints", "4"))
    loop.run(config, new_dir)
    assert losses(new_dir) == ref
    p_ref, p_new = restore(config, ref_dir)[0]["params"], restore(config, new_dir)[0]["params"]
    assert "istft_decoder" in p_ref
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_new, p_ref)


def _rules(spec_or_model):
    model = spec_or_model if isinstance(spec_or_model, ml_collections.ConfigDict) \
        else spec_to_section(spec_or_model)
    codec.rules(ml_collections.ConfigDict({"model": model.to_dict()}))


@pytest.mark.parametrize("change, needle", [
    (dict(n_fft=100), r"model.istft.n_fft=100: must be a multiple of the encoder hop "
                      r"prod\(model.seanet.ratios=\(8, 4, 2\)\) = 64"),
    (dict(width=0), r"model.istft.width=0"),
    (dict(num_blocks=-1), r"model.istft.num_blocks=-1"),
])
def test_config_errors_name_the_field(change, needle):
    spec = _spec()
    _rules(spec)
    with pytest.raises(ConfigError, match=needle):
        _rules(dataclasses.replace(spec, istft=dataclasses.replace(spec.istft, **change)))
    missing = spec_to_section(dataclasses.replace(spec, istft=None))
    with pytest.raises(ConfigError, match=r"model.istft=None: must be an ISTFTSpec section"):
        _rules(missing)
    other = spec_to_section(spec)
    other.decoder = "vocos"
    with pytest.raises(ConfigError, match=r"model.decoder='vocos': must be one of "
                                          r"\['seanet', 'code2wav', 'istft'\]"):
        _rules(other)
