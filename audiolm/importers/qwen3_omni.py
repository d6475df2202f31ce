"""Qwen3-Omni (transformers `qwen3_omni_moe`) checkpoints -> our config and params.

`load_pretrained(path)` reads a Hugging Face style directory: `config.json` plus safetensors
(one `model.safetensors`, several `*.safetensors` files, or shards listed by
`model.safetensors.index.json`), and returns `(model_config, params)`:

* `model_config`: the `config.model` section of the thinker_talker family (`model_config_from_hf`):
  AuT and Thinker mapped here, Talker and Code2Wav by `qwen3_omni_talker`; audio front-end
  settings from `preprocessor_config.json` when present (Whisper defaults otherwise). Each part
  is mapped onto its typed spec (`AudioSpec`, `AuTSpec`, `ThinkerSpec`, ...: the published
  field names appear only here) and written with `audiolm.config.spec_to_section`.
* `params`: {"aut", "thinker"[, "talker", "code2wav"]}, plain numpy float32 trees in the layout
  of `audiolm.models.thinker_talker.build(model_config)`.

Tensors are read lazily, one at a time (`audiolm.importers.mapping.TensorStore`), transposed
to our layouts; per-expert weights are stacked
into [E, ...] one expert at a time. Every tensor is accounted for: a tensor our layout needs but
the checkpoint lacks, or a checkpoint tensor nothing consumes, raises `CheckpointError` listing
them. The one exception is the vision tower (`thinker.visual.*`): we have no vision model, so
its tensors are skipped on purpose and reported (log line and `load_pretrained_with_report`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterable

import ml_collections
import numpy as np

from audiolm.importers import qwen3_omni_talker as talker_ckpt
from audiolm.importers.qwen3_omni_talker import check_plain_decoder, hf_field, hf_rope_theta
from audiolm.importers.mapping import CheckpointError, Reader, TensorStore, leftovers_error
from audiolm.config import ConfigError, spec_to_section
from audiolm.models import code2wav as c2w
from audiolm.models.aut import AuTSpec, stem_out_len
from audiolm.models.thinker import ThinkerSpec, is_moe_layer
from audiolm.models.thinker_talker import AudioSpec

SKIPPED_PREFIXES = ("thinker.visual.",)  # no vision model in audiolm

# The Qwen3-Omni processor's Whisper feature extractor (used when the directory has no
# preprocessor_config.json) is `AudioSpec()`'s defaults: 16 kHz, 25 ms Hann window, 10 ms hop.
WHISPER_MAX_SECONDS = 30  # the extractor's chunk length: sets aut.max_frames


# ---------------------------------------------------------------------------------------------
# Config mapping.


def audio_config_from_hf(preprocessor: dict | None, n_mels: int) -> ml_collections.ConfigDict:
    p = preprocessor or {}
    whisper = AudioSpec()
    sr = int(p.get("sampling_rate", whisper.sample_rate))
    fs = int(p.get("feature_size", n_mels))
    if fs != n_mels:
        raise ConfigError(f"preprocessor_config.feature_size={fs} but "
                          f"thinker_config.audio_config.num_mel_bins={n_mels}: they must match")
    return spec_to_section(AudioSpec(
        sample_rate=sr, n_fft=int(p.get("n_fft", whisper.n_fft)),
        hop_length=int(p.get("hop_length", whisper.hop_length)), n_mels=n_mels,
        f_min=whisper.f_min, f_max=sr / 2))


def aut_config_from_hf(ac: dict, audio: Any,
                       preprocessor: dict | None) -> ml_collections.ConfigDict:
    w = "thinker_config.audio_config"
    act = ac.get("activation_function", "gelu")
    if act != "gelu":
        raise ConfigError(f"{w}.activation_function={act!r}: only 'gelu' (exact) is supported")
    if ac.get("scale_embedding", False):
        raise ConfigError(f"{w}.scale_embedding=True is not supported")
    chunk = 2 * int(hf_field(ac, "n_window", w))
    seconds = (preprocessor or {}).get("chunk_length", WHISPER_MAX_SECONDS)
    max_frames = int(seconds * audio.sample_rate // audio.hop_length)
    # No CTC head (ctc_frames_per_token 0) and the default LayerNorm epsilon: the released
    # encoder's.
    return spec_to_section(AuTSpec(
        hidden_size=int(hf_field(ac, "d_model", w)),
        num_layers=int(hf_field(ac, "encoder_layers", w)),
        num_heads=int(hf_field(ac, "encoder_attention_heads", w)),
        ffn_hidden=int(hf_field(ac, "encoder_ffn_dim", w)),
        conv_channels=int(hf_field(ac, "downsample_hidden_size", w)),
        output_dim=int(hf_field(ac, "output_dim", w)), chunk_frames=chunk,
        attention_window_frames=int(hf_field(ac, "n_window_infer", w)), max_frames=max_frames))


def thinker_config_from_hf(hf: dict) -> ml_collections.ConfigDict:
    th = hf_field(hf, "thinker_config", "config")
    w = "thinker_config.text_config"
    tc = hf_field(th, "text_config", "thinker_config")
    check_plain_decoder(tc, w)
    if tc.get("use_sliding_window", False) and tc.get("sliding_window"):
        raise ConfigError(f"{w}.sliding_window={tc['sliding_window']}: not supported")
    heads = int(hf_field(tc, "num_attention_heads", w))
    hidden = int(hf_field(tc, "hidden_size", w))
    eos = int(hf.get("im_end_token_id", tc.get("eos_token_id") or 0))
    pad = tc.get("pad_token_id")
    audio_start = int(hf_field(th, "audio_start_token_id", "thinker_config"))
    return spec_to_section(ThinkerSpec(
        vocab_size=int(hf_field(tc, "vocab_size", w)), hidden_size=hidden,
        num_layers=int(hf_field(tc, "num_hidden_layers", w)), num_heads=heads,
        num_kv_heads=int(tc.get("num_key_value_heads") or heads),
        head_dim=int(tc.get("head_dim") or hidden // heads),
        ffn_hidden=int(hf_field(tc, "intermediate_size", w)),
        moe_hidden=int(hf_field(tc, "moe_intermediate_size", w)),
        num_experts=int(tc.get("num_experts", 0) or 0),
        num_experts_per_tok=int(tc.get("num_experts_per_tok", 0) or 0),
        decoder_sparse_step=int(tc.get("decoder_sparse_step", 1)),
        mlp_only_layers=tuple(int(i) for i in (tc.get("mlp_only_layers") or ())),
        norm_topk_prob=bool(tc.get("norm_topk_prob", True)), rope_theta=hf_rope_theta(tc, w),
        rms_norm_eps=float(hf_field(tc, "rms_norm_eps", w)),
        tie_embeddings=bool(th.get("tie_word_embeddings", tc.get("tie_word_embeddings", False))),
        max_seq_len=int(hf_field(tc, "max_position_embeddings", w)),
        audio_token_id=int(hf_field(th, "audio_token_id", "thinker_config")),
        audio_start_token_id=audio_start,
        audio_end_token_id=int(th.get("audio_end_token_id", audio_start + 1)),
        eos_token_id=eos, pad_token_id=int(pad) if pad is not None else eos))


def model_config_from_hf(hf: dict, preprocessor: dict | None = None) -> ml_collections.ConfigDict:
    """`config.model` of the thinker_talker family from a `qwen3_omni_moe` config.json dict."""
    if hf.get("model_type") not in (None, "qwen3_omni_moe"):
        raise ConfigError(f"config.json model_type={hf.get('model_type')!r}: expected "
                          "'qwen3_omni_moe'")
    th = hf_field(hf, "thinker_config", "config")
    ac = hf_field(th, "audio_config", "thinker_config")
    n_mels = int(hf_field(ac, "num_mel_bins", "thinker_config.audio_config"))
    audio = audio_config_from_hf(preprocessor, n_mels)
    model = ml_collections.ConfigDict()
    model.family = "thinker_talker"
    model.enable_audio_output = bool(hf.get("enable_audio_output", True))
    model.audio = audio
    model.aut = aut_config_from_hf(ac, audio, preprocessor)
    model.thinker = thinker_config_from_hf(hf)
    if "talker_config" in hf and "code2wav_config" in hf:
        model.talker = talker_ckpt.talker_config_from_hf(hf["talker_config"])
        model.code2wav = talker_ckpt.code2wav_config_from_hf(hf["code2wav_config"])
        model.codec_frame_rate = model.code2wav.sample_rate / c2w.total_upsampling(
            model.code2wav)
    elif model.enable_audio_output:
        raise ConfigError("config.json has enable_audio_output=True but no talker_config / "
                          "code2wav_config")
    return model


# ---------------------------------------------------------------------------------------------
# Tensor access.


def _sub(get: Callable[[str], np.ndarray], keys: Iterable[str], prefix: str):
    """(get_tensor, keys) of the part under `prefix`, with the prefix stripped."""
    sub_keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    return (lambda name: get(prefix + name)), sub_keys


# ---------------------------------------------------------------------------------------------
# AuT and Thinker conversion.


def _layer_norm(r, name: str, d: int) -> dict:
    return {"scale": r.vector(f"{name}.weight", d), "bias": r.vector(f"{name}.bias", d)}


def convert_aut(get_tensor, keys, model_config) -> tuple[dict, set[str]]:
    """HF `thinker.audio_tower.*` (prefix stripped) -> params of `audiolm.models.aut.AuT`."""
    a = model_config.aut
    r = Reader(get_tensor, keys, "thinker.audio_tower")
    d, c, n_mels = a.hidden_size, a.conv_channels, model_config.audio.n_mels
    params: dict[str, Any] = {}
    c_in = 1
    for i in range(3):
        # torch Conv2d [out, in, k_mel, k_time] over (mel, time) -> ours [k_time, k_mel, in, out].
        w = r(f"conv2d{i + 1}.weight", (c, c_in, 3, 3))
        params[f"conv{i + 1}"] = {"kernel": np.ascontiguousarray(w.transpose(3, 2, 1, 0)),
                                  "bias": r.vector(f"conv2d{i + 1}.bias", c)}
        c_in = c
    params["conv_out"] = r.linear("conv_out", c * int(stem_out_len(n_mels)), d)
    heads = a.num_heads
    hd = d // heads
    for i in range(a.num_layers):
        pre = f"layers.{i}"
        attn = {}
        for ours, theirs in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj")):
            lin = r.linear(f"{pre}.self_attn.{theirs}", d, d, bias=True)
            attn[ours] = {"kernel": lin["kernel"].reshape(d, heads, hd),
                          "bias": lin["bias"].reshape(heads, hd)}
        o = r.linear(f"{pre}.self_attn.out_proj", d, d, bias=True)
        attn["o_proj"] = {"kernel": o["kernel"].reshape(heads, hd, d), "bias": o["bias"]}
        params[f"layers_{i}"] = {
            "attn_norm": _layer_norm(r, f"{pre}.self_attn_layer_norm", d),
            "attn": attn,
            "ffn_norm": _layer_norm(r, f"{pre}.final_layer_norm", d),
            "ffn": {"fc1": r.linear(f"{pre}.fc1", d, a.ffn_hidden, bias=True),
                    "fc2": r.linear(f"{pre}.fc2", a.ffn_hidden, d, bias=True)},
        }
    params["ln_post"] = _layer_norm(r, "ln_post", d)
    params["proj1"] = r.linear("proj1", d, d, bias=True)
    params["proj2"] = r.linear("proj2", d, a.output_dim, bias=True)
    return params, r.used


def convert_thinker(get_tensor, keys, model_config) -> tuple[dict, set[str]]:
    """HF `thinker.model.*` + `thinker.lm_head.*` (names relative to `thinker.`) -> params of
    `audiolm.models.thinker.Thinker`."""
    t = model_config.thinker
    r = Reader(get_tensor, keys, "thinker")
    d = t.hidden_size
    params: dict[str, Any] = {
        "embed_tokens": {"embedding": r("model.embed_tokens.weight", (t.vocab_size, d))}}
    for i in range(t.num_layers):
        pre = f"model.layers.{i}"
        if is_moe_layer(i, t.num_experts, t.decoder_sparse_step, t.mlp_only_layers):
            ffn = talker_ckpt._experts(r, f"{pre}.mlp.experts", t.num_experts, d, t.moe_hidden)
            ffn["router"] = r.linear(f"{pre}.mlp.gate", d, t.num_experts)
        else:
            ffn = talker_ckpt._gated_mlp(r, f"{pre}.mlp", d, t.ffn_hidden)
        params[f"layers_{i}"] = talker_ckpt._decoder_layer(r, pre, d, t, ffn)
    params["norm"] = {"scale": r.vector("model.norm.weight", d)}
    if not t.tie_embeddings:
        params["lm_head"] = r.linear("lm_head", d, t.vocab_size)
    return params, r.used


# ---------------------------------------------------------------------------------------------
# Entry points.


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"load_pretrained: {path!r} is not valid JSON: {e}") from None


def load_pretrained_with_report(path: str) -> tuple[Any, dict, dict]:
    """`load_pretrained` plus a report {"used": n, "skipped": {prefix: n}}."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_pretrained: {path!r} is not a directory")
    hf = _read_json(os.path.join(path, "config.json"))
    if hf is None:
        raise FileNotFoundError(f"load_pretrained: {path!r} has no config.json")
    model_config = model_config_from_hf(
        hf, _read_json(os.path.join(path, "preprocessor_config.json")))
    store = TensorStore(path)
    keys = store.keys()
    skipped = {p: [k for k in keys if k.startswith(p)] for p in SKIPPED_PREFIXES}
    params: dict[str, Any] = {}
    used: set[str] = set()

    def run(name, prefix, convert, cfg):
        get, sub = _sub(store.__getitem__, keys, prefix)
        try:
            p, u = convert(get, sub, cfg)
        except CheckpointError as e:
            raise CheckpointError(f"load_pretrained({path!r}): {e}") from None
        params[name] = p
        used.update(prefix + k for k in u)

    run("aut", "thinker.audio_tower.", convert_aut, model_config)
    get, sub = _sub(store.__getitem__, keys, "thinker.")
    sub = [k for k in sub if k.startswith(("model.", "lm_head."))]
    try:
        p, u = convert_thinker(get, sub, model_config)
    except CheckpointError as e:
        raise CheckpointError(f"load_pretrained({path!r}): {e}") from None
    params["thinker"] = p
    used.update("thinker." + k for k in u)
    if model_config.enable_audio_output:
        run("talker", "talker.", talker_ckpt.convert_talker, model_config.talker)
        run("code2wav", "code2wav.", talker_ckpt.convert_code2wav, model_config.code2wav)
    skipped_all = {k for ks in skipped.values() for k in ks}
    error = leftovers_error((k for k in keys if k not in used and k not in skipped_all),
                            f"load_pretrained({path!r}): ")
    if error is not None:
        raise error
    report = {"used": len(used), "skipped": {p: len(ks) for p, ks in skipped.items()}}
    for prefix, ks in skipped.items():
        if ks:
            logging.info("load_pretrained(%s): skipped %d tensors under %r (no vision model)",
                         path, len(ks), prefix)
    return model_config, params, report


def load_pretrained(path: str) -> tuple[Any, dict]:
    """(model_config, params) of the Qwen3-Omni checkpoint directory at `path`."""
    model_config, params, _ = load_pretrained_with_report(path)
    return model_config, params
