"""audiolm.data.cache: keyed chunked array cache (round trip, keys, atomic shards)."""

import os

import numpy as np
import pytest

from audiolm.data.cache import ArrayCache, cache_key


def test_cache_key_canonical_and_sensitive():
    a = cache_key(feature={"n_mels": 80, "hop": 160}, source="x.jsonl", version=1)
    assert a == cache_key(version=1, source="x.jsonl", feature={"hop": 160, "n_mels": 80})
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != cache_key(feature={"n_mels": 64, "hop": 160}, source="x.jsonl", version=1)
    assert a != cache_key(feature={"n_mels": 80, "hop": 160}, source="x.jsonl", version=2)
    with pytest.raises(TypeError, match="part feature="):
        cache_key(feature=object())


def test_round_trip_across_instances(tmp_path):
    key = cache_key(codec="mimi", digest="abc")
    arrays = {"utt-1": np.arange(12, dtype=np.int32).reshape(3, 4),
              "utt-2": np.linspace(0, 1, 5, dtype=np.float32), 7: np.ones((2,), np.float16)}
    ArrayCache(str(tmp_path), key).put_many(arrays)
    got = ArrayCache(str(tmp_path), key).get_many(["utt-2", "utt-1", 7, "absent"])
    assert sorted(map(str, got)) == ["7", "utt-1", "utt-2"]
    for item in arrays:
        np.testing.assert_array_equal(got[item], arrays[item])
        assert got[item].dtype == arrays[item].dtype


def test_other_key_misses(tmp_path):
    ArrayCache(str(tmp_path), cache_key(n_mels=80)).put_many({"a": np.zeros(3)})
    other = ArrayCache(str(tmp_path), cache_key(n_mels=64))
    assert other.get_many(["a"]) == {} and "a" not in other


def test_get_or_compute_computes_only_missing_in_batches(tmp_path):
    cache = ArrayCache(str(tmp_path), cache_key(f="square"))
    calls = []

    def compute(ids):
        calls.append(list(ids))
        return [np.full((2,), i * i, np.int64) for i in ids]

    first = cache.get_or_compute([1, 2, 3, 4, 5], compute, batch=2)
    assert calls == [[1, 2], [3, 4], [5]]
    assert [int(first[i][0]) for i in range(1, 6)] == [1, 4, 9, 16, 25]
    again = ArrayCache(str(tmp_path), cache_key(f="square")).get_or_compute(
        [4, 5, 6], compute, batch=2)
    assert calls[-1] == [6] and int(again[6][1]) == 36 and int(again[4][0]) == 16
    with pytest.raises(ValueError, match="compute returned 0 arrays for 1 ids"):
        cache.get_or_compute([9], lambda ids: [])


def test_partial_shard_is_ignored(tmp_path):
    key = cache_key(x=1)
    cache = ArrayCache(str(tmp_path), key)
    cache.put_many({"good": np.arange(3)})
    directory = os.path.join(str(tmp_path), key)
    # A crash after the .npz was renamed but before its .json: no entry; likewise a torn .npz
    # under a temporary name and a truncated .json.
    np.savez(os.path.join(directory, "deadbeef.npz"), a0=np.arange(5))
    with open(os.path.join(directory, ".cafe.tmp.npz"), "wb") as f:
        f.write(b"PK\x03\x04torn")
    with open(os.path.join(directory, "feed.json"), "w") as f:
        f.write('{"ids": ["tor')
    fresh = ArrayCache(str(tmp_path), key)
    assert len(fresh) == 1
    assert set(fresh.get_many(["good", "a0", "tor"])) == {"good"}


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="key='../x'"):
        ArrayCache(str(tmp_path), "../x")
    cache = ArrayCache(str(tmp_path), cache_key(x=2))
    with pytest.raises(TypeError, match=r"cache id \(1, 2\)"):
        cache.put_many({(1, 2): np.zeros(1)})
    with pytest.raises(ValueError, match="batch=0"):
        cache.get_or_compute(["a"], lambda ids: [np.zeros(1)], batch=0)


def test_prepare_split_reports_writes_manifest_and_caches_features(tmp_path):
    import json

    import ml_collections
    import soundfile as sf

    from audiolm.data.cache import file_id
    from experiments.prepare_data import log_mel_key, prepare_split

    rate = 16000
    with open(tmp_path / "all.jsonl", "w") as f:
        for i in range(5):
            t = np.arange(int((0.4 + 0.2 * i) * rate)) / rate
            peak = 0.0 if i == 2 else 0.3  # clip 2 is silent: bad only once decoded
            sf.write(str(tmp_path / f"c{i}.wav"), peak * np.sin(2 * np.pi * 220 * t), rate)
            f.write(json.dumps({"audio": f"c{i}.wav", "text": f"clip {i}"}) + "\n")
        f.write(json.dumps({"audio": "gone.wav", "text": "nothing"}) + "\n")
    config = ml_collections.ConfigDict({
        "data": {"name": "manifest", "manifest": str(tmp_path / "all.jsonl"),
                 "holdout_fraction": 0.0},
        "model": {"audio": {"sample_rate": rate, "n_fft": 400, "hop_length": 160, "n_mels": 16,
                            "f_min": 0.0, "f_max": 8000.0}}})
    cache = ArrayCache(str(tmp_path / "features"), log_mel_key(config))
    report = prepare_split(config, "train", str(tmp_path / "out"), cache, feature_batch=2)
    assert report["kept"] == 4 and report["features_computed"] == 4
    assert sorted(os.path.basename(n) for n, _ in report["bad"]) == ["c2.wav", "gone.wav"]
    rows = [json.loads(line) for line in open(tmp_path / "out" / "train.jsonl")]
    assert [os.path.basename(r["audio"]) for r in rows] == ["c0.wav", "c1.wav", "c3.wav",
                                                            "c4.wav"]
    assert rows[3]["duration"] == 1.2
    feats = cache.get_many([file_id(str(tmp_path / "c3.wav"))])
    (mel,) = feats.values()
    assert mel.shape == (int(1.0 * rate) // 160, 16) and np.isfinite(mel).all()
    again = prepare_split(config, "train", str(tmp_path / "out"), cache, feature_batch=2)
    assert again["features_cached"] == 4 and again["features_computed"] == 0
    config.model.audio.n_mels = 8  # another feature config: another key, nothing reused
    assert ArrayCache(str(tmp_path / "features"), log_mel_key(config)).get_many(feats) == {}
