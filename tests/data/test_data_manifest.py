"""User manifests and audio directories: bad lines/files are reported by name and skipped, or
raised together; good files are read, resampled and kept."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from audiolm.config import ConfigError
from audiolm.data import make_dataset
from audiolm.data.manifest import BadDataError, load_manifest, split_of


def _speech_like(seconds, rate, seed):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    """good: 3 files (one at 22.05 kHz, one stereo); bad: corrupt, empty, silent, NaN, missing."""
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "good0.wav", _speech_like(0.5, 16000, 0), 16000)
    sf.write(d / "good1.flac", _speech_like(0.75, 22050, 1), 22050)
    sf.write(d / "good2.wav", np.stack([_speech_like(0.25, 16000, 2)] * 2, axis=1), 16000)
    (d / "corrupt.flac").write_bytes(b"fLaC" + b"\x00garbage" * 50)
    sf.write(d / "empty.wav", np.zeros((0,), np.float32), 16000)
    sf.write(d / "silent.wav", np.zeros(8000, np.float32), 16000)
    nan = _speech_like(0.5, 16000, 3)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    names = ["good0.wav", "good1.flac", "good2.wav", "corrupt.flac", "empty.wav", "silent.wav",
             "nan.wav", "missing.wav"]
    lines = [json.dumps({"audio": f"audio/{n}", "text": f"text {n}", "speaker": n[:4]})
             for n in names]
    lines += ["{not json", json.dumps({"text": "no audio"}), json.dumps([1, 2]),
              json.dumps({"audio": "audio/good0.wav", "text": 5})]
    manifest = tmp_path / "all.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return tmp_path, manifest


def _load(manifest, **kw):
    # holdout 0: every sentence lands in train.
    return load_manifest(str(manifest), "train", 16000, holdout_fraction=0.0, **kw)


def test_bad_files_and_lines_are_reported_and_skipped(corpus, caplog):
    _, manifest = corpus
    with caplog.at_level(logging.WARNING, logger="audiolm.data"):
        entries, clips, report = _load(manifest)
    assert [e["text"] for e in entries] == ["text good0.wav", "text good1.flac", "text good2.wav"]
    assert [c.shape[0] for c in clips] == [8000, 12000, 4000]  # 22.05 kHz resampled, stereo -> mono
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in clips)
    assert [e["duration"] for e in entries] == [0.5, 0.75, 0.25]
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in report.bad}
    assert "unreadable" in reasons["corrupt.flac"]
    assert "empty" in reasons["empty.wav"]
    assert "silent only" in reasons["silent.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert "no such file" in reasons["missing.wav"]
    assert "not valid JSON" in reasons["all.jsonl:9"]
    assert "'audio'" in reasons["all.jsonl:10"]
    assert "JSON object" in reasons["all.jsonl:11"]
    assert "'text'" in reasons["all.jsonl:12"]
    assert len(report.bad) == 9 and report.kept == 3
    summary = report.summary()
    assert "kept 3, skipped 9" in summary and "corrupt.flac" in summary
    assert "corrupt.flac" in caplog.text and "nan.wav" in caplog.text


def test_error_policy_raises_after_full_scan(corpus):
    _, manifest = corpus
    with pytest.raises(BadDataError) as info:
        _load(manifest, on_bad_file="error")
    message = str(info.value)
    for name in ("corrupt.flac", "empty.wav", "silent.wav", "nan.wav", "missing.wav",
                 "all.jsonl:9"):
        assert name in message
    with pytest.raises(ConfigError, match="data.on_bad_file='ignore'"):
        _load(manifest, on_bad_file="ignore")


def test_wrong_rate_is_bad_without_resampling(corpus):
    _, manifest = corpus
    entries, _, report = _load(manifest, resample=False)
    assert "text good1.flac" not in [e["text"] for e in entries]
    assert any(name.endswith("good1.flac") and "22050 Hz" in reason
               for name, reason in report.bad)


def test_directory_source_with_transcripts(tmp_path):
    d = tmp_path / "corpus"
    (d / "alice").mkdir(parents=True)
    sf.write(d / "alice" / "a.wav", _speech_like(0.5, 16000, 0), 16000)
    (d / "alice" / "a.txt").write_text("hello there\n")
    sf.write(d / "alice" / "b.wav", _speech_like(0.5, 16000, 1), 16000)  # no transcript
    sf.write(d / "c.flac", _speech_like(0.25, 8000, 2), 8000)
    (d / "c.txt").write_text("good morning")
    entries, clips, report = load_manifest(str(d), "train", 16000, holdout_fraction=0.0)
    assert [(e["text"], e["speaker"]) for e in entries] == [("good morning", ""),
                                                            ("hello there", "alice")]
    assert clips[0].shape == (4000,)
    assert len(report.bad) == 1 and report.bad[0][0].endswith("b.wav")
    assert "no transcript" in report.bad[0][1]


def test_hash_split_is_deterministic_and_disjoint():
    texts = [f"sentence number {i}" for i in range(2000)]
    splits = [split_of(t, 0.05) for t in texts]
    assert splits == [split_of(t, 0.05) for t in texts]
    counts = {s: splits.count(s) for s in ("train", "validation", "test")}
    assert 50 < counts["validation"] < 150 and 50 < counts["test"] < 150


def test_make_dataset_manifest_with_split_placeholder(corpus):
    root, manifest = corpus
    (root / "train.jsonl").write_text(manifest.read_text())
    cfg = {"name": "manifest", "manifest": str(root / "{split}.jsonl"), "max_text_len": 32}
    ds = make_dataset(cfg, "train")
    assert len(ds) == 3 and ds.report.kept == 3 and len(ds.report.bad) == 9
    assert ds.speakers == ["good"] and list(ds.speaker_ids) == [0, 0, 0]
    assert ds.tokenizer.decode(ds.tokens[0]) == "text good0.wav"
    with pytest.raises(FileNotFoundError, match="validation.jsonl"):
        make_dataset(cfg, "validation")
    with pytest.raises(ConfigError, match="data.nope"):
        make_dataset({"nope": 1}, "train")
