"""Mixture of SwiGLU experts with a softmax-top-k router (Qwen3-MoE) and optional shared expert.

Shapes: B batch, T length, D width, E experts, k = top_k, h = expert_hidden, N = B*T tokens,
C = expert capacity (capacity dispatch only).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm.nn.mlp import GatedMLP, dense, get_activation
from audiolm.nn.params import Dtype, constrain, partitioned

# "dropless" picks the grouped matmul of the backend (`DEFAULT_GROUPED`); "tiles", "ragged_dot"
# and "gmm" are dropless with that grouped matmul forced; "capacity" is the einsum dispatch.
DISPATCHES = ("dropless", "capacity", "tiles", "ragged_dot", "gmm")
# Fastest grouped matmul per backend, fwd and fwd+bwd (experiments/bench_train.py --moe-sweep).
# XLA:CPU lowers ragged_dot to a dense matmul per expert with masking (E times the FLOPs), so
# padded tiles win there; GPU/TPU have native ragged_dot kernels.
DEFAULT_GROUPED = {"cpu": "tiles", "gpu": "ragged_dot", "tpu": "ragged_dot"}


def route(logits: jax.Array, top_k: int, norm_topk_prob: bool):
    """Router: softmax in float32 -> top-k -> optional renormalisation.

    logits [N, E] -> (probs [N, E], weights [N, k], experts [N, k] int32).
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    weights, experts = jax.lax.top_k(probs, top_k)
    if norm_topk_prob:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return probs, weights, experts.astype(jnp.int32)


def router_aux_losses(logits: jax.Array, probs: jax.Array, experts: jax.Array):
    """{"load_balance_loss": E * sum_e f_e P_e, "router_z_loss": mean(logsumexp(logits)^2)}.

    f_e = fraction of tokens that picked e among their top-k (so sum_e f_e = k), P_e = mean
    router probability of e (HF `load_balancing_loss_func` for one layer).
    """
    num_experts = logits.shape[-1]
    picks = jax.nn.one_hot(experts, num_experts, dtype=jnp.float32)  # [N, k, E]
    f = jnp.sum(jnp.mean(picks, axis=0), axis=0)
    p = jnp.mean(probs, axis=0)
    z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    return {"load_balance_loss": num_experts * jnp.sum(f * p),
            "router_z_loss": jnp.mean(jnp.square(z))}


def capacity(num_tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert: ceil(capacity_factor * tokens * top_k / E)."""
    return max(1, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


class MoE(nn.Module):
    """`__call__(x [B, T, D]) -> (y [B, T, D], aux)`, aux the router losses
    (`router_aux_losses`: load_balance_loss, router_z_loss; float32 scalars).

    Params: `router/kernel` [D, E], `wi_gate`, `wi_up` [E, D, h], `wo` [E, h, D]; with
    shared_expert_hidden > 0 also `shared_expert` (GatedMLP) and `shared_expert_gate/kernel`
    [D, 1]. Expert i computes wo_i^T (act(wi_gate_i^T x) * wi_up_i^T x).

    dispatch "dropless": assignments sorted by expert, grouped matmuls (`grouped_swiglu`:
    `jax.lax.ragged_dot` on GPU/TPU, padded tiles on CPU; static shapes, N*k rows).
    "capacity": one-hot einsum dispatch into [E, C] slots; an assignment beyond its expert's
    capacity is dropped (contributes 0). Slots are filled by choice rank first (all first
    choices before second choices), then token order.
    """
    num_experts: int
    top_k: int
    expert_hidden: int
    norm_topk_prob: bool = True
    shared_expert_hidden: int = 0
    dispatch: str = "dropless"
    capacity_factor: float = 2.0
    activation: str = "silu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _check(self):
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"MoE: dispatch={self.dispatch!r}: expected one of {DISPATCHES}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"MoE: top_k={self.top_k} must be in [1, num_experts="
                             f"{self.num_experts}]")
        if self.capacity_factor <= 0:
            raise ValueError(f"MoE: capacity_factor={self.capacity_factor} must be > 0")

    @nn.compact
    def __call__(self, x: jax.Array):
        self._check()
        b, t, d = x.shape
        e, h = self.num_experts, self.expert_hidden
        x = constrain(x, ("batch", "length", "embed"))
        logits = dense(e, "router", ("embed", "experts"), False, jnp.float32,
                       self.param_dtype)(x.astype(jnp.float32)).reshape(b * t, e)
        probs, weights, experts = route(logits, self.top_k, self.norm_topk_prob)
        aux = router_aux_losses(logits, probs, experts)

        init_in = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                   in_axis=1, out_axis=2, batch_axis=(0,))
        wi_gate = self.param("wi_gate", partitioned(init_in, ("experts", "embed", "mlp")),
                             (e, d, h), self.param_dtype)
        wi_up = self.param("wi_up", partitioned(init_in, ("experts", "embed", "mlp")),
                           (e, d, h), self.param_dtype)
        wo = self.param("wo", partitioned(init_in, ("experts", "mlp", "embed")),
                        (e, h, d), self.param_dtype)
        wi_gate, wi_up, wo = (jnp.asarray(w, self.dtype) for w in (wi_gate, wi_up, wo))
        tokens = x.reshape(b * t, d).astype(self.dtype)
        weights = weights.astype(self.dtype)
        act = get_activation(self.activation)
        if self.dispatch == "capacity":
            y = self._capacity(tokens, weights, experts, wi_gate, wi_up, wo, act)
        else:
            y = self._dropless(tokens, weights, experts, wi_gate, wi_up, wo, act)
        y = y.reshape(b, t, d)

        if self.shared_expert_hidden:
            shared = GatedMLP(self.shared_expert_hidden, activation=self.activation,
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              name="shared_expert")(x)
            gate = dense(1, "shared_expert_gate", ("embed", None), False, self.dtype,
                         self.param_dtype)(x)
            y = y + jax.nn.sigmoid(gate) * shared
        return constrain(y.astype(self.dtype), ("batch", "length", "embed")), aux

    def _dropless(self, tokens, weights, experts, wi_gate, wi_up, wo, act):
        n, k = experts.shape
        flat_expert = experts.reshape(-1)  # [N*k], assignment a = token a // k
        order = jnp.argsort(flat_expert, stable=True)
        xs = tokens[order // k]  # [N*k, D], grouped by expert
        group_sizes = jnp.bincount(flat_expert, length=self.num_experts).astype(jnp.int32)
        method = grouped_method(self.dispatch)
        out = grouped_swiglu(xs, group_sizes, wi_gate, wi_up, wo, act, method)  # [N*k, D]
        out = jnp.zeros_like(out).at[order].set(out)  # back to assignment order
        return jnp.einsum("nkd,nk->nd", out.reshape(n, k, -1), weights)

    def _capacity(self, tokens, weights, experts, wi_gate, wi_up, wo, act):
        n, k = experts.shape
        c = capacity(n, k, self.num_experts, self.capacity_factor)
        picks = jax.nn.one_hot(experts, self.num_experts, dtype=jnp.int32)  # [N, k, E]
        # Slot of each assignment in its expert: count earlier assignments, rank-major order.
        rank_major = jnp.transpose(picks, (1, 0, 2)).reshape(k * n, self.num_experts)
        slot = (jnp.cumsum(rank_major, axis=0) - 1).reshape(k, n, -1).transpose(1, 0, 2)
        slot = jnp.sum(slot * picks, axis=-1)  # [N, k]
        kept = slot < c
        onehot_slot = jax.nn.one_hot(jnp.where(kept, slot, c), c, dtype=self.dtype)  # [N,k,C]
        pick_f = picks.astype(self.dtype)
        dispatch = jnp.einsum("nke,nkc->nec", pick_f, onehot_slot)
        combine = jnp.einsum("nke,nkc,nk->nec", pick_f, onehot_slot, weights)
        xin = jnp.einsum("nec,nd->ecd", dispatch, tokens)
        xin = constrain(xin, ("experts", None, "embed"))
        hid = act(jnp.einsum("ecd,edh->ech", xin, wi_gate)) * \
            jnp.einsum("ecd,edh->ech", xin, wi_up)
        out = jnp.einsum("ech,ehd->ecd", hid, wo)
        return jnp.einsum("nec,ecd->nd", combine, out)


GROUPED_METHODS = ("ragged_dot", "tiles", "gmm")


def grouped_method(dispatch: str, backend: str | None = None) -> str:
    """The grouped matmul a dropless `dispatch` runs on `backend` (default: JAX's)."""
    if dispatch != "dropless":
        return dispatch
    backend = backend or jax.default_backend()
    return DEFAULT_GROUPED.get(backend, "ragged_dot")


def _gmm(lhs, rhs, group_sizes):
    """Pallas grouped matmul (the Megablox kernel MaxText uses): [M, K] x [E, K, N] -> [M, N].

    Compiled by Mosaic on TPU; elsewhere it runs in Pallas interpret mode (exact, slow: for
    checking the kernel's wiring on CPU, not for speed). Differentiable (custom VJP)."""
    from jax.experimental.pallas.ops.tpu.megablox import ops as megablox

    m, k = lhs.shape
    n = rhs.shape[-1]
    # Tiles no larger than the operands (the kernel needs them to divide K and N).
    tiling = tuple(min(128, v) for v in (m, k, n))
    return megablox.gmm(lhs, rhs, group_sizes.astype(jnp.int32), lhs.dtype, tiling, None, None,
                        False, jax.default_backend() != "tpu")


def tile_rows(num_rows: int, num_experts: int, max_tile: int = 64) -> int:
    """Rows per tile: the largest power of two <= rows per expert, in [1, max_tile].

    Padding costs at most E*(tile-1) rows, so the tile follows the mean group size (decode with
    a few tokens gets tile 1: no padding, one weight gather per row).
    """
    tile = 1
    while tile * 2 <= min(max_tile, num_rows // max(num_experts, 1)):
        tile *= 2
    return tile


def grouped_swiglu(xs, group_sizes, wi_gate, wi_up, wo, act, method: str = "ragged_dot"):
    """Per-group SwiGLU FFN: rows of group e go through expert e.

    xs [M, D] sorted by group, group_sizes [E] int32 (sum = M), wi_gate/wi_up [E, D, h],
    wo [E, h, D] -> [M, D]. method "ragged_dot": jax.lax.ragged_dot; "gmm": the Pallas
    Megablox grouped matmul; "tiles": each group is
    padded to a multiple of `tile_rows` rows, every tile gathers its expert's weights and the
    tiles run as one batched matmul (static shapes: at most M + E*(tile-1) padded rows).
    """
    if method in ("ragged_dot", "gmm"):
        mm = jax.lax.ragged_dot if method == "ragged_dot" else _gmm
        hid = act(mm(xs, wi_gate, group_sizes)) * mm(xs, wi_up, group_sizes)
        return mm(hid, wo, group_sizes)
    if method != "tiles":
        raise ValueError(f"grouped_swiglu: method={method!r}: expected one of {GROUPED_METHODS}")
    m, d = xs.shape
    e = wi_gate.shape[0]
    tile = tile_rows(m, e)
    rows = -(-(m + e * (tile - 1)) // tile) * tile  # static bound of the padded rows
    padded = (group_sizes + tile - 1) // tile * tile
    src_start = jnp.cumsum(group_sizes) - group_sizes
    dst_end = jnp.cumsum(padded)
    row_group = jnp.repeat(jnp.arange(e), group_sizes, total_repeat_length=m)
    dst = dst_end[row_group] - padded[row_group] + jnp.arange(m) - src_start[row_group]
    xt = jnp.zeros((rows, d), xs.dtype).at[dst].set(xs).reshape(rows // tile, tile, d)
    # Tiles past the last group hold zeros; clipping gives them some valid expert.
    tile_group = jnp.minimum(
        jnp.searchsorted(dst_end, jnp.arange(rows // tile) * tile, side="right"), e - 1)
    hid = act(jnp.einsum("jtd,jdh->jth", xt, wi_gate[tile_group])) * \
        jnp.einsum("jtd,jdh->jth", xt, wi_up[tile_group])
    out = jnp.einsum("jth,jhd->jtd", hid, wo[tile_group]).reshape(rows, -1)
    return out[dst]
