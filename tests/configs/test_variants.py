"""Every variant of every config file loads by path and passes `audiolm.config.validate`.

Config files are found in `configs/`; each picks its presets from `audiolm.presets.<family>`,
and the variants `get_config` lists for an unknown one must equal that preset table.
`describe` runs for the tiny variants and for a few full presets whose `jax.eval_shape` is fast
(about 1 s each on a quiet CPU). The experiment sections around the presets (task, data) and
the rule that config files are loaded by path, never imported, are checked too.
"""

import ast
import configparser
import glob
import json
import os
import re

import ml_collections
import pytest

from audiolm import config as config_lib
from audiolm import presets
from audiolm.presets.experiment import load_experiment_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES = sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))


class _ConfigFile:
    """`get_config` and docstring of configs/<family>.py (loaded by path)."""

    def __init__(self, family):
        self.path = os.path.join(ROOT, "configs", f"{family}.py")
        with open(self.path) as f:
            self.__doc__ = ast.get_docstring(ast.parse(f.read()))

    def get_config(self, arg=None):
        return load_experiment_config(self.path, arg)

    @property
    def module(self):
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"_variants_{id(self)}", self.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def _module(family):
    return _ConfigFile(family)


def _listed_variants(family):
    """The variants `get_config` names when asked for an unknown one."""
    with pytest.raises(ValueError) as info:
        _module(family).get_config("variant=__no_such_variant__")
    msg = str(info.value)
    assert "variant='__no_such_variant__'" in msg, msg
    match = re.search(r"expected one of (\[.*\])", msg)
    assert match, msg
    return sorted(ast.literal_eval(match.group(1)))


def _variant_table(family):
    """The family's presets plus the task variants its config file adds (`TASK_VARIANTS`)."""
    return sorted(presets.family_presets(family).PRESETS) + sorted(_task_variants(family))


def _task_variants(family):
    """`TASK_VARIANTS` of configs/<family>.py: variants beyond the presets (tts, stt, ...)."""
    return tuple(_module(family).module.__dict__.get("TASK_VARIANTS", ()))


def _all_variants():
    out = []
    for family in FAMILIES:
        for variant in sorted(presets.family_presets(family).PRESETS):
            out.append((family, variant))
    return out


ALL = _all_variants()
TINY = [(f, v) for f, v in ALL if v.startswith("tiny")]


def test_every_family_has_a_config_file():
    assert set(FAMILIES) == set(config_lib.FAMILIES), (FAMILIES, sorted(config_lib.FAMILIES))
    assert len(ALL) >= 20  # 4 thinker_talker + 16 moshi + 2 pattern_lm at the time of writing
    assert {f for f, _ in TINY} == set(FAMILIES)  # every family has a tiny variant


@pytest.mark.parametrize("family", FAMILIES)
def test_error_lists_exactly_the_variant_table(family):
    assert _listed_variants(family) == sorted(_variant_table(family))


TASK_ALL = [(f, v) for f in FAMILIES for v in _task_variants(f)]


@pytest.mark.parametrize("family,variant", TASK_ALL, ids=[f"{f}:{v}" for f, v in TASK_ALL])
def test_task_variant_validates(family, variant):
    # The speech variants read a trained codec run (task.codec.workdir): a random codec ('')
    # stands in; a workdir without a checkpoint is named before anything runs.
    config = _module(family).get_config(f"variant={variant},codec_workdir=")
    assert config_lib.validate(config) is config and config.model.family == family
    assert config.task.name in ("tts", "stt")
    if not variant.endswith("tiny"):
        with pytest.raises(config_lib.ConfigError, match=r"task\.codec\.workdir="):
            config_lib.validate(_module(family).get_config(
                f"variant={variant},codec_workdir=/nonexistent/codec_run"))


@pytest.mark.parametrize("family", FAMILIES)
def test_default_arg_is_a_valid_tiny_config(family):
    config = _module(family).get_config()
    config_lib.validate(config)
    assert config.model.family == family
    assert config.to_dict() == _module(family).get_config("variant=tiny").to_dict()


@pytest.mark.parametrize("family,variant", ALL, ids=[f"{f}:{v}" for f, v in ALL])
def test_variant_loads_and_validates(family, variant):
    mod = _module(family)
    config = mod.get_config(f"variant={variant}")
    assert isinstance(config, ml_collections.ConfigDict)
    assert config_lib.validate(config) is config
    assert config.model.family == family
    # The launcher locks the config and saves it as JSON.
    config.lock()
    json.dumps(config.to_dict())
    # A bare first token means variant=...; each call returns a fresh, independent config.
    again = mod.get_config(variant)
    assert again.to_dict() == config.to_dict()
    again.seed = config.seed + 1
    assert mod.get_config(variant).seed == config.seed


def _docstring_commands(family):
    """`--config=configs/<family>.py:<arg>` of every launch command in the file's docstring."""
    doc = _module(family).__doc__ or ""
    return re.findall(rf"--config=configs/{family}\.py:(\S+)", doc)


@pytest.mark.parametrize("family", FAMILIES)
def test_docstring_launch_commands_validate(family):
    args = _docstring_commands(family)
    assert args, f"configs/{family}.py has no launch command in its docstring"
    checked = 0
    for arg in args:
        if "file=" in arg:  # placeholder paths (/path/to/...); files are tested below
            continue
        variant = dict(kv.split("=", 1) for kv in arg.split(",") if "=" in kv).get("variant")
        if variant in _task_variants(family) and not variant.endswith("tiny"):
            # Speech variants read a trained codec run; a random codec stands in here.
            arg += ",codec_workdir="
        config = _module(family).get_config(arg)
        config_lib.validate(config)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("fusion", ["add", "concat", "cross_attention", "interleave"])
def test_moshi_tiny_fusion_args(fusion):
    from audiolm.models import moshi as moshi_lib

    assert fusion in moshi_lib.FUSIONS
    config = _module("moshi").get_config(f"variant=tiny,fusion={fusion}")
    config_lib.validate(config)
    assert config.model.fusion == fusion


def test_moshi_fusion_list_is_covered():
    from audiolm.models import moshi as moshi_lib

    assert set(moshi_lib.FUSIONS) == {"add", "concat", "cross_attention", "interleave"}


@pytest.mark.parametrize("slices", [1, 8, 16])
def test_moshi_streaming_slices_arg(slices):
    config = _module("moshi").get_config(f"variant=v0_1_streaming,slices={slices}")
    config_lib.validate(config)
    assert config.model.depformer.num_slices == slices


def test_moshi_streaming_slices_beyond_codebooks_is_a_config_error():
    config = _module("moshi").get_config("variant=v0_1_streaming,slices=17")
    with pytest.raises(config_lib.ConfigError, match=r"model\.depformer\.num_slices=17"):
        config_lib.validate(config)


def _reference_files():
    # The same places as tests/reference_moshi.py (not imported: it needs torch and moshi).
    folder = "/work/shared/reference-configs/moshi"
    if not os.path.isdir(folder):
        folder = os.path.join(ROOT, "..", "shared", "reference-configs", "moshi")
    return sorted(glob.glob(os.path.join(folder, "*")))


REFERENCE_FILES = _reference_files()


@pytest.mark.skipif(not REFERENCE_FILES, reason="official Kyutai config files not present")
@pytest.mark.parametrize("path", REFERENCE_FILES, ids=os.path.basename)
def test_moshi_file_arg_gives_a_full_valid_experiment(path):
    config = _module("moshi").get_config(f"file={path}")
    config_lib.validate(config)  # the whole experiment (train/sample/mesh/data), not only model
    assert config.model.family == "moshi"


def test_pattern_lm_file_arg_gives_a_full_valid_experiment(tmp_path):
    """configs/pattern_lm.py:file=<stable-audio-tools LM JSON> (discrete DAC-RVQ pretransform)."""
    sat = {
        "model_type": "lm", "sample_rate": 8000, "sample_size": 8000,
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "downsampling_ratio": 800,
                "bottleneck": {"type": "dac_rvq", "config": {"n_codebooks": 3,
                                                            "codebook_size": 10}}}},
            "conditioning": {"cond_dim": 8, "configs": [
                {"id": "seconds", "type": "number", "config": {"min_val": 0, "max_val": 10}}]},
            "lm": {"type": "continuous_transformer", "codebook_pattern": "delay",
                   "global_cond_ids": ["seconds"],
                   "config": {"embed_dim": 16, "depth": 1, "dim_heads": 8}},
        },
    }
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(sat))
    config = _module("pattern_lm").get_config(f"file={path}")
    config_lib.validate(config)
    assert config.model.pretransform.n_q == 3 and config.model.pretransform.codebook_size == 10
    assert config.model.lm.hidden_size == 16 and config.model.lm.num_layers == 1


# ---------------------------------------------------------------------------------------------
# describe


def _check_description(desc, family):
    comps = desc["components"]
    assert desc["family"] == family and comps
    assert desc["total_params"] == sum(c["total"] for c in comps.values()) > 0
    assert desc["active_params"] == sum(c["active"] for c in comps.values())
    assert desc["embedding_params"] == sum(c["embedding"] for c in comps.values())
    for name, c in comps.items():
        assert 0 <= c["embedding"] <= c["total"], name
        assert 0 < c["active"] <= c["total"], name
    assert desc["bytes_bf16"] == 2 * desc["total_params"]
    assert desc["flops_per_token"] == 2 * (desc["active_params"] - desc["embedding_params"])


def _check_table(text, desc):
    lines = text.splitlines()
    assert lines[0] == f"family: {desc['family']}"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert list(rows) == list(desc["components"]) + ["TOTAL"]
    total, active, emb = (int(x.replace(",", "")) for x in rows["TOTAL"])
    assert (total, active, emb) == (desc["total_params"], desc["active_params"],
                                    desc["embedding_params"])
    assert lines[-1].startswith("bytes at bf16:")


@pytest.mark.parametrize("family,variant", TINY, ids=[f"{f}:{v}" for f, v in TINY])
def test_describe_tiny(family, variant, capsys):
    config = _module(family).get_config(f"variant={variant}")
    desc = config_lib.describe(config)
    _check_description(desc, family)
    text = config_lib.print_description(desc)
    assert capsys.readouterr().out.strip() == text.strip()
    _check_table(text, desc)


def test_describe_tiny_thinker_talker_components():
    desc = config_lib.describe(_module("thinker_talker").get_config("variant=tiny"))
    assert set(desc["components"]) == {"aut", "thinker", "talker", "talker_code_predictor",
                                       "code2wav"}
    # MoE layers: only top_k / num_experts of the routed experts are active per token.
    assert desc["components"]["thinker"]["active"] < desc["components"]["thinker"]["total"]


# Full presets whose eval_shape takes about a second on a quiet CPU (the largest presets take
# 5-13 s each and are described in their family tests).
FAST_FULL = [("moshi", "asr_300m_202501"), ("moshi", "stt_1b_en_fr"),
             ("pattern_lm", "musicgen_small")]


@pytest.mark.parametrize("family,variant", FAST_FULL, ids=[f"{f}:{v}" for f, v in FAST_FULL])
def test_describe_fast_full_presets(family, variant):
    config = _module(family).get_config(f"variant={variant}")
    desc = config_lib.describe(config)
    _check_description(desc, family)
    assert desc["total_params"] > 10**8  # full size, nothing allocated
    _check_table(config_lib.print_description(desc), desc)


# ---------------------------------------------------------------------------------------------
# The experiment around the preset, and configs as files.


@pytest.mark.parametrize("arg,name,final", [
    ("variant=tiny", "asr", ("cer",)),
    ("variant=tiny_asr", "asr", ("cer",)),
    ("variant=tiny,data=synthetic", "asr", ()),
    ("variant=qwen3_omni_30b_a3b", "asr", ()),
    ("variant=design_reference,data=speech_synth", "asr", ("cer",)),
])
def test_thinker_talker_task_follows_its_data(arg, name, final):
    config = load_experiment_config("configs/thinker_talker.py", arg)
    assert config.task.name == name
    assert tuple(config.task.final_evaluators) == final
    assert tuple(config.task.evaluators) == ("loss",)
    assert config.data.name == ("speech_synth" if final else "synthetic")


@pytest.mark.parametrize("family", ["moshi", "pattern_lm"])
def test_code_families_learn_codes_on_synthetic_batches(family):
    config = load_experiment_config(f"configs/{family}.py", "tiny")
    assert config.task.name == "codes" and tuple(config.task.final_evaluators) == ()
    assert config.data.name == "synthetic"  # the tiny launch needs no dataset


def test_task_section_fields_are_commented_once():
    """base_config declares each task field once, with a comment."""
    path = os.path.join(ROOT, "audiolm", "presets", "experiment.py")
    with open(path) as f:
        lines = [l for l in f if l.strip().startswith("task.")]
    assert sorted(l.split("=")[0].strip() for l in lines) == [
        "task.evaluators", "task.final_evaluators", "task.name"]
    assert all("  # " in l for l in lines), lines


def test_load_experiment_config_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path='configs/nope.py' is not a file"):
        load_experiment_config("configs/nope.py")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(AttributeError, match=r"empty.py defines no get_config"):
        load_experiment_config(str(empty))


def test_arg_parser_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"config arg 'runlocal' is unknown"):
        load_experiment_config("configs/thinker_talker.py", "tiny,runlocal=True")


def test_presets_get():
    assert presets.get("moshi", "v0_1_streaming", slices=4).depformer.num_slices == 4
    assert presets.get("thinker_talker", "tiny").to_dict() == \
        presets.family_presets("thinker_talker").tiny().to_dict()
    with pytest.raises(ValueError, match=r"moshi preset 'nope' is unknown"):
        presets.get("moshi", "nope")
    with pytest.raises(ValueError, match=r"family='no_such_family'"):
        presets.get("no_such_family", "tiny")
    assert presets.get("codec", "tiny").family == "codec"


def test_configs_is_not_a_package():
    """Config files are loaded by path: no `configs` package is installed or importable."""
    assert not os.path.exists(os.path.join(ROOT, "configs", "__init__.py"))
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    include = parser["options.packages.find"]["include"].split()
    assert include == ["audiolm", "audiolm.*"], include
    # ... and nothing imports it (a namespace package would still resolve from the repo root).
    imports = re.compile(r"^\s*(from configs\b|import configs\b)|import_module\(f?[\"']configs\.",
                         re.M)
    offenders = []
    for pattern in ("audiolm/**/*.py", "tests/**/*.py", "experiments/**/*.py", "notebooks/*.ipynb"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            with open(path) as f:
                text = f.read().replace('\\n",', "")  # notebook JSON lines -> source lines
            offenders += [os.path.relpath(path, ROOT) for _ in imports.finditer(text)]
    assert not offenders, offenders


PUBLISHED_SIZES = re.compile(r"(^|[^0-9.])(151936|152064|32000|48000|2049|2050|11264|5632|7040)"
                             r"([^0-9]|$)")


def test_published_sizes_live_in_presets_and_importers_only():
    found = []
    for path in glob.glob(os.path.join(ROOT, "audiolm", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith((os.path.join("audiolm", "presets"), os.path.join("audiolm", "importers"))):
            continue
        with open(path) as f:
            found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(f, 1)
                      if PUBLISHED_SIZES.search(line)]
    assert not found, "\n".join(found)
    # ... and the presets do hold them (the pattern is not vacuous).
    with open(os.path.join(ROOT, "audiolm", "presets", "moshi.py")) as f:
        assert PUBLISHED_SIZES.search(f.read())
