"""Reading and writing audio files with soundfile, resampling with soxr.

`read_audio(path, sample_rate=None)` -> (float32 [N] for mono or [C, N], rate).
`write_audio(path, audio, sample_rate)` writes float audio in [-1, 1] (16-bit PCM for FLAC/WAV
unless `subtype` says otherwise).

Every failure is an `AudioError` that names the file and the problem, so a data loader can report
bad files by name and skip them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class AudioError(ValueError):
    """A file cannot be used as audio: unreadable, empty, NaN/inf, or at the wrong rate."""


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, *, mono: bool = False,
               resample: bool = True) -> tuple[np.ndarray, int]:
    """Reads `path` as float32.

    Args:
      path: any format soundfile reads (WAV, FLAC, OGG, MP3).
      sample_rate: target rate; None keeps the file's rate. When the file's rate differs it is
        resampled with soxr, or, with `resample=False`, an AudioError is raised.
      mono: average channels to one.
    Returns:
      (audio, rate): audio is [N] for mono files (or `mono=True`) and [C, N] for multichannel.
    Raises:
      AudioError: unreadable/corrupt file, no samples, NaN or inf samples, wrong rate.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # [N, C]
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: unreadable audio ({type(e).__name__}: {e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN or inf samples")
    if mono:
        data = data.mean(axis=1, keepdims=True)
    if sample_rate is not None and int(rate) != int(sample_rate):
        if not resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                             "(resampling is disabled)")
        data = resample_audio(data, int(rate), int(sample_rate))
        rate = int(sample_rate)
    audio = np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.T, dtype=np.float32)
    return audio, int(rate)


def resample_audio(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resamples with soxr (high quality). audio: [N] or [N, C] (time first) float."""
    import soxr

    if in_rate == out_rate:
        return np.asarray(audio, np.float32)
    return np.asarray(soxr.resample(np.asarray(audio, np.float32), in_rate, out_rate, quality="HQ"),
                      np.float32)


def write_audio(path: str | os.PathLike, audio: Any, sample_rate: int, *,
                subtype: str | None = None) -> None:
    """Writes `audio` ([N] mono or [C, N]) to `path`; the format comes from the extension.

    Raises AudioError for NaN/inf samples, a non-positive rate, or a shape that is not 1-d/2-d.
    Float values outside [-1, 1] are clipped for PCM subtypes.
    """
    import soundfile as sf

    path = os.fspath(path)
    audio = np.asarray(audio)
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) \
            or sample_rate <= 0:
        raise AudioError(f"{path}: sample_rate={sample_rate!r} must be a positive int")
    if audio.ndim not in (1, 2):
        raise AudioError(f"{path}: audio shape {audio.shape}: expected [N] or [C, N]")
    if audio.size == 0:
        raise AudioError(f"{path}: refusing to write empty audio")
    if np.issubdtype(audio.dtype, np.floating) and not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio contains NaN or inf samples")
    data = audio if audio.ndim == 1 else audio.T
    ext = os.path.splitext(path)[1].lower()
    if subtype is None and ext in (".flac", ".wav"):
        subtype = "PCM_16"
    if np.issubdtype(data.dtype, np.floating) and (subtype or "").startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)  # libsndfile wraps around instead of clipping
    try:
        sf.write(path, data, int(sample_rate), subtype=subtype)
    except Exception as e:
        raise AudioError(f"{path}: cannot write ({type(e).__name__}: {e})") from None
