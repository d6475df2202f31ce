"""Mixture of SwiGLU experts with a softmax-top-k router (Qwen3-MoE) and optional shared expert.

Shapes: B batch, T length, D width, E experts, k = top_k, h = expert_hidden, N = B*T tokens,
C = expert capacity (capacity dispatch only).
"""

from __future__ import annotations

import functools
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
# a loop over row tiles per expert wins there; GPU/TPU have native ragged_dot kernels.
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


@jax.custom_vjp
def permute_rows(x: jax.Array, perm: jax.Array, inverse: jax.Array) -> jax.Array:
    """x[perm] for a permutation `perm` of the rows of x [M, ...], `inverse` its inverse.

    The cotangent goes back through the inverse permutation, a gather too: autodiff of a
    gather is a scatter-add, which XLA:CPU runs row by row (2048 x 256 rows: 1 ms)."""
    return x[perm]


permute_rows.defvjp(lambda x, perm, inverse: (x[perm], (perm, inverse)),
                    lambda res, g: (g[res[1]], None, None))


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
    `jax.lax.ragged_dot` on GPU/TPU, a loop over row tiles on CPU; static shapes, N*k rows).
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
        inverse = jnp.zeros_like(order).at[order].set(jnp.arange(n * k, dtype=order.dtype))
        # Each token repeated k times (assignment order), then grouped by expert: [N*k, D].
        repeated = jnp.broadcast_to(tokens[:, None], (n, k, tokens.shape[-1]))
        xs = permute_rows(repeated.reshape(n * k, -1), order, inverse)
        group_sizes = jnp.bincount(flat_expert, length=self.num_experts).astype(jnp.int32)
        method = grouped_method(self.dispatch)
        out = grouped_swiglu(xs, group_sizes, wi_gate, wi_up, wo, act, method)  # [N*k, D]
        out = permute_rows(out, inverse, order)  # back to assignment order
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


def tile_rows(num_rows: int, num_experts: int, max_tile: int = 32) -> int:
    """Rows per tile: the largest power of two <= rows per expert / 4, in [1, max_tile].

    A group's last tile is partly padding (on average tile / 2 rows), so E * tile / 2 <= 1/8
    of the rows are wasted; decode with a few tokens gets tile 1 (no padding). Measured on one
    core (16 experts, 2048 rows, D=256, h=128): fwd+bwd 13.9 ms with 32 rows, 14.3 with 64.
    """
    tile = 1
    while tile * 2 <= min(max_tile, num_rows // max(4 * num_experts, 1)):
        tile *= 2
    return tile


# Rows per weight-gradient window of `tiled_swiglu`'s backward. One core, fwd+bwd of the MoE:
# 16 experts, D=256, h=128, 2048 rows: 14.5 ms per tile (32 rows), 14.1 with 64, 14.8 with 128;
# 32 experts, D=512, h=256: 101 ms per tile (16 rows), 81 with 64, 87 with 128.
WINDOW_ROWS = 64


def _for_each_tile(group_sizes, tile: int, weights, carry, body, transpose: bool = False):
    """carry = body(e, ws, r, end, carry) for each tile start r = start_e, start_e + tile, ...
    < end_e of each non-empty group e, groups in order (group e holds rows [start_e, end_e));
    ws = the e-th slices of `weights` (2-D; transposed, and so laid out transposed, with
    `transpose`: XLA:CPU multiplies by a transposed operand ~1.5x slower than by a stored one).

    Empty groups are skipped (decoding one token uses top-k of E experts) and the weights are
    sliced once per group, not per tile: XLA:CPU copies a dynamic slice (3 x 128 KB per row
    when decoding with tiles of one row)."""
    ends = jnp.cumsum(group_sizes)
    starts = ends - group_sizes
    groups = jnp.argsort(group_sizes == 0, stable=True)  # non-empty first, in order

    def group(state):
        i, carry = state
        e = groups[i]
        ws = [jax.lax.dynamic_index_in_dim(w, e, keepdims=False) for w in weights]
        ws = [w.T for w in ws] if transpose else ws

        def step(state):
            r, carry = state
            return r + tile, body(e, ws, r, ends[e], carry)

        return i + 1, jax.lax.while_loop(lambda s: s[0] < ends[e], step, (starts[e], carry))[1]

    return jax.lax.while_loop(lambda s: s[0] < jnp.sum(group_sizes > 0), group,
                              (jnp.zeros((), jnp.int32), carry))[1]


def _tiles_forward(xs, group_sizes, wi_gate, wi_up, wo, act, tile, window, residuals=True):
    """Forward of `tiled_swiglu` -> (y [M, D], residuals or None)."""
    m, d = xs.shape
    h = wi_gate.shape[2]
    # A group's last tile (window) reads and writes up to tile - 1 (window - 1) rows past its
    # end: rows of the next groups, rewritten when their turn comes (groups run in order), or
    # these padding rows.
    pad = max(tile, window) if residuals else tile
    xp = jnp.concatenate([xs, jnp.zeros((pad, d), xs.dtype)])

    def body(e, ws, r, end, carry):
        w_gate, w_up, w_out = ws
        x = jax.lax.dynamic_slice_in_dim(xp, r, tile)
        g = x @ w_gate
        u = x @ w_up
        put = lambda a, v: jax.lax.dynamic_update_slice_in_dim(a, v, r, 0)  # noqa: E731
        return tuple(put(a, v) for a, v in zip(carry, ((act(g) * u) @ w_out, g, u)))

    # The gate and up activations are kept only for the backward (not in decoding).
    rows = [jnp.zeros((m + pad, n), xs.dtype) for n in ((d, h, h) if residuals else (d,))]
    y, *kept = _for_each_tile(group_sizes, tile, (wi_gate, wi_up, wo), tuple(rows), body)
    return y[:m], ((xp, group_sizes, wi_gate, wi_up, wo, *kept) if residuals else None)


def _tiles_backward(act, tile, window, res, dy):
    xp, group_sizes, wi_gate, wi_up, wo, gate, up = res
    m, d = dy.shape
    dyp = jnp.concatenate([dy, jnp.zeros((xp.shape[0] - m, d), dy.dtype)])
    rows = lambda a, r, n: jax.lax.dynamic_slice_in_dim(a, r, n)  # noqa: E731

    # Pass 1, tile by tile: the cotangents of the gate and up activations and of xs.
    def cotangents(e, ws, r, end, carry):
        (w_gate_t, w_up_t, w_out_t), (dx, g_gate_all, g_up_all) = ws, carry
        a, act_vjp = jax.vjp(act, rows(gate, r, tile))
        g_hid = rows(dyp, r, tile) @ w_out_t
        g_up = g_hid * a
        (g_gate,) = act_vjp(g_hid * rows(up, r, tile))
        put = lambda a, v: jax.lax.dynamic_update_slice_in_dim(a, v, r, 0)  # noqa: E731
        return (put(dx, g_gate @ w_gate_t + g_up @ w_up_t), put(g_gate_all, g_gate),
                put(g_up_all, g_up))

    dx, g_gate, g_up = _for_each_tile(
        group_sizes, tile, (wi_gate, wi_up, wo),
        (jnp.zeros_like(xp), jnp.zeros_like(gate), jnp.zeros_like(up)), cotangents,
        transpose=True)

    # Pass 2, `window` rows at a time: the weight gradients, x^T g per expert. A product with
    # few rows is bound by writing its [D, h] result, so the windows are larger than the tiles.
    def weight_grads(e, ws, r, end, carry):
        # Rows past the group's end belong to other experts: zero cotangents keep them out.
        mine = (r + jnp.arange(window) < end)[:, None]
        g = lambda a: jnp.where(mine, rows(a, r, window), 0)  # noqa: E731
        x = rows(xp, r, window)
        hid = act(rows(gate, r, window)) * rows(up, r, window)
        add = lambda dw, a, b: dw.at[e].add((a.T @ b).astype(dw.dtype))  # noqa: E731
        dw_gate, dw_up, dwo = carry
        return (add(dw_gate, x, g(g_gate)), add(dw_up, x, g(g_up)), add(dwo, hid, g(dyp)))

    # Weight gradients accumulate over a group's windows in float32 (bfloat16 compute).
    zeros = tuple(jnp.zeros(w.shape, jnp.float32) for w in (wi_gate, wi_up, wo))
    dws = _for_each_tile(group_sizes, window, (), zeros, weight_grads)
    return (dx[:m], None) + tuple(dw.astype(w.dtype) for dw, w in
                                  zip(dws, (wi_gate, wi_up, wo)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def tiled_swiglu(xs, group_sizes, wi_gate, wi_up, wo, act, tile: int, window: int):
    """`grouped_swiglu` "tiles": each group runs as tiles of `tile` rows, one
    [tile, D] x [D, h] matmul per tile with its expert's weights, in a loop.

    XLA:CPU has no grouped matmul; a loop over the tiles a group really has runs the same
    FLOPs as the dense FFN (plus < 1 tile per group) with no weight gathers, and the custom
    VJP runs the backward by tiles too, then the weight gradients by windows of `window`
    rows, accumulated per expert in place, where autodiff of a gather-based version emits
    gathers and scatter-adds of whole weight copies. Residuals: the gate and up activations.
    """
    return _tiles_forward(xs, group_sizes, wi_gate, wi_up, wo, act, tile, window, False)[0]


tiled_swiglu.defvjp(lambda *a: _tiles_forward(*a), _tiles_backward)


def grouped_swiglu(xs, group_sizes, wi_gate, wi_up, wo, act, method: str = "ragged_dot"):
    """Per-group SwiGLU FFN: rows of group e go through expert e.

    xs [M, D] sorted by group, group_sizes [E] int32 (sum = M), wi_gate/wi_up [E, D, h],
    wo [E, h, D] -> [M, D]. method "ragged_dot": jax.lax.ragged_dot; "gmm": the Pallas
    Megablox grouped matmul; "tiles": `tiled_swiglu` with `tile_rows` rows per tile.
    """
    if method in ("ragged_dot", "gmm"):
        mm = jax.lax.ragged_dot if method == "ragged_dot" else _gmm
        hid = act(mm(xs, wi_gate, group_sizes)) * mm(xs, wi_up, group_sizes)
        return mm(hid, wo, group_sizes)
    if method != "tiles":
        raise ValueError(f"grouped_swiglu: method={method!r}: expected one of {GROUPED_METHODS}")
    m, e = xs.shape[0], wi_gate.shape[0]
    return tiled_swiglu(xs, group_sizes.astype(jnp.int32), wi_gate, wi_up, wo, act,
                        tile_rows(m, e), WINDOW_ROWS)
