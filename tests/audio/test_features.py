"""Whisper-style log-mel in jnp vs transformers.WhisperFeatureExtractor (fp32, tol 1e-4)."""

import numpy as np
import pytest

from audiolm.audio import features as F

SR, N_FFT, HOP, N_MELS = 16000, 400, 160, 128
TOL = 1e-4  # measured max abs error: ~3e-5 (float32 FFTs on both sides)


def _clip(n, seed=0):
    """Chirp with amplitude modulation, noise and a silent stretch (wide dynamic range)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t) * (1.2 + np.sin(2 * np.pi * 3 * t))
    x += 0.01 * rng.standard_normal(n)
    x[n // 3: n // 3 + n // 8] = 0.0
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    transformers = pytest.importorskip("transformers")
    return transformers.WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=SR,
                                                hop_length=HOP, n_fft=N_FFT)


def test_mel_filters_match_reference(extractor):
    ours = F.mel_filters(SR, N_FFT, N_MELS, 0.0, 8000.0)
    assert ours.shape == (N_FFT // 2 + 1, N_MELS)
    np.testing.assert_allclose(ours, extractor.mel_filters, atol=1e-7, rtol=0)


@pytest.mark.parametrize("n", [SR * 3 + 77, 12_345])
def test_log_mel_matches_whisper_extractor(extractor, n):
    x = _clip(n, seed=n)
    ref = extractor(x, sampling_rate=SR, return_tensors="np",
                    padding="do_not_pad").input_features[0]  # [n_mels, frames]
    ours, lengths = F.log_mel(x, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                              f_max=8000.0)
    assert ours.shape == (1, n // HOP, N_MELS) and int(lengths[0]) == n // HOP
    err = float(np.abs(np.asarray(ours[0]).T - ref).max())
    assert err <= TOL, err


def test_padded_batch_rows_equal_unpadded_clips():
    """A row's valid frames do not depend on the padding of its batch (except the frames that
    see the padding through the STFT window, i.e. the last n_fft/2 samples)."""
    a, b = _clip(8000, 1), _clip(5000, 2)
    batch = np.zeros((2, 8000), np.float32)
    batch[0], batch[1, :5000] = a, b
    feats, lengths = F.log_mel(batch, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                               lengths=np.array([8000, 5000]))
    assert lengths.tolist() == [50, 31]
    single, _ = F.log_mel(a, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    np.testing.assert_allclose(feats[0], single[0], atol=1e-6)
    single_b, _ = F.log_mel(b, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    inner = 31 - N_FFT // 2 // HOP - 1  # frames whose window ends before the clip end
    np.testing.assert_allclose(feats[1, :inner], single_b[0, :inner], atol=1e-4)
    assert float(np.abs(np.asarray(feats[1, 31:])).max()) == 0.0  # padding frames are zero


def test_bad_input_raises():
    with pytest.raises(ValueError, match="waveform must be"):
        F.log_mel(np.zeros((1, 2, 3), np.float32), sample_rate=SR, n_fft=N_FFT, hop_length=HOP,
                  n_mels=N_MELS)
    with pytest.raises(ValueError, match="floating"):
        F.log_mel(np.zeros((1, 1000), np.int32), sample_rate=SR, n_fft=N_FFT, hop_length=HOP,
                  n_mels=N_MELS)
    with pytest.raises(ValueError, match="reflect padding"):
        F.log_mel(np.zeros((1, 100), np.float32), sample_rate=SR, n_fft=N_FFT, hop_length=HOP,
                  n_mels=N_MELS)
    with pytest.raises(ValueError, match="f_max"):
        F.mel_filters(SR, N_FFT, N_MELS, 0.0, 9000.0)
