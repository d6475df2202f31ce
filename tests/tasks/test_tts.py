"""The tts task (`audiolm.tasks.tts`): dispatch by family, codec decoding of generated codes,
the --mode=sample writer and the "speech" evaluator (judged against the originals)."""

import json
import os

import jax
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.models import codec as codec_lib
from audiolm.models import pattern_lm as lm
from audiolm.presets import codec as codec_presets
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import evaluators, speech_codes, tts, tts_pattern
from audiolm.tasks.base import EvalContext


def shared_cache(tmp_path_factory):
    """One espeak set + code cache for the tts test files of a session."""
    path = tmp_path_factory.getbasetemp() / "tts_tiny_cache"
    path.mkdir(exist_ok=True)
    return str(path)


def test_dispatch_by_family():
    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    assert tts.family_tts(config) is tts_pattern
    assert set(tts.FAMILY_MODULES) == set(config_lib.PAIRS["tts"])
    config.model.family = "codec"
    with pytest.raises(ConfigError, match=r"model.family='codec': task 'tts' trains"):
        tts.family_tts(config)


def test_tts_needs_the_codec_section():
    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    del config.task["codec"]
    with pytest.raises(ConfigError, match=r"task.codec.*is missing"):
        config_lib.validate(config)


def test_speech_evaluator_needs_the_judge_installed(monkeypatch):
    import importlib.util

    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    config.task.final_evaluators = ("speech",)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faster_whisper" else real(name, *a))
    with pytest.raises(ConfigError, match=r"task.final_evaluators=\('speech',\): the 'speech' "
                                          r"evaluator.*\['faster_whisper'\].*audiolm\[judge\]"):
        config_lib.validate(config)


def test_decode_codes_rows_of_their_own_length():
    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    codec = speech_codes.load_codec(config)
    module, params, spec = codec
    hop = codec_presets.hop_length(spec)
    assert hop == 128
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 32, (2, n)).astype(np.int32) for n in (5, 2, 0)]
    wavs = tts.decode_codes(codec, codes)
    assert [len(w) for w in wavs] == [5 * hop, 2 * hop, 0]
    alone = np.asarray(codec_lib.decode(module, params, codes[1][None]))[0]
    np.testing.assert_allclose(wavs[1], alone, atol=1e-5)  # causal: padding changes nothing
    assert tts.decode_codes(codec, [codes[2]])[0].shape == (0,)


def test_speech_scores():
    rows = [
        {"text": "the red cat", "hypothesis": "the red cat", "original_hypothesis": "the red cat",
         "seconds": 1.0, "original_seconds": 2.0},
        {"text": "a dog ran", "hypothesis": "", "original_hypothesis": "a dog ran",
         "seconds": 0.0, "original_seconds": 2.0},
    ]
    s = tts.speech_scores(rows, generated_seconds=0.5)
    assert s["wer"] == pytest.approx(3 / 6) and s["judge_wer_original"] == 0.0
    assert s["wer_gap"] == pytest.approx(0.5) and s["cer"] == pytest.approx(9 / 20)
    assert s["duration_ratio"] == pytest.approx(0.25) and s["rtf"] == pytest.approx(0.5)
    assert s["empty"] == 0.5 and s["utterances"] == 2.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    config.data.cache_dir = shared_cache(tmp_path_factory)
    config_lib.validate(config)
    module = lm.build(config.model)
    params = lm.init_params(config.model, jax.random.PRNGKey(0))
    return config, module, params


def test_write_samples(tiny, tmp_path):
    config, module, params = tiny
    summary = tts.write_samples(module, params, config, str(tmp_path))
    out = tmp_path / "samples"
    assert summary["num_samples"] == 4
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    spoken = [r["index"] for r in rows if r["frames"]]  # an empty utterance has no WAV
    assert summary["wavs"] == [str(out / f"tts_{i}.wav") for i in spoken]
    for i in range(4):
        assert (out / f"original_{i}.wav").is_file()
        assert (out / f"tts_{i}.wav").is_file() == (i in spoken)
    frames = int(config.sample.max_new_tokens)
    assert all(0 <= r["frames"] <= frames for r in rows)
    assert all(r["seconds"] == pytest.approx(r["frames"] * 128 / 16000) for r in rows)
    table = (out / "table.md").read_text()
    assert rows[0]["text"] in table and summary["sample_rate"] == 16000


def test_speech_evaluator_judges_beside_the_originals(tiny, tmp_path):
    """An untrained model speaks at most 12 frames (0.1 s) of noise: the judge reads the
    originals (CER 0.27 measured on these 4 test sentences, WER 0.54: scrambled sentences and
    unseen voices) but not the generated speech."""
    pytest.importorskip("faster_whisper")
    config, module, params = tiny
    ctx = EvalContext(config=config, module=module, workdir=str(tmp_path),
                      eval_step=lambda *a: {}, step=3)
    assert evaluators.get("speech") is tts.speech_evaluator
    scores = evaluators.get("speech")(ctx, params, "test")
    assert scores["utterances"] == 4.0  # train.eval_steps=1 batch of 8: the whole test split
    assert scores["judge_cer_original"] < 0.45 and scores["judge_wer_original"] < 0.75, scores
    assert scores["cer"] > scores["judge_cer_original"] + 0.4, scores
    assert scores["wer"] > scores["judge_wer_original"] + 0.2, scores
    assert scores["wer_gap"] == pytest.approx(scores["wer"] - scores["judge_wer_original"])
    assert 0.0 <= scores["duration_ratio"] < 0.2 and scores["rtf"] > 0
    out = tmp_path / "speech_test"
    rows = [json.loads(line) for line in (out / "speech.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"hypothesis", "original_hypothesis", "cer"} <= set(rows[0])
    assert json.loads((out / "speech.json").read_text())["step"] == 3
    spoken = [r["index"] for r in rows if r["seconds"] > 0]  # an empty utterance has no WAV
    assert scores["empty"] == pytest.approx(1 - len(spoken) / 4)
    assert sorted(os.listdir(out)) == sorted(
        ["speech.jsonl", "speech.json", "table.md"] + [f"original_{i}.wav" for i in range(4)]
        + [f"tts_{i}.wav" for i in spoken])


def test_tts_eval_table_curve_and_plot(tmp_path):
    from experiments import tts_eval

    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": 1, "split": "train", "time": 100.0, "loss": 3.0},
               {"step": 500, "split": "eval", "time": 160.0, "loss": 2.0},  # "loss" only
               {"step": 500, "split": "eval", "time": 190.0, "wer": 0.9,
                "judge_wer_original": 0.2},
               {"step": 1000, "split": "test", "time": 400.0, "wer": 0.5,
                "judge_wer_original": 0.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert tts_eval.training_curve(str(run)) == [(1.5, 0.9), (5.0, 0.5)]
    scores = {"utterances": 100.0, "wer": 0.5, "cer": 0.25, "judge_wer_original": 0.2,
              "wer_gap": 0.3, "duration_ratio": 1.1, "rtf": 0.4, "empty": 0.0}
    results = {"pattern_lm": {"scores": scores, "workdir": str(run)},
               "moshi": {"scores": dict(scores, wer=0.9, wer_gap=0.7),
                         "workdir": str(tmp_path / "none")}}
    table = tts_eval.results_table(results).splitlines()
    assert table[0].startswith("| run | sentences | judged WER |")
    assert table[2] == "| moshi | 100 | 0.900 | 0.250 | 0.200 | +0.700 | 1.10 | 0.40 | 0.00 |"
    assert table[3].startswith("| pattern_lm | 100 | 0.500 |")
    tts_eval.plot(results, str(tmp_path / "tts_eval.png"))
    assert (tmp_path / "tts_eval.png").stat().st_size > 1000
