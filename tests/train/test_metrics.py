"""MetricsWriter: metrics.jsonl plus TensorBoard scalars, audio, spectrogram images, text and
hparams, read back from the event file with the protobufs tensorboardX ships."""

import io
import json
import os
import struct

import numpy as np
import pytest
import soundfile

from audiolm.audio import features
from audiolm.train import metrics as metrics_lib


def read_events(logdir):
    """tag -> [(step, Summary.Value)] of every TFRecord in `logdir`'s event files."""
    from tensorboardX.proto import event_pb2

    tags = {}
    for name in sorted(os.listdir(logdir)):
        if not name.startswith("events.out.tfevents"):
            continue
        data = open(os.path.join(logdir, name), "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, value))
            i += 12 + n + 4
    return tags


def test_asr_like_run_writes_audio_spectrogram_and_transcripts(tmp_path):
    sr = 16000
    t = np.arange(sr // 2) / sr
    wav = (0.5 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, t.size)).astype(np.float32)
    mel, _ = features.log_mel(wav, sample_rate=sr, n_fft=400, hop_length=160, n_mels=40)
    writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=2)
    writer.hparams({"train": {"learning_rate": 1e-3, "optimizer": "adamw"}, "seed": 0})
    writer.start(0)
    for step in (1, 2):
        writer.write(step, {"loss": np.float32(3.0 - step)}, "train")
    writer.audio("test/utt0", wav, sr, step=2)
    image = metrics_lib.spectrogram_image(np.asarray(mel[0]))
    writer.image("test/utt0_mel", image, step=2)
    writer.text("test/transcripts", "| ref | hyp |\n|---|---|\n| a cat | a cap |", step=2)
    writer.close()

    tags = read_events(str(tmp_path / "tensorboard"))
    assert [s for s, _ in tags["train/loss"]] == [1, 2]
    assert [v.simple_value for _, v in tags["train/loss"]] == [2.0, 1.0]
    ((step, audio),) = tags["test/utt0"]
    assert step == 2 and audio.audio.sample_rate == sr and audio.audio.length_frames == wav.size
    decoded, rate = soundfile.read(io.BytesIO(audio.audio.encoded_audio_string), dtype="float32")
    assert rate == sr
    np.testing.assert_allclose(decoded, wav, atol=1 / 2**15)  # 16-bit PCM round trip
    ((_, img),) = tags["test/utt0_mel"]
    assert (img.image.height, img.image.width) == (40, mel.shape[1])
    from PIL import Image

    png = np.asarray(Image.open(io.BytesIO(img.image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(png, image)
    ((_, text),) = tags["test/transcripts/text_summary"]
    assert b"a cap" in text.tensor.string_val[0]
    assert "_hparams_/session_start_info" in tags and "_hparams_/experiment" in tags
    # metrics.jsonl is unchanged by the TensorBoard side
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [(r["step"], r["split"], r["loss"]) for r in rows] == [(1, "train", 2.0),
                                                                   (2, "train", 1.0)]


def test_spectrogram_image_orientation_and_range():
    mel = np.full((5, 4), -10.0, np.float32)
    mel[:, 0] = 0.0  # loud lowest band
    img = metrics_lib.spectrogram_image(mel)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[-1, 0], [253, 231, 37])  # bottom row = band 0, brightest
    np.testing.assert_array_equal(img[0, 0], [68, 1, 84])  # the minimum: darkest
    half = metrics_lib.spectrogram_image(mel, dynamic_range=20.0)
    np.testing.assert_array_equal(half[0, 0], [33, 145, 140])  # 10 below the max of 20: middle


@pytest.mark.parametrize("call, match", [
    (lambda w: w.audio("a", np.zeros((4, 3)), 16000, 0), r"wav must be .*shape \(4, 3\)"),
    (lambda w: w.audio("a", np.zeros(4), 0, 0), "sample_rate=0 must be a positive int"),
    (lambda w: w.image("i", np.zeros((2, 2, 3), np.float32), 0), "uint8, got .*float32"),
    (lambda w: w.text("t", 3, 0), "text must be a str, got int"),
    (lambda w: metrics_lib.spectrogram_image(np.zeros(3)), r"\[frames, n_mels\]"),
])
def test_bad_inputs_name_the_argument(tmp_path, call, match):
    writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=1, tensorboard=False)
    with pytest.raises(ValueError, match=match):
        call(writer)
