"""stable-audio-tools LM configs -> our pattern LM: `create_audio_lm_from_config` builds a
pattern LM from our ConfigDict or from a stable-audio-tools LM config (JSON layout).

Accepted inputs:

- our experiment ConfigDict (``config.model.family == "pattern_lm"``) or its `model` section;
- a stable-audio-tools config (dict, or a path to its JSON file)::

    {"model_type": "lm", "sample_rate": SR, "sample_size": ...,
     "model": {"pretransform": {...}, "conditioning": {"cond_dim": C, "configs": [...]},
               "lm": {"type": "continuous_transformer" | "x-transformers", "config": {...},
                      "codebook_pattern": "delay", "codebook_pattern_kwargs": {...},
                      "cross_attention_cond_ids": [...], "prepend_cond_ids": [...],
                      "global_cond_ids": [...]}}}

Every error stable-audio-tools raises for such a config (in its order: model missing,
sample_rate missing, lm missing, pretransform missing, non-discrete pretransform, unknown
pattern, lm type missing, lm config missing, unknown lm type; then unknown conditioner types and
condition ids no conditioner provides) is a `ConfigError` naming the field.
`codebook_pattern_kwargs` (delays, group_by, ...) is our extension: stable-audio-tools fixes the
pattern arguments.

Mapping of the stable-audio-tools LM onto our blocks: pre-LayerNorm causal transformer with
SwiGLU feed-forward (hidden = ff_mult x width), rotary positions unless `rotary_pos_emb` is
false, per-codebook heads with bias; cross-attention tokens projected by one Linear to the width,
prepend tokens by Linear-SiLU-Linear. Pretrained codecs (autoencoder with an RVQ bottleneck,
dac_pretrained, audiocraft_pretrained) become a "codes" pretransform: their code space (n_q,
codebook_size, frame rate); their weights are not loaded here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from audiolm.config import ConfigError
from audiolm.models import conditioners as cond_lib
from audiolm.models import pattern_lm
from audiolm.models import pretransform as pretransform_lib
from audiolm.presets import pattern_lm as presets

__all__ = ["AudioLM", "create_audio_lm_from_config", "model_config_from_stable_audio_tools",
           "model_config_from_json", "SAT_PATTERNS", "SAT_LM_TYPES"]

# stable-audio-tools pattern names -> audiolm.patterns kinds ("valle" is audiocraft's
# VALLEPattern: codebook 0 first, then the rest in parallel = coarse_first).
SAT_PATTERNS = {"parallel": "parallel", "delay": "delay", "unroll": "unroll",
                "valle": "coarse_first", "musiclm": "musiclm"}
SAT_LM_TYPES = ("continuous_transformer", "x-transformers")
SAT_UNSUPPORTED_LM_TYPES = ("mamba",)
SAT_DISCRETE_BOTTLENECKS = ("rvq", "rvq_vae", "dac_rvq", "dac_rvq_vae")
SAT_CONTINUOUS_PRETRANSFORMS = ("wavelet", "pqmf", "patched")
SAT_CONDITIONERS = ("t5", "number", "int", "list") + cond_lib.TYPES
SAT_UNSUPPORTED_CONDITIONERS = ("clap_text", "clap_audio", "phoneme", "lut", "pretransform",
                                "source_mix")
DEFAULT_SEGMENT_SECONDS = 30.0  # max_frames when the config has no sample_size (MusicGen: 30 s)


@dataclasses.dataclass
class AudioLM:
    """A built pattern LM: the flax module and everything needed around it.

    config: model ConfigDict (validated); module: `PatternLM`; spec: its `PatternLMSpec`;
    pretransform: tokenizer (or code space); sample_rate; min_input_length: samples per frame.
    """
    config: ml_collections.ConfigDict
    module: pattern_lm.PatternLM
    spec: pattern_lm.PatternLMSpec
    pretransform: Any

    @property
    def sample_rate(self) -> int:
        return int(self.pretransform.sample_rate)

    @property
    def min_input_length(self) -> int:
        return int(self.pretransform.hop_length)

    @property
    def num_quantizers(self) -> int:
        return self.spec.n_q

    @property
    def codebook_size(self) -> int:
        return self.spec.card

    def init(self, rng: jax.Array) -> Any:
        return pattern_lm.init_params(self.config, rng)

    def pattern(self, timesteps: int):
        return pattern_lm.pattern_for(self.spec, timesteps)

    def prepare_conditions(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return cond_lib.prepare(self.spec.conditioning.conditioners, raw)


def create_audio_lm_from_config(config: Any) -> AudioLM:
    """Builds the pattern LM of `config` (see module docstring for accepted layouts)."""
    model_config = _to_model_config(config)
    full = ml_collections.ConfigDict({"model": model_config})
    pattern_lm.rules(full)
    spec = pattern_lm.spec_from_config(model_config)
    return AudioLM(model_config, pattern_lm.PatternLM(spec), spec,
                   pretransform_lib.build(model_config.pretransform))


def _is_ours(config: Any) -> bool:
    if not hasattr(config, "keys"):
        return False
    if "family" in config:
        return True
    model = config.get("model") if "model" in config else None
    return hasattr(model, "keys") and "family" in model


def _to_model_config(config: Any) -> ml_collections.ConfigDict:
    if isinstance(config, (str, os.PathLike)):
        return model_config_from_json(config)
    if _is_ours(config):
        model = config if "family" in config else config["model"]
        if model["family"] != "pattern_lm":
            raise ConfigError(f"model.family={model['family']!r}: create_audio_lm_from_config "
                              f"builds 'pattern_lm' models")
        return model if isinstance(model, ml_collections.ConfigDict) else \
            ml_collections.ConfigDict(dict(model))
    if not hasattr(config, "keys"):
        raise ConfigError(f"config={type(config).__name__}: expected a ConfigDict, a dict in the "
                          f"stable-audio-tools layout or a path to its JSON file")
    return model_config_from_stable_audio_tools(config)


def model_config_from_json(path: str) -> ml_collections.ConfigDict:
    """Model config of a stable-audio-tools LM JSON file."""
    with open(path) as f:
        try:
            sat = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path!r} is not valid JSON: {e}") from None
    return model_config_from_stable_audio_tools(sat)


# ---------------------------------------------------------------------------------------------
# stable-audio-tools layout.


def _missing(path: str, what: str) -> ConfigError:
    return ConfigError(f"{path} is missing: {what}")


def _section(parent: Mapping, key: str, path: str, what: str) -> Mapping:
    value = parent.get(key) if hasattr(parent, "get") else None
    if value is None:
        raise _missing(path, what)
    if not hasattr(value, "keys"):
        raise ConfigError(f"{path}={value!r}: must be a section (JSON object)")
    return value


def _int_field(section: Mapping, key: str, path: str, default: Any = None) -> int:
    value = section.get(key, default)
    if value is None:
        raise _missing(f"{path}.{key}", "required field")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}.{key}={value!r}: must be a positive int")
    return value


def _sat_pretransform(pt: Mapping, sample_rate: int) -> Any:
    path = "model.pretransform"
    ptype = pt.get("type")
    if ptype is None:
        raise _missing(f"{path}.type", "the pretransform type")
    cfg = pt.get("config", {}) or {}
    if ptype in ("mulaw_rvq", "codes"):
        # One of ours, given in our fields: the type's defaults and the model's sample rate
        # fill what it leaves out; the model's rules name any unknown or ill-typed field.
        spec = presets.MuLawRVQSpec if ptype == "mulaw_rvq" else presets.CodeSpaceSpec
        defaults = {f.name: f.default for f in dataclasses.fields(spec)
                    if f.default is not dataclasses.MISSING}
        return ml_collections.ConfigDict({**defaults, "sample_rate": sample_rate, **dict(cfg),
                                          "type": ptype})
    if ptype == "autoencoder":
        bottleneck = cfg.get("bottleneck") or {}
        btype = bottleneck.get("type")
        if btype not in SAT_DISCRETE_BOTTLENECKS:
            raise ConfigError(
                f"{path}.config.bottleneck.type={btype!r}: the pattern LM needs a discrete "
                f"pretransform (an autoencoder with one of the bottlenecks "
                f"{list(SAT_DISCRETE_BOTTLENECKS)})")
        bpath = f"{path}.config.bottleneck.config"
        bcfg = bottleneck.get("config") or {}
        n_key = "n_codebooks" if btype.startswith("dac") else "num_quantizers"
        n_q = _int_field(bcfg, n_key, bpath)
        card = _int_field(bcfg, "codebook_size", bpath)
        ratio = _int_field(cfg, "downsampling_ratio", f"{path}.config")
    elif ptype in ("dac_pretrained", "audiocraft_pretrained"):
        # The codec is loaded by name in stable-audio-tools; here its code space must be stated.
        cpath = f"{path}.config"
        n_q = _int_field(cfg, "num_quantizers", cpath)
        card = _int_field(cfg, "codebook_size", cpath)
        ratio = _int_field(cfg, "downsampling_ratio", cpath)
    elif ptype in SAT_CONTINUOUS_PRETRANSFORMS:
        raise ConfigError(f"{path}.type={ptype!r}: the pattern LM needs a discrete pretransform "
                          f"(autoencoder with an RVQ bottleneck, dac_pretrained, "
                          f"audiocraft_pretrained, mulaw_rvq or codes); {ptype!r} is continuous")
    else:
        raise ConfigError(f"{path}.type={ptype!r}: unknown pretransform type; expected a discrete "
                          f"one: autoencoder, dac_pretrained, audiocraft_pretrained, "
                          f"{', '.join(pretransform_lib.types())}")
    return presets.CodeSpaceSpec(n_q=n_q, codebook_size=card, sample_rate=sample_rate,
                                 frame_rate=sample_rate / ratio, name=f"{ptype}")


def _sat_conditioner(i: int, info: Mapping, cond_dim: int) -> tuple[str, Any]:
    path = f"model.conditioning.configs[{i}]"
    if not hasattr(info, "keys"):
        raise ConfigError(f"{path}={info!r}: must be a section with id, type and config")
    cid = info.get("id")
    if not isinstance(cid, str) or not cid:
        raise ConfigError(f"{path}.id={cid!r}: must be a non-empty string")
    ctype = info.get("type")
    if ctype is None:
        raise _missing(f"{path}.type", "the conditioner type")
    cfg = dict(info.get("config", {}) or {})
    if ctype in SAT_UNSUPPORTED_CONDITIONERS:
        raise ConfigError(f"{path}.type={ctype!r}: this stable-audio-tools conditioner is not "
                          f"available here; supported types: {list(SAT_CONDITIONERS)}")
    if ctype not in SAT_CONDITIONERS:
        raise ConfigError(f"{path}.type={ctype!r}: unknown conditioner type; expected one of "
                          f"{list(SAT_CONDITIONERS)}")
    if ctype == "t5":
        name = cfg.get("t5_model_name", "t5-base")
        dim = cfg.get("dim")
        config_file = os.path.join(str(name), "config.json")
        if dim is None and os.path.exists(config_file):
            with open(config_file) as f:
                dim = json.load(f).get("d_model")
        if dim is None:
            dim = presets.T5_DIMS.get(name)
        if dim is None:
            raise ConfigError(f"{path}.config.t5_model_name={name!r}: not a local T5 directory "
                              f"and not a known T5 name {sorted(presets.T5_DIMS)}; give a "
                              f"local directory or {path}.config.dim")
        return cid, presets.T5ConditionerSpec(path=str(name), dim=int(dim),
                                              max_length=int(cfg.get("max_length", 128)),
                                              project=bool(cfg.get("project_out", False)))
    if ctype == "number":
        return cid, presets.NumberConditionerSpec(min_val=float(cfg.get("min_val", 0.0)),
                                                  max_val=float(cfg.get("max_val", 1.0)))
    if ctype == "int":
        lo, hi = int(cfg.get("min_val", 0)), int(cfg.get("max_val", 512))
        return cid, presets.LookupConditionerSpec(num_classes=hi - lo + 1, min_val=lo)
    if ctype == "list":
        options = tuple(cfg.get("options", []))
        return cid, presets.LookupConditionerSpec(num_classes=len(options) + 1, options=options)
    # One of ours, given in our fields: the type's defaults fill what it leaves out; the model's
    # rules name any unknown or ill-typed field.
    spec = presets.CONDITIONER_SPECS[ctype]
    defaults = {f.name: f.default for f in dataclasses.fields(spec)
                if f.default is not dataclasses.MISSING}
    return cid, {**defaults, **cfg, "type": ctype}


def model_config_from_stable_audio_tools(sat: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Our model ConfigDict of a stable-audio-tools LM config (ConfigError naming the field)."""
    if not hasattr(sat, "keys"):
        raise ConfigError(f"config={sat!r}: must be a JSON object (stable-audio-tools layout)")
    model_type = sat.get("model_type", "lm")
    if model_type != "lm":
        raise ConfigError(f"model_type={model_type!r}: create_audio_lm_from_config builds "
                          f"'lm' models")
    model = _section(sat, "model", "model", "the model section of the config")
    sample_rate = sat.get("sample_rate")
    if sample_rate is None:
        raise _missing("sample_rate", "the audio sample rate in Hz (top level)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ConfigError(f"sample_rate={sample_rate!r}: must be a positive int (Hz)")
    lm = _section(model, "lm", "model.lm", "the LM section")
    pt = _section(model, "pretransform", "model.pretransform",
                  "a discrete pretransform (the LM reads n_q and codebook_size from it)")
    pretransform_cfg = _sat_pretransform(pt, sample_rate)
    pattern_name = lm.get("codebook_pattern", "delay")
    if pattern_name not in SAT_PATTERNS:
        raise ConfigError(f"model.lm.codebook_pattern={pattern_name!r}: unknown pattern; "
                          f"expected one of {sorted(SAT_PATTERNS)}")
    lm_type = lm.get("type")
    if lm_type is None:
        raise _missing("model.lm.type", f"the LM type, one of {list(SAT_LM_TYPES)}")
    lm_cfg = lm.get("config")
    if lm_cfg is None:
        raise _missing("model.lm.config", "the LM model config")
    if lm_type not in SAT_LM_TYPES:
        extra = " (stable-audio-tools has it; this port does not)" \
            if lm_type in SAT_UNSUPPORTED_LM_TYPES else ""
        raise ConfigError(f"model.lm.type={lm_type!r}: unknown LM type{extra}; expected one of "
                          f"{list(SAT_LM_TYPES)}")

    # Conditioning.
    conditioning = model.get("conditioning")
    conds: dict[str, dict] = {}
    cond_dim = None
    if conditioning is not None:
        if not hasattr(conditioning, "keys"):
            raise ConfigError(f"model.conditioning={conditioning!r}: must be a section")
        cond_dim = _int_field(conditioning, "cond_dim", "model.conditioning")
        configs = conditioning.get("configs", [])
        if not isinstance(configs, (list, tuple)):
            raise ConfigError(f"model.conditioning.configs={configs!r}: must be a list")
        for i, info in enumerate(configs):
            cid, c = _sat_conditioner(i, info, cond_dim)
            if cid in conds:
                raise ConfigError(f"model.conditioning.configs[{i}].id={cid!r}: repeats an "
                                  f"earlier id")
            conds[cid] = c
    ids = {}
    for key in ("cross_attention_cond_ids", "prepend_cond_ids", "global_cond_ids"):
        values = lm.get(key, []) or []
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"model.lm.{key}={values!r}: must be a list of conditioner ids")
        for j, cid in enumerate(values):
            if cid not in conds:
                raise ConfigError(f"model.lm.{key}[{j}]={cid!r}: no conditioner provides this "
                                  f"id; model.conditioning.configs has {sorted(conds)}")
        ids[key] = list(values)

    # Transformer.
    lpath = "model.lm.config"
    dim = _int_field(lm_cfg, "embed_dim", lpath)
    depth = _int_field(lm_cfg, "depth", lpath)
    heads = lm_cfg.get("heads") or lm_cfg.get("num_heads")
    if heads is None:
        dim_heads = _int_field(lm_cfg, "dim_heads", lpath, default=64)
        if dim % dim_heads:
            raise ConfigError(f"{lpath}.dim_heads={dim_heads}: must divide {lpath}.embed_dim="
                              f"{dim}")
        heads = dim // dim_heads
    if dim % heads:
        raise ConfigError(f"{lpath}.heads={heads}: must divide {lpath}.embed_dim={dim}")
    ff_mult = lm_cfg.get("ff_mult", 4)
    rotary = lm_cfg.get("rotary_pos_emb", True)
    positional = "rope" if rotary else ("sinusoidal" if lm_cfg.get("use_sinusoidal_emb") else
                                        "none")
    lm_spec = presets.TransformerSpec(hidden_size=dim, num_layers=depth, num_heads=int(heads),
                                      ffn_hidden=int(ff_mult * dim), ffn="gated",
                                      activation="silu", norm="layer", norm_eps=1e-5,
                                      positional=positional, head_bias=True)
    if ids["cross_attention_cond_ids"]:
        cross_dim = lm_cfg.get("cross_attn_cond_dim", 0)
        if cross_dim and cross_dim != cond_dim:
            raise ConfigError(f"{lpath}.cross_attn_cond_dim={cross_dim}: must equal "
                              f"model.conditioning.cond_dim={cond_dim}")
    if ids["prepend_cond_ids"]:
        pre_dim = lm_cfg.get("prepend_cond_dim", 0)
        if pre_dim and pre_dim != cond_dim:
            raise ConfigError(f"{lpath}.prepend_cond_dim={pre_dim}: must equal "
                              f"model.conditioning.cond_dim={cond_dim}")

    hop = pretransform_cfg.sample_rate / pretransform_cfg.frame_rate
    sample_size = sat.get("sample_size")
    if sample_size is not None:
        max_frames = max(1, int(math.ceil(int(sample_size) / hop)))
    else:
        max_frames = max(1, int(round(DEFAULT_SEGMENT_SECONDS * pretransform_cfg.frame_rate)))
    cfg = presets.model(
        max_frames=max_frames, pretransform=pretransform_cfg, lm=lm_spec,
        conditioning=presets.ConditioningSpec(
            cond_dim or dim, conds,
            cross_attention_ids=tuple(ids["cross_attention_cond_ids"]),
            prepend_ids=tuple(ids["prepend_cond_ids"]), global_ids=tuple(ids["global_cond_ids"]),
            project_cross_attention=bool(ids["cross_attention_cond_ids"]),
            cfg_dropout=float(lm.get("cfg_dropout_prob", 0.1))),
        pattern=presets.PatternSpec(SAT_PATTERNS[pattern_name],
                                    dict(lm.get("codebook_pattern_kwargs", {}) or {})))
    return cfg
