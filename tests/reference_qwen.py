"""Reference harness for Qwen3-Omni parity tests (transformers `qwen3_omni_moe`).

Shared by the Thinker-side and Talker-side tests. Everything here is test-time only:

* `tiny_config_dict(**overrides)`: a small Qwen3-Omni config (all four parts + a 1-block vision
  tower) as a plain dict; `overrides` deep-merge into it, e.g.
  `tiny_config_dict(thinker_config={"text_config": {"mlp_only_layers": [0]}})`.
* `PUBLISHED_CONFIG`: the fields of the released Qwen3-Omni-30B-A3B config.json that define
  shapes (the rest are ids and flags), for meta-device parameter counts.
* `hf_config(d)`: `Qwen3OmniMoeConfig` from such a dict, eager attention everywhere.
* `build_model(cfg, seed)`: a random `Qwen3OmniMoeForConditionalGeneration` in fp32 eval mode,
  every parameter redrawn from a seeded generator (transformers 5.23 leaves Talker expert weights
  uninitialised), norms drawn around 1 so that scale mix-ups show up; asserts all finite.
* `save_model(model, path)`: `save_pretrained` (safetensors) to `path`.
* `meta_model(cfg)` / `meta_counts(cfg)`: the model built on torch's meta device and its
  parameter counts per component (no memory).

Pitfalls of transformers' qwen3_omni_moe handled here: pass
`text_config.shared_expert_intermediate_size` and `spatial_merge_size` to the Talker config; import `Qwen3OmniMoeCode2WavConfig` from the
configuration module; fp32, eager attention, one thread, fixed seeds.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

torch = None  # imported lazily so that importing this file never needs torch


def _torch():
    global torch
    if torch is None:
        import torch as _t

        _t.set_num_threads(1)
        torch = _t
    return torch


def deep_merge(base: dict, overrides: dict) -> dict:
    """Returns a copy of `base` with `overrides` merged in recursively (dicts merge, rest replace)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------------------------------------
# Tiny config (sizes chosen so that every code path runs: GQA, several AuT windows, MoE and dense
# layers mixed in the Thinker, shared expert in the Talker, 2-stage Code2Wav upsampling).

TINY_AUDIO = dict(
    num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
    max_source_positions=1500, n_window=50, n_window_infer=400, conv_chunksize=500,
    downsample_hidden_size=8, output_dim=48, activation_function="gelu", scale_embedding=False,
)
TINY_TEXT = dict(
    vocab_size=160, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
    max_position_embeddings=4096, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2],
                     "mrope_interleaved": True, "interleaved": True},
    attention_bias=False, decoder_sparse_step=1, moe_intermediate_size=32,
    num_experts_per_tok=2, num_experts=8, norm_topk_prob=True, router_aux_loss_coef=0.001,
    mlp_only_layers=[1], tie_word_embeddings=False,
)
TINY_VISION = dict(
    depth=1, hidden_size=16, intermediate_size=32, num_heads=2, in_channels=3, patch_size=4,
    spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=16,
    deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh",
)
TINY_TALKER_TEXT = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, hidden_act="silu",
    max_position_embeddings=4096, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1],
                     "mrope_interleaved": True, "interleaved": True},
    decoder_sparse_step=1, moe_intermediate_size=16, shared_expert_intermediate_size=24,
    num_experts_per_tok=2, num_experts=4, norm_topk_prob=True, mlp_only_layers=[],
)
TINY_CODE_PREDICTOR = dict(
    vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, hidden_act="silu",
    max_position_embeddings=4096, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, num_code_groups=4,
)
TINY_CODE2WAV = dict(
    codebook_size=32, hidden_size=32, max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, num_attention_heads=4,
    num_key_value_heads=4, sliding_window=8, intermediate_size=64, hidden_act="silu",
    layer_scale_initial_scale=0.01, rms_norm_eps=1e-5, num_hidden_layers=2, num_quantizers=4,
    upsample_rates=[2, 3], upsampling_ratios=[2], decoder_dim=32,
)

# Token ids of the tiny config (all < the tiny vocabularies).
TINY_IDS = dict(audio_token_id=150, image_token_id=151, video_token_id=152,
                audio_start_token_id=153, vision_start_token_id=154, user_token_id=155,
                audio_end_token_id=156, vision_end_token_id=157)


def tiny_config_dict(**overrides: Any) -> dict:
    """The tiny Qwen3-Omni config as a nested dict; `overrides` deep-merge into it."""
    d = {
        "thinker_config": {
            "audio_config": dict(TINY_AUDIO),
            "vision_config": dict(TINY_VISION),
            "text_config": dict(TINY_TEXT),
            "audio_token_id": TINY_IDS["audio_token_id"],
            "image_token_id": TINY_IDS["image_token_id"],
            "video_token_id": TINY_IDS["video_token_id"],
            "audio_start_token_id": TINY_IDS["audio_start_token_id"],
            "audio_end_token_id": TINY_IDS["audio_end_token_id"],
            "vision_start_token_id": TINY_IDS["vision_start_token_id"],
            "vision_end_token_id": TINY_IDS["vision_end_token_id"],
            "user_token_id": TINY_IDS["user_token_id"],
            "position_id_per_seconds": 13,
            "tie_word_embeddings": False,
        },
        "talker_config": {
            "text_config": dict(TINY_TALKER_TEXT),
            "code_predictor_config": dict(TINY_CODE_PREDICTOR),
            "num_code_groups": 4,
            "thinker_hidden_size": 48,
            "accept_hidden_layer": 2,
            "codec_pad_id": 40, "codec_bos_id": 41, "codec_eos_token_id": 42,
            "codec_nothink_id": 43, "codec_think_bos_id": 44, "codec_think_eos_id": 45,
            "audio_token_id": TINY_IDS["audio_token_id"],
            "image_token_id": TINY_IDS["image_token_id"],
            "video_token_id": TINY_IDS["video_token_id"],
            "vision_start_token_id": TINY_IDS["vision_start_token_id"],
            "audio_start_token_id": TINY_IDS["audio_start_token_id"],
            "position_id_per_seconds": 13,
            "spatial_merge_size": 2,
            "speaker_id": {"tiny": 50},
        },
        "code2wav_config": dict(TINY_CODE2WAV),
        "enable_audio_output": True,
        "im_start_token_id": 140, "im_end_token_id": 141, "tts_pad_token_id": 142,
        "tts_bos_token_id": 143, "tts_eos_token_id": 144, "system_token_id": 145,
        "user_token_id": TINY_IDS["user_token_id"], "assistant_token_id": 146,
    }
    return deep_merge(d, overrides)


# ---------------------------------------------------------------------------------------------
# The released model's shape-defining fields (Qwen/Qwen3-Omni-30B-A3B-Instruct config.json).

PUBLISHED_CONFIG = {
    "thinker_config": {
        "audio_config": dict(
            num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
            d_model=1280, max_source_positions=1500, n_window=50, n_window_infer=800,
            conv_chunksize=500, downsample_hidden_size=480, output_dim=2048,
            activation_function="gelu", scale_embedding=False),
        "vision_config": dict(
            depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, in_channels=3,
            patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048,
            num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
            hidden_act="gelu_pytorch_tanh"),
        "text_config": dict(
            vocab_size=152064, hidden_size=2048, intermediate_size=768, num_hidden_layers=48,
            num_attention_heads=32, num_key_value_heads=4, head_dim=128, hidden_act="silu",
            max_position_embeddings=65536, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000,
                             "mrope_section": [24, 20, 20], "interleaved": True,
                             "mrope_interleaved": True},
            attention_bias=False, decoder_sparse_step=1, moe_intermediate_size=768,
            num_experts_per_tok=8, num_experts=128, norm_topk_prob=True,
            router_aux_loss_coef=0.001, mlp_only_layers=[], tie_word_embeddings=False),
        "audio_token_id": 151675, "image_token_id": 151655, "video_token_id": 151656,
        "audio_start_token_id": 151669, "audio_end_token_id": 151670,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653, "user_token_id": 872,
        "position_id_per_seconds": 13, "tie_word_embeddings": False,
    },
    "talker_config": {
        "text_config": dict(
            vocab_size=3072, hidden_size=1024, intermediate_size=2048, num_hidden_layers=20,
            num_attention_heads=16, num_key_value_heads=2, head_dim=128, hidden_act="silu",
            max_position_embeddings=65536, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000,
                             "mrope_section": [24, 20, 20], "interleaved": True},
            decoder_sparse_step=1, moe_intermediate_size=384,
            shared_expert_intermediate_size=768, num_experts_per_tok=6, num_experts=128,
            norm_topk_prob=True, mlp_only_layers=[], router_aux_loss_coef=0.001),
        "code_predictor_config": dict(
            vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
            max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000}, num_code_groups=16),
        "num_code_groups": 16, "thinker_hidden_size": 2048, "accept_hidden_layer": 24,
        "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_nothink_id": 2155,
        "codec_pad_id": 2148, "codec_think_bos_id": 2156, "codec_think_eos_id": 2157,
        "audio_token_id": 151675, "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "audio_start_token_id": 151669,
        "position_id_per_seconds": 13, "spatial_merge_size": 2,
        "speaker_id": {"aiden": 2303, "chelsie": 2301, "ethan": 2302},
    },
    "code2wav_config": dict(
        codebook_size=2048, hidden_size=1024, max_position_embeddings=8000,
        rope_parameters={"rope_type": "default", "rope_theta": 10000}, num_attention_heads=16,
        num_key_value_heads=16, sliding_window=72, intermediate_size=3072, hidden_act="silu",
        layer_scale_initial_scale=0.01, rms_norm_eps=1e-5, num_hidden_layers=8,
        num_quantizers=16, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
        decoder_dim=1536),
    "enable_audio_output": True,
    "im_start_token_id": 151644, "im_end_token_id": 151645, "tts_pad_token_id": 151671,
    "tts_bos_token_id": 151672, "tts_eos_token_id": 151673, "system_token_id": 8948,
    "user_token_id": 872, "assistant_token_id": 77091,
}


# ---------------------------------------------------------------------------------------------
# Building reference models.


def hf_config(d: dict):
    """`Qwen3OmniMoeConfig` from a nested dict, eager attention in every sub-model."""
    _torch()
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeConfig,
    )

    cfg = Qwen3OmniMoeConfig(**copy.deepcopy(d))
    _set_eager(cfg)
    return cfg


def _set_eager(cfg) -> None:
    seen = set()

    def visit(c):
        if c is None or id(c) in seen:
            return
        seen.add(id(c))
        try:
            c._attn_implementation = "eager"
        except Exception:  # some sub-configs refuse the attribute; the parent's setting applies
            pass
        for name in ("thinker_config", "talker_config", "code2wav_config", "text_config",
                     "audio_config", "vision_config", "code_predictor_config"):
            visit(getattr(c, name, None))

    visit(cfg)


def build_model(cfg, seed: int = 0, norm_jitter: float = 0.1):
    """Random fp32 `Qwen3OmniMoeForConditionalGeneration` in eval mode, every weight seeded.

    Weights ~ N(0, 0.02) (biases too); RMSNorm / LayerNorm scales ~ 1 + N(0, norm_jitter),
    SnakeBeta / LayerScale parameters drawn small. Buffers (sinusoid tables, code offsets) are
    kept. Raises if any parameter is not finite.
    """
    t = _torch()
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeForConditionalGeneration,
    )

    t.manual_seed(seed)
    model = Qwen3OmniMoeForConditionalGeneration(cfg).float().eval()
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            owner = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            noise = t.randn(p.shape, generator=gen, dtype=t.float32)
            is_norm = ("norm" in owner or owner in ("ln_post", "ln_q")) and leaf in ("weight",)
            if is_norm:
                p.copy_(1.0 + norm_jitter * noise)
            elif leaf in ("alpha", "beta"):  # SnakeBeta log-scale parameters
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.02 * noise)
    bad = [n for n, p in model.named_parameters() if not bool(t.isfinite(p).all())]
    if bad:
        raise AssertionError(f"non-finite reference parameters: {bad}")
    return model


def save_model(model, path: str) -> None:
    model.save_pretrained(path, safe_serialization=True)


def component_tensors(path: str, prefix: str) -> tuple[dict[str, str], Any]:
    """Index of a saved model's tensors under `prefix` ("talker." ...): ({name without the
    prefix: safetensors file}, get_tensor(name) -> np.ndarray, files opened once each)."""
    import glob

    from safetensors import safe_open

    where = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(f, "np") as s:
            where.update({k[len(prefix):]: f for k in s.keys() if k.startswith(prefix)})
    handles = {}

    def get_tensor(name):
        f = where[name]
        if f not in handles:
            handles[f] = safe_open(f, "np")
        return handles[f].get_tensor(prefix + name)

    return where, get_tensor


def meta_model(cfg):
    """The model on torch's meta device (shapes only)."""
    t = _torch()
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeForConditionalGeneration,
    )

    with t.device("meta"):
        return Qwen3OmniMoeForConditionalGeneration(cfg)


def _numel(module) -> int:
    return sum(int(np.prod(p.shape)) for p in module.parameters())


def meta_counts(cfg) -> dict[str, int]:
    """Parameter counts per component of the model built on the meta device.

    Keys: `aut` (audio tower), `vision`, `thinker_text` (embeddings + decoder + final norm +
    lm_head), `talker` (whole talker incl. code predictor), `talker_model`,
    `talker_code_predictor`, `talker_projections` (text + hidden projections), `talker_codec_head`,
    `code2wav`, `total`.
    """
    model = meta_model(cfg)
    th = model.thinker
    inner = th.model
    counts = {
        "aut": _numel(inner.audio_tower),
        "vision": _numel(inner.visual),
        "thinker_text": _numel(inner.language_model) + _numel(th.lm_head),
        "total": _numel(model),
    }
    if getattr(model, "talker", None) is not None:
        tk = model.talker
        counts["talker"] = _numel(tk)
        counts["talker_model"] = _numel(tk.model)
        counts["talker_code_predictor"] = _numel(tk.code_predictor)
        counts["talker_projections"] = _numel(tk.text_projection) + _numel(tk.hidden_projection)
        counts["talker_codec_head"] = _numel(tk.codec_head)
        counts["code2wav"] = _numel(model.code2wav)
    return counts


# ---------------------------------------------------------------------------------------------
# A saved tiny checkpoint shared by the tests of one pytest process.

_CHECKPOINTS: dict = {}


def tiny_checkpoint(seed: int = 0, **overrides: Any):
    """(reference model, directory written by save_pretrained) of the tiny config, cached per
    (seed, overrides) for the whole test session."""
    import json
    import tempfile

    key = (seed, json.dumps(overrides, sort_keys=True, default=str))
    if key not in _CHECKPOINTS:
        model = build_model(hf_config(tiny_config_dict(**overrides)), seed=seed)
        path = tempfile.mkdtemp(prefix="qwen3_omni_tiny_")
        save_model(model, path)
        _CHECKPOINTS[key] = (model, path)
    return _CHECKPOINTS[key]


def speechlike(num_samples: int, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """A deterministic test waveform: gliding harmonics with syllable-rate amplitude modulation,
    a little noise and a pause (float32 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    x *= 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * 0.2
    x += 0.005 * rng.standard_normal(num_samples)
    x[num_samples // 2: num_samples // 2 + num_samples // 10] *= 0.01
    return x.astype(np.float32)
