"""Shared neural-network blocks (Flax Linen, channels-last). Contract: notes/NN_API.md.

Every module has `dtype` (compute) and `param_dtype` fields and names its weight axes with
logical names; `init_params` returns plain (unboxed) params.
"""

from audiolm.nn import conv
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
