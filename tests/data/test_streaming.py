"""audiolm.data.streaming: grain-streamed batches (resume, host shards, mixing, config errors)."""

import json
import os

import ml_collections
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("grain")
import grain  # noqa: E402

from audiolm import data as data_lib  # noqa: E402
from audiolm.config import ConfigError  # noqa: E402
from audiolm.data.streaming import parse_sources  # noqa: E402

RATE = 16000


def write_corpus(root, n, *, prefix="u", rate=RATE):
    """n short tones of 0.3 .. 2.1 s (several buckets) and a JSONL manifest; returns its path."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"{prefix}.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            t = np.arange(int((0.3 + (i % 7) * 0.3) * rate)) / rate
            name = f"{prefix}{i:04d}.wav"
            sf.write(os.path.join(root, name), 0.3 * np.sin(2 * np.pi * (150 + 7 * i) * t), rate,
                     subtype="PCM_16")
            f.write(json.dumps({"audio": name, "text": f"{prefix} number {i}",
                                "speaker": f"{prefix}s{i % 3}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("stream")), 40)


def grain_config(manifest, **kw):
    return {"name": "manifest", "manifest": manifest, "loader": "grain", "batch_size": 4,
            "holdout_fraction": 0.0, "loader_workers": 0, **kw}


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_grain_batches_equal_the_memory_loader(corpus):
    """Same plan, same decoding: the streamed batches are the in-memory loader's, bit for bit
    across an epoch boundary."""
    memory = data_lib.make_iterator(grain_config(corpus, loader="memory"), "train")
    stream = data_lib.make_iterator(grain_config(corpus), "train")
    assert len(stream) == len(memory) == 9  # 7 + 1 + 1 full batches of 4 in 3 buckets
    assert_same_batches(take(stream, 12), take(memory, 12))


def test_exact_resume_mid_epoch(corpus):
    config = grain_config(corpus)
    it = data_lib.make_iterator(config, "train")
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
    expected = take(it, 6)
    resumed = data_lib.make_iterator(config, "train")
    resumed.set_state(state)
    assert_same_batches(take(resumed, 6), expected)
    with pytest.raises(ValueError, match="seed=0 but this iterator has seed=5"):
        data_lib.make_iterator({**config, "seed": 5}, "train").set_state(state)
    with pytest.raises(ValueError, match="data.loader='memory'"):
        data_lib.make_iterator({**config, "loader": "memory"}, "train").set_state(state)


KILLED_RUN = """
import json, os, signal, sys
from audiolm import data as data_lib


def main():
    config, state_path = json.loads(sys.argv[1]), sys.argv[2]
    it = data_lib.make_iterator(config, "train")
    for step in range(1, 5):
        next(it)
        if step == 3:  # the checkpoint of step 3
            with open(state_path, "w") as f:
                json.dump(it.get_state(), f)
    os.kill(os.getpid(), signal.SIGKILL)  # in the middle of step 4, workers running


if __name__ == "__main__":
    main()
"""


def test_resume_after_sigkill_with_worker_processes(corpus, tmp_path):
    """A process reading through a grain worker is SIGKILLed after saving the state of step 3;
    a new iterator set to that state yields what an uninterrupted one yields from step 4 on.
    The worker dies with the process: an orphan would keep the pipes open and time out here."""
    import subprocess
    import sys

    config = grain_config(corpus, loader_workers=1)
    script, state_path = tmp_path / "run.py", tmp_path / "state.json"
    script.write_text(KILLED_RUN)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, str(script), json.dumps(config), str(state_path)],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == -9, proc.stderr[-3000:]
    resumed = data_lib.make_iterator(config, "train")
    resumed.set_state(json.loads(state_path.read_text()))
    got = take(resumed, 4)
    resumed.close()
    reference = data_lib.make_iterator(grain_config(corpus), "train")  # in-process decoding
    assert_same_batches(got, take(reference, 7)[3:])


def test_two_hosts_read_disjoint_shards_covering_the_set(corpus):
    config = grain_config(corpus)
    hosts = [data_lib.make_iterator(config, "train", train=False,
                                    shard=grain.sharding.ShardOptions(p, 2)) for p in range(2)]
    passes = [list(h) for h in hosts]
    assert len(passes[0]) == len(passes[1]) > 0
    seen = []
    for b0, b1 in zip(*passes):
        assert b0["audio"].shape == b1["audio"].shape  # one bucket per step on every host
        assert b0["index"].shape == (2,)  # batch_size / hosts rows each
        i0, i1 = set(b0["index"][b0["index"] >= 0]), set(b1["index"][b1["index"] >= 0])
        assert not i0 & i1
        seen += [*i0, *i1]
    assert sorted(seen) == list(range(40))
    with pytest.raises(ConfigError,
                       match="data.batch_size=4: must be a multiple of the 3 processes"):
        data_lib.make_iterator(config, "train", shard=grain.sharding.ShardOptions(0, 3))


def test_mixing_weights_are_respected(tmp_path, corpus):
    other = write_corpus(str(tmp_path / "b"), 12, prefix="v")
    config = grain_config("", sources=(f"{corpus}@3", f"{other}@1"))
    it = data_lib.make_iterator(config, "train")
    spans = {s: (start, stop) for s, _, start, stop in it.index.sources}
    assert spans == {corpus: (0, 40), other: (40, 52)}
    batches = take(it, 40)
    for b in batches:  # one source per batch
        assert len({bool(i >= 40) for i in b["index"]}) == 1
    assert sum(bool(b["index"][0] >= 40) for b in batches) == 10  # 1 in 4
    speakers = it.index.speakers
    assert speakers == ["us0", "us1", "us2", "vs0", "vs1", "vs2"]
    # The in-memory dataset of a mixed config holds every source of the split.
    ds = data_lib.make_dataset(config, "train")
    assert len(ds) == 52 and ds.speakers == speakers


def test_mixing_the_embedded_set_with_a_manifest(tmp_path, corpus):
    pytest.importorskip("espeakng_loader")
    config = grain_config("", sources=("speech_synth@1", f"{corpus}@1"),
                          cache_dir=str(tmp_path), num_train=8, num_validation=2, num_test=2,
                          num_speakers=4, num_workers=1, tokenizer="chars")
    it = data_lib.make_iterator(config, "train")
    assert [s for s, *_ in it.index.sources] == ["speech_synth", corpus]
    assert it.index.sources[0][2:] == (0, 8)
    batches = take(it, 8)
    embedded = [b for b in batches if b["index"][0] < 8]
    assert len(embedded) == 4
    assert all(0 <= s < 4 for b in embedded  # the embedded set's speakers
               for s in b["speaker"][b["index"] >= 0])
    # Alone, the embedded set streams exactly the in-memory loader's batches.
    alone = {**config, "name": "speech_synth", "sources": ()}
    assert_same_batches(take(data_lib.make_iterator(alone, "train"), 5),
                        take(data_lib.make_iterator({**alone, "loader": "memory"}, "train"), 5))


def test_bad_files_reported_at_index_and_padded_at_decode(tmp_path, caplog):
    manifest = write_corpus(str(tmp_path), 8)
    with open(manifest, "a") as f:
        f.write(json.dumps({"audio": "gone.wav", "text": "missing file"}) + "\n")
    sf.write(str(tmp_path / "u0003.wav"), np.zeros(int(0.3 * RATE)), RATE)  # silent, same length
    it = data_lib.make_iterator(grain_config(manifest, batch_size=8), "train", train=False)
    [report] = it.index.reports
    assert [(os.path.basename(n), r) for n, r in report.bad] == [("gone.wav",
                                                                   "missing: no such file")]
    rows = np.concatenate([b["index"] for b in it])
    assert 3 not in rows and sorted(rows[rows >= 0]) == [0, 1, 2, 4, 5, 6, 7]
    assert "silent only" in caplog.text
    with pytest.raises(data_lib.manifest.BadDataError, match="gone.wav"):
        data_lib.make_iterator(grain_config(manifest, on_bad_file="error"), "train")


@pytest.mark.parametrize("key, value, match", [
    ("loader", "disk", r"data.loader='disk': must be one of \['memory', 'grain'\]"),
    ("loader_workers", -1, "data.loader_workers"),
    ("loader_prefetch", 0, "data.loader_prefetch"),
    ("sources", ("a.jsonl",), "data.sources=.*needs data.loader='grain'"),
])
def test_bad_config_names_the_field(key, value, match):
    config = ml_collections.ConfigDict({"data": data_lib.DEFAULTS.to_dict()})
    config.data[key] = value
    with pytest.raises(ConfigError, match=match):
        data_lib.validate_config(config)


def test_source_specs():
    assert parse_sources(["speech_synth", "/d/x@y.jsonl", "/d/a.jsonl@0.25"]) == [
        ("speech_synth", 1.0), ("/d/x@y.jsonl", 1.0), ("/d/a.jsonl", 0.25)]
    for specs, match in ((["a@-1"], r"data.sources\[0\]='a@-1': the weight '-1'"),
                         (["a", "a@2"], r"data.sources\[1\]='a@2': source 'a' is listed twice"),
                         (["@2"], "names no source"), ([""], r"data.sources\[0\]=''"),
                         (["a@nan"], "finite number > 0")):
        with pytest.raises(ConfigError, match=match):
            parse_sources(specs)


def test_streamed_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    """Issue 20's bar: 200 vs 4,000 clips differ by < 50 MB of peak RSS (the in-memory loader
    grows by ~250 MB here: `experiments/bench_data.py --cases=rss`)."""
    from experiments.bench_data import peak_rss, write_corpus

    peaks = {}
    for n in (200, 4000):
        corpus = write_corpus(str(tmp_path / str(n)), n, min_s=0.5, max_s=1.5)
        peaks[n] = peak_rss(grain_config(corpus, batch_size=16), 10)["peak_mb"]
    assert abs(peaks[4000] - peaks[200]) < 50, peaks


def test_missing_grain_names_the_extra(monkeypatch, corpus):
    import sys

    monkeypatch.setitem(sys.modules, "grain", None)
    with pytest.raises(ImportError, match=r"data.loader='grain' needs 'grain'.*audiolm\[data\]"):
        data_lib.make_iterator(grain_config(corpus), "train")
