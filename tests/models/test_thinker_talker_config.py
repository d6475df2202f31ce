"""Thinker-Talker configs: presets validate, every rule raises ConfigError with its dotted path,
and describe() of the presets equals transformers' meta-device parameter counts."""

import re

import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets import thinker_talker as tt_configs
from audiolm.presets.experiment import load_experiment_config
from tests.config_helpers import set_field


def _cfg(variant="tiny"):
    return load_experiment_config("configs/thinker_talker.py", f"variant={variant}")


@pytest.mark.parametrize("variant", sorted(tt_configs.PRESETS))
def test_presets_validate(variant):
    config_lib.validate(_cfg(variant))


_set = set_field


# (dotted path, bad value, regex the message must match). Paths starting "model." are set on the
# tiny config; each case breaks exactly one rule.
CASES = [
    ("model.audio.sample_rate", 0, r"model\.audio\.sample_rate=0: must be >= 1"),
    ("model.audio.hop_length", 401, r"model\.audio\.hop_length=401: must be <= 400"),
    ("model.audio.f_max", 9000.0, r"model\.audio\.f_max=9000\.0: must be <= 8000"),
    ("model.audio.n_mels", 0, r"model\.audio\.n_mels=0: must be >= 1"),
    ("model.aut.num_heads", 5, r"model\.aut\.num_heads=5: must divide model\.aut\.hidden_size"),
    ("model.aut.hidden_size", 30, r"model\.aut\.num_heads=4: must divide"),
    ("model.aut.attention_window_frames", 450,
     r"model\.aut\.attention_window_frames=450: must be a multiple of model\.aut\.chunk_frames"),
    ("model.aut.output_dim", 64, r"model\.aut\.output_dim=64: must equal model\.thinker\.hidden_size"),
    ("model.aut.chunk_frames", 0, r"model\.aut\.chunk_frames=0: must be >= 1"),
    ("model.thinker.num_kv_heads", 3,
     r"model\.thinker\.num_kv_heads=3: must divide model\.thinker\.num_heads"),
    ("model.thinker.num_heads", 5, r"model\.thinker\.num_kv_heads=2: must divide model\.thinker\.num_heads=5"),
    ("model.thinker.head_dim", 15, r"model\.thinker\.head_dim=15: must be even"),
    ("model.thinker.num_experts_per_tok", 9,
     r"model\.thinker\.num_experts_per_tok=9: must be <= model\.thinker\.num_experts=8"),
    ("model.thinker.decoder_sparse_step", 0, r"model\.thinker\.decoder_sparse_step=0: must be >= 1"),
    ("model.thinker.mlp_only_layers", (1, 4),
     r"model\.thinker\.mlp_only_layers\[1\]=4: must be a layer index in \[0, "
     r"model\.thinker\.num_layers=4\)"),
    ("model.thinker.mlp_only_layers", (1, 1), r"model\.thinker\.mlp_only_layers=\(1, 1\): must not repeat"),
    ("model.thinker.audio_token_id", 264, r"model\.thinker\.audio_token_id=264: must be <= 263"),
    ("model.thinker.audio_start_token_id", 259,
     r"model\.thinker\.audio_start_token_id=259: must differ from model\.thinker\.audio_token_id"),
    ("model.thinker.moe_dispatch", "sparse", r"model\.thinker\.moe_dispatch='sparse': must be one of"),
    ("model.thinker.max_seq_len", 40, r"model\.thinker\.max_seq_len=40: must hold the 52 audio tokens"),
    ("model.thinker.rope_theta", 0.5, r"model\.thinker\.rope_theta=0\.5: must be > 1"),
    ("model.thinker.norm_topk_prob", 1, r"model\.thinker\.norm_topk_prob=1: must be a bool"),
    ("model.talker.num_codebooks", 8,
     r"model\.talker\.num_codebooks=8 but model\.code2wav\.num_codebooks=4: they must match"),
    ("model.code2wav.codebook_size", 128,
     r"model\.talker\.codebook_size=64 but model\.code2wav\.codebook_size=128: they must match"),
    ("model.talker.thinker_hidden_size", 32,
     r"model\.talker\.thinker_hidden_size=32: must equal model\.thinker\.hidden_size=48"),
    ("model.talker.accept_hidden_layer", 5,
     r"model\.talker\.accept_hidden_layer=5: must be <= model\.thinker\.num_layers=4"),
    ("model.codec_frame_rate", 100.0,
     r"model\.code2wav\.upsample_rates=\(4, 3\): total upsampling .* = 48 must equal "
     r"model\.code2wav\.sample_rate / model\.codec_frame_rate"),
    ("model.code2wav.upsample_rates", (4, 4), r"model\.code2wav\.upsample_rates=\(4, 4\): total upsampling"),
    ("model.talker.num_kv_heads", 3, r"model\.talker\.num_kv_heads=3: must divide model\.talker\.num_heads"),
    ("model.talker.num_experts_per_tok", 5, r"model\.talker\.num_experts_per_tok=5: must be <= 4"),
    ("model.code2wav.num_kv_heads", 3, r"model\.code2wav\.num_kv_heads=3: must divide"),
    ("model.enable_audio_output", "yes", r"model\.enable_audio_output='yes': must be a bool"),
    ("train.loss.text_weight", -1.0, r"train\.loss\.text_weight=-1\.0: must be >= 0"),
    ("train.loss.text_input_noise", 1.5, r"train\.loss\.text_input_noise=1\.5: must be <= 1"),
]


@pytest.mark.parametrize("path,value,pattern", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_every_rule_raises_with_dotted_path(path, value, pattern):
    config = _cfg()
    _set(config, path, value)
    with pytest.raises(ConfigError) as info:
        config_lib.validate(config)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_unknown_and_missing_fields():
    config = _cfg()
    config.model.extra_field = 1
    with pytest.raises(ConfigError, match=r"model\.extra_field is not a known field"):
        config_lib.validate(config)
    config = _cfg()
    del config.model.talker
    with pytest.raises(ConfigError, match=r"model\.talker is missing"):
        config_lib.validate(config)
    config = _cfg()
    config.model.thinker.unknown = 3
    with pytest.raises(ConfigError, match=r"model\.thinker\.unknown is not a known field"):
        config_lib.validate(config)
    config = _cfg()
    del config.model.aut.max_frames
    with pytest.raises(ConfigError, match=r"model\.aut\.max_frames is missing"):
        config_lib.validate(config)


def test_asr_variant_may_drop_speech_sections():
    config = _cfg("tiny_asr")
    assert config.model.enable_audio_output is False
    del config.model.talker, config.model.code2wav, config.model.codec_frame_rate
    config_lib.validate(config)
    config.model.enable_audio_output = True
    with pytest.raises(ConfigError, match=r"model\.talker is missing"):
        config_lib.validate(config)


def test_pad_may_equal_eos():
    config = _cfg()
    config.model.thinker.pad_token_id = config.model.thinker.eos_token_id
    config_lib.validate(config)


def test_no_model_size_literals_in_family_code():
    """Sizes come from configs: the family files hold no preset numbers (grep-able)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "audiolm"
    files = ["models/aut.py", "models/thinker.py", "models/thinker_talker.py",
             "audio/features.py"]
    for name in files:
        text = (root / name).read_text()
        for literal in ("2048", "1280", "152064", "151646", "151675", "5120", "4096", "128,"):
            assert literal not in text, f"{name} contains size literal {literal}"


# ---------------------------------------------------------------------------------------------
# Parameter counts vs transformers on the meta device.


@pytest.fixture(scope="module")
def ref():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests import reference_qwen

    return reference_qwen


def _ours(variant):
    desc = config_lib.describe(_cfg(variant))
    return desc, desc["components"]


def test_published_counts_match_transformers_meta(ref):
    counts = ref.meta_counts(ref.hf_config(ref.PUBLISHED_CONFIG))
    # The reconstructed published config is the released one: its meta-device total.
    assert counts["total"] == 35_259_818_545
    desc, ours = _ours("qwen3_omni_30b_a3b")
    assert ours["aut"]["total"] == counts["aut"]
    assert ours["thinker"]["total"] == counts["thinker_text"]
    assert ours["talker"]["total"] == (counts["talker_model"] + counts["talker_projections"]
                                       + counts["talker_codec_head"])
    assert ours["talker_code_predictor"]["total"] == counts["talker_code_predictor"]
    assert ours["code2wav"]["total"] == counts["code2wav"]
    # Everything but the vision tower (we have no vision model).
    assert desc["total_params"] == counts["total"] - counts["vision"]
    # Active per token: routed experts count top_k / num_experts (8/128 in the Thinker).
    th = ours["thinker"]
    assert 3.0e9 < th["active"] < 3.5e9


def _design_hf_dict(ref, model):
    th, a, tk, c2 = model.thinker, model.aut, model.talker, model.code2wav
    text = dict(
        vocab_size=th.vocab_size, hidden_size=th.hidden_size, intermediate_size=th.ffn_hidden,
        num_hidden_layers=th.num_layers, num_attention_heads=th.num_heads,
        num_key_value_heads=th.num_kv_heads, head_dim=th.head_dim,
        moe_intermediate_size=th.moe_hidden, num_experts=th.num_experts,
        num_experts_per_tok=th.num_experts_per_tok, decoder_sparse_step=th.decoder_sparse_step,
        mlp_only_layers=list(th.mlp_only_layers),
        rope_parameters={"rope_type": "default", "rope_theta": th.rope_theta,
                         "mrope_section": [th.head_dim // 4, th.head_dim // 8,
                                           th.head_dim // 8]})
    audio = dict(num_mel_bins=model.audio.n_mels, encoder_layers=a.num_layers,
                 encoder_attention_heads=a.num_heads, encoder_ffn_dim=a.ffn_hidden,
                 d_model=a.hidden_size, downsample_hidden_size=a.conv_channels,
                 output_dim=a.output_dim, n_window=a.chunk_frames // 2,
                 n_window_infer=a.attention_window_frames)
    talker_text = dict(
        vocab_size=tk.vocab_size, hidden_size=tk.hidden_size,
        intermediate_size=tk.projection_hidden, num_hidden_layers=tk.num_layers,
        num_attention_heads=tk.num_heads, num_key_value_heads=tk.num_kv_heads,
        head_dim=tk.head_dim, moe_intermediate_size=tk.moe_hidden,
        shared_expert_intermediate_size=tk.shared_expert_hidden, num_experts=tk.num_experts,
        num_experts_per_tok=tk.num_experts_per_tok)
    cp = tk.code_predictor
    predictor = dict(vocab_size=tk.codebook_size, hidden_size=cp.hidden_size,
                     intermediate_size=cp.ffn_hidden, num_hidden_layers=cp.num_layers,
                     num_attention_heads=cp.num_heads, num_key_value_heads=cp.num_kv_heads,
                     head_dim=cp.head_dim, num_code_groups=tk.num_codebooks)
    code2wav = dict(codebook_size=c2.codebook_size, hidden_size=c2.hidden_size,
                    num_attention_heads=c2.num_heads, num_key_value_heads=c2.num_kv_heads,
                    sliding_window=c2.sliding_window, intermediate_size=c2.ffn_hidden,
                    num_hidden_layers=c2.num_layers, num_quantizers=c2.num_codebooks,
                    upsample_rates=list(c2.upsample_rates),
                    upsampling_ratios=list(c2.upsampling_ratios), decoder_dim=c2.decoder_dim)
    return ref.tiny_config_dict(
        thinker_config={"text_config": text, "audio_config": audio},
        talker_config={"text_config": talker_text, "code_predictor_config": predictor,
                       "num_code_groups": tk.num_codebooks,
                       "thinker_hidden_size": tk.thinker_hidden_size},
        code2wav_config=code2wav)


def test_design_reference_counts_match_transformers_meta(ref):
    model = _cfg("design_reference").model
    counts = ref.meta_counts(ref.hf_config(_design_hf_dict(ref, model)))
    _, ours = _ours("design_reference")
    assert ours["aut"]["total"] == counts["aut"]
    assert ours["thinker"]["total"] == counts["thinker_text"]
    assert ours["talker"]["total"] == (counts["talker_model"] + counts["talker_projections"]
                                       + counts["talker_codec_head"])
    assert ours["talker_code_predictor"]["total"] == counts["talker_code_predictor"]
    assert ours["code2wav"]["total"] == counts["code2wav"]


def test_tiny_asr_describes_only_aut_and_thinker():
    # (and the recogniser's CTC head on the AuT: model.aut.ctc_frames_per_token > 0)
    _, ours = _ours("tiny_asr")
    assert set(ours) == {"aut", "thinker", "ctc_head"}
    assert ours["thinker"]["active"] < ours["thinker"]["total"]  # routed experts discounted


@pytest.mark.parametrize("variant", sorted(tt_configs.PRESETS))
def test_sections_read_back_as_the_specs_they_were_written_from(variant):
    """Each section's keys are its spec's fields (the one declaration); a preset's sections read
    back (`spec_from_section`) to specs that write the same sections again."""
    import dataclasses

    from audiolm.config import spec_to_section
    from audiolm.models import aut, code2wav, talker, thinker

    model = tt_configs.PRESETS[variant]()
    assert set(model) == {f.name for f in dataclasses.fields(tt_configs.ThinkerTalkerSpec)}
    specs = {"aut": aut.spec_from_config(model), "thinker": thinker.spec_from_config(model),
             "talker": talker.spec_of(model.talker), "code2wav": code2wav.spec_of(model.code2wav)}
    for name, spec in specs.items():
        assert set(model[name]) == {f.name for f in dataclasses.fields(spec)}, name
        assert spec_to_section(spec).to_dict() == model[name].to_dict(), name
    assert isinstance(specs["talker"].code_predictor, talker.CodePredictorSpec)
    assert hash(specs["code2wav"]) == hash(code2wav.spec_of(model.code2wav))  # static under jit


def test_spec_reading_names_the_field_and_takes_aut_ctc_as_optional():
    from audiolm.models import aut, talker

    model = tt_configs.tiny()
    _set(model, "talker.code_predictor.num_layers", 2.0)
    with pytest.raises(ConfigError,
                       match=r"model\.talker\.code_predictor\.num_layers=2\.0: must be an int"):
        talker.build(model.talker)
    del model.aut["ctc_frames_per_token"]  # imported configs before the CTC head had none
    assert aut.spec_from_config(model).ctc_frames_per_token == 0
