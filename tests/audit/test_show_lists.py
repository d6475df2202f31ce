"""Audit of the Show/Build lists of issues 4, 5 and 6: the cheap items no other test pins down.

- Issue 4: the presets carry the published Qwen3-Omni numbers and the design-reference table, and
  no published size appears as a literal in model code (beyond the files the family test greps).
- Issue 5: every published Kyutai variant the issue names is a preset, with the numbers of
  Kyutai's preset table (python `moshi` 0.2.13 loaders, moshi-core lm.rs): MOSHI_TABLE.
- Issue 6: the MusicGen-small-shaped preset has MusicGen small's shape.
"""

import ast
import math
import pathlib

import pytest

from audiolm import config as config_lib
from audiolm.models import code2wav as c2w
from audiolm.presets import moshi as moshi_configs
from audiolm.presets import pattern_lm as plm_configs
from audiolm.presets import thinker_talker as tt_configs
from audiolm.presets.experiment import load_experiment_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Issue 4


def test_issue4_presets_exist():
    assert {"tiny", "design_reference", "qwen3_omni_30b_a3b"} <= set(tt_configs.PRESETS)


def test_issue4_design_reference_is_the_design_table():
    """AuT 1024/24/16; Thinker 4096/40/32 GQA 8, 64 experts top-4, MoE every 2nd layer; Talker
    1536/24/12 GQA 4, 32 experts top-4, 4 codebooks x 2048; Code2Wav 512 wide, upsampling
    [8, 5, 4, 2] = 320x at 16 kHz (50 frames/s)."""
    config = load_experiment_config("configs/thinker_talker.py", "variant=design_reference")
    config_lib.validate(config)
    m = config.model
    assert (m.aut.hidden_size, m.aut.num_layers, m.aut.num_heads) == (1024, 24, 16)
    th = m.thinker
    assert (th.hidden_size, th.num_layers, th.num_heads, th.num_kv_heads) == (4096, 40, 32, 8)
    assert (th.num_experts, th.num_experts_per_tok, th.decoder_sparse_step) == (64, 4, 2)
    assert tuple(th.mlp_only_layers) == ()
    tk = m.talker
    assert (tk.hidden_size, tk.num_layers, tk.num_heads, tk.num_kv_heads) == (1536, 24, 12, 4)
    assert (tk.num_experts, tk.num_experts_per_tok) == (32, 4)
    assert (tk.num_codebooks, tk.codebook_size) == (4, 2048)
    cw = m.code2wav
    assert (cw.num_codebooks, cw.codebook_size) == (4, 2048)
    assert cw.hidden_size == 512
    assert tuple(cw.upsample_rates) == (8, 5, 4, 2) and c2w.total_upsampling(cw) == 320
    assert cw.sample_rate == 16000 and m.codec_frame_rate == 50.0
    assert m.audio.sample_rate == 16000
    # Thinker output width = Talker input width; AuT output = Thinker width.
    assert tk.thinker_hidden_size == th.hidden_size == m.aut.output_dim


def test_issue4_release_preset_is_the_published_config():
    m = load_experiment_config("configs/thinker_talker.py", "variant=qwen3_omni_30b_a3b").model
    a = m.aut
    assert (a.num_layers, a.hidden_size, a.num_heads, a.ffn_hidden, a.output_dim) == \
        (32, 1280, 20, 5120, 2048)
    assert (a.conv_channels, a.chunk_frames, a.attention_window_frames) == (480, 100, 800)
    assert (m.audio.sample_rate, m.audio.n_fft, m.audio.hop_length, m.audio.n_mels) == \
        (16000, 400, 160, 128)
    th = m.thinker
    assert (th.hidden_size, th.num_layers, th.num_heads, th.num_kv_heads, th.head_dim) == \
        (2048, 48, 32, 4, 128)
    assert (th.vocab_size, th.num_experts, th.num_experts_per_tok, th.moe_hidden) == \
        (152064, 128, 8, 768)
    assert th.decoder_sparse_step == 1 and tuple(th.mlp_only_layers) == ()  # every layer MoE
    assert th.rope_theta == 1e6 and th.tie_embeddings is False
    tk = m.talker
    assert (tk.hidden_size, tk.num_layers, tk.num_heads, tk.num_kv_heads) == (1024, 20, 16, 2)
    assert (tk.num_experts, tk.num_experts_per_tok, tk.shared_expert_hidden) == (128, 6, 768)
    assert (tk.vocab_size, tk.codebook_size, tk.num_codebooks) == (3072, 2048, 16)
    assert tk.accept_hidden_layer == 24 and tk.thinker_hidden_size == 2048
    assert tk.code_predictor.num_layers == 5 and tk.code_predictor.hidden_size == 1024
    cw = m.code2wav
    assert (cw.num_layers, cw.sliding_window, cw.num_heads, cw.head_dim) == (8, 72, 16, 64)
    assert tuple(cw.upsampling_ratios) == (2, 2) and tuple(cw.upsample_rates) == (8, 5, 4, 3)
    assert cw.decoder_dim == 1536 and cw.sample_rate == 24000
    assert c2w.total_upsampling(cw) == 1920 and m.codec_frame_rate == 12.5
    assert c2w.output_length(cw, 20) == 37845  # ((((4T-1)*8-1)*5-1)*4-1)*3 at T=20


# Sizes of the published / design presets. None may appear as an int literal in model code
# outside docstrings: sizes live in configs/. (tests/models/test_thinker_talker_config.py greps
# four files as text; this covers every model, block and audio module by AST.)
PUBLISHED_SIZES = {
    768, 1024, 1280, 1408, 1536, 2048, 2049, 2560, 2816, 3072, 4096, 5120, 5632, 7040, 11008,
    11264, 32000, 32001, 48000, 48001, 151643, 151645, 151646, 151647, 151648, 151669, 151670,
    151675, 151936, 152064, 2148, 2149, 2150, 2155, 2156, 2157,
}
MODEL_CODE = ["audiolm/models", "audiolm/nn", "audiolm/audio"]


def _int_literals_outside_docstrings(path):
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and type(node.value) is int
            and id(node) not in docstrings]


def test_issue4_no_published_size_literals_in_model_code():
    files = [p for d in MODEL_CODE for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) >= 15, files
    found = []
    for path in files:
        for line, value in _int_literals_outside_docstrings(path):
            if value in PUBLISHED_SIZES:
                found.append(f"{path.relative_to(ROOT)}:{line}: {value}")
    assert not found, "\n".join(found)


# ---------------------------------------------------------------------------------------------
# Issue 5

ISSUE5_VARIANTS = ["tiny", "v0_1", "v0_1_streaming", "v0_1_asr", "s2s_v0_1", "asr_v0_1_1b",
                   "asr_300m_202501", "tts_v0_1", "tts_202501", "s2s_2b_16rvq_202501",
                   "moshi_7b_202409", "moshi_dev_2b", "stt_2_6b_en", "stt_1b_en_fr",
                   "tts_1_6b_en_fr"]


def test_issue5_every_named_variant_is_a_preset():
    missing = [v for v in ISSUE5_VARIANTS if v not in moshi_configs.PRESETS]
    assert not missing, missing


# Kyutai's presets (moshi 0.2.13, moshi-core lm.rs): d/heads/layers, gated hidden, context,
# max_period, text in/out, audio vocab, input codebooks, depformer slices (0 = none).
MOSHI_TABLE = {
    "v0_1": (4096, 32, 32, 11264, 3000, 1e4, 32001, 32000, 2049, 8, 8),
    "v0_1_asr": (4096, 32, 32, 11264, 3000, 1e4, 32001, 32000, 2049, 16, 0),
    "s2s_v0_1": (2048, 16, 16, 5632, 3000, 1e4, 48001, 48000, 2049, 16, 16),
    "asr_v0_1_1b": (2048, 16, 16, 5632, 750, 1e5, 48001, 48000, 2049, 8, 0),
    "asr_300m_202501": (1024, 8, 16, 2816, 750, 1e5, 48001, 48000, 2049, 32, 0),
    "tts_202501": (2048, 32, 48, 5632, 500, 1e4, 8001, 8000, 2049, 32, 32),
    "s2s_2b_16rvq_202501": (2560, 20, 24, 7040, 3000, 1e5, 48001, 48000, 2049, 32, 16),
}


@pytest.mark.parametrize("name", sorted(MOSHI_TABLE))
def test_issue5_preset_numbers_follow_the_reference_table(name):
    m = moshi_configs.PRESETS[name]()
    t = m.temporal
    got = (t.hidden_size, t.num_heads, t.num_layers, t.ffn_hidden, t.context, t.rope_theta,
           m.text_in_vocab_size, m.text_out_vocab_size, m.audio_vocab_size, m.audio_codebooks,
           m.depformer.num_slices)
    assert got == MOSHI_TABLE[name]
    assert len(m.delays) == 1 + m.audio_codebooks


def test_issue5_streaming_slices_and_special_presets():
    for n in (4, 16):
        m = moshi_configs.PRESETS["v0_1_streaming"](n)
        assert (m.temporal.hidden_size, m.audio_codebooks, m.depformer.num_slices) == (4096, 16, n)
    tts = moshi_configs.PRESETS["tts_v0_1"]()
    t = tts.temporal
    assert (t.hidden_size, t.num_heads, t.num_layers) == (2048, 32, 48)
    assert (tts.temporal.ffn, tts.temporal.activation, tts.temporal.norm) == \
        ("plain", "gelu", "layer")
    assert (tts.text_in_vocab_size, tts.text_out_vocab_size, tts.audio_vocab_size) == \
        (32001, 32001, 2050)
    assert (tts.audio_codebooks, tts.depformer.num_slices) == (16, 16)
    assert moshi_configs.PRESETS["tts_202501"]().temporal.cross_attention is True
    # Delays of the released models as Python / MLX use them (Rust's generator uses 2).
    assert tuple(moshi_configs.PRESETS["moshi_7b_202409"]().delays) == \
        (0,) + ((0,) + (1,) * 7) * 2
    assert tuple(moshi_configs.PRESETS["tts_1_6b_en_fr"]().delays) == (0, 0) + (2,) * 31
    assert set(moshi_configs.PRESETS["stt_2_6b_en"]().delays) == {0}
    assert moshi_configs.PRESETS["stt_2_6b_en"]().temporal.context == 375


def test_issue5_gated_hidden_rule():
    """h = 2*dim_ff//3, except 21d//8 (Python) or 11d//4 (Rust) when dim_ff == 4d; they agree
    at hidden_scale 4.125."""
    rule = moshi_configs.kyutai_gated_hidden
    assert rule(4096, 4 * 4096) == 21 * 4096 // 8 == 10752
    assert rule(4096, 4 * 4096, rust=True) == 11 * 4096 // 4 == 11264
    d = 2048
    assert rule(d, int(4.125 * d)) == 2 * int(4.125 * d) // 3 == 5632 == 11 * d // 4


# ---------------------------------------------------------------------------------------------
# Issue 6


def test_issue6_presets_and_musicgen_small_shape():
    assert {"tiny", "musicgen_small"} <= set(plm_configs.PRESETS)
    config = load_experiment_config("configs/pattern_lm.py", "variant=musicgen_small")
    config_lib.validate(config)
    m = config.model
    lm = m.lm
    assert (lm.hidden_size, lm.num_layers, lm.num_heads, lm.ffn_hidden) == (1024, 24, 16, 4096)
    assert (m.pretransform.n_q, m.pretransform.codebook_size) == (4, 2048)
    assert (m.pretransform.sample_rate, m.pretransform.frame_rate) == (32000, 50.0)
    assert m.pattern.kind == "delay"
    (cid,) = m.conditioning.conditioners.keys()
    cond = m.conditioning.conditioners[cid]
    assert cond.type == "t5" and cond.dim == 768 and list(m.conditioning.cross_attention_ids) == [
        cid]
    # The tiny preset exercises all three conditioning routes.
    tiny = load_experiment_config("configs/pattern_lm.py", "variant=tiny").model.conditioning
    assert tiny.cross_attention_ids and tiny.prepend_ids and tiny.global_ids
    assert math.isclose(config.sample.cfg_scale, 3.0)
