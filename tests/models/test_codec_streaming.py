"""Codec streaming and decoder choice: `encode_step` / `decode_step` chunk after chunk equal the
offline `encode` / `decode` (codes identical, audio within 1e-5 in fp32) for chunks of 1 and
several frames, and equal the `moshi` package's streaming MimiModel on tiny random weights; the
Code2Wav decoder (`model.decoder="code2wav"`): shapes, streaming, and its config rules."""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from audiolm.config import ConfigError, spec_to_section
from audiolm.models import code2wav as code2wav_lib
from audiolm.models import codec
from audiolm.presets import codec as presets

STREAM_TOL = 1e-5  # max abs difference of streamed against offline audio (fp32)
MIMI_TOL = 1e-4  # against the moshi reference, as tests/models/test_codec.py


def _stream(module, params, wav, chunk, num_codebooks=None):
    """Encodes wav [B, T * hop] `chunk` frames at a time and decodes each chunk's codes at once:
    (codes [B, n, T], audio [B, T * hop])."""
    hop = codec.hop_length(module.spec)
    frames = wav.shape[1] // hop
    state = codec.init_stream(module, wav.shape[0])
    codes, audio = [], []
    for start in range(0, frames, chunk):
        piece = wav[:, start * hop:min(start + chunk, frames) * hop]
        state, c = codec.encode_step(module, params, state, piece, num_codebooks,
                                     fast_compile=True)
        state, w = codec.decode_step(module, params, state, c, fast_compile=True)
        assert w.shape == (wav.shape[0], c.shape[2] * hop)
        codes.append(np.asarray(c))
        audio.append(np.asarray(w))
    assert int(state["encode"]["frames"]) == frames
    return np.concatenate(codes, axis=-1), np.concatenate(audio, axis=-1)


@pytest.mark.parametrize("name", ["tiny", "tiny_mimi"])
def test_streaming_equals_offline(name):
    """Frames 6 (tiny: 12, past its transformer window of 16 encoder frames at stride 2), in
    chunks of 1 and 3 frames: the convs' kept frames, the KV windows and the downsampler's
    replicated first frame give the offline codes and audio."""
    spec = presets.SPECS[name]
    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(1))
    hop = codec.hop_length(spec)
    frames = 12 if name == "tiny" else 6  # both past the transformer window
    assert frames * spec.downsample_stride > spec.transformer.context
    wav = np.random.default_rng(0).normal(0, 0.3, (2, frames * hop)).astype(np.float32)
    ref_codes = np.asarray(codec.encode(module, params, wav, fast_compile=True))
    ref_audio = np.asarray(codec.decode(module, params, ref_codes, fast_compile=True))
    assert len(np.unique(ref_codes)) > 2 and np.abs(ref_audio).max() > 1e-2
    for chunk in (1, 3):
        codes, audio = _stream(module, params, wav, chunk)
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_allclose(audio, ref_audio, atol=STREAM_TOL, rtol=0)


def test_stream_step_errors_name_the_argument():
    spec = presets.TINY
    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(0))
    state = codec.init_stream(module, 2)
    hop = codec.hop_length(spec)
    with pytest.raises(ValueError,
                       match=rf"wav shape \(2, {hop + 1}\) must be \[B=2, n \* {hop}\]"):
        codec.encode_step(module, params, state, np.zeros((2, hop + 1), np.float32))
    with pytest.raises(ValueError, match=r"wav shape \(3, 128\) must be \[B=2"):
        codec.encode_step(module, params, state, np.zeros((3, hop), np.float32))
    with pytest.raises(ValueError, match="num_codebooks=3 must be in"):
        codec.encode_step(module, params, state, np.zeros((2, hop), np.float32), 3)
    with pytest.raises(ValueError, match="ids must be in"):
        codec.decode_step(module, params, state, np.full((2, 2, 1), 32, np.int32))
    with pytest.raises(ValueError, match=r"must have B=2"):
        codec.decode_step(module, params, state, np.zeros((1, 2, 1), np.int32))
    with pytest.raises(ValueError, match="batch=0 must be a positive int"):
        codec.init_stream(module, 0)


# ---------------------------------------------------------------------------------------------
# Against moshi's streaming MimiModel


def test_streaming_matches_moshi_streaming_mimi():
    """moshi's `MimiModel.streaming(2)` fed 2 frames at a time (encode, then decode of those
    codes) against our streams of the same chunks: codes identical, audio within 1e-4.

    4 frames = 8 encoder frames, inside the transformers' window (context 10): beyond it moshi
    0.2.13's streaming departs from its own offline output (its ring KV cache holds `context`
    slots, so a chunk's new keys overwrite keys its first queries still see offline: latent
    differences of 0.02-0.12 on these weights from frame 5 on), while ours stays equal to
    offline (`test_streaming_equals_offline`), which equals moshi's offline (test_codec.py)."""
    from tests.models.test_codec import _torch, reference_mimi

    torch = _torch()
    from audiolm.importers import mimi as mimi_import

    spec = presets.TINY_MIMI
    ref = reference_mimi(spec)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = mimi_import.params_from_state(state.__getitem__, state.keys(), spec)
    hop, frames = codec.hop_length(spec), 4
    assert frames * spec.downsample_stride <= spec.transformer.context
    wav = np.random.default_rng(2).normal(0, 0.3, (2, frames * hop)).astype(np.float32)
    ref_codes, ref_audio = [], []
    with torch.no_grad(), ref.streaming(2):
        for start in range(0, frames, 2):
            piece = torch.from_numpy(wav[:, start * hop:(start + 2) * hop])[:, None]
            c = ref.encode(piece)
            ref_codes.append(c.numpy())
            ref_audio.append(ref.decode(c).numpy()[:, 0])
    ref_codes = np.concatenate(ref_codes, axis=-1)
    ref_audio = np.concatenate(ref_audio, axis=-1)
    codes, audio = _stream(codec.build(spec), params, wav, 2)
    assert len(np.unique(ref_codes)) > 8
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(audio, ref_audio, atol=MIMI_TOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# The Code2Wav decoder


def test_code2wav_decoder_shapes_and_streaming():
    """decoder "code2wav": the codec has a `code2wav` subtree (no code embedding of its own: it
    decodes the quantized latent) and no SEANet decoder; decode gives T * hop samples whose
    first start_trim are zeros; streaming decode equals offline, any prefix of codebooks too."""
    spec = presets.with_code2wav(presets.TINY, "tiny")
    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(0))
    assert {"code2wav", "encoder", "quantizer"} <= set(params)
    assert not {"decoder", "decoder_transformer", "upsample"} & set(params)
    assert "code_embedding" not in params["code2wav"]
    hop = codec.hop_length(spec)
    trim = code2wav_lib.start_trim(spec.code2wav)
    frames = 24
    wav = np.random.default_rng(0).normal(0, 0.3, (2, frames * hop)).astype(np.float32)
    codes = np.asarray(codec.encode(module, params, wav, fast_compile=True))
    for n in (1, 2):
        audio = np.asarray(codec.decode(module, params, codes[:, :n], fast_compile=True))
        assert audio.shape == (2, frames * hop)
        assert not audio[:, :trim].any() and np.abs(audio[:, trim:]).max() > 1e-4
    # chunks of 8: the third decodes beside the last receptive_field (15) frames only
    assert code2wav_lib.receptive_field(spec.code2wav) == 15
    _, streamed = _stream(module, params, wav, 8)
    np.testing.assert_allclose(streamed, audio, atol=STREAM_TOL, rtol=0)
    fwd = module.apply({"params": params}, wav[:, :1000])
    assert fwd["audio"].shape == (2, 1000)


def test_code2wav_decoder_trains():
    """decoder=code2wav (configs/codec.py tiny): 20 Adam steps of the codec task's loss on one
    synthetic batch lower the mel loss, with the VQ terms weighted 0: the reconstruction alone
    sends gradient to the encoder, through the straight-through quantized latent that Code2Wav
    decodes (integer codes would pass none)."""
    from audiolm.presets.experiment import load_experiment_config
    from tests.codec_helpers import adam_steps

    config = load_experiment_config("configs/codec.py", "tiny,decoder=code2wav")
    config.train.loss.commit_weight = 0.0
    config.train.loss.codebook_weight = 0.0
    module, _, grads, history = adam_steps(config, 20)
    assert module.spec.decoder == "code2wav"
    for path in (("encoder", "conv_in"), ("code2wav", "decoder_out")):
        kernel = grads[path[0]][path[1]]["conv"]["kernel"]
        assert float(np.abs(kernel).max()) > 0, path
    mel = [float(m["mel_loss"]) for m in history]
    assert np.mean(mel[-3:]) < 0.7 * np.mean(mel[:3]), mel


def _model(spec) -> ml_collections.ConfigDict:
    return spec_to_section(spec)


def _rules(model):
    codec.rules(ml_collections.ConfigDict({"model": model.to_dict()}))


@pytest.mark.parametrize("change, needle", [
    (dict(upsample_rates=(8, 4)),
     r"model.code2wav.upsample_rates=\(8, 4\): total upsampling .* = 64 must equal the codec "
     r"hop .* = 128"),
    (dict(hidden_size=32), r"model.code2wav.hidden_size=32: must equal model.seanet.dimension"),
    (dict(num_codebooks=4), r"model.code2wav.num_codebooks=4: must equal "
                            r"model.quantizer.num_codebooks=2"),
    (dict(sample_rate=24000), r"model.code2wav.sample_rate=24000: must equal "
                              r"model.sample_rate=16000"),
])
def test_code2wav_decoder_rules_name_the_fields(change, needle):
    spec = presets.with_code2wav(presets.TINY, "tiny")
    _rules(_model(spec))
    bad = dataclasses.replace(spec, code2wav=dataclasses.replace(spec.code2wav, **change))
    with pytest.raises(ConfigError, match=needle):
        _rules(_model(bad))


def test_decoder_choice_rules():
    model = _model(presets.TINY)
    model.decoder = "code2wav"  # without a model.code2wav section
    with pytest.raises(ConfigError, match=r"model.code2wav=None: must be a Code2Wav section"):
        _rules(model)
    model.decoder = "hifigan"
    with pytest.raises(ConfigError, match=r"model.decoder='hifigan': must be one of"):
        _rules(model)
    with pytest.raises(ValueError, match="with_code2wav: name='mimi'"):
        presets.with_code2wav(presets.MIMI, "mimi")
