"""audiolm.audio.io: round trips, resampling and clear errors."""

import numpy as np
import pytest
import soundfile as sf

from audiolm.audio.io import AudioError, read_audio, write_audio


def _tone(seconds=0.5, rate=16000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext", ["flac", "wav"])
def test_round_trip_mono_and_stereo(tmp_path, ext):
    tone = _tone()
    write_audio(tmp_path / f"a.{ext}", tone, 16000)
    audio, rate = read_audio(tmp_path / f"a.{ext}")
    assert rate == 16000 and audio.dtype == np.float32 and audio.shape == tone.shape
    np.testing.assert_allclose(audio, tone, atol=1 / 32768 + 1e-6)  # 16-bit PCM quantisation
    stereo = np.stack([tone, -tone])
    write_audio(tmp_path / f"s.{ext}", stereo, 16000)
    audio, _ = read_audio(tmp_path / f"s.{ext}")
    assert audio.shape == (2, tone.shape[0])
    np.testing.assert_allclose(audio[1], -tone, atol=1 / 32768 + 1e-6)
    mono, _ = read_audio(tmp_path / f"s.{ext}", mono=True)
    np.testing.assert_allclose(mono, 0.0, atol=1e-4)


def test_resample_keeps_frequency(tmp_path):
    write_audio(tmp_path / "a.wav", _tone(1.0, 22050, 500.0), 22050)
    audio, rate = read_audio(tmp_path / "a.wav", 16000)
    assert rate == 16000 and abs(audio.shape[0] - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.shape[0] - 500.0) < 2.0
    with pytest.raises(AudioError, match=r"a\.wav: sample rate 22050 Hz, expected 16000"):
        read_audio(tmp_path / "a.wav", 16000, resample=False)


def test_clipping_not_wrapping(tmp_path):
    write_audio(tmp_path / "c.wav", np.array([1.5, -1.5, 0.25], np.float32), 8000)
    audio, _ = read_audio(tmp_path / "c.wav")
    np.testing.assert_allclose(audio, [32767 / 32768, -1.0, 0.25], atol=1e-4)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.flac").write_bytes(b"this is not audio" * 10)
    with pytest.raises(AudioError, match="junk.flac: unreadable audio"):
        read_audio(tmp_path / "junk.flac")
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: empty"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000,
             subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: contains NaN"):
        read_audio(tmp_path / "nan.wav")


def test_write_errors(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "x.wav", np.array([0.0, np.nan]), 16000)
    with pytest.raises(AudioError, match="sample_rate=0"):
        write_audio(tmp_path / "x.wav", np.zeros(4), 0)
    with pytest.raises(AudioError, match=r"shape \(1, 2, 3\)"):
        write_audio(tmp_path / "x.wav", np.zeros((1, 2, 3)), 16000)
    with pytest.raises(AudioError, match="empty"):
        write_audio(tmp_path / "x.wav", np.zeros(0), 16000)
