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


def _recipe_levers(base, paths):
    """{recipe: {lever path: value}} of every recipe of `base`'s task; each recipe's config is
    valid and keeps the base's steps and data (compared at the same budget, on the same set)."""
    levers = {}
    for recipe in asr_cer.RECIPES[base.task.name]:
        config = asr_cer.recipe_config(base, recipe)
        config_lib.validate(config)
        levers[recipe] = {p: _get(config, p) for p in paths}
        assert config.train.steps == base.train.steps
        assert {k: v for k, v in config.data.items() if k != "train_scrambled"} == \
            {k: v for k, v in base.data.items() if k != "train_scrambled"}
    return levers


def test_recipes_add_their_levers_in_order():
    main = load_experiment_config("configs/thinker_talker.py", "variant=tiny_asr")
    levers = _recipe_levers(main, LEVERS)
    assert not any(_on(p, v) for p, v in levers["before"].items())
    assert {p for p, v in levers["ctc"].items() if _on(p, v)} == set(LEVERS[:4])
    assert all(_on(p, v) for p, v in levers["after"].items())  # the main job uses every lever
    assert levers["after"] == {p: _get(main, p) for p in LEVERS}


STT_LEVERS = ("task.codec.init_embeddings", "train.loss.audio_time_masks",
              "train.loss.audio_time_width")


def test_stt_recipes_add_their_levers_in_order():
    # a random codec (no codec run in a clean checkout): the recipes only change config fields
    stt = load_experiment_config("configs/moshi.py", "variant=stt_speech,codec_workdir=")
    levers = _recipe_levers(stt, STT_LEVERS + ("data.train_scrambled",))
    assert all(levers[r]["data.train_scrambled"] == 0.5 for r in levers)  # the same set
    levers = {r: {p: levers[r][p] for p in STT_LEVERS} for r in levers}
    assert not any(levers["before"].values())
    assert [p for p, v in levers["codebooks"].items() if v] == [STT_LEVERS[0]]
    assert all(levers["after"].values())
    assert levers["after"] == {p: _get(stt, p) for p in STT_LEVERS}
