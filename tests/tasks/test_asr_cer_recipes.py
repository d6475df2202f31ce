"""experiments/asr_cer.py: each recipe adds exactly its levers to the one before it, on the main
job's config, and every recipe's config is valid (the script itself is run by hand: a table of
CER against wall time needs the full budget)."""

from audiolm import config as config_lib
from audiolm.presets.experiment import load_experiment_config
from experiments import asr_cer

LEVERS = ("model.aut.ctc_frames_per_token", "train.loss.ctc_weight",
          "train.loss.spec_time_masks", "train.loss.spec_freq_masks", "data.train_scrambled",
          "task.decode_beam", "task.decode_ctc_weight")


def _on(path, value):
    """Whether the lever at `path` is used (a beam of 1 is greedy decoding)."""
    return value > 1 if path == "task.decode_beam" else bool(value)


def _get(config, path):
    for key in path.split("."):
        config = config[key]
    return config


def test_recipes_add_their_levers_in_order():
    main = load_experiment_config("configs/thinker_talker.py", "variant=tiny_asr")
    levers = {}
    for recipe in asr_cer.RECIPES["asr"]:
        config = asr_cer.recipe_config(main, recipe)
        config_lib.validate(config)
        levers[recipe] = {p: _get(config, p) for p in LEVERS}
        assert config.train.steps == main.train.steps  # compared at the main job's budget
    assert not any(_on(p, v) for p, v in levers["before"].items())
    assert {p for p, v in levers["ctc"].items() if _on(p, v)} == set(LEVERS[:4])
    assert all(_on(p, v) for p, v in levers["after"].items())  # the main job uses every lever
    assert levers["after"] == {p: _get(main, p) for p in LEVERS}


STT_LEVERS = ("task.codec.init_embeddings", "train.loss.audio_time_masks",
              "train.loss.audio_time_width")


def test_stt_recipes_add_their_levers_in_order():
    # a random codec (no codec run in a clean checkout): the recipes only change config fields
    stt = load_experiment_config("configs/moshi.py", "variant=stt_speech,codec_workdir=")
    levers = {}
    for recipe in asr_cer.RECIPES["stt"]:
        config = asr_cer.recipe_config(stt, recipe)
        config_lib.validate(config)
        levers[recipe] = {p: _get(config, p) for p in STT_LEVERS}
        assert config.train.steps == stt.train.steps and config.data == stt.data
    assert not any(levers["before"].values())
    assert [p for p, v in levers["codebooks"].items() if v] == [STT_LEVERS[0]]
    assert all(levers["after"].values())
    assert levers["after"] == {p: _get(stt, p) for p in STT_LEVERS}
