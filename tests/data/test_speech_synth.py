"""The espeak-ng speech set: manifests, durations, disjoint splits, determinism, FLAC files."""

import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from audiolm.data import speech_synth  # noqa: E402

COUNTS = (6, 3, 3)


def _digest(path):
    out = {}
    for split in speech_synth.SPLITS:
        for row in speech_synth.read_split(path, split):
            with open(row["audio"], "rb") as f:
                out[os.path.relpath(row["audio"], path)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    gen = speech_synth.generation_config(*COUNTS, seed=3, num_speakers=5)
    root_a = str(tmp_path_factory.mktemp("synth_a"))
    root_b = str(tmp_path_factory.mktemp("synth_b"))
    path_a = speech_synth.generate(gen, root_a, num_workers=2)  # process pool
    path_b = speech_synth.generate(gen, root_b, num_workers=1)  # in-process
    return gen, path_a, path_b


def test_manifest_rows_and_durations(generated):
    gen, path, _ = generated
    assert os.path.basename(path) == speech_synth.config_hash(gen)
    assert speech_synth.is_complete(path)
    speakers = {p["name"] for p in json.load(open(os.path.join(path, "speakers.json")))}
    for split, count in zip(speech_synth.SPLITS, COUNTS):
        rows = speech_synth.read_split(path, split)
        assert len(rows) == count
        for row in rows:
            assert set(row) == {"audio", "text", "speaker", "duration", "words"}
            # espeak's word spans: one per word, in order, tiling the clip without gaps
            words = np.asarray(row["words"])
            assert words.shape == (len(row["text"].split()), 2)
            assert (words[:, 1] > words[:, 0]).all() and (words[1:, 0] == words[:-1, 1]).all()
            assert words[0, 0] < 0.2 * 16000 and words[-1, 1] <= row["duration"] * 16000 + 2
            assert row["speaker"] in speakers
            audio, rate = sf.read(row["audio"], dtype="float32")
            assert rate == 16000 and audio.ndim == 1
            assert row["duration"] == pytest.approx(audio.shape[0] / 16000, abs=1e-4)
            assert 0.5 < row["duration"] < 5.0  # short sentences, silence trimmed
            assert np.abs(audio).max() > 0.05  # speech, not silence
            assert row["text"] == row["text"].lower() and row["text"].strip() == row["text"]


def test_splits_have_disjoint_sentences(generated):
    _, path, _ = generated
    texts = {s: {r["text"] for r in speech_synth.read_split(path, s)}
             for s in speech_synth.SPLITS}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    # And at scale the plan (no audio) stays disjoint.
    plan = speech_synth.plan(speech_synth.generation_config(500, 50, 50))
    sets = [{r["text"] for r in plan[s]} for s in speech_synth.SPLITS]
    assert sum(map(len, sets)) == 600 and len(set.union(*sets)) == 600


def test_deterministic_across_runs_and_pool_sizes(generated):
    _, path_a, path_b = generated
    assert _digest(path_a) == _digest(path_b)
    for split in speech_synth.SPLITS:
        assert open(os.path.join(path_a, f"{split}.jsonl")).read() == \
            open(os.path.join(path_b, f"{split}.jsonl")).read()


def test_complete_set_is_not_regenerated(generated):
    gen, path, _ = generated
    marker = os.path.join(path, "train", "000000.flac")
    before = os.stat(marker).st_mtime_ns
    assert speech_synth.generate(gen, os.path.dirname(path)) == path
    assert os.stat(marker).st_mtime_ns == before


def test_speakers_vary_and_voices_exist():
    import espeakng_loader

    variants = set(os.listdir(os.path.join(espeakng_loader.get_data_path(), "voices", "!v")))
    assert set(speech_synth.VARIANTS) <= variants
    for name in speech_synth.VARIANTS:  # breath noise differs between processes
        with open(os.path.join(espeakng_loader.get_data_path(), "voices", "!v", name)) as f:
            assert not any(line.split()[:1] == ["breath"] for line in f), name
    profiles = speech_synth.speaker_profiles(64, 0)
    assert len({p["accent"] for p in profiles}) == len(speech_synth.ACCENTS)
    assert len({p["variant"] for p in profiles}) > 20
    assert len({tuple(sorted(p.items())) for p in profiles}) == 64
    assert profiles == speech_synth.speaker_profiles(64, 0)
    assert profiles != speech_synth.speaker_profiles(64, 1)


def test_voices_sound_different():
    base = {"accent": "en-us", "variant": "m1", "rate": 175, "pitch": 50, "range": 50}
    a = speech_synth.synthesize("the red dog sleeps", base)
    slow = speech_synth.synthesize("the red dog sleeps", {**base, "rate": 135})
    other = speech_synth.synthesize("the red dog sleeps", {**base, "variant": "f4"})
    assert a.dtype == np.int16 and a.shape[0] > 0.5 * speech_synth.NATIVE_RATE
    assert slow.shape[0] > 1.15 * a.shape[0]  # slower speech is longer
    n = min(a.shape[0], other.shape[0])
    assert not np.array_equal(a[:n], other[:n])
    # a pure function of (text, profile), whatever was spoken before
    assert np.array_equal(a, speech_synth.synthesize("the red dog sleeps", base))


def test_train_scrambled_changes_train_rows_only():
    plain = speech_synth.plan(speech_synth.generation_config(800, 40, 40, num_speakers=16))
    mixed = speech_synth.plan(speech_synth.generation_config(800, 40, 40, num_speakers=16,
                                                             train_scrambled=0.5))
    # validation / test (sentences, voices, groups) do not depend on the fraction
    assert mixed["validation"] == plain["validation"] and mixed["test"] == plain["test"]
    kinds = [r["sentence"] for r in mixed["train"]]
    assert 0.4 < kinds.count("scrambled") / len(kinds) < 0.6
    assert [r["speaker"] for r in mixed["train"]] == [r["speaker"] for r in plain["train"]]
    # template rows keep their sentence; scrambled ones are new and never a test sentence
    for a, b in zip(plain["train"], mixed["train"]):
        assert (a["text"] == b["text"]) == (b["sentence"] == "template")
    train = [r["text"] for r in mixed["train"]]
    assert len(set(train)) == len(train)
    assert not set(train) & {r["text"] for r in mixed["test"] + mixed["validation"]}
    lexicon = set(speech_synth._lexicon())
    assert all(set(r["text"].split()) <= lexicon for r in mixed["train"]
               if r["sentence"] == "scrambled")
    # unused, the fraction leaves the cache key (and so existing sets) as it was
    assert speech_synth.config_hash(speech_synth.generation_config(5, 1, 1)) == \
        speech_synth.config_hash(speech_synth.generation_config(5, 1, 1, train_scrambled=0.0))


def test_bad_generation_config():
    with pytest.raises(ValueError, match=r"train_scrambled=1\.5: must be a number in \[0, 1\]"):
        speech_synth.generation_config(1, 1, 1, train_scrambled=1.5)
    with pytest.raises(ValueError, match="num_train"):
        speech_synth.generation_config(-1, 1, 1)
    with pytest.raises(ValueError, match="num_speakers"):
        speech_synth.generation_config(1, 1, 1, num_speakers=0)


def test_interrupted_generation_leaves_no_partial_set(tmp_path, monkeypatch):
    gen = speech_synth.generation_config(2, 1, 1, seed=5, num_speakers=2)
    calls = []

    def failing_job(job):
        calls.append(job)
        raise KeyboardInterrupt

    monkeypatch.setattr(speech_synth, "_synth_job", failing_job)
    with pytest.raises(KeyboardInterrupt):
        speech_synth.generate(gen, str(tmp_path), num_workers=1)
    assert calls and os.listdir(tmp_path) == []  # temp directory removed, nothing "complete"
    stale = tmp_path / (speech_synth.config_hash(gen) + ".tmp-999999999")
    stale.mkdir()  # left by a process that no longer exists
    monkeypatch.undo()
    path = speech_synth.generate(gen, str(tmp_path), num_workers=1)
    assert speech_synth.is_complete(path) and sorted(os.listdir(tmp_path)) == [
        os.path.basename(path)]
