"""Kyutai (Moshi / Hibiki / STT / TTS) config files and safetensors checkpoints.

`load_config_file(path)` reads every official flavour into the `audiolm.presets.moshi` ConfigDict:
  * Python JSON (`moshi_7b_202409.json`, Hugging Face `config.json`): LMModel kwargs
    (`dim`, `text_card`, `n_q`, `dep_q`, `hidden_scale`, `depformer_*`, `conditioners`, ...).
  * Rust TOML of an LM (`s2st-1b.toml`): `text_in_vocab_size`, `[transformer]`, `[depformer]`.
  * moshi-server TOML (`config-stt-*.toml`): the LM config under `[modules.<name>.model]`.
  * Files without architecture fields (the run-time `config.json` of the STT repos, the TTS
    server TOML): the architecture is that of the released model they name, found from the
    tokenizer file name or the `hf://kyutai/<repo>` paths (tables `TOKENIZER_PRESETS`,
    `REPO_PRESETS` in audiolm.presets.moshi); their own fields (delays, sampling) are applied on top.
Kyutai's published `stt_1b_enfr.json` lacks one comma; the JSON reader inserts a missing comma
exactly where the parser reports "Expecting ',' delimiter" (nothing else is repaired).
Run-time fields (tokenizer / mimi names, lm_gen_config, stt/tts config, server options) are kept
in `sample_extra`. Delays: Python files carry them; Rust files do not, and get Kyutai's default
(text 0, per group of depformer slices: 0 then 1; all 0 without a depformer) unless `delays=`
is passed.

`load_pretrained(path)` -> (model ConfigDict, params): path is a directory (config.json or a
.toml next to a .safetensors file) or a config file. Per-step projections (`in_proj_weight` of
shape [sets*3D, D], or `in_projs.{i}.weight`) are split per weight set; every tensor of the file
must be used, and every parameter filled, else ValueError listing the names.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, packaged (a runtime dependency there)
    import tomli as tomllib

from audiolm.config import ConfigError, spec_to_section
from audiolm.importers.mapping import CheckpointError, Reader, TensorStore
from audiolm.models import moshi as family
from audiolm.presets import moshi as presets  # the presets own every model-size literal

_PY_META_KEYS = ("moshi_name", "mimi_name", "tokenizer_name", "lora_name", "model_type",
                 "lm_gen_config", "tts_config", "stt_config", "model_id", "mimi_config_name",
                 "lora", "lora_rank", "lora_scaling", "mimi_config")
_PY_ARCH_KEYS = (
    "dim", "text_card", "text_card_out", "existing_text_padding_id",
    "existing_text_end_padding_id", "n_q", "dep_q", "card", "num_heads", "num_layers",
    "hidden_scale", "causal", "layer_scale", "context", "max_period", "gating", "norm",
    "positional_embedding", "delays", "kv_repeat", "cross_attention", "demux_second_stream",
    "demux_second_text_stream", "extra_heads_num_heads", "extra_heads_dim", "conditioners",
    "fuser", "norm_emb", "bias_proj", "depformer_dim", "depformer_dim_feedforward",
    "depformer_num_heads", "depformer_num_layers", "depformer_causal", "depformer_layer_scale",
    "depformer_multi_linear", "depformer_context", "depformer_max_period", "depformer_gating",
    "depformer_pos_emb", "depformer_weights_per_step", "depformer_weights_per_step_schedule",
    "depformer_low_rank_embeddings", "depformer_norm", "depformer_kv_repeat", "quantize",
    "gradient_checkpointing", "same_initial")
_PY_INT_KEYS = ("dim", "text_card", "text_card_out", "n_q", "dep_q", "card", "num_heads",
                "num_layers", "context", "kv_repeat", "extra_heads_num_heads", "extra_heads_dim",
                "depformer_dim", "depformer_num_heads", "depformer_num_layers",
                "depformer_context", "depformer_kv_repeat")
_PY_FLOAT_KEYS = ("hidden_scale", "max_period", "depformer_max_period")
_NORMS = {"rms_norm_f32": ("rms", 1e-8), "rms_norm": ("rms", 1e-5),
          "layer_norm": ("layer", 1e-5), "layer_norm_f32": ("layer", 1e-8)}


# ------------------------------------------------------------------------------------------
# Reading files


def read_json(path: str) -> dict:
    """JSON with one repair: a missing comma between members (Kyutai's stt_1b_enfr.json)."""
    with open(path) as f:
        text = f.read()
    for _ in range(16):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            if not e.msg.startswith("Expecting ',' delimiter"):
                raise ConfigError(f"{path}: not valid JSON: {e}") from None
            text = _insert_comma(text, e.pos)
    raise ConfigError(f"{path}: not valid JSON (too many missing commas)")


def _insert_comma(text: str, pos: int) -> str:
    # The parser stops at the start of the next member; put the comma after the previous value.
    head = text[:pos].rstrip()
    return head + "," + text[len(head):]


def _err(path: str, key: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"{os.path.basename(path)}: {key}={value!r}: {rule}")


def load_config_file(path: str, delays=None) -> ml_collections.ConfigDict:
    """Official Kyutai config file -> ConfigDict(model=<validated model config>,
    sample_extra=<run-time fields>). See the module docstring for the accepted flavours."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_config_file: {path!r} is not a file")
    if path.endswith(".toml"):
        with open(path, "rb") as f:
            try:
                raw = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML: {e}") from None
        model, extra = _from_toml(path, raw)
    else:
        raw = read_json(path)
        model, extra = _from_python(path, raw)
    if delays is not None:
        model.delays = tuple(int(d) for d in delays)
    _validate_model(model, path)
    out = ml_collections.ConfigDict()
    out.model = model
    out.sample_extra = ml_collections.ConfigDict(_plain(extra))
    return out


def _plain(d):
    """Config-friendly copy: lists -> tuples, None dropped."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out[k] = _plain(v)
        elif isinstance(v, list):
            out[k] = tuple(v)
        else:
            out[k] = v
    return out


def _validate_model(model, path):
    config = ml_collections.ConfigDict({"model": model})
    try:
        family.rules(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _base_from_names(path, names) -> ml_collections.ConfigDict:
    for name in names:
        if not isinstance(name, str):
            continue
        base = os.path.basename(name)
        if base in presets.TOKENIZER_PRESETS:
            return presets.PRESETS[presets.TOKENIZER_PRESETS[base]]()
        m = re.match(r"hf(?:-snapshot)?://([^/]+/[^/]+)/", name)
        if m and m.group(1) in presets.REPO_PRESETS:
            return presets.PRESETS[presets.REPO_PRESETS[m.group(1)]]()
    raise ConfigError(f"{path}: has no architecture fields (dim/num_layers or [transformer]) and "
                      f"names no known released model (tokenizer or hf:// repo); known: "
                      f"{sorted(presets.TOKENIZER_PRESETS)} / {sorted(presets.REPO_PRESETS)}")


# -- Python JSON --------------------------------------------------------------------------


def _from_python(path: str, raw: dict):
    extra = {k: raw[k] for k in _PY_META_KEYS if k in raw}
    unknown = sorted(set(raw) - set(_PY_META_KEYS) - set(_PY_ARCH_KEYS))
    if unknown:
        raise _err(path, unknown[0], raw[unknown[0]], f"is not a known Kyutai config field "
                   f"(unknown: {unknown})")
    for key in _PY_INT_KEYS:  # a quoted number ("32") would fail deep in the conversion
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _err(path, key, value, "must be an int")
    for key in _PY_FLOAT_KEYS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _err(path, key, value, "must be a number")
    if "dim" not in raw:
        model = _base_from_names(path, [raw.get("tokenizer_name"), raw.get("moshi_name")])
        if "delays" in raw:
            model.delays = tuple(raw["delays"])
        if raw.get("fuser") is not None or raw.get("conditioners"):
            raise _err(path, "fuser", raw.get("fuser"),
                       "conditioning without architecture fields is not supported")
        return model, extra
    g = lambda k, default=None: raw.get(k, default)

    def need(key):
        if key not in raw:
            raise _err(path, key, None, "is required in a Kyutai Python config")
        return raw[key]

    if not g("causal", True) or g("norm_emb", False) or g("bias_proj", False) or \
            g("quantize", False) or g("depformer_norm") is not None:
        for key, ok in (("causal", True), ("norm_emb", False), ("bias_proj", False),
                        ("quantize", False), ("depformer_norm", None)):
            if g(key, ok) != ok:
                raise _err(path, key, g(key), f"only {ok!r} is supported")
    dim = need("dim")
    norm = need("norm")
    if norm not in _NORMS:
        raise _err(path, "norm", norm, f"must be one of {sorted(_NORMS)}")
    norm_type, eps = _NORMS[norm]
    hidden_scale = need("hidden_scale")

    def ffn_of(gating, width, dim_ff):
        if gating == "none":
            return dict(ffn="plain", activation="gelu", ffn_hidden=dim_ff)
        if gating not in ("silu", "gelu", "relu"):
            raise _err(path, "gating", gating, "must be silu, gelu, relu or none")
        return dict(ffn="gated", activation=gating,
                    ffn_hidden=presets.kyutai_gated_hidden(width, dim_ff))

    pos = need("positional_embedding")
    if pos not in ("rope", "none"):
        raise _err(path, "positional_embedding", pos, "must be 'rope' or 'none'")
    heads = need("num_heads")
    kv_repeat = g("kv_repeat", 1)
    f = ffn_of(need("gating"), dim, int(hidden_scale * dim))
    temporal = presets.TemporalSpec(
        hidden_size=dim, num_layers=need("num_layers"), num_heads=heads,
        num_kv_heads=heads // kv_repeat, ffn_hidden=f["ffn_hidden"], context=need("context"),
        rope_theta=float(need("max_period")), ffn=f["ffn"], activation=f["activation"],
        norm=norm_type, norm_eps=eps, positional=pos, layer_scale=float(g("layer_scale") or 0.0),
        cross_attention=bool(g("cross_attention", False)))
    dep_q = need("dep_q")
    if dep_q:
        ddim = need("depformer_dim")
        dff = g("depformer_dim_feedforward")
        if dff is None:
            dff = int(hidden_scale * ddim)
        if isinstance(dff, list):
            raise _err(path, "depformer_dim_feedforward", dff, "a per-step list is not supported")
        dpos = g("depformer_pos_emb", "sin")
        if dpos not in ("rope", "none"):
            raise _err(path, "depformer_pos_emb", dpos, "must be 'none' or 'rope'")
        # Kyutai's depformer inherits kv_repeat unless depformer_kv_repeat is given.
        if g("depformer_kv_repeat", kv_repeat) != 1:
            raise _err(path, "depformer_kv_repeat", g("depformer_kv_repeat", kv_repeat),
                       "the depformer must use full multi-head attention (1)")
        f = ffn_of(g("depformer_gating", need("gating")), ddim, dff)
        depformer = presets.DepformerSpec(
            num_slices=dep_q, hidden_size=ddim, num_layers=need("depformer_num_layers"),
            num_heads=need("depformer_num_heads"), ffn_hidden=f["ffn_hidden"], ffn=f["ffn"],
            activation=f["activation"],
            weights_per_step=bool(g("depformer_weights_per_step", False)),
            schedule=tuple(g("depformer_weights_per_step_schedule") or ()),
            multi_linear=bool(g("depformer_multi_linear", False)),
            low_rank=g("depformer_low_rank_embeddings") or 0, positional=dpos,
            rope_theta=float(g("depformer_max_period", need("max_period"))),
            layer_scale=float(g("depformer_layer_scale") or 0.0))
    else:
        depformer = presets.NO_DEPFORMER
    conditioners = {}
    fuser = g("fuser") or {}
    for method in fuser.get("prepend", []) or []:
        raise _err(path, "fuser.prepend", fuser["prepend"], "prepend fusion is not supported")
    fuse_of = {n: "sum" for n in fuser.get("sum", []) or []}
    fuse_of.update({n: "cross" for n in fuser.get("cross", []) or []})
    for name, c in (g("conditioners") or {}).items():
        typ = c.get("type")
        if name not in fuse_of:
            raise _err(path, f"conditioners.{name}", c, "is not used by the fuser")
        if typ == "lut":
            lut = c["lut"]
            if lut.get("tokenizer", "noop") != "noop":
                raise _err(path, f"conditioners.{name}.lut.tokenizer", lut["tokenizer"],
                           "only 'noop' is supported")
            conditioners[name] = presets.lut(lut["n_bins"], lut["dim"],
                                             lut.get("possible_values") or (), fuse_of[name])
        elif typ == "tensor":
            conditioners[name] = presets.tensor_conditioner(c["tensor"]["dim"], fuse_of[name])
        else:
            raise _err(path, f"conditioners.{name}.type", typ, "must be 'lut' or 'tensor'")
    text_card = need("text_card")
    card = need("card")
    model = spec_to_section(presets.MoshiSpec(
        text_in_vocab_size=text_card + 1, text_out_vocab_size=g("text_card_out") or text_card,
        audio_vocab_size=card + 1, audio_codebooks=need("n_q"), delays=tuple(need("delays")),
        temporal=temporal, depformer=depformer,
        text_padding_id=g("existing_text_padding_id", 3),
        text_end_padding_id=g("existing_text_end_padding_id", 0),
        demux_second_text_stream=bool(g("demux_second_stream",
                                        g("demux_second_text_stream", False))),
        extra_heads=presets.ExtraHeadsSpec(num_heads=g("extra_heads_num_heads", 0),
                                           dim=g("extra_heads_dim", 6)),
        conditioners=conditioners,
        cross_pos_emb=bool(fuser.get("cross_attention_pos_emb", False)),
        cross_pos_emb_scale=float(fuser.get("cross_attention_pos_emb_scale", 1.0))))
    return model, extra


# -- Rust / server TOML -------------------------------------------------------------------

_RUST_TRANSFORMER_KEYS = ("d_model", "num_heads", "num_layers", "dim_feedforward", "causal",
                          "norm_first", "bias_ff", "bias_attn", "layer_scale", "context",
                          "max_period", "use_conv_block", "use_conv_bias", "gating", "norm",
                          "positional_embedding", "conv_layout", "conv_kernel_size",
                          "kv_repeat", "max_seq_len", "cross_attention", "shared_cross_attn")


def _rust_transformer(path, prefix, t, depformer_slices=None):
    unknown = sorted(set(t) - set(_RUST_TRANSFORMER_KEYS))
    if unknown:
        raise _err(path, f"{prefix}.{unknown[0]}", t[unknown[0]], "is not a known field")
    for key, ok in (("causal", True), ("norm_first", True), ("bias_ff", False),
                    ("bias_attn", False), ("use_conv_block", False), ("conv_layout", False)):
        if t.get(key, ok) != ok:
            raise _err(path, f"{prefix}.{key}", t.get(key), f"only {ok!r} is supported")
    norm = {"RmsNorm": ("rms", 1e-8), "LayerNorm": ("layer", 1e-5)}.get(t.get("norm", "RmsNorm"))
    if norm is None:
        raise _err(path, f"{prefix}.norm", t.get("norm"), "must be RmsNorm or LayerNorm")
    pos = {"Rope": "rope", "None": "none"}.get(t.get("positional_embedding", "Rope"))
    if pos is None:
        raise _err(path, f"{prefix}.positional_embedding", t.get("positional_embedding"),
                   "must be Rope or None")
    d, dff = t["d_model"], t["dim_feedforward"]
    gating = t.get("gating")
    if gating is None:
        ffn = dict(ffn="plain", activation="gelu", ffn_hidden=dff)
    else:
        ffn = dict(ffn="gated", activation=gating.lower(),
                   ffn_hidden=presets.kyutai_gated_hidden(d, dff, rust=True))
    common = dict(hidden_size=d, num_layers=t["num_layers"], num_heads=t["num_heads"],
                  positional=pos, rope_theta=float(t.get("max_period", 10000)),
                  layer_scale=float(t.get("layer_scale") or 0.0), **ffn)
    if depformer_slices is not None:
        return common, norm
    tr = presets.TemporalSpec(num_kv_heads=t["num_heads"] // t.get("kv_repeat", 1),
                              context=t["context"], norm=norm[0], norm_eps=norm[1],
                              cross_attention=bool(t.get("cross_attention")), **common)
    return tr, norm


def _from_rust_lm(path, lm, prefix=""):
    known = ("text_in_vocab_size", "text_out_vocab_size", "audio_vocab_size", "audio_codebooks",
             "transformer", "depformer", "conditioners", "extra_heads")
    unknown = sorted(set(lm) - set(known))
    if unknown:
        raise _err(path, prefix + unknown[0], lm[unknown[0]], "is not a known field")
    temporal, _ = _rust_transformer(path, prefix + "transformer", lm["transformer"])
    dep = lm.get("depformer")
    k = lm["audio_codebooks"]
    if dep:
        slices = dep["num_slices"]
        kw, _ = _rust_transformer(path, prefix + "depformer.transformer", dep["transformer"],
                                  depformer_slices=slices)
        schedule = dep.get("weights_per_step_schedule") or ()
        depformer = presets.DepformerSpec(
            num_slices=slices, schedule=tuple(schedule),
            low_rank=dep.get("low_rank_embeddings") or 0, **kw)
        delays = presets.stream_delays(k, slices, 1)
    else:
        depformer = presets.NO_DEPFORMER
        delays = (0,) * (1 + k)
    conditioners = {}
    for name, c in (lm.get("conditioners") or {}).items():
        if c.get("type") != "Lut":
            raise _err(path, f"{prefix}conditioners.{name}.type", c.get("type"),
                       "only Lut is supported")
        conditioners[name] = presets.lut(c["n_bins"], c["dim"], c.get("possible_values") or ())
    heads = lm.get("extra_heads") or {}
    return spec_to_section(presets.MoshiSpec(
        text_in_vocab_size=lm["text_in_vocab_size"], text_out_vocab_size=lm["text_out_vocab_size"],
        audio_vocab_size=lm["audio_vocab_size"], audio_codebooks=k, delays=delays,
        temporal=temporal, depformer=depformer,
        extra_heads=presets.ExtraHeadsSpec(num_heads=heads.get("num_heads", 0),
                                           dim=heads.get("dim", 6)),
        conditioners=conditioners))


def _from_toml(path: str, raw: dict):
    if "transformer" in raw:
        return _from_rust_lm(path, raw), {}
    modules = raw.get("modules")
    if not modules:
        raise ConfigError(f"{path}: neither an LM config ([transformer]) nor a moshi-server "
                          f"config ([modules.*])")
    lm_modules = {n: m for n, m in modules.items() if isinstance(m, dict)}
    if len(lm_modules) != 1:
        raise _err(path, "modules", sorted(lm_modules), "expected exactly one module")
    (name, module), = lm_modules.items()
    extra = {k: v for k, v in module.items() if not isinstance(v, dict)}
    for sub, val in module.items():
        if isinstance(val, dict) and sub != "model":
            extra.update({f"{sub}_{k}": v for k, v in val.items() if not isinstance(v, dict)})
    if "model" in module:
        model = _from_rust_lm(path, module["model"], prefix=f"modules.{name}.model.")
    else:
        files = [v for v in _walk_strings(module)]
        model = _base_from_names(path, files)
    return model, extra


def _walk_strings(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _walk_strings(v)
        elif isinstance(v, str):
            yield v


# ------------------------------------------------------------------------------------------
# Weights


def _find_config(path: str) -> str:
    if os.path.isfile(path):
        return path
    for name in ("config.json",):
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    tomls = sorted(f for f in os.listdir(path) if f.endswith(".toml"))
    if tomls:
        return os.path.join(path, tomls[0])
    raise FileNotFoundError(f"load_pretrained: {path!r} has no config.json or .toml config")


def _find_weights(config_path: str, extra) -> str:
    folder = os.path.dirname(config_path)
    named = extra.get("moshi_name") if extra is not None else None
    if named and os.path.exists(os.path.join(folder, named)):
        return os.path.join(folder, named)
    files = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".sft")))
    files = [f for f in files if "mimi" not in f and "tokenizer" not in f]
    if len(files) != 1:
        raise FileNotFoundError(f"load_pretrained: expected one LM .safetensors file next to "
                                f"{config_path!r}, found {files}")
    return os.path.join(folder, files[0])


def load_pretrained(path: str, dtype=np.float32):
    """(model ConfigDict, params) from a Kyutai checkpoint directory or config file.

    Raises CheckpointError naming the weights file and the config file when the two disagree (a
    width, head or layer count of the config that the tensors do not have)."""
    config_path = _find_config(path)
    loaded = load_config_file(config_path)
    weights = _find_weights(config_path, loaded.sample_extra)
    state = TensorStore(weights)
    where = f"{weights} with {config_path}"
    try:
        params = convert_state_dict(loaded.model, state, dtype=dtype)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    except ValueError as e:  # a reshape of a tensor to the config's sizes failed
        raise CheckpointError(f"{where}: the tensors do not fit the config's sizes (dim, "
                              f"num_heads, num_layers, depformer_*): {e}") from None
    expected = jax.eval_shape(lambda r: family.init_params(loaded.model, r),
                              jax.random.PRNGKey(0))
    want = {jax.tree_util.keystr(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
    for k, v in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(k)
        if name in want and want[name] != tuple(np.shape(v)):
            raise CheckpointError(f"{where}: param {name} has shape {tuple(np.shape(v))} in the "
                                  f"checkpoint but {want[name]} for the config's sizes")
    return loaded.model, params


def convert_state_dict(model_config, state: dict, dtype=np.float32) -> dict:
    """Kyutai LMModel state dict (name -> numpy array in torch layout, or a `TensorStore`) ->
    params of `audiolm.models.moshi`. Missing or leftover tensors raise `CheckpointError`."""
    spec = family.spec_from_config(model_config)
    reader = Reader(state.__getitem__, state.keys())

    def take(key):
        return np.asarray(reader(key), dtype=dtype)

    def linear(key):  # torch [out, in] -> kernel [in, out]
        return {"kernel": take(key).T}

    def embed(prefix, low_rank, demux):
        out = {"table": {"embedding": take(f"{prefix}.weight")}}
        if low_rank:
            out["low_rank"] = linear(f"{prefix}.low_rank.weight")
        if demux:
            out["out1"] = linear(f"{prefix}.out1.weight")
            out["out2"] = linear(f"{prefix}.out2.weight")
        return out

    def norm(prefix, kind):
        if kind == "rms":
            return {"scale": take(f"{prefix}.alpha").reshape(-1)}
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    def per_set(prefix, plural, singular, sets):
        """[sets] weights from `plural.{i}.weight` or a stacked `singular` [sets*out, in]."""
        if f"{prefix}.{plural}.0.weight" in state:
            return [take(f"{prefix}.{plural}.{i}.weight") for i in range(sets)]
        for key in (f"{prefix}.{singular}_weight", f"{prefix}.{singular}.weight"):
            if key in state:
                w = take(key)
                return list(w.reshape(sets, -1, w.shape[-1]))
        raise ValueError(f"checkpoint has neither {prefix}.{plural}.0.weight nor "
                         f"{prefix}.{singular}_weight")

    def attention(w_in, w_out, tr, kv_heads):
        d, h = tr.hidden_size, tr.num_heads
        dh = d // h
        q, kv = w_in[:d], w_in[d:]
        k, v = kv[:kv_heads * dh], kv[kv_heads * dh:]
        heads = lambda w, n: w.reshape(n, dh, d).transpose(2, 0, 1)
        return {"q_proj": {"kernel": heads(q, h)}, "k_proj": {"kernel": heads(k, kv_heads)},
                "v_proj": {"kernel": heads(v, kv_heads)},
                "o_proj": {"kernel": w_out.T.reshape(h, dh, d)}}

    def ffn(prefix, tr, sets):
        if tr.ffn == "gated":
            if sets > 1 or f"{prefix}.gating.0.linear_in.weight" in state:
                names = [f"{prefix}.gating.{i}" for i in range(sets)]
            else:
                names = [f"{prefix}.gating"]
            out = []
            for n in names:
                w_in = take(f"{n}.linear_in.weight")
                hid = w_in.shape[0] // 2
                out.append({"gate_proj": {"kernel": w_in[:hid].T},
                            "up_proj": {"kernel": w_in[hid:].T},
                            "down_proj": {"kernel": take(f"{n}.linear_out.weight").T}})
            return out
        if sets > 1:
            raise ValueError("per-step weights need a gated FFN (as in Kyutai's code)")
        return [{"fc1": {"kernel": take(f"{prefix}.linear1.weight").T},
                 "fc2": {"kernel": take(f"{prefix}.linear2.weight").T}}]

    def layer(prefix, tr, sets, kv_heads, cross_attention):
        # The depformer shares the temporal norm kind (as in Kyutai's code).
        out = {"attn_norm": norm(f"{prefix}.norm1", spec.temporal.norm),
               "ffn_norm": norm(f"{prefix}.norm2", spec.temporal.norm)}
        ins = per_set(f"{prefix}.self_attn", "in_projs", "in_proj", sets)
        outs = per_set(f"{prefix}.self_attn", "out_projs", "out_proj", sets)
        for i in range(sets):
            out[f"attn_{i}"] = attention(ins[i], outs[i], tr, kv_heads)
        for i, f in enumerate(ffn(prefix, tr, sets)):
            out[f"ffn_{i}"] = f
        if cross_attention:
            cin = per_set(f"{prefix}.cross_attention", "in_projs", "in_proj", 1)[0]
            cout = per_set(f"{prefix}.cross_attention", "out_projs", "out_proj", 1)[0]
            out["cross_attn"] = attention(cin, cout, tr, tr.num_heads)
            out["cross_norm"] = {"scale": take(f"{prefix}.norm_cross.weight"),
                                 "bias": take(f"{prefix}.norm_cross.bias")}
        if tr.layer_scale:
            out["attn_scale"] = {"scale": take(f"{prefix}.layer_scale_1.scale")}
            out["ffn_scale"] = {"scale": take(f"{prefix}.layer_scale_2.scale")}
            if cross_attention:
                out["cross_scale"] = {"scale": take(f"{prefix}.layer_scale_cross.scale")}
        return out

    t = spec.temporal
    params: dict[str, Any] = {
        "text_emb": embed("text_emb", 0, spec.demux_second_text_stream),
        "audio_emb": {"embedding": np.stack([take(f"emb.{k}.weight")
                                             for k in range(spec.audio_codebooks)])},
        "out_norm": norm("out_norm", t.norm),
        "text_linear": linear("text_linear.weight"),
    }
    for i in range(t.num_layers):
        params[f"temporal_{i}"] = layer(f"transformer.layers.{i}", t, 1, t.num_kv_heads,
                                        t.cross_attention)
    for i in range(spec.extra_heads.num_heads):
        params[f"extra_head_{i}"] = linear(f"extra_heads.{i}.weight")
    for name, c in spec.conditioners.items():
        p = f"condition_provider.conditioners.{name}"
        sub = {"output_proj": linear(f"{p}.output_proj.weight"),
               "learnt_padding": take(f"{p}.learnt_padding").reshape(-1)}
        if c.type == "lut":
            sub["embed"] = {"embedding": take(f"{p}.embed.weight")}
        params[f"cond_{name}"] = sub
    if spec.dep_q:
        d = spec.depformer
        for i in range(spec.num_in_proj):
            params[f"depformer_in_{i}"] = linear(f"depformer_in.{i}.weight")
        params["depformer_text_emb"] = embed("depformer_text_emb", d.low_rank,
                                             spec.demux_second_text_stream)
        for k in range(spec.dep_q - 1):
            params[f"depformer_emb_{k}"] = embed(f"depformer_emb.{k}", d.low_rank, False)
        for i in range(d.num_layers):
            params[f"depformer_{i}"] = layer(f"depformer.layers.{i}", d, spec.num_sets,
                                             d.num_heads, False)
        for k in range(spec.dep_q):
            params[f"audio_head_{k}"] = linear(f"linears.{k}.weight")
    else:
        # Kyutai's LMModel builds `depformer_in` even without a depformer (STT); never used.
        reader.used.update(k for k in state.keys() if k.startswith("depformer_in."))
    reader.check_all_used("Kyutai checkpoint (wrong config?): ")
    return params
