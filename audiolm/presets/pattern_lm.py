"""Pattern LM presets: MusicGen / stable-audio-tools audio LMs over interleaved codebooks.

Section builders: `pretransform`, `lm`, `conditioning`; `model(...)` assembles `config.model`.
Presets (`PRESETS`): `tiny` (every conditioning type; tests) and `musicgen_small`. Format facts
the importers share: `ENCODEC_32KHZ` (MusicGen's codec rates), `T5_DIMS` (T5 encoder widths).

`config.model` fields (dotted paths used in errors):
  max_frames            code frames per training example (pattern length; example batches)
  pretransform.*        the discrete tokenizer; the LM reads n_q and codebook_size from it
    type                mulaw_rvq (built-in deterministic tokenizer) | codes (external codec)
    n_q, codebook_size  codebooks and codes per codebook (the special token is codebook_size)
    sample_rate, frame_rate   Hz and code frames per second
    mu                  mu-law parameter (mulaw_rvq)
  pattern.kind          parallel | delay | unroll | coarse_first | musiclm
  pattern.kwargs        keyword arguments of audiolm.patterns.make (delays, flatten_first,
                        empty_initial, flattening, group_by)
  lm.*                  the transformer: dim, num_layers, num_heads, num_kv_heads, head_dim,
                        ffn (plain | gated), ffn_hidden, activation, norm (layer | rms),
                        norm_eps, attn_bias, mlp_bias, head_bias, positional (sinusoidal |
                        rope | none), rope_theta, scale_embedding (x sqrt(dim)), final_norm
  conditioning.cond_dim               width C of every conditioner's output
  conditioning.conditioners.<id>      {type: number | lookup | text | t5 | tensor, ...}
  conditioning.cross_attention_ids    ids concatenated along the sequence, cross-attended
  conditioning.prepend_ids            ids projected and placed before the codes
  conditioning.global_ids             ids pooled, projected and added to every position
  conditioning.project_cross_attention  Linear(C -> dim) on the cross-attention tokens
  conditioning.cfg_dropout            per-sample, per-type null-condition probability (training)
"""

from __future__ import annotations

import ml_collections

# The codec MusicGen checkpoints are trained on (a decoder-only checkpoint does not carry it).
ENCODEC_32KHZ = {"sample_rate": 32000, "frame_rate": 50.0}

# Widths of the public T5 encoders stable-audio-tools names (its T5Conditioner.T5_MODEL_DIMS).
T5_DIMS = {
    "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
    "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
    "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096, "google/t5-v1_1-xl": 2048,
    "google/t5-v1_1-xxl": 4096,
}


def pretransform(type_="mulaw_rvq", n_q=4, codebook_size=16, sample_rate=16000,
                 frame_rate=50.0, mu=255.0, name=""):
    p = ml_collections.ConfigDict(dict(type=type_, n_q=n_q, codebook_size=codebook_size,
                                       sample_rate=sample_rate, frame_rate=float(frame_rate)))
    if type_ == "mulaw_rvq":
        p.mu = float(mu)
    else:
        p.name = name
    return p


def lm(dim, num_layers, num_heads, ffn_hidden, *, num_kv_heads=None, head_dim=None,
       ffn="plain", activation="gelu", norm="layer", norm_eps=1e-5, attn_bias=False,
       mlp_bias=False, head_bias=False, positional="sinusoidal", rope_theta=10000.0,
       scale_embedding=False, final_norm=True):
    return ml_collections.ConfigDict(dict(
        dim=dim,  # model width
        num_layers=num_layers,
        num_heads=num_heads,  # query heads
        num_kv_heads=num_kv_heads or num_heads,  # key/value heads (GQA when fewer)
        head_dim=head_dim or dim // num_heads,
        ffn=ffn,  # plain: fc1-act-fc2 (MusicGen) | gated: SwiGLU (stable-audio-tools)
        ffn_hidden=ffn_hidden,
        activation=activation,  # gelu = exact erf GELU (MusicGen)
        norm=norm,  # layer | rms
        norm_eps=float(norm_eps),
        attn_bias=attn_bias,  # q/k/v/o biases
        mlp_bias=mlp_bias,
        head_bias=head_bias,  # per-codebook output head bias (stable-audio-tools has one)
        positional=positional,  # sinusoidal ([cos, sin], MusicGen) | rope | none
        rope_theta=float(rope_theta),
        scale_embedding=scale_embedding,  # multiply summed code embeddings by sqrt(dim)
        final_norm=final_norm,  # norm before the heads
    ))


def conditioning(cond_dim, conditioners=None, cross=(), prepend=(), global_=(),
                 project_cross=False, cfg_dropout=0.1):
    c = ml_collections.ConfigDict()
    c.cond_dim = cond_dim
    c.conditioners = ml_collections.ConfigDict(conditioners or {})
    c.cross_attention_ids = list(cross)
    c.prepend_ids = list(prepend)
    c.global_ids = list(global_)
    c.project_cross_attention = project_cross
    c.cfg_dropout = float(cfg_dropout)
    return c


def model(max_frames, pretransform_cfg, lm_cfg, conditioning_cfg, kind="delay", **pattern_kwargs):
    m = ml_collections.ConfigDict()
    m.family = "pattern_lm"
    m.max_frames = max_frames
    m.pretransform = pretransform_cfg
    m.pattern = ml_collections.ConfigDict(dict(kind=kind, kwargs=dict(pattern_kwargs)))
    m.lm = lm_cfg
    m.conditioning = conditioning_cfg
    return m


def tiny():
    """All three conditioning types, every conditioner type except t5 (it needs a local model)."""
    conds = {
        "prompt": dict(type="text", max_length=12, num_layers=1, num_heads=2, ffn_hidden=32),
        "genre": dict(type="lookup", num_classes=5),
        "bpm": dict(type="number", min_val=40.0, max_val=200.0),
        "style": dict(type="tensor", dim=6, max_length=3, project=True),
    }
    return model(
        max_frames=12,
        pretransform_cfg=pretransform(n_q=4, codebook_size=16, sample_rate=1600, frame_rate=50.0),
        lm_cfg=lm(dim=32, num_layers=2, num_heads=4, ffn_hidden=64),
        conditioning_cfg=conditioning(16, conds, cross=("prompt", "style"), prepend=("genre",),
                                      global_=("bpm",), project_cross=True),
        kind="delay")


def musicgen_small():
    """MusicGen small: 24 x 1024 (16 heads, FFN 4096), 4 codebooks of 2048 (EnCodec 32 kHz,
    50 Hz), delay pattern, cross-attention to T5-base (768) projected to the width."""
    conds = {"description": dict(type="t5", path="t5-base", dim=768, max_length=64,
                                 project=False)}
    return model(
        max_frames=1500,  # 30 s at 50 Hz
        pretransform_cfg=pretransform("codes", n_q=4, codebook_size=2048, sample_rate=32000,
                                      frame_rate=50.0, name="encodec_32khz"),
        lm_cfg=lm(dim=1024, num_layers=24, num_heads=16, ffn_hidden=4096),
        conditioning_cfg=conditioning(768, conds, cross=("description",), project_cross=True,
                                      cfg_dropout=0.1),
        kind="delay")


PRESETS = {"tiny": tiny, "musicgen_small": musicgen_small}
