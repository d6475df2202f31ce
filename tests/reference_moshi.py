"""Reference harness for the Kyutai family: the `moshi` 0.2.13 package (test-time only).

`lm_kwargs(model_config)` translates an audiolm moshi model config into `LMModel` kwargs (the
inverse of `audiolm.importers.moshi`'s JSON reader); `reference_model` builds a seeded fp32
LMModel with every parameter drawn at random (norms and layer scales included);
`meta_param_count` builds at full size on torch's meta device; `save_checkpoint` writes a
Kyutai-style directory (config.json + model.safetensors) from a torch model.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("NO_TORCH_COMPILE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("moshi")

from moshi.models.lm import LMModel  # noqa: E402
from moshi.models.loaders import get_condition_fuser, get_conditioner_provider  # noqa: E402

CONFIG_DIR = "/work/shared/reference-configs/moshi"
if not os.path.isdir(CONFIG_DIR):
    CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference-configs",
                              "moshi")

torch.set_num_threads(1)


def _hidden_scale(dim: int, hidden: int) -> float:
    # Kyutai's rule gives h = 2 * int(scale * d) // 3; scale = 3h / (2d) inverts it for even h.
    return 3 * hidden / (2 * dim)


def lm_kwargs(m) -> dict:
    """LMModel kwargs equal to audiolm model config `m` (family moshi, fusion add)."""
    t, d = m.temporal, m.depformer
    norm = {("rms", 1e-8): "rms_norm_f32", ("rms", 1e-5): "rms_norm",
            ("layer", 1e-5): "layer_norm", ("layer", 1e-8): "layer_norm_f32"}[(t.norm, t.norm_eps)]
    kw = dict(
        delays=list(m.delays), n_q=m.audio_codebooks, dep_q=d.num_slices,
        card=m.audio_vocab_size - 1, text_card=m.text_in_vocab_size - 1,
        text_card_out=m.text_out_vocab_size, dim=t.hidden_size, num_heads=t.num_heads,
        num_layers=t.num_layers, norm=norm, context=t.context, max_period=t.rope_theta,
        positional_embedding=t.positional, causal=True,
        layer_scale=t.layer_scale or None, kv_repeat=t.num_heads // t.num_kv_heads,
        cross_attention=t.cross_attention, existing_text_padding_id=m.text_padding_id,
        existing_text_end_padding_id=m.text_end_padding_id,
        extra_heads_num_heads=m.extra_heads.num_heads, extra_heads_dim=m.extra_heads.dim,
        demux_second_text_stream=m.demux_second_text_stream,
    )
    if t.ffn == "gated":
        kw.update(gating=t.activation, hidden_scale=_hidden_scale(t.hidden_size, t.ffn_hidden))
    else:
        kw.update(gating="none", hidden_scale=t.ffn_hidden / t.hidden_size)
    if d.num_slices:
        kw.update(
            depformer_dim=d.hidden_size, depformer_num_heads=d.num_heads, depformer_kv_repeat=1,
            depformer_num_layers=d.num_layers, depformer_multi_linear=d.multi_linear,
            depformer_weights_per_step=d.weights_per_step,
            depformer_weights_per_step_schedule=list(d.schedule) or None,
            depformer_low_rank_embeddings=d.low_rank or None,
            depformer_pos_emb=d.positional, depformer_max_period=d.rope_theta,
            depformer_layer_scale=d.layer_scale or None,
            depformer_gating=d.activation if d.ffn == "gated" else "none",
            depformer_dim_feedforward=(3 * d.ffn_hidden // 2 if d.ffn == "gated"
                                       else d.ffn_hidden))
    if len(m.conditioners):
        conds, fuser = {}, {"sum": [], "cross": [], "prepend": []}
        for name, c in m.conditioners.items():
            if c.type == "lut":
                conds[name] = {"type": "lut", "lut": {
                    "n_bins": c.n_bins, "dim": c.dim, "tokenizer": "noop",
                    "possible_values": list(c.possible_values) or None}}
            else:
                conds[name] = {"type": "tensor", "tensor": {"dim": c.dim}}
            fuser[c.fuse].append(name)
        fuser["cross_attention_pos_emb"] = m.cross_pos_emb
        fuser["cross_attention_pos_emb_scale"] = m.cross_pos_emb_scale
        kw["conditioners"] = conds
        kw["fuser"] = fuser
    return kw


def json_config(m) -> dict:
    """Kyutai Python-style config.json of `m` (what the Hub repos ship)."""
    kw = lm_kwargs(m)
    kw.pop("demux_second_text_stream")
    kw["demux_second_stream"] = m.demux_second_text_stream
    return kw


def reference_model(m, seed: int = 0, device=None) -> "LMModel":
    kw = dict(lm_kwargs(m))
    conds = kw.pop("conditioners", None)
    fuser = kw.pop("fuser", None)
    dev = device or "cpu"
    provider = fuser_obj = None
    if conds is not None:
        cfg = {"conditioners": json.loads(json.dumps(conds)), "fuser": fuser}
        provider = get_conditioner_provider(m.temporal.hidden_size, dev, cfg)
        fuser_obj = get_condition_fuser(cfg)
    torch.manual_seed(seed)
    model = LMModel(condition_provider=provider, fuser=fuser_obj, device=dev,
                    dtype=torch.float32, **kw)
    if device is None:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed + 1)
            for name, p in model.named_parameters():
                if name.endswith("alpha") or name.endswith("norm_cross.weight") or \
                        name.endswith("layer_scale_1.scale") or "norm" in name.split(".")[-2]:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) / max(p.shape[-1], 1) ** 0.5)
        model.eval()
    return model


def meta_param_count(m) -> int:
    model = reference_model(m, device="meta")
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model, m, folder: str) -> str:
    """config.json + model.safetensors of a torch LMModel; returns the folder."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(json_config(m), f)
    return folder
