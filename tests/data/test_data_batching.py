"""Bucketed padded batches and the resumable iterator."""

import json

import ml_collections
import numpy as np
import pytest

import audiolm.data as data_lib
from audiolm.config import ConfigError, check_schema
from audiolm.data.batching import AudioTextDataset, BatchIterator, bucket_lengths
from audiolm.data.tokenizer import ByteTokenizer

RATE = 100  # tiny "sample rate": lengths in samples stay small


def _dataset(n=37, seed=0, max_text_len=16):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 400, size=n)
    entries = [{"audio": f"u{i}", "text": "ab" * int(rng.integers(1, 6)), "speaker": f"s{i % 3}"}
               for i in range(n)]
    clips = [rng.standard_normal(int(k)).astype(np.float32) for k in lengths]
    return AudioTextDataset(entries, clips, ByteTokenizer(), RATE, max_audio_seconds=4.0,
                            max_text_len=max_text_len)


def _iterator(ds, **kw):
    buckets = bucket_lengths((1.0, 2.0), 4.0, RATE)
    return BatchIterator(ds, 4, buckets, 16, seed=7, **kw)


def test_bucket_lengths():
    np.testing.assert_array_equal(bucket_lengths((1.5, 2.0, 4.0), 30.0, 16000),
                                  [24000, 32000, 64000, 128000, 256000, 480000])
    np.testing.assert_array_equal(bucket_lengths((1.0, 2.0), 4.0, RATE), [100, 200, 400])
    np.testing.assert_array_equal(bucket_lengths((), 3.0, RATE), [300])


def test_batches_are_padded_and_masked():
    ds = _dataset()
    it = _iterator(ds)
    seen = set()
    for _ in range(len(it)):
        b = next(it)
        assert set(b) == {"audio", "audio_mask", "text", "text_mask", "speaker", "index"}
        n = b["audio"].shape[1]
        assert n in (100, 200, 400) and b["text"].shape == (4, 16)
        assert b["audio"].dtype == np.float32 and b["text"].dtype == np.int32
        for row in range(4):
            i = int(b["index"][row])
            assert i >= 0  # training batches are full
            seen.add(i)
            k = ds.lengths[i]
            assert b["audio_mask"][row].sum() == k and b["audio_mask"][row, :k].all()
            np.testing.assert_array_equal(b["audio"][row, :k], ds.audio(i))
            assert not b["audio"][row, k:].any()
            # the smallest bucket that holds the clip
            assert k <= n and (n == 100 or k > n // 2)
            tokens = ds.tokens[i]
            np.testing.assert_array_equal(b["text"][row, :len(tokens)], tokens)
            assert b["text_mask"][row].sum() == len(tokens)
            assert not b["text"][row, len(tokens):].any()
            assert b["text"][row, 0] == 1 and b["text"][row, len(tokens) - 1] == 2
            assert ds.speakers[b["speaker"][row]] == ds.entries[i]["speaker"]
    assert len(seen) == 4 * len(it)  # no utterance twice in an epoch


def test_resume_yields_identical_batches():
    ds = _dataset()
    ref = _iterator(ds)
    stream = [next(ref) for _ in range(3 * len(ref) + 2)]  # crosses epoch boundaries
    for cut in (0, 1, len(ref), len(ref) + 3):
        first = _iterator(ds)
        for _ in range(cut):
            next(first)
        state = json.loads(json.dumps(first.get_state()))  # goes through a JSON checkpoint
        resumed = _iterator(ds)
        resumed.set_state(state)
        for expected in stream[cut:cut + len(ref) + 2]:
            got = next(resumed)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key])
    # epochs differ in order, and another seed gives another order
    assert not np.array_equal(stream[0]["index"], stream[len(ref)]["index"])
    other = BatchIterator(ds, 4, bucket_lengths((1.0, 2.0), 4.0, RATE), 16, seed=8)
    assert any(not np.array_equal(next(other)["index"], stream[i]["index"]) for i in range(3))


def test_state_mismatch_is_refused():
    it = _iterator(_dataset())
    state = it.get_state()
    with pytest.raises(ValueError, match="seed"):
        BatchIterator(it.dataset, 4, it.buckets, 16, seed=1).set_state(state)
    with pytest.raises(ValueError, match="data changed"):
        _iterator(_dataset(n=30)).set_state(state)


def test_eval_pass_covers_everything_once_in_order():
    ds = _dataset()
    it = _iterator(ds, shuffle=False, repeat=False, drop_remainder=False)
    batches = list(it)
    indices = np.concatenate([b["index"] for b in batches])
    real = indices[indices >= 0]
    assert sorted(real.tolist()) == list(range(len(ds)))
    for b in batches:  # padding rows are fully masked
        pad = b["index"] < 0
        assert not b["audio_mask"][pad].any() and not b["text_mask"][pad].any()
        assert (b["speaker"][pad] == -1).all()
    assert list(_iterator(ds, shuffle=False, repeat=False, drop_remainder=False))[0]["index"] \
        .tolist() == batches[0]["index"].tolist()
    with pytest.raises(StopIteration):
        next(it)


def test_length_limits_filter():
    rng = np.random.default_rng(0)
    entries = [{"audio": "long", "text": "a"}, {"audio": "wordy", "text": "a" * 40},
               {"audio": "ok", "text": "fine"}]
    clips = [rng.standard_normal(500).astype(np.float32),
             rng.standard_normal(50).astype(np.float32),
             rng.standard_normal(50).astype(np.float32)]
    ds = AudioTextDataset(entries, clips, ByteTokenizer(), RATE, max_audio_seconds=4.0,
                          max_text_len=16)
    assert [e["audio"] for e in ds.entries] == ["ok"]
    assert [name for name, _ in ds.filtered] == ["long", "wordy"]
    assert "max_audio_seconds" in ds.filtered[0][1] and "max_text_len" in ds.filtered[1][1]
    assert ds.speaker_ids.tolist() == [-1]


def test_defaults_schema_and_validation():
    config = ml_collections.ConfigDict({"data": data_lib.DEFAULTS.to_dict()})
    check_schema(config, "data", data_lib.DEFAULTS)
    data_lib.validate_config(config)
    for key, value, match in (("name", "wav", "data.name"), ("batch_size", 0, "data.batch_size"),
                              ("on_bad_file", "warn", "data.on_bad_file"),
                              ("tokenizer", "sentencepiece", "data.spm_path"),
                              ("name", "manifest", "data.manifest"),
                              ("bucket_seconds", (1.0, -2.0), "data.bucket_seconds")):
        bad = ml_collections.ConfigDict({"data": data_lib.DEFAULTS.to_dict()})
        bad.data[key] = value
        with pytest.raises(ConfigError, match=match):
            data_lib.validate_config(bad)


def test_speech_synth_end_to_end(tmp_path):
    pytest.importorskip("espeakng_loader")
    cfg = {"name": "speech_synth", "cache_dir": str(tmp_path), "num_train": 8,
           "num_validation": 2, "num_test": 2, "num_speakers": 4, "num_workers": 1,
           "batch_size": 4, "tokenizer": "chars"}
    ds = data_lib.make_dataset(cfg, "train")
    assert len(ds) == 8 and ds.sample_rate == 16000 and ds.clips[0].dtype == np.int16
    assert len(ds.speakers) == 4 and (ds.speaker_ids >= 0).all()
    it = data_lib.make_iterator(cfg, "train", dataset=ds)
    b = next(it)
    assert b["audio"].shape[1] in bucket_lengths(data_lib.DEFAULTS.bucket_seconds, 30.0, 16000)
    i = int(b["index"][0])
    assert ds.tokenizer.decode(b["text"][0]) == ds.text(i)
    test = list(data_lib.make_iterator(cfg, "test"))
    assert sum(int((t["index"] >= 0).sum()) for t in test) == 2
