"""Qwen3-Omni Talker: Thinker projections, MoE codec decoder, codec_head and code predictor.

The Talker turns Thinker states into audio codes, one frame at a time. A frame has G codes
(`num_codebooks`, HF `num_code_groups`): the MoE decoder predicts codebook 0 with `codec_head`;
the small dense code predictor (HF "MTP") then predicts codebooks 1..G-1 of the same frame,
autoregressively inside the frame, with RoPE positions restarting at 0 every frame.

Config: `DEFAULTS` (the tiny model) documents every field of `model.talker`; `validate_talker`
checks them. Sizes of the published model (Qwen3-Omni-30B-A3B, read from its config.json):

  thinker_hidden_size 2048, projection_hidden 2048, hidden_size 1024, num_layers 20,
  num_heads 16, num_kv_heads 2, head_dim 128, rope_theta 1e6, rms_norm_eps 1e-6,
  vocab_size 3072, codebook_size 2048, num_codebooks 16, num_experts 128, num_experts_per_tok 6,
  moe_hidden 384, shared_expert_hidden 768, norm_topk_prob True, accept_hidden_layer 24,
  codec ids: pad 2148, bos 2149, eos 2150, nothink 2155, think_bos 2156, think_eos 2157;
  code_predictor: hidden_size 1024, num_layers 5, num_heads 16, num_kv_heads 8, head_dim 128,
  ffn_hidden 3072, rope_theta 1e6, rms_norm_eps 1e-6.

Design-reference Talker (REFERENCE.md): hidden_size 1536, num_layers 24, num_heads 12,
num_kv_heads 4 (head_dim 128), num_experts 32, num_experts_per_tok 4, num_codebooks 4,
codebook_size 2048.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from audiolm.config import check_bool, check_choice, check_float, check_int, \
    check_schema, require

# The tiny Talker: every size of the module is a field here (one comment per field).
DEFAULTS = ml_collections.ConfigDict(dict(
    thinker_hidden_size=32,  # width of the Thinker states fed to both projections
    projection_hidden=48,  # hidden width of text_projection / hidden_projection (Linear-SiLU-Linear)
    hidden_size=32,  # Talker decoder width
    num_layers=2,  # Talker decoder layers (every layer is MoE with a shared expert)
    num_heads=4,  # query heads
    num_kv_heads=2,  # key/value heads (GQA); divides num_heads
    head_dim=8,  # width of one attention head
    rope_theta=1e6,  # RoPE base (rotate-half style)
    rms_norm_eps=1e-6,  # epsilon of every RMSNorm (layers, final norm, q/k norms)
    vocab_size=80,  # codec vocabulary of codebook 0: audio codes then special ids (EOS, pad...)
    codebook_size=64,  # ids per codebook (audio codes are < codebook_size in every codebook)
    num_codebooks=4,  # codes per frame (G): codebook 0 from codec_head, 1..G-1 from the predictor
    num_experts=4,  # routed experts per MoE layer
    num_experts_per_tok=2,  # experts picked per token (top-k)
    moe_hidden=16,  # hidden width of one routed expert (SwiGLU)
    shared_expert_hidden=24,  # hidden width of the shared expert (SwiGLU, sigmoid-gated)
    norm_topk_prob=True,  # renormalise the top-k routing weights to sum to 1
    moe_dispatch="dropless",  # dropless (sorted, grouped matmul) | capacity (einsum)
    moe_capacity_factor=2.0,  # capacity per expert = factor * tokens * top_k / experts
    accept_hidden_layer=1,  # Thinker layer whose output feeds hidden_projection
    codec_pad_id=64,  # codec id: padding
    codec_bos_id=65,  # codec id: beginning of speech
    codec_eos_id=66,  # codec id: end of speech (the only special id codec_head may emit)
    codec_nothink_id=67,  # codec id: prompt marker "no thinking"
    codec_think_bos_id=68,  # codec id: start of the thinking prompt
    codec_think_eos_id=69,  # codec id: end of the thinking prompt
    code_predictor=ml_collections.ConfigDict(dict(
        hidden_size=32,  # code predictor width; equals the Talker width (it reads its hidden)
        num_layers=2,  # dense decoder layers
        num_heads=4,  # query heads
        num_kv_heads=2,  # key/value heads (GQA)
        head_dim=8,  # width of one attention head
        ffn_hidden=64,  # SwiGLU hidden width
        rope_theta=1e6,  # RoPE base; positions restart at 0 in every frame
        rms_norm_eps=1e-6,  # epsilon of every RMSNorm
    )),
))

MOE_DISPATCH = ("dropless", "capacity")
_SPECIAL_IDS = ("codec_pad_id", "codec_bos_id", "codec_eos_id", "codec_nothink_id",
                "codec_think_bos_id", "codec_think_eos_id")


def _check_attention(config: Any, path: str) -> None:
    heads = check_int(config, f"{path}.num_heads", lo=1)
    kv = check_int(config, f"{path}.num_kv_heads", lo=1)
    require(heads % kv == 0, f"{path}.num_kv_heads", kv,
            f"must divide {path}.num_heads={heads} (each kv head serves a group of q heads)")
    head_dim = check_int(config, f"{path}.head_dim", lo=2)
    require(head_dim % 2 == 0, f"{path}.head_dim", head_dim, "must be even (RoPE rotates pairs)")
    check_float(config, f"{path}.rope_theta", lo=1.0, lo_open=True)
    check_float(config, f"{path}.rms_norm_eps", lo=0.0, lo_open=True)


def validate_talker(config: Any, path: str = "model.talker") -> None:
    """Checks the Talker section at dotted `path` of the experiment config `config`.

    Raises ConfigError naming the field, its value and the rule.
    """
    check_schema(config, path, DEFAULTS)
    check_int(config, f"{path}.thinker_hidden_size", lo=1)
    check_int(config, f"{path}.projection_hidden", lo=1)
    hidden = check_int(config, f"{path}.hidden_size", lo=1)
    check_int(config, f"{path}.num_layers", lo=1)
    _check_attention(config, path)
    codebook = check_int(config, f"{path}.codebook_size", lo=2)
    vocab = check_int(config, f"{path}.vocab_size", lo=2)
    require(vocab > codebook, f"{path}.vocab_size", vocab,
            f"must be > {path}.codebook_size={codebook}: codebook 0's vocabulary holds the "
            "audio codes followed by the special codec ids")
    check_int(config, f"{path}.num_codebooks", lo=2)
    experts = check_int(config, f"{path}.num_experts", lo=1)
    check_int(config, f"{path}.num_experts_per_tok", lo=1, hi=experts)
    check_int(config, f"{path}.moe_hidden", lo=1)
    check_int(config, f"{path}.shared_expert_hidden", lo=1)
    check_bool(config, f"{path}.norm_topk_prob")
    check_choice(config, f"{path}.moe_dispatch", MOE_DISPATCH)
    check_float(config, f"{path}.moe_capacity_factor", lo=0.0, lo_open=True)
    check_int(config, f"{path}.accept_hidden_layer", lo=0)
    seen = {}
    for key in _SPECIAL_IDS:
        value = check_int(config, f"{path}.{key}", lo=codebook, hi=vocab - 1)
        require(value not in seen, f"{path}.{key}", value,
                f"must differ from {path}.{seen.get(value)} (special codec ids are distinct)")
        seen[value] = key
    cp = f"{path}.code_predictor"
    cp_hidden = check_int(config, f"{cp}.hidden_size", lo=1)
    require(cp_hidden == hidden, f"{cp}.hidden_size", cp_hidden,
            f"must equal {path}.hidden_size={hidden}: the predictor reads the Talker hidden state "
            "as its first input")
    check_int(config, f"{cp}.num_layers", lo=1)
    check_int(config, f"{cp}.ffn_hidden", lo=1)
    _check_attention(config, cp)


def tiny_config() -> ml_collections.ConfigDict:
    """A fresh copy of `DEFAULTS` (the tiny Talker)."""
    return ml_collections.ConfigDict(DEFAULTS.to_dict())


