"""Whisper-style log-mel features in jax.numpy (the AuT front end of Qwen3-Omni).

waveform [B, S] (float, at `sample_rate`) -> features [B, F, n_mels] (channels-last), with
F = S // hop_length frames, computed as:
  reflect-pad n_fft/2 on both sides, frames every hop_length, periodic Hann window,
  power spectrum |rfft|^2, Slaney-normalised mel filters on the Slaney mel scale,
  log10(max(mel, 1e-10)), drop the last STFT frame, max(x, max(x) - 8), (x + 4) / 4.

This equals `transformers.WhisperFeatureExtractor(feature_size=n_mels)` on an unpadded clip
(tested to 1e-4). For a padded batch, the per-utterance maximum is taken over the valid frames
only (`frame_lengths`), so an utterance's features do not depend on how much padding its batch
has; frames past the end are set to 0.

The mel filter bank is built once in numpy (`mel_filters`) and closed over as a constant.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Slaney mel scale: linear below 1 kHz, logarithmic above (librosa / HF "slaney").
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0
LOG_FLOOR = 1e-10  # clamp before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the utterance maximum


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, np.float64)
    mels = freq / _F_SP
    log_region = freq >= _MIN_LOG_HZ
    return np.where(log_region,
                    _MIN_LOG_MEL + np.log(np.maximum(freq, 1e-30) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    freq = _F_SP * mels
    log_region = mels >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), freq)


@functools.lru_cache(maxsize=16)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                f_max: float | None = None) -> np.ndarray:
    """Slaney triangular mel filters [n_fft // 2 + 1, n_mels] (float32), area-normalised."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel_filters: need 0 <= f_min={f_min} < f_max={f_max} <= "
                         f"sample_rate/2={sample_rate / 2}")
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts)
    widths = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]  # [n_freq, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (hz_pts[2:n_mels + 2] - hz_pts[:n_mels])  # Slaney area normalisation
    return filters.astype(np.float32)


@functools.lru_cache(maxsize=16)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window / HF window_function default)."""
    n = np.arange(n_fft, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def num_frames(num_samples, hop_length: int):
    """Feature frames of a clip of `num_samples` samples (Whisper drops the last STFT frame)."""
    return num_samples // hop_length


def log_mel(waveform: jax.Array, *, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
            f_min: float = 0.0, f_max: float | None = None,
            lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Log-mel features of a batch of waveforms.

    Args:
      waveform: [B, S] or [S] float samples at `sample_rate`.
      lengths: [B] int valid samples per row (default: all S).
    Returns:
      (features [B, F, n_mels] float32 with F = S // hop_length, frame_lengths [B] int32).
    """
    waveform = jnp.asarray(waveform)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2:
        raise ValueError(f"log_mel: waveform must be [B, S] or [S], got shape {waveform.shape}")
    if not jnp.issubdtype(waveform.dtype, jnp.floating):
        raise ValueError(f"log_mel: waveform must be floating point, got {waveform.dtype}")
    b, s = waveform.shape
    pad = n_fft // 2
    if s <= pad:
        raise ValueError(f"log_mel: waveform has {s} samples; reflect padding needs more than "
                         f"n_fft // 2 = {pad}")
    frames_out = num_frames(s, hop_length)
    if frames_out < 1:
        raise ValueError(f"log_mel: waveform has {s} samples, fewer than hop_length={hop_length}")
    if lengths is None:
        lengths = jnp.full((b,), s, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.shape != (b,):
        raise ValueError(f"log_mel: lengths shape {lengths.shape} must be ({b},)")
    return _log_mel(waveform, lengths, sample_rate=sample_rate, n_fft=n_fft,
                    hop_length=hop_length, n_mels=n_mels, f_min=float(f_min),
                    f_max=None if f_max is None else float(f_max))


@functools.partial(jax.jit, static_argnames=("sample_rate", "n_fft", "hop_length", "n_mels",
                                             "f_min", "f_max"))
def _log_mel(waveform, lengths, *, sample_rate, n_fft, hop_length, n_mels, f_min, f_max):
    b, s = waveform.shape
    pad = n_fft // 2
    frames_out = num_frames(s, hop_length)
    # Samples past the end are zeros, as in a zero-padded batch.
    x = jnp.where(jnp.arange(s)[None, :] < lengths[:, None], waveform.astype(jnp.float32), 0.0)
    x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    # Frames 0 .. F-1 (the final STFT frame, index F, is dropped as in Whisper).
    idx = np.arange(frames_out)[:, None] * hop_length + np.arange(n_fft)[None, :]
    frames = x[:, idx] * jnp.asarray(hann_window(n_fft))  # [B, F, n_fft]
    spec = jnp.fft.rfft(frames, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, F, n_fft//2+1]
    filters = jnp.asarray(mel_filters(sample_rate, n_fft, n_mels, f_min, f_max))
    mel = jnp.einsum("bfk,km->bfm", power, filters, precision=jax.lax.Precision.HIGHEST)
    logspec = jnp.log10(jnp.maximum(mel, LOG_FLOOR))
    frame_lengths = num_frames(lengths, hop_length)
    valid = jnp.arange(frames_out)[None, :] < frame_lengths[:, None]  # [B, F]
    peak = jnp.max(jnp.where(valid[..., None], logspec, -jnp.inf), axis=(1, 2), keepdims=True)
    logspec = jnp.maximum(logspec, peak - DYNAMIC_RANGE)
    feats = (logspec + 4.0) / 4.0
    feats = jnp.where(valid[..., None], feats, 0.0)
    return feats, frame_lengths


def log_mel_from_config(waveform: jax.Array, audio_cfg: Any,
                        lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`log_mel` with the settings of a `model.audio` config section."""
    return log_mel(waveform, sample_rate=audio_cfg.sample_rate, n_fft=audio_cfg.n_fft,
                   hop_length=audio_cfg.hop_length, n_mels=audio_cfg.n_mels,
                   f_min=audio_cfg.f_min, f_max=audio_cfg.f_max, lengths=lengths)


def random_spans(key: jax.Array, count: int, max_width: int, limit: jax.Array,
                 size: int) -> jax.Array:
    """Per row, the union of `count` random spans of w ~ U{0..max_width} positions placed inside
    [0, limit): limit [B] int -> [B, size] bool (all False when count or max_width is 0)."""
    b = limit.shape[0]
    if count == 0 or max_width == 0:
        return jnp.zeros((b, size), bool)
    w_key, s_key = jax.random.split(key)
    width = jax.random.randint(w_key, (b, count), 0, max_width + 1)
    width = jnp.minimum(width, limit[:, None])
    start = jnp.floor(jax.random.uniform(s_key, (b, count))
                      * (limit[:, None] - width + 1)).astype(jnp.int32)
    pos = jnp.arange(size)[None, None, :]
    hit = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    return jnp.any(hit, axis=1)


def spec_augment(features: jax.Array, frame_lengths: jax.Array, rng: jax.Array, *,
                 time_masks: int, time_width: int, freq_masks: int,
                 freq_width: int) -> jax.Array:
    """SpecAugment masking (Park et al. 2019; training only): per row, `time_masks` spans of
    w ~ U{0..time_width} frames placed inside the row's valid frames, and `freq_masks` bands of
    w ~ U{0..freq_width} mel bins, are set to 0 (the value of padding frames).

    features [B, F, M], frame_lengths [B] int -> features [B, F, M] (same dtype).
    """
    b, f, m = features.shape
    t_key, f_key = jax.random.split(rng)
    lengths = jnp.asarray(frame_lengths, jnp.int32)
    time = random_spans(t_key, time_masks, time_width, lengths, f)
    freq = random_spans(f_key, freq_masks, freq_width, jnp.full((b,), m, jnp.int32), m)
    masked = time[:, :, None] | freq[:, None, :]
    return jnp.where(masked, jnp.zeros((), features.dtype), features)
