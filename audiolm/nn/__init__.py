"""Shared neural-network blocks (Flax Linen, channels-last). Contract: notes/NN_API.md.

Every module has `dtype` (compute) and `param_dtype` fields and names its weight axes with
logical names; `init_params` returns plain (unboxed) params.

Beyond the contract (additive only): `logical_params_axes` (logical names of every weight, via
eval_shape); `attention_mask` / `dot_product_attention` (the attention core); negative key
positions are never visible (padding); with a KV cache the queries attend over the L slots as
they were before the call plus the T new keys (so `mask` has S = L + T there), which keeps
chunked prefill into a ring buffer exact; `CausalConvTranspose1d(trim_left=0, groups=1)`
(Qwen3-Omni trims k - stride on both ends; Mimi's upsampler is depthwise); `Embed` /
`MultiCodebookEmbed` give NaN rows for out-of-range ids; `MoE(activation="silu")`;
`TransformerBlock(cross_norm_eps, ffn_bias, init_cache(batch, max_len, width))`;
`params.Projection` (multi-axis linear kept at its true rank so logical names fit under a mesh).
"""

from audiolm.nn.attention import Attention, attention_mask, dot_product_attention
from audiolm.nn.conv import (CausalConv1d, CausalConvTranspose1d, ConvNeXtBlock, LayerScale,
                             SnakeBeta)
from audiolm.nn.embed import Embed, MultiCodebookEmbed
from audiolm.nn.moe import MoE
from audiolm.nn.mlp import ACTIVATIONS, MLP, GatedMLP, get_activation
from audiolm.nn.norms import LayerNorm, RMSNorm
from audiolm.nn.params import init_params, logical_params_axes
from audiolm.nn.rope import apply_rope, sinusoidal_positions
from audiolm.nn.transformer import TransformerBlock

__all__ = [
    "ACTIVATIONS", "Attention", "CausalConv1d", "CausalConvTranspose1d", "ConvNeXtBlock", "Embed",
    "GatedMLP", "LayerNorm", "LayerScale", "MLP", "MoE", "MultiCodebookEmbed", "RMSNorm",
    "SnakeBeta", "TransformerBlock", "apply_rope", "attention_mask", "dot_product_attention",
    "get_activation", "init_params", "logical_params_axes", "sinusoidal_positions",
]
