"""Shared neural-network blocks (Flax Linen, channels-last).

The contract of every block: `dtype` (compute) and `param_dtype` fields; weight axes named with
logical names (mapped onto mesh axes by `audiolm.parallel`); `init_params` returns plain
(unboxed) params; the class docstring gives the call signature with shapes.

Also: `logical_params_axes` (logical names of every weight, via eval_shape); `attention_mask` /
`dot_product_attention` (the attention core); negative key positions are never visible
(padding); with a KV cache the queries attend over the L slots as they were before the call
plus the T new keys (so `mask` has S = L + T there), which keeps chunked prefill into a ring
buffer exact; `CausalConvTranspose1d(trim_left=0, groups=1)` (Qwen3-Omni trims k - stride on
both ends; Mimi's upsampler is depthwise); `Embed` / `MultiCodebookEmbed` give NaN rows for
out-of-range ids; `MoE(activation="silu")`; `compile.fast_jit` (compiling short-lived programs
without backend optimisation, one executable per signature);
`TransformerBlock` is the one transformer layer of every family (Qwen3 decoder and AuT
encoder, Kyutai temporal / depformer with cross_norm / cross_scale / cross_mask / weight_sets,
MusicGen decoder), with `init_cache(batch, max_len, width)`; `losses` holds the one masked
token cross-entropy (`token_nll`, `masked_cross_entropy`);
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
