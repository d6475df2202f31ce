"""Battery: every bad manifest line, audio file and utterance is reported by name with its reason
(truncated, too short, empty text, duplicate, conflicting, out-of-alphabet counted, cancelling
channels, non-UTF-8 bytes); thresholds are validated config fields."""

import json
import logging
import os

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from audiolm import config as config_lib
from audiolm import data as data_lib
from audiolm.data.batching import AudioTextDataset
from audiolm.data.manifest import BadDataError, load_manifest
from audiolm.data.tokenizer import ByteTokenizer, CharTokenizer

RATE = 16000


def _noise(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(max(int(seconds * RATE), 1))).astype(np.float32)


def _manifest(tmp_path, rows, raw_lines=()):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps(r).encode() for r in rows] + list(raw_lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _wav(tmp_path, name, audio=None):
    sf.write(tmp_path / name, _noise(0.5) if audio is None else audio, RATE)
    return name


def _reasons(path, **kw):
    entries, _, report = load_manifest(str(path), "train", RATE, holdout_fraction=0.0, **kw)
    return entries, {name.rsplit("/", 1)[-1]: reason for name, reason in report.bad}


def test_truncated_wav_is_named(tmp_path):
    name = _wav(tmp_path, "cut.wav", _noise(1.0))
    size = os.path.getsize(tmp_path / name)
    with open(tmp_path / name, "r+b") as f:
        f.truncate(size // 2)
    _wav(tmp_path, "ok.wav")
    entries, reasons = _reasons(_manifest(tmp_path, [{"audio": "cut.wav", "text": "a b"},
                                                     {"audio": "ok.wav", "text": "c d"}]))
    assert [e["text"] for e in entries] == ["c d"]
    assert "truncated" in reasons["cut.wav"] and "header promises 32000 bytes" in reasons["cut.wav"]


def test_wav_with_trailing_chunk_is_not_truncated(tmp_path):
    name = _wav(tmp_path, "ok.wav")
    with open(tmp_path / name, "ab") as f:
        f.write(b"LIST\x04\x00\x00\x00abcd")  # a metadata chunk after the data
    entries, reasons = _reasons(_manifest(tmp_path, [{"audio": name, "text": "fine"}]))
    assert len(entries) == 1 and reasons == {}


@pytest.mark.parametrize("text", ["", " ", "   ", "\t", "\n\t ", "\u3000"])
def test_empty_or_whitespace_transcript_in_manifest(tmp_path, text):
    _wav(tmp_path, "a.wav")
    entries, reasons = _reasons(_manifest(tmp_path, [{"audio": "a.wav", "text": text}]))
    assert entries == [] and "empty or whitespace-only transcript" in reasons["m.jsonl:1"]


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_transcript_file_in_directory(tmp_path, text):
    _wav(tmp_path, "a.wav")
    (tmp_path / "a.txt").write_text(text)
    entries, reasons = _reasons(tmp_path)
    assert entries == [] and "empty or whitespace-only" in reasons["a.txt"]


def test_non_utf8_transcript_file_in_directory(tmp_path):
    _wav(tmp_path, "a.wav")
    (tmp_path / "a.txt").write_bytes(b"caf\xe9")
    _, reasons = _reasons(tmp_path)
    assert "unreadable transcript" in reasons["a.txt"] and "utf-8" in reasons["a.txt"]


@pytest.mark.parametrize("bad,column", [(b"\xff", 11), (b"\xe9", 11), (b"\xc3\x28", 11),
                                        (b"\x80\x80", 11)])
def test_non_utf8_byte_names_file_line_and_byte(tmp_path, bad, column):
    _wav(tmp_path, "a.wav")
    _wav(tmp_path, "b.wav")
    raw = b'{"text": "' + bad + b'", "audio": "b.wav"}'
    entries, reasons = _reasons(_manifest(tmp_path, [{"audio": "a.wav", "text": "fine"}],
                                          raw_lines=[raw]))
    assert [e["text"] for e in entries] == ["fine"]  # the load goes on past the bad line
    assert reasons["m.jsonl:2"] == f"not UTF-8 (byte 0x{bad[0]:02x} at column {column})"


def test_duplicate_rows_keep_the_first(tmp_path):
    _wav(tmp_path, "a.wav")
    rows = [{"audio": "a.wav", "text": "hello there"}, {"audio": "a.wav", "text": "hello  there"},
            {"audio": "a.wav", "text": "hello there"}]
    entries, reasons = _reasons(_manifest(tmp_path, rows))
    assert [e["text"] for e in entries] == ["hello there"]
    assert reasons["m.jsonl:2"].startswith("duplicate of line 1")
    assert reasons["m.jsonl:3"].startswith("duplicate of line 1")


def test_conflicting_transcripts_drop_every_line_of_that_audio(tmp_path):
    _wav(tmp_path, "a.wav")
    _wav(tmp_path, "b.wav")
    rows = [{"audio": "a.wav", "text": "one"}, {"audio": "b.wav", "text": "fine"},
            {"audio": "a.wav", "text": "two"}]
    entries, reasons = _reasons(_manifest(tmp_path, rows))
    assert [e["text"] for e in entries] == ["fine"]
    for line in ("m.jsonl:1", "m.jsonl:3"):
        assert "conflicting transcripts" in reasons[line]
        assert "'one'" in reasons[line] and "'two'" in reasons[line]


def test_stereo_channels_that_cancel_are_named_as_such(tmp_path):
    x = _noise(0.5)
    sf.write(tmp_path / "cancel.wav", np.stack([x, -x], axis=1), RATE)
    sf.write(tmp_path / "silent.wav", np.zeros((RATE // 2, 2), np.float32), RATE)
    rows = [{"audio": "cancel.wav", "text": "a"}, {"audio": "silent.wav", "text": "b"}]
    _, reasons = _reasons(_manifest(tmp_path, rows))
    assert "2 channels cancel" in reasons["cancel.wav"] and "silent" not in reasons["cancel.wav"]
    assert reasons["silent.wav"].startswith("silent only")


def test_error_policy_lists_the_new_reasons_together(tmp_path):
    _wav(tmp_path, "a.wav")
    rows = [{"audio": "a.wav", "text": " "}, {"audio": "a.wav", "text": "x"},
            {"audio": "a.wav", "text": "x"}]
    with pytest.raises(BadDataError) as info:
        load_manifest(str(_manifest(tmp_path, rows)), "train", RATE, holdout_fraction=0.0,
                      on_bad_file="error")
    assert "m.jsonl:1: empty or whitespace-only" in str(info.value)
    assert "m.jsonl:3: duplicate of line 2" in str(info.value)


@pytest.mark.parametrize("samples", [1, 10, 160, 1599])
def test_too_short_clips_are_named(samples):
    clips = [np.full(samples, 0.1, np.float32), np.full(4000, 0.1, np.float32)]
    entries = [{"audio": "short", "text": "a"}, {"audio": "ok", "text": "b"}]
    ds = AudioTextDataset(entries, clips, ByteTokenizer(), RATE, max_audio_seconds=1.0,
                          min_audio_seconds=0.1, max_text_len=16)
    assert [e["audio"] for e in ds.entries] == ["ok"]
    assert ds.filtered[0][0] == "short"
    assert f"too short: {samples} samples" in ds.filtered[0][1]
    assert "data.min_audio_seconds=0.1" in ds.filtered[0][1]


def test_make_dataset_applies_min_audio_seconds(tmp_path):
    _wav(tmp_path, "tiny.wav", _noise(0.01))
    _wav(tmp_path, "one.wav", _noise(1 / RATE, seed=3))
    _wav(tmp_path, "ok.wav")
    rows = [{"audio": n, "text": n} for n in ("tiny.wav", "one.wav", "ok.wav")]
    path = _manifest(tmp_path, rows)
    ds = data_lib.make_dataset({"name": "manifest", "manifest": str(path),
                                "holdout_fraction": 0.0}, "train")
    assert [e["text"] for e in ds.entries] == ["ok.wav"]
    assert sorted(n.rsplit("/", 1)[-1] for n, _ in ds.filtered) == ["one.wav", "tiny.wav"]


def test_out_of_alphabet_characters_are_counted(caplog):
    entries = [{"audio": "a", "text": "héllo wörld"}, {"audio": "b", "text": "ÉÉ ok"},
               {"audio": "c", "text": "fine"}]
    clips = [np.full(400, 0.1, np.float32)] * 3
    with caplog.at_level(logging.WARNING, logger="audiolm.data"):
        ds = AudioTextDataset(entries, clips, CharTokenizer(), RATE, max_audio_seconds=1.0,
                              max_text_len=32)
    assert len(ds) == 3  # kept, as unk
    assert ds.unknown_chars == {"é": 1, "ö": 1, "É": 2}
    assert "4 characters outside the tokenizer's alphabet in 2 utterances" in caplog.text
    assert "'É' x2" in caplog.text
    plain = AudioTextDataset(entries, clips, ByteTokenizer(), RATE, max_audio_seconds=1.0,
                             max_text_len=32)
    assert plain.unknown_chars == {}


def _data_config(**fields):
    config = ml_collections.ConfigDict({"data": data_lib.DEFAULTS.to_dict()})
    for key, value in fields.items():
        config.data[key] = value
    return config


@pytest.mark.parametrize("value,rule", [(-0.1, "in [0"), (float("nan"), "finite"),
                                        (30.0, "data.max_audio_seconds=30.0"),
                                        (100.0, "data.max_audio_seconds")])
def test_min_audio_seconds_is_validated(value, rule):
    with pytest.raises(config_lib.ConfigError, match=r"data\.min_audio_seconds=") as info:
        data_lib.validate_config(_data_config(min_audio_seconds=value))
    assert rule in str(info.value)


def test_min_audio_seconds_type_is_checked():
    config = ml_collections.ConfigDict(
        {"data": {**data_lib.DEFAULTS.to_dict(), "min_audio_seconds": "0.1"}})
    with pytest.raises(config_lib.ConfigError, match=r"data\.min_audio_seconds='0\.1'"):
        config_lib.check_schema(config, "data", data_lib.DEFAULTS)
