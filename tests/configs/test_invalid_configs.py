"""Invalid experiment configs raise `ConfigError` whose message names the dotted field.

A hand-written table (one rule broken per case, on the tiny config of a family unless a variant
is named), then mutations of valid configs: every int field set negative and every field set to
a value of the wrong type (exhaustively over the tiny configs, and by hypothesis with random
values). Cases that currently fail for a real bug in the validators are `xfail(strict=True)`
with the reason; they flip to failures (XPASS) once fixed.
"""

import copy
import functools
import math

import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets.experiment import load_experiment_config

ABBREV = {"tt": "thinker_talker", "moshi": "moshi", "plm": "pattern_lm"}


@functools.lru_cache(maxsize=None)
def _base(family, variant="tiny"):
    return load_experiment_config(f"configs/{family}.py", f"variant={variant}").to_dict()


def _node(d, parts):
    for p in parts:
        d = d[p]
    return d


# Mutations of the plain-dict form (ConfigDict is type safe; the dict is rebuilt afterwards).
def SET(path, value):
    def f(d):
        parts = path.split(".")
        _node(d, parts[:-1])[parts[-1]] = copy.deepcopy(value)
    f.desc = f"{path}={value!r}"
    return f


def DEL(path):
    def f(d):
        parts = path.split(".")
        del _node(d, parts[:-1])[parts[-1]]
    f.desc = f"del {path}"
    return f


def ALL(*fs):
    def f(d):
        for g in fs:
            g(d)
    f.desc = " & ".join(g.desc for g in fs)
    return f


def _mutated(family, variant, mutate):
    d = copy.deepcopy(_base(family, variant))
    mutate(d)
    return ml_collections.ConfigDict(d)


# (family, mutation, field the message must name, rule text the message must contain).
# family "tt@design_reference" = thinker_talker's design_reference variant.
CASES = [
    # unknown / missing keys
    ("tt", SET("model.thinker.bogus", 1), "model.thinker.bogus", "is not a known field"),
    ("tt", SET("extra_section", 1), "extra_section", "is not a known field"),
    ("tt", SET("sample.beam_size", 4), "sample.beam_size", "is not a known field"),
    ("tt", SET("data.foo", "x"), "data.foo", "is not a known field"),
    ("tt", SET("train.lr", 0.1), "train.lr", "is not a known field"),
    ("moshi", SET("model.depformer.extra", 1), "model.depformer.extra", "is not a known field"),
    ("plm", SET("model.lm.width", 3), "model.lm.width", "is not a known field"),
    ("tt", DEL("model.aut.max_frames"), "model.aut.max_frames", "is missing"),
    ("tt", DEL("seed"), "seed", "is missing"),
    ("tt", DEL("train.eps"), "train.eps", "is missing"),
    ("tt", DEL("mesh.axes.tensor"), "mesh.axes.tensor", "is missing"),
    ("tt", DEL("model.talker.code_predictor.num_layers"), "model.talker.code_predictor.num_layers",
     "is missing"),
    ("tt", DEL("model.family"), "model.family", "is missing"),
    ("moshi", DEL("model.delays"), "model.delays", "is missing"),
    ("plm", DEL("model.pattern.kind"), "model.pattern.kind", "is missing"),
    ("tt", DEL("model.talker"), "model.talker", "is missing"),
    # wrong types
    ("tt", SET("model.thinker.num_layers", "4"), "model.thinker.num_layers", "must be an int"),
    ("tt", SET("model.thinker.num_layers", 4.0), "model.thinker.num_layers", "must be an int"),
    ("tt", SET("model.thinker.num_experts", True), "model.thinker.num_experts", "must be an int"),
    ("tt", SET("model.thinker.tie_embeddings", 1), "model.thinker.tie_embeddings",
     "must be a bool"),
    ("tt", SET("model.audio.f_max", "8k"), "model.audio.f_max", "must be a number"),
    ("tt", SET("model.code2wav.upsample_rates", 12), "model.code2wav.upsample_rates",
     "must be a list"),
    ("tt", SET("train.learning_rate", "fast"), "train.learning_rate", "must be a number"),
    ("tt", SET("seed", 1.5), "seed", "must be an int"),
    ("tt", SET("init_from", 0), "init_from", "must be a string"),
    ("moshi", SET("model.fusion", 3), "model.fusion", "must be one of"),
    ("moshi", SET("model.delays", 5), "model.delays", "must be a list"),
    ("moshi", SET("model.delays", (0, 0, 1.5, 2, 1)), "model.delays[2]", "must be an int"),
    ("plm", SET("model.lm.attn_bias", "no"), "model.lm.attn_bias", "must be a bool"),
    ("plm", SET("model.conditioning.cross_attention_ids", "prompt"),
     "model.conditioning.cross_attention_ids", "must be a list"),
    ("tt", SET("data.bucket_seconds", 2.0), "data.bucket_seconds", "must be a list"),
    # ranges
    ("tt", SET("model.thinker.vocab_size", 0), "model.thinker.vocab_size", "must be >= 1"),
    ("moshi", SET("model.audio_vocab_size", 0), "model.audio_vocab_size", "must be an int > 0"),
    ("moshi", SET("model.audio_codebooks", 65), "model.audio_codebooks", "must be <= 64"),
    ("moshi", SET("model.audio_codebooks", 0), "model.audio_codebooks", "must be >= 1"),
    ("tt", SET("model.thinker.num_layers", 0), "model.thinker.num_layers", "must be >= 1"),
    ("tt", SET("model.thinker.num_layers", -2), "model.thinker.num_layers", "must be >= 1"),
    ("moshi", SET("model.temporal.num_layers", 0), "model.temporal.num_layers", "must be >= 1"),
    ("tt", SET("model.talker.num_layers", 0), "model.talker.num_layers", "must be >= 1"),
    ("plm", SET("model.conditioning.cfg_dropout", 1.5), "model.conditioning.cfg_dropout",
     "must be <= 1"),
    ("plm", SET("model.pretransform.n_q", 0), "model.pretransform.n_q", "must be >= 1"),
    ("plm", SET("model.max_frames", 0), "model.max_frames", "must be >= 1"),
    ("tt", SET("model.audio.f_max", 9000.0), "model.audio.f_max", "must be <= 8000"),
    ("tt", SET("model.audio.hop_length", 401), "model.audio.hop_length", "must be <= 400"),
    ("tt", SET("model.thinker.rms_norm_eps", 0.0), "model.thinker.rms_norm_eps", "must be > 0"),
    ("tt", SET("model.thinker.audio_token_id", 264), "model.thinker.audio_token_id",
     "must be <= 263"),
    ("moshi", SET("model.text_padding_id", 33), "model.text_padding_id", "must be <= 32"),
    ("moshi", SET("model.temporal.context", 0), "model.temporal.context", "must be >= 1"),
    # divisibility: width by heads, heads by kv heads
    ("tt", SET("model.aut.num_heads", 5), "model.aut.num_heads", "must divide model.aut.hidden_size"),
    ("moshi", SET("model.temporal.num_heads", 5), "model.temporal.hidden_size",
     "must be divisible by model.temporal.num_heads=5"),
    ("moshi", SET("model.depformer.num_heads", 3), "model.depformer.hidden_size",
     "must be divisible by model.depformer.num_heads=3"),
    ("tt", SET("model.thinker.num_kv_heads", 3), "model.thinker.num_kv_heads",
     "must divide model.thinker.num_heads"),
    ("tt", SET("model.talker.code_predictor.num_kv_heads", 3),
     "model.talker.code_predictor.num_kv_heads", "must divide"),
    ("tt", SET("model.code2wav.num_kv_heads", 3), "model.code2wav.num_kv_heads", "must divide"),
    ("moshi", SET("model.temporal.num_kv_heads", 3), "model.temporal.num_kv_heads", "must divide"),
    ("plm", SET("model.lm.num_kv_heads", 3), "model.lm.num_kv_heads", "must divide"),
    ("tt", SET("model.code2wav.decoder_dim", 34), "model.code2wav.decoder_dim",
     "must be divisible by 2**len(upsample_rates)=4"),
    # head width x heads: per-head widths must split into RoPE pairs
    ("moshi", SET("model.temporal.hidden_size", 36), "model.temporal.hidden_size",
     "head width hidden_size/num_heads=9"),
    ("tt", SET("model.thinker.head_dim", 15), "model.thinker.head_dim", "must be even"),
    ("tt", SET("model.talker.head_dim", 7), "model.talker.head_dim", "must be even"),
    ("plm", ALL(SET("model.lm.positional", "rope"), SET("model.lm.head_dim", 7)),
     "model.lm.head_dim", "must be even with positional='rope'"),
    # top-k <= experts; sparse step >= 1
    ("tt", SET("model.thinker.num_experts_per_tok", 9), "model.thinker.num_experts_per_tok",
     "must be <= model.thinker.num_experts=8"),
    ("tt", SET("model.talker.num_experts_per_tok", 5), "model.talker.num_experts_per_tok",
     "must be <= 4"),
    ("tt", SET("model.thinker.decoder_sparse_step", 0), "model.thinker.decoder_sparse_step",
     "must be >= 1"),
    ("tt", SET("model.thinker.mlp_only_layers", (1, 4)), "model.thinker.mlp_only_layers[1]",
     "must be a layer index"),
    # one delay per stream; pattern kind known
    ("moshi", SET("model.delays", (0, 0, 1)), "model.delays", "one delay per stream"),
    ("moshi", SET("model.delays", (0, 0, -1, 1, 1)), "model.delays[2]", "must be an int >= 0"),
    ("plm", SET("model.pattern.kwargs", {"delays": [0, 1]}), "model.pattern.kwargs",
     "delays must have n_q = 4 entries"),
    ("plm", SET("model.pattern.kind", "spiral"), "model.pattern.kind", "must be one of"),
    ("moshi", SET("model.depformer.num_slices", 5), "model.depformer.num_slices",
     "must be <= model.audio_codebooks=4"),
    ("moshi", SET("model.depformer.schedule", (0, 1)), "model.depformer.schedule",
     "one weight set per slice"),
    # Talker / Code2Wav codebook sync; Code2Wav upsampling vs hop; widths across components
    ("tt", SET("model.talker.num_codebooks", 8), "model.code2wav.num_codebooks",
     "model.talker.num_codebooks=8 but model.code2wav.num_codebooks=4: they must match"),
    ("tt", SET("model.code2wav.codebook_size", 128), "model.code2wav.codebook_size",
     "they must match"),
    ("tt@design_reference", SET("model.code2wav.num_codebooks", 16),
     "model.code2wav.num_codebooks", "model.talker.num_codebooks=4 but"),
    ("tt", SET("model.codec_frame_rate", 100.0), "model.code2wav.upsample_rates",
     "must equal model.code2wav.sample_rate / model.codec_frame_rate"),
    ("tt@design_reference", SET("model.code2wav.upsample_rates", (8, 5, 4, 4)),
     "model.code2wav.upsample_rates", "= 640 must equal"),
    ("tt@design_reference", SET("model.code2wav.sample_rate", 24000),
     "model.code2wav.upsample_rates", "must equal model.code2wav.sample_rate"),
    ("tt", SET("model.talker.thinker_hidden_size", 32), "model.talker.thinker_hidden_size",
     "must equal model.thinker.hidden_size=48"),
    ("tt", SET("model.aut.output_dim", 64), "model.aut.output_dim",
     "must equal model.thinker.hidden_size"),
    ("tt", SET("model.talker.code_predictor.hidden_size", 48),
     "model.talker.code_predictor.hidden_size", "must equal model.talker.hidden_size"),
    ("tt", SET("model.talker.accept_hidden_layer", 5), "model.talker.accept_hidden_layer",
     "must be <= model.thinker.num_layers=4"),
    # train
    ("tt", SET("train.optimizer", "lion"), "train.optimizer", "must be one of"),
    ("tt", SET("train.schedule", "step"), "train.schedule", "must be one of"),
    ("tt", SET("train.dtype", "float16"), "train.dtype", "must be one of"),
    ("tt", SET("train.b1", 1.0), "train.b1", "must be < 1"),
    ("tt", SET("train.grad_accum_steps", 0), "train.grad_accum_steps", "must be >= 1"),
    ("tt", SET("train.learning_rate", 0.0), "train.learning_rate", "must be > 0"),
    ("tt", SET("train.loss.text_weight", -1.0), "train.loss.text_weight", "must be >= 0"),
    # sample
    ("tt", SET("sample.top_p", 0.0), "sample.top_p", "must be > 0"),
    ("tt", SET("sample.temperature", -0.5), "sample.temperature", "must be >= 0"),
    ("plm", SET("sample.max_new_tokens", 0), "sample.max_new_tokens", "must be >= 1"),
    ("moshi", SET("sample.num_samples", 0), "sample.num_samples", "must be >= 1"),
    # mesh
    ("tt", SET("mesh.axes.data", 0), "mesh.axes.data", "must be a positive int or -1"),
    ("tt", SET("mesh.axes.fsdp", -1), "mesh.axes", "at most one axis may be -1"),
    ("tt", SET("mesh.axes.pipeline", 2), "mesh.axes.pipeline", "is not a known field"),
    ("moshi", SET("mesh.rules", (("batch", "bogus"),)), "mesh.rules[0]", "mesh axis must be"),
    ("moshi", SET("mesh.rules", (("batch",),)), "mesh.rules[0]", "(logical_name, mesh_axes) pair"),
    # data
    ("tt", SET("data.name", "librispeech"), "data.name", "must be one of"),
    ("tt", SET("data.batch_size", 0), "data.batch_size", "must be >= 1"),
    ("tt", SET("data.tokenizer", "sentencepiece"), "data.spm_path", "must name a sentencepiece"),
    ("tt", SET("data.holdout_fraction", 0.5), "data.holdout_fraction", "must be in [0, 0.5)"),
    ("tt", SET("data.train_scrambled", 1.5), "data.train_scrambled", "must be a fraction in [0, 1]"),
    ("moshi", SET("task.decode_beam", 4), "task.decode_beam", "is not a known field"),
    ("tt", SET("data.name", "manifest"), "data.manifest", "must name a JSONL manifest"),
    # family, fusion, conditioning
    ("tt", SET("model.family", "transformer"), "model.family", "must be one of"),
    ("moshi", SET("model.fusion", "cross_attention"), "model.temporal.cross_attention",
     "must be True when model.fusion='cross_attention'"),
    ("moshi", SET("model.temporal.cross_attention", True), "model.temporal.cross_attention",
     "needs a cross-attention source"),
    ("plm", SET("model.conditioning.cross_attention_ids", ["prompt", "lyrics"]),
     "model.conditioning.cross_attention_ids[1]", "no conditioner provides this id"),
    ("plm", SET("model.conditioning.conditioners.genre.type", "smell"),
     "model.conditioning.conditioners.genre.type", "unknown conditioner type"),
    ("plm", SET("model.conditioning.conditioners.bpm.max_val", 10.0),
     "model.conditioning.conditioners.bpm.max_val", "must be > "),
    ("plm", SET("model.conditioning.conditioners.prompt.num_heads", 3),
     "model.conditioning.conditioners.prompt.num_heads", "must divide model.conditioning.cond_dim"),
    ("plm", SET("model.lm.positional", "alibi"), "model.lm.positional", "must be one of"),
    ("plm", SET("model.pretransform.type", "spectrogram"), "model.pretransform.type",
     "discrete pretransform"),
]


# Validator gaps found by these tests and fixed since (once strict xfails).
CASES += [
    ("plm", SET("model.pretransform.n_q", 65), "model.pretransform.n_q", "must be <= 64"),
    ("tt", SET("model.audio", 5), "model.audio", "must be a section"),
    ("tt", SET("model.thinker", 5), "model.thinker", "must be a section"),
    ("moshi", SET("model.temporal", 5), "model.temporal", "must be a section"),
    ("moshi", SET("model.extra_heads", 3), "model.extra_heads", "must be a section"),
    ("plm", SET("model.lm", 5), "model.lm", "must be a section"),
    ("tt", SET("train", 5), "train", "must be a section"),
    ("tt", SET("sample", 5), "sample", "must be a section"),
    ("tt", SET("mesh.axes", 5), "mesh.axes", "must be a section"),
    ("moshi", SET("train.loss.text_weight", "x"), "train.loss.text_weight", "must be a number"),
    ("moshi", SET("train.loss.audio_weight", -1.0), "train.loss.audio_weight", "must be >= 0"),
    ("tt", SET("model.aut.num_layers", 0), "model.aut.num_layers", "must be >= 1"),
    ("plm", SET("data.max_audio_seconds", float("inf")), "data.max_audio_seconds", "finite"),
    ("moshi", SET("model.conditioners", 5), "model.conditioners", "must be a section"),
    ("moshi@moshi_dev_2b", SET("model.conditioners.description.possible_values", 5),
     "model.conditioners.description.possible_values", "must be a list"),
    ("moshi", SET("sample.extra.text_top_k", -7), "sample.extra.text_top_k", "must be >= 0"),
    ("moshi", SET("sample.extra.text_temperature", "hot"), "sample.extra.text_temperature",
     "must be a number"),
    ("tt", ALL(SET("model.talker.num_codebooks", 65), SET("model.code2wav.num_codebooks", 65)),
     "num_codebooks", "must be <= 64"),
    ("plm", SET("model.lm.num_layers", 0), "model.lm.num_layers", "must be >= 1"),
]


def _case_id(case):
    return f"{case[0]}:{case[1].desc}"


def _family_variant(key):
    fam, _, variant = key.partition("@")
    return ABBREV[fam], variant or "tiny"


DISTINCT = {_case_id(c) for c in CASES}
assert len(DISTINCT) == len(CASES), "duplicate hand-written cases"
assert len(DISTINCT) >= 40, len(DISTINCT)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_invalid_config_names_the_field(case):
    key, mutate, field, rule = case
    family, variant = _family_variant(key)
    config = _mutated(family, variant, mutate)
    with pytest.raises(ConfigError) as info:
        config_lib.validate(config)
    msg = str(info.value)
    assert field in msg, msg
    assert rule in msg, msg


def test_unmutated_bases_are_valid():
    """The cases break exactly their own rule: the configs they start from are valid."""
    for key in {c[0] for c in CASES}:
        family, variant = _family_variant(key)
        config_lib.validate(ml_collections.ConfigDict(copy.deepcopy(_base(family, variant))))


# ---------------------------------------------------------------------------------------------
# Mutations of valid configs.

MUTATED_VARIANTS = [("thinker_talker", "tiny"), ("thinker_talker", "tiny_asr"), ("moshi", "tiny"),
                    ("pattern_lm", "tiny"), ("moshi", "tts_1_6b_en_fr"),
                    ("pattern_lm", "musicgen_small")]
# Fields the model ignores in that configuration (a tensor conditioner's n_bins /
# possible_values, a codes pretransform's display name).
UNCHECKED = ("model.conditioners.speaker_wavs.n_bins",
             "model.conditioners.speaker_wavs.possible_values", "model.pretransform.name")


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield ".".join(prefix + (k,)), v


def _fields(family, variant):
    out = []
    for path, value in _leaves(_base(family, variant)):
        if family == "moshi" and any(path.startswith(u) for u in UNCHECKED):
            continue
        if family == "pattern_lm" and path.startswith("model.pretransform.name"):
            continue
        out.append((family, variant, path, value))
    return out


FIELDS = [f for fv in MUTATED_VARIANTS for f in _fields(*fv)]
INT_FIELDS = [f for f in FIELDS if type(f[3]) is int]


def _wrong_types(value):
    """Values of a type the field never accepts (hypothesis below draws many more)."""
    if isinstance(value, bool):
        return ["yes", 2]
    if isinstance(value, int):
        return ["3", 2.5]
    if isinstance(value, float):
        return ["0.5", float("nan")]
    if isinstance(value, str):
        return [5]
    if isinstance(value, (list, tuple)):
        return [7]
    return []


def _expect_named(family, variant, path, bad):
    config = _mutated(family, variant, SET(path, bad))
    try:
        config_lib.validate(config)
    except ConfigError as e:
        return None if path in str(e) else f"{family}:{variant} {path}={bad!r}: {e}"
    except Exception as e:  # noqa: BLE001 - the point is to catch the wrong exception type
        return f"{family}:{variant} {path}={bad!r}: {type(e).__name__}: {e}"
    return f"{family}:{variant} {path}={bad!r}: accepted"


def test_mutation_sets_are_large():
    assert len(INT_FIELDS) >= 150 and len(FIELDS) >= 300, (len(INT_FIELDS), len(FIELDS))


def test_every_int_field_negative_is_named():
    failures = [f for fam, var, path, _ in INT_FIELDS
                if (f := _expect_named(fam, var, path, -7)) is not None]
    assert not failures, "\n".join(failures)


def test_every_field_of_wrong_type_is_named():
    failures = []
    for fam, var, path, value in FIELDS:
        if var == "tiny_asr":  # the same fields as thinker_talker:tiny
            continue
        for bad in _wrong_types(value):
            if (f := _expect_named(fam, var, path, bad)) is not None:
                failures.append(f)
    assert not failures, "\n".join(failures)


HYPOTHESIS = settings(max_examples=80, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(field=st.sampled_from(INT_FIELDS), bad=st.integers(max_value=-2))
def test_hypothesis_negative_int(field, bad):
    family, variant, path, _ = field
    failure = _expect_named(family, variant, path, bad)
    assert failure is None, failure


def _wrong_type_strategy(value):
    if isinstance(value, bool):
        return st.one_of(st.text(max_size=4), st.integers(), st.floats(), st.none())
    if isinstance(value, int):
        return st.one_of(st.text(max_size=4), st.none(),
                         st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer())))
    if isinstance(value, float):
        return st.one_of(st.text(max_size=4), st.none(), st.booleans(),
                         st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    if isinstance(value, str):
        return st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans())
    return st.one_of(st.integers(), st.none())  # lists / tuples


@HYPOTHESIS
@given(data=st.data())
def test_hypothesis_wrong_type(data):
    # a field whose default is None (optional) has no one wrong type to draw from
    family, variant, path, value = data.draw(
        st.sampled_from([f for f in FIELDS if f[3] is not None]), label="field")
    bad = data.draw(_wrong_type_strategy(value), label="bad")
    failure = _expect_named(family, variant, path, bad)
    assert failure is None, failure
