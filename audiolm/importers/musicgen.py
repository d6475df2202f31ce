"""Importer of transformers' MusicGen decoder (`MusicgenForCausalLM`, model_type
"musicgen_decoder") into the pattern LM.

`load_pretrained(path)` reads `config.json` and the safetensors weights of a directory written by
`MusicgenForCausalLM.save_pretrained` and returns `(model_config, params)` for
`audiolm.models.pattern_lm`. Every tensor of the checkpoint is mapped (or an error names the
leftovers); every param of the model is filled (checked against `init_params` shapes).

Mapping: the decoder's summed per-codebook embeddings (vocab + 1 rows) -> `embed`; pre-LN layers
(self-attention, cross-attention `encoder_attn`, fc1-GELU-fc2, no biases) -> `layers_i`;
final LayerNorm -> `final_norm`; `lm_heads.k` -> `heads` [K, D, V]. Sinusoidal positions are
computed, not stored. The delay pattern is audiocraft's `delay` (per-channel delays for stereo
checkpoints, whose left/right codebooks are interleaved). Cross-attention reads
`encoder_hidden_states` [B, S, hidden] as the pre-computed tensor condition
``cond.encoder_hidden_states`` (+ ``.mask``), passed through without projection, exactly as
`MusicgenForCausalLM(encoder_hidden_states=..., encoder_attention_mask=...)` does.

The decoder checkpoint carries no codec: the pretransform is the code space of EnCodec 32 kHz
(MusicGen's codec: 50 frames/s), type "codes".
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from audiolm.importers.mapping import Reader, TensorStore
from audiolm.models import pattern_lm
from audiolm.presets import pattern_lm as presets  # config builders and the EnCodec 32 kHz rates

CROSS_ID = "encoder_hidden_states"

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def model_config_from_hf(cfg: dict[str, Any], max_frames: int | None = None) -> ml_collections.ConfigDict:
    """Pattern LM model config of a MusicgenDecoderConfig dict."""
    if cfg.get("model_type") == "musicgen":
        raise ValueError(
            "musicgen: this directory holds a full MusicgenForConditionalGeneration (T5 + EnCodec "
            "+ decoder); load_pretrained imports the decoder only. Save the decoder with "
            "`model.decoder.save_pretrained(dir)` and load that directory")
    if cfg.get("model_type") != "musicgen_decoder":
        raise ValueError(f"musicgen: config model_type={cfg.get('model_type')!r}; expected "
                         f"'musicgen_decoder' (MusicgenForCausalLM)")
    act = cfg.get("activation_function", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"musicgen: activation_function={act!r} is not supported; expected one "
                         f"of {sorted(_ACTIVATIONS)}")
    dim, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    n_q, card = int(cfg["num_codebooks"]), int(cfg["vocab_size"])
    channels = int(cfg.get("audio_channels", 1))
    if channels not in (1, 2) or n_q % channels:
        raise ValueError(f"musicgen: audio_channels={channels} with num_codebooks={n_q} is not "
                         f"supported (1, or 2 with an even number of codebooks)")
    delays = [q // channels for q in range(n_q)]  # stereo: left/right codebooks interleaved
    pad = cfg.get("pad_token_id", card)
    if pad is not None and int(pad) != card:
        raise ValueError(f"musicgen: pad_token_id={pad}; the pattern's special token is "
                         f"vocab_size={card}")
    max_positions = int(cfg.get("max_position_embeddings", 2048))
    conds = {CROSS_ID: dict(type="tensor", dim=dim, max_length=max_positions, project=False)}
    return presets.model(
        max_frames=max_frames or max_positions - n_q,
        pretransform=presets.CodeSpaceSpec(
            n_q=n_q, codebook_size=card, name="encodec_32khz",
            sample_rate=presets.ENCODEC_32KHZ["sample_rate"],
            frame_rate=presets.ENCODEC_32KHZ["frame_rate"]),
        lm=presets.TransformerSpec(
            hidden_size=dim, num_layers=int(cfg["num_hidden_layers"]), num_heads=heads,
            ffn_hidden=int(cfg["ffn_dim"]), activation=_ACTIVATIONS[act], norm="layer",
            # transformers' MusicGen decoder computes `embed_scale` from `scale_embedding` but
            # never multiplies by it: the flag does not change the model, so it is not imported.
            norm_eps=1e-5, positional="sinusoidal", scale_embedding=False),
        conditioning=presets.ConditioningSpec(dim, conds, cross_attention_ids=(CROSS_ID,),
                                              project_cross_attention=False, cfg_dropout=0.0),
        pattern=presets.PatternSpec("delay", {"delays": delays}))


def convert(tensors: Mapping[str, np.ndarray], model_config: Any) -> dict:
    """MusicgenForCausalLM state dict (name -> numpy array, or a `TensorStore`) -> pattern LM
    params. Missing or leftover tensors raise `CheckpointError`."""
    lm = model_config.lm
    d, h, dh = int(lm.hidden_size), int(lm.num_heads), int(lm.head_dim)
    n_q = int(model_config.pretransform.n_q)
    take = Reader(tensors.__getitem__, tensors.keys(), "musicgen")

    def ln(prefix):
        return {"scale": take(prefix + ".weight"), "bias": take(prefix + ".bias")}

    def attn(prefix):
        out = {}
        for ours, theirs in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj")):
            out[ours] = {"kernel": take(f"{prefix}.{theirs}.weight").T.reshape(d, h, dh)}
        out["o_proj"] = {"kernel": take(f"{prefix}.out_proj.weight").T.reshape(h, dh, d)}
        return out

    dec = "model.decoder"
    params: dict[str, Any] = {
        "embed": {"embedding": np.stack([take(f"{dec}.embed_tokens.{k}.weight")
                                         for k in range(n_q)])},
        "final_norm": ln(f"{dec}.layer_norm"),
        "heads": {"kernel": np.stack([take(f"lm_heads.{k}.weight").T for k in range(n_q)])},
    }
    for i in range(int(lm.num_layers)):
        p = f"{dec}.layers.{i}"
        params[f"layers_{i}"] = {
            "attn_norm": ln(f"{p}.self_attn_layer_norm"),
            "attn": attn(f"{p}.self_attn"),
            "cross_norm": ln(f"{p}.encoder_attn_layer_norm"),
            "cross_attn": attn(f"{p}.encoder_attn"),
            "ffn_norm": ln(f"{p}.final_layer_norm"),
            "ffn": {"fc1": {"kernel": take(f"{p}.fc1.weight").T},
                    "fc2": {"kernel": take(f"{p}.fc2.weight").T}},
        }
    take.check_all_used("musicgen: ")
    return params


def _check_against_model(params: dict, model_config: Any) -> None:
    shapes = jax.eval_shape(lambda r: pattern_lm.init_params(model_config, r),
                            jax.random.PRNGKey(0))
    flat_p = {jax.tree_util.keystr(k): v.shape
              for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    flat_s = {jax.tree_util.keystr(k): v.shape
              for k, v in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    if flat_p.keys() != flat_s.keys():
        missing = sorted(flat_s.keys() - flat_p.keys())
        extra = sorted(flat_p.keys() - flat_s.keys())
        raise ValueError(f"musicgen: params do not match the model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, shape in flat_s.items():
        if tuple(flat_p[k]) != tuple(shape):
            raise ValueError(f"musicgen: param {k} has shape {flat_p[k]}, the model expects "
                             f"{shape}")


def load_pretrained(path: str, max_frames: int | None = None):
    """(model_config, params) of a MusicgenForCausalLM directory (config.json + safetensors)."""
    config_file = os.path.join(path, "config.json")
    if not os.path.exists(config_file):
        raise FileNotFoundError(f"musicgen: {path!r} has no config.json")
    with open(config_file) as f:
        cfg = json.load(f)
    model_config = model_config_from_hf(cfg, max_frames)
    params = convert(TensorStore(path), model_config)
    _check_against_model(params, model_config)
    return model_config, jax.tree_util.tree_map(np.asarray, params)
