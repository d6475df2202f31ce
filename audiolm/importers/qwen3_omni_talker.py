"""Qwen3-Omni Talker and Code2Wav: config mapping and weight conversion from Hugging Face.

Used by the family loader (`audiolm/importers/qwen3_omni.py`), which reads config.json and the
safetensors lazily and hands each part its tensors:

* `talker_config_from_hf(hf)` / `code2wav_config_from_hf(hf)`: the `talker_config` /
  `code2wav_config` dict of a `qwen3_omni_moe` config.json (the whole config.json is accepted
  too) -> our `model.talker` / `model.code2wav` ConfigDict: the published fields mapped onto
  `TalkerSpec` (+ `CodePredictorSpec`) / `Code2WavSpec`, written with `spec_to_section`.
* `convert_talker(get_tensor, keys, cfg)` / `convert_code2wav(get_tensor, keys, cfg)`:
  `get_tensor(name) -> np.ndarray` reads one tensor (names without the `talker.` / `code2wav.`
  prefix), `keys` are all checkpoint names of that part (same convention). Returns
  `(params, used_keys)`: our plain params pytree and the set of names it consumed; a tensor the
  layout needs but the checkpoint lacks, or one of the wrong shape, raises `CheckpointError`
  naming it (`audiolm.importers.mapping.Reader`).

Torch layouts are transposed to ours (Linear [out, in] -> kernel [in, out]; attention kernels
split per head; Conv1d [out, in/groups, k] -> [k, in/groups, out]; ConvTranspose1d [in, out, k]
-> [k, in, out]). Routed experts come either one by one (`mlp.experts.{e}.gate_proj.weight`,
as in the released checkpoint) or fused (`mlp.experts.gate_up_proj` [E, 2h, D] and
`mlp.experts.down_proj` [E, D, h], as transformers 5 keeps them in memory); both are stacked to
`wi_gate`/`wi_up` [E, D, h] and `wo` [E, h, D].
"""

from __future__ import annotations

from typing import Any, Iterable

import ml_collections
import numpy as np

from audiolm.config import ConfigError, spec_to_section
from audiolm.importers.mapping import GetTensor, Reader
from audiolm.models.code2wav import Code2WavSpec
from audiolm.models.talker import CodePredictorSpec, TalkerSpec


# ---------------------------------------------------------------------------------------------
# Config mapping.


def _section(hf: dict, name: str) -> dict:
    return hf[name] if name in hf and isinstance(hf[name], dict) else hf


def hf_field(d: dict, key: str, where: str, default: Any = None, required: bool = True) -> Any:
    """d[key]; a missing required field (no default) is a ConfigError naming `where.key`."""
    if key in d and d[key] is not None:
        return d[key]
    if required and default is None:
        raise ConfigError(f"{where}.{key} is missing from the Hugging Face config")
    return default


def hf_rope_theta(d: dict, where: str) -> float:
    """RoPE base of a HF text config (rope_parameters / rope_scaling / rope_theta); only the
    default rotation is supported."""
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is None:
        raise ConfigError(f"{where}.rope_parameters.rope_theta is missing from the config")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(f"{where}.rope_parameters.rope_type={rope_type!r}: only 'default' "
                          "RoPE is supported")
    return float(theta)


def check_plain_decoder(d: dict, where: str) -> None:
    """A Qwen3 decoder config: no attention biases, SiLU (SwiGLU) feed-forward."""
    if d.get("attention_bias", False):
        raise ConfigError(f"{where}.attention_bias=True: Qwen3-Omni attention has no biases")
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{where}.hidden_act={act!r}: only 'silu' is supported")


def _head_dim(d: dict) -> int:
    return int(d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"])


def talker_config_from_hf(hf: dict) -> ml_collections.ConfigDict:
    """`model.talker` ConfigDict from the HF `talker_config` dict (or the whole config.json)."""
    hf = _section(hf, "talker_config")
    w = "talker_config"
    text = hf_field(hf, "text_config", w)
    cp = hf_field(hf, "code_predictor_config", w)
    wt, wc = f"{w}.text_config", f"{w}.code_predictor_config"
    check_plain_decoder(text, wt)
    check_plain_decoder(cp, wc)
    groups = int(hf_field(hf, "num_code_groups", w))
    cp_groups = cp.get("num_code_groups", groups)
    if cp_groups != groups:
        raise ConfigError(f"{wc}.num_code_groups={cp_groups} but {w}.num_code_groups={groups}: "
                          "they must match")
    if cp.get("sliding_window") is not None and cp.get("use_sliding_window", False):
        raise ConfigError(f"{wc}.sliding_window={cp['sliding_window']}: the code predictor "
                          "attends to its whole frame; sliding windows are not supported")
    experts = hf_field(text, "num_experts", wt, default=text.get("num_local_experts"))
    return spec_to_section(TalkerSpec(
        thinker_hidden_size=int(hf_field(hf, "thinker_hidden_size", w)),
        projection_hidden=int(hf_field(text, "intermediate_size", wt)),
        hidden_size=int(hf_field(text, "hidden_size", wt)),
        num_layers=int(hf_field(text, "num_hidden_layers", wt)),
        num_heads=int(hf_field(text, "num_attention_heads", wt)),
        num_kv_heads=int(hf_field(text, "num_key_value_heads", wt)),
        head_dim=_head_dim(text),
        rope_theta=hf_rope_theta(text, wt),
        rms_norm_eps=float(hf_field(text, "rms_norm_eps", wt)),
        vocab_size=int(hf_field(text, "vocab_size", wt)),
        codebook_size=int(hf_field(cp, "vocab_size", wc)),
        num_codebooks=groups,
        num_experts=int(experts),
        num_experts_per_tok=int(hf_field(text, "num_experts_per_tok", wt)),
        moe_hidden=int(hf_field(text, "moe_intermediate_size", wt)),
        shared_expert_hidden=int(hf_field(text, "shared_expert_intermediate_size", wt)),
        norm_topk_prob=bool(text.get("norm_topk_prob", False)),
        accept_hidden_layer=int(hf_field(hf, "accept_hidden_layer", w)),
        codec_pad_id=int(hf_field(hf, "codec_pad_id", w)),
        codec_bos_id=int(hf_field(hf, "codec_bos_id", w)),
        codec_eos_id=int(hf_field(hf, "codec_eos_token_id", w)),
        codec_nothink_id=int(hf_field(hf, "codec_nothink_id", w)),
        codec_think_bos_id=int(hf_field(hf, "codec_think_bos_id", w)),
        codec_think_eos_id=int(hf_field(hf, "codec_think_eos_id", w)),
        code_predictor=CodePredictorSpec(
            hidden_size=int(hf_field(cp, "hidden_size", wc)),
            num_layers=int(hf_field(cp, "num_hidden_layers", wc)),
            num_heads=int(hf_field(cp, "num_attention_heads", wc)),
            num_kv_heads=int(hf_field(cp, "num_key_value_heads", wc)),
            head_dim=_head_dim(cp),
            ffn_hidden=int(hf_field(cp, "intermediate_size", wc)),
            rope_theta=hf_rope_theta(cp, wc),
            rms_norm_eps=float(hf_field(cp, "rms_norm_eps", wc)),
        ),
    ))


def code2wav_config_from_hf(hf: dict) -> ml_collections.ConfigDict:
    """`model.code2wav` ConfigDict from the HF `code2wav_config` dict (or the whole config.json)."""
    hf = _section(hf, "code2wav_config")
    w = "code2wav_config"
    check_plain_decoder(hf, w)
    # The ConvNeXt and decoder kernels, dilations and the 24 kHz output rate are literals of
    # transformers' modeling code (config.json does not carry them): Code2WavSpec's defaults.
    return spec_to_section(Code2WavSpec(
        codebook_size=int(hf_field(hf, "codebook_size", w)),
        num_codebooks=int(hf_field(hf, "num_quantizers", w)),
        hidden_size=int(hf_field(hf, "hidden_size", w)),
        num_layers=int(hf_field(hf, "num_hidden_layers", w)),
        num_heads=int(hf_field(hf, "num_attention_heads", w)),
        num_kv_heads=int(hf_field(hf, "num_key_value_heads", w)),
        head_dim=_head_dim(hf),
        ffn_hidden=int(hf_field(hf, "intermediate_size", w)),
        rope_theta=hf_rope_theta(hf, w),
        sliding_window=int(hf_field(hf, "sliding_window", w)),
        layer_scale_init=float(hf_field(hf, "layer_scale_initial_scale", w)),
        rms_norm_eps=float(hf_field(hf, "rms_norm_eps", w)),
        upsampling_ratios=tuple(int(r) for r in hf_field(hf, "upsampling_ratios", w)),
        decoder_dim=int(hf_field(hf, "decoder_dim", w)),
        upsample_rates=tuple(int(r) for r in hf_field(hf, "upsample_rates", w)),
    ))


# ---------------------------------------------------------------------------------------------
# Tensor conversion helpers.


def _attention(r: Reader, prefix: str, d: int, heads: int, kv: int, head_dim: int,
               qk_norm: bool) -> dict:
    """HF q/k/v/o_proj (+ q_norm/k_norm) -> audiolm.nn.Attention params."""
    q = r(f"{prefix}.q_proj.weight", (heads * head_dim, d))
    k = r(f"{prefix}.k_proj.weight", (kv * head_dim, d))
    v = r(f"{prefix}.v_proj.weight", (kv * head_dim, d))
    o = r(f"{prefix}.o_proj.weight", (d, heads * head_dim))
    out = {
        "q_proj": {"kernel": q.T.reshape(d, heads, head_dim).copy()},
        "k_proj": {"kernel": k.T.reshape(d, kv, head_dim).copy()},
        "v_proj": {"kernel": v.T.reshape(d, kv, head_dim).copy()},
        "o_proj": {"kernel": o.T.reshape(heads, head_dim, d).copy()},
    }
    if qk_norm:
        out["q_norm"] = {"scale": r.vector(f"{prefix}.q_norm.weight", head_dim)}
        out["k_norm"] = {"scale": r.vector(f"{prefix}.k_norm.weight", head_dim)}
    return out


def _gated_mlp(r: Reader, prefix: str, d: int, hidden: int) -> dict:
    return {
        "gate_proj": r.linear(f"{prefix}.gate_proj", d, hidden),
        "up_proj": r.linear(f"{prefix}.up_proj", d, hidden),
        "down_proj": r.linear(f"{prefix}.down_proj", hidden, d),
    }


def _experts(r: Reader, prefix: str, num: int, d: int, hidden: int) -> dict:
    """Routed experts (one by one or fused) -> wi_gate, wi_up [E, D, h], wo [E, h, D]."""
    if r.has(f"{prefix}.gate_up_proj"):
        gate_up = r(f"{prefix}.gate_up_proj", (num, 2 * hidden, d))
        down = r(f"{prefix}.down_proj", (num, d, hidden))
        return {
            "wi_gate": np.ascontiguousarray(gate_up[:, :hidden].transpose(0, 2, 1)),
            "wi_up": np.ascontiguousarray(gate_up[:, hidden:].transpose(0, 2, 1)),
            "wo": np.ascontiguousarray(down.transpose(0, 2, 1)),
        }
    gate = np.empty((num, d, hidden), np.float32)
    up = np.empty((num, d, hidden), np.float32)
    wo = np.empty((num, hidden, d), np.float32)
    for e in range(num):  # one tensor at a time keeps peak memory at one expert
        gate[e] = r(f"{prefix}.{e}.gate_proj.weight", (hidden, d)).T
        up[e] = r(f"{prefix}.{e}.up_proj.weight", (hidden, d)).T
        wo[e] = r(f"{prefix}.{e}.down_proj.weight", (d, hidden)).T
    return {"wi_gate": gate, "wi_up": up, "wo": wo}


def _conv1d(r: Reader, name: str, c_in: int, c_out: int, k: int, groups: int = 1) -> dict:
    """torch Conv1d weight [out, in/groups, k] -> {'kernel': [k, in/groups, out], 'bias'}."""
    w = r(f"{name}.weight", (c_out, c_in // groups, k))
    return {"kernel": np.ascontiguousarray(w.transpose(2, 1, 0)),
            "bias": r(f"{name}.bias", (c_out,))}


def _conv_transpose1d(r: Reader, name: str, c_in: int, c_out: int, k: int) -> dict:
    """torch ConvTranspose1d weight [in, out, k] -> {'kernel': [k, in, out], 'bias'}."""
    w = r(f"{name}.weight", (c_in, c_out, k))
    return {"kernel": np.ascontiguousarray(w.transpose(2, 0, 1)),
            "bias": r(f"{name}.bias", (c_out,))}


def _snake(r: Reader, name: str, c: int) -> dict:
    return {"alpha": r.vector(f"{name}.alpha", c), "beta": r.vector(f"{name}.beta", c)}


# ---------------------------------------------------------------------------------------------
# Talker.


def _decoder_layer(r: Reader, prefix: str, d: int, c: Any, ffn: dict) -> dict:
    """One pre-norm decoder layer -> audiolm.nn.TransformerBlock params (ffn given)."""
    return {
        "attn_norm": {"scale": r.vector(f"{prefix}.input_layernorm.weight", d)},
        "attn": _attention(r, f"{prefix}.self_attn", d, c.num_heads, c.num_kv_heads, c.head_dim,
                           qk_norm=True),
        "ffn_norm": {"scale": r.vector(f"{prefix}.post_attention_layernorm.weight", d)},
        "ffn": ffn,
    }


def convert_talker(get_tensor: GetTensor, keys: Iterable[str],
                   cfg: Any) -> tuple[dict, set[str]]:
    """HF Talker tensors (names without `talker.`) -> params of `audiolm.models.talker.Talker`.

    `cfg` is the `model.talker` section. Returns (params, used_keys).
    """
    r = Reader(get_tensor, keys, "talker")
    d, dt, p = cfg.hidden_size, cfg.thinker_hidden_size, cfg.projection_hidden
    params: dict[str, Any] = {}
    for name in ("text_projection", "hidden_projection"):
        params[name] = {"fc1": r.linear(f"{name}.linear_fc1", dt, p, bias=True),
                        "fc2": r.linear(f"{name}.linear_fc2", p, d, bias=True)}
    params["codec_embedding"] = {
        "embedding": r("model.codec_embedding.weight", (cfg.vocab_size, d))}
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}"
        moe = _experts(r, f"{pre}.mlp.experts", cfg.num_experts, d, cfg.moe_hidden)
        moe["router"] = r.linear(f"{pre}.mlp.gate", d, cfg.num_experts)
        moe["shared_expert"] = _gated_mlp(r, f"{pre}.mlp.shared_expert", d,
                                          cfg.shared_expert_hidden)
        moe["shared_expert_gate"] = r.linear(f"{pre}.mlp.shared_expert_gate", d, 1)
        params[f"layers_{i}"] = _decoder_layer(r, pre, d, cfg, moe)
    params["norm"] = {"scale": r.vector("model.norm.weight", d)}
    params["codec_head"] = r.linear("codec_head", d, cfg.vocab_size)

    c = cfg.code_predictor
    g, card = cfg.num_codebooks, cfg.codebook_size
    cp: dict[str, Any] = {}
    for i in range(c.num_layers):
        pre = f"code_predictor.model.layers.{i}"
        cp[f"layers_{i}"] = _decoder_layer(r, pre, c.hidden_size, c,
                                           _gated_mlp(r, f"{pre}.mlp", c.hidden_size,
                                                      c.ffn_hidden))
    cp["norm"] = {"scale": r.vector("code_predictor.model.norm.weight", c.hidden_size)}
    cp["codec_embedding"] = np.stack([
        r(f"code_predictor.model.codec_embedding.{j}.weight", (card, c.hidden_size))
        for j in range(g - 1)])
    cp["lm_head"] = np.stack([
        r(f"code_predictor.lm_head.{j}.weight", (card, c.hidden_size)).T for j in range(g - 1)])
    params["code_predictor"] = cp
    return params, r.used


# ---------------------------------------------------------------------------------------------
# Code2Wav.


def convert_code2wav(get_tensor: GetTensor, keys: Iterable[str],
                     cfg: Any) -> tuple[dict, set[str]]:
    """HF Code2Wav tensors (names without `code2wav.`) -> params of `audiolm.models.code2wav.
    Code2Wav`. `cfg` is the `model.code2wav` section. Returns (params, used_keys)."""
    r = Reader(get_tensor, keys, "code2wav")
    d = cfg.hidden_size
    params: dict[str, Any] = {
        "code_embedding": {"embedding": r("code_embedding.weight",
                                          (cfg.num_codebooks * cfg.codebook_size, d))}}
    tr: dict[str, Any] = {}
    for i in range(cfg.num_layers):
        pre = f"pre_transformer.layers.{i}"
        layer = _decoder_layer_plain(r, pre, d, cfg)
        tr[f"layers_{i}"] = layer
    tr["norm"] = {"scale": r.vector("pre_transformer.norm.weight", d)}
    params["pre_transformer"] = tr
    for s, ratio in enumerate(cfg.upsampling_ratios):
        pre = f"upsample.{s}"
        hidden = cfg.convnext_mlp_ratio * d
        params[f"upsample_{s}"] = {
            "conv": {"conv": _conv_transpose1d(r, f"{pre}.0.conv", d, d, ratio)},
            "convnext": {
                "dwconv": {"conv": _conv1d(r, f"{pre}.1.dwconv.conv", d, d, cfg.convnext_kernel,
                                           groups=d)},
                "norm": {"scale": r.vector(f"{pre}.1.norm.weight", d),
                         "bias": r.vector(f"{pre}.1.norm.bias", d)},
                "pwconv1": r.linear(f"{pre}.1.pwconv1", d, hidden, bias=True),
                "pwconv2": r.linear(f"{pre}.1.pwconv2", hidden, d, bias=True),
                "gamma": r.vector(f"{pre}.1.gamma", d),
            },
        }
    k = cfg.decoder_kernel
    params["decoder_in"] = {"conv": _conv1d(r, "decoder.0.conv", d, cfg.decoder_dim, k)}
    dim = cfg.decoder_dim
    for b, rate in enumerate(cfg.upsample_rates):
        pre = f"decoder.{b + 1}.block"
        out = dim // 2
        block: dict[str, Any] = {
            "snake": _snake(r, f"{pre}.0", dim),
            "upsample": {"conv": _conv_transpose1d(r, f"{pre}.1.conv", dim, out, 2 * rate)},
        }
        for u, _ in enumerate(cfg.residual_dilations):
            unit = f"{pre}.{u + 2}"
            block[f"residual_{u}"] = {
                "snake1": _snake(r, f"{unit}.act1", out),
                "conv1": {"conv": _conv1d(r, f"{unit}.conv1.conv", out, out, k)},
                "snake2": _snake(r, f"{unit}.act2", out),
                "conv2": {"conv": _conv1d(r, f"{unit}.conv2.conv", out, out, 1)},
            }
        params[f"decoder_block_{b}"] = block
        dim = out
    nb = len(cfg.upsample_rates)
    params["decoder_snake"] = _snake(r, f"decoder.{nb + 1}", dim)
    params["decoder_out"] = {"conv": _conv1d(r, f"decoder.{nb + 2}.conv", dim, 1, k)}
    return params, r.used


def _decoder_layer_plain(r: Reader, prefix: str, d: int, cfg: Any) -> dict:
    """Code2Wav pre-transformer layer: no q/k norm, LayerScale on both branches."""
    return {
        "attn_norm": {"scale": r.vector(f"{prefix}.input_layernorm.weight", d)},
        "attn": _attention(r, f"{prefix}.self_attn", d, cfg.num_heads, cfg.num_kv_heads,
                           cfg.head_dim, qk_norm=False),
        "ffn_norm": {"scale": r.vector(f"{prefix}.post_attention_layernorm.weight", d)},
        "ffn": _gated_mlp(r, f"{prefix}.mlp", d, cfg.ffn_hidden),
        "attn_scale": {"scale": r.vector(f"{prefix}.self_attn_layer_scale.scale", d)},
        "ffn_scale": {"scale": r.vector(f"{prefix}.mlp_layer_scale.scale", d)},
    }
