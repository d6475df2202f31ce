"""The codec-token view of the espeak set: cached codes keyed by the codec, code batches with
word timings, resume, and the task.codec fields validated."""

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from audiolm import config as config_lib  # noqa: E402
from audiolm import data as data_lib  # noqa: E402
from audiolm.models import codec as codec_lib  # noqa: E402
from audiolm.presets import experiment  # noqa: E402
from audiolm.tasks import speech_codes  # noqa: E402

CODEC = "configs/codec.py:variant=tiny"  # 16 kHz, 128 samples per frame, 2 codebooks x 32


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cfg = experiment.load_experiment_config("configs/moshi.py", "tiny")
    cfg.data.name = "speech_synth"
    cfg.data.update(num_train=6, num_validation=3, num_test=2, num_speakers=4, batch_size=4,
                    num_workers=1, cache_dir=str(tmp_path_factory.mktemp("speech")))
    cfg.task.codec = speech_codes.codec_section(CODEC, num_codebooks=2)
    speech_codes.check_section(cfg)
    return cfg


def test_codes_are_the_codec_encoding_and_are_cached(config, monkeypatch):
    dataset = data_lib.make_dataset(config.data, "validation")
    codes = speech_codes.codes_for_split(config, "validation", dataset)
    module, params, spec = speech_codes.load_codec(config)
    hop = speech_codes.hop_length(config)
    assert hop == 128 and sorted(codes) == list(range(len(dataset)))
    for i, c in codes.items():
        assert c.dtype == np.int32 and c.shape == (2, -(-len(dataset.audio(i)) // hop))
        assert c.min() >= 0 and c.max() < spec.quantizer.codebook_size
    # equal to encoding the clip alone (the padded batches of the cache change nothing)
    alone = np.asarray(codec_lib.encode(module, params, dataset.audio(1)[None], 2))[0]
    np.testing.assert_array_equal(codes[1], alone)

    def no_encoding(*args, **kwargs):
        raise AssertionError("cached codes were recomputed")

    monkeypatch.setattr(speech_codes, "encode_clips", no_encoding)
    again = speech_codes.codes_for_split(config, "validation", dataset)
    for i in codes:
        np.testing.assert_array_equal(again[i], codes[i])


def test_another_codec_never_reads_stale_codes(config, monkeypatch):
    dataset = data_lib.make_dataset(config.data, "test")
    first = speech_codes.codes_for_split(config, "test", dataset)
    other = config.copy_and_resolve_references()
    other.task.codec.seed = 1  # other params: another key
    calls = []
    real = speech_codes.encode_clips
    monkeypatch.setattr(speech_codes, "encode_clips",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    second = speech_codes.codes_for_split(other, "test", dataset)
    assert calls, "a codec with other params reused the cached codes"
    assert any(not np.array_equal(first[i], second[i]) for i in first)


def test_batches_carry_codes_text_speakers_and_word_frames(config):
    it = speech_codes.make_batches(config, "train")
    batch = next(it)
    b, w = 4, speech_codes.max_words(config)
    assert batch["codes"].shape[:2] == (b, 2) and batch["codes"].dtype == np.int32
    t = batch["codes"].shape[2]
    assert batch["codes_mask"].shape == (b, t) and batch["word_frames"].shape == (b, w, 2)
    tokenizer = data_lib.make_tokenizer(config.data)
    dataset = data_lib.make_dataset(config.data, "train")
    for row in range(b):
        i = int(batch["index"][row])
        n = int(batch["codes_mask"][row].sum())
        assert batch["codes_mask"][row, :n].all() and not batch["codes_mask"][row, n:].any()
        text = tokenizer.decode(batch["text"][row][batch["text_mask"][row]])
        assert text == dataset.text(i)
        assert batch["speaker"][row] == dataset.speaker_ids[i]
        words = batch["word_frames"][row][batch["word_mask"][row]]
        assert len(words) == len(text.split())
        assert words[0, 0] >= 0 and words[-1, 1] <= n and (words[:, 1] > words[:, 0]).all()
        assert (words[1:, 0] >= words[:-1, 0]).all()
    # resume: a fresh iterator set to the state continues identically
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = speech_codes.make_batches(config, "train")
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_one_pass_pads_the_last_batch(config):
    batches = list(speech_codes.make_batches(config, "validation", finite=True))
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0].tolist()) == [0, 1, 2]
    for b in batches:
        pad = b["index"] < 0
        assert not b["codes_mask"][pad].any() and (b["speaker"][pad] == -1).all()


@pytest.mark.parametrize("field,value,match", [
    ("task.codec.num_codebooks", 3, "task.codec.num_codebooks=3: must be <= 2"),
    ("task.codec.config", "configs/moshi.py:tiny", "task.codec.config=.*must be a codec"),
    ("task.codec.config", "configs/nowhere.py", "task.codec.config=.*cannot load"),
    ("task.codec.workdir", "/nonexistent/codec_run", "task.codec.workdir=.*no codec checkpoint"),
    ("data.sample_rate", 24000, "data.sample_rate=24000: must equal the codec's sample rate"),
    ("data.name", "manifest", "data.name='manifest'.*word timings"),
])
def test_bad_codec_fields_name_the_field(config, field, value, match):
    bad = config.copy_and_resolve_references()
    section, key = field.rsplit(".", 1)
    config_lib.get_path(bad, section)[key] = value
    with pytest.raises(config_lib.ConfigError, match=match):
        speech_codes.check_section(bad)


def test_a_missing_or_unknown_codec_field_is_named(config):
    bad = config.copy_and_resolve_references()
    del bad.task["codec"]
    with pytest.raises(config_lib.ConfigError, match="task.codec is missing"):
        speech_codes.check_section(bad)
    bad.task.codec = speech_codes.codec_section(CODEC, 2)
    bad.task.codec.bitrate = 2.0
    with pytest.raises(config_lib.ConfigError, match="task.codec.bitrate is not a known field"):
        speech_codes.check_section(bad)


def test_a_trained_codec_is_restored_from_its_workdir(config, tmp_path, monkeypatch):
    """The codec run's latest checkpoint (written by the trainer's Checkpointer) is what
    load_codec returns; a checkpoint of another codec is refused naming task.codec.workdir."""
    import types

    import jax

    from audiolm.train import checkpoint as ckpt_lib

    codec = experiment.load_experiment_config("configs/codec.py", "variant=tiny")
    params = jax.tree_util.tree_map(lambda x: x + 1.0, speech_codes.load_codec(config)[1])
    state = types.SimpleNamespace(params=params, opt_state={},
                                  as_dict=lambda: {"params": params, "step": 3})
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), codec.train, async_save=False)
    assert ckpt.save(3, state, {"index": 0}, force=True)
    ckpt.close()
    trained = config.copy_and_resolve_references()
    trained.task.codec.workdir = str(tmp_path)
    speech_codes.check_section(trained)
    _, restored, _ = speech_codes.load_codec(trained)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
    # A workdir relative to the working directory (as README commands give it) reads the same.
    relative = trained.copy_and_resolve_references()
    relative.task.codec.workdir = tmp_path.name
    monkeypatch.chdir(tmp_path.parent)
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           speech_codes.load_codec(relative)[1], params)
    other = trained.copy_and_resolve_references()
    other.task.codec.config = "configs/codec.py:variant=tiny_mimi"
    other.data.sample_rate = 24000
    with pytest.raises(config_lib.ConfigError,
                       match="task.codec.workdir=.*not a checkpoint of the codec"):
        speech_codes.load_codec(other)
