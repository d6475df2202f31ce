"""Codebook interleaving patterns as pure functions (audiocraft semantics, jnp at run time).

A pattern lays the codes of K parallel codebooks over T frames (timesteps) out as a sequence of S
steps. Each step holds a set of (t, q) pairs: codebook q of frame t is read (build) or written
(revert) at that step. Step 0 is normally empty and becomes a column of special tokens. This is
the single implementation used by the training loss and by the sampler.

Kinds and their keyword arguments (shapes for n_q=4, T=5; S counts all steps):

- ``parallel(empty_initial=0)``: every codebook of frame t at step 1+t (S=6).
- ``delay(delays=range(n_q), flatten_first=0, empty_initial=0)``: (t, q) at step
  1+empty_initial+t+delays[q] (flatten_first=0); delays sorted and >= 0 (audiocraft asserts
  sorted; negative ones would skip codes); the first ``flatten_first`` frames are
  written one codebook per step; ``empty_initial=-1`` drops the leading special step (S=9).
- ``unroll(flattening=range(n_q), delays=[0]*n_q)``: codebooks with the same flattening value
  share an inner step, inner steps of a frame follow each other, delays push entries later;
  ties are ordered exactly as audiocraft's sort (empty inner steps first) (S=21).
- ``coarse_first(delays=[0]*(n_q-1))``: all of codebook 0 first, then codebooks 1.. as a
  delay pattern (S=11). Needs n_q >= 2.
- ``musiclm(group_by=2)``: groups of ``group_by`` codebooks, one code per step, frame-major
  inside a group, groups one after another (S=21).
- ``stream_delay(delays)``: Moshi's per-stream delays (text stream, then audio codebooks).
  The layout of ``delay`` without its sortedness rule (Moshi 7B uses [0, 0,1x7, 0,1x7], unsorted
  across the two audio streams); every delay >= 0 and at least one is 0. With
  ``keep_only_valid_steps=True`` and ``special=card`` it is Moshi's training input: each stream
  shifted right by its delay (padded with the initial token) after one initial column, T+1 steps;
  ``revert_logits`` on the T model outputs gives Moshi's undelayed logits and mask. Moshi pads
  text and audio with different initial tokens: ``jnp.where(mask, seq, initial[:, None])``.

``keep_only_valid_steps`` cuts the layout to ``num_steps(p, False) - max_delay(p)`` steps, as
audiocraft does (``max_delay`` = max(t+1 over steps 1..) - T).

Index arrays are computed once in numpy per (pattern, length, keep_only_valid_steps) and become
constants under ``jax.jit``; ``build``/``revert``/``revert_logits`` are single gathers, usable
eagerly or inside jit (pass the pattern and ``keep_only_valid_steps`` as static arguments).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("parallel", "delay", "unroll", "coarse_first", "musiclm", "stream_delay")


# --------------------------------------------------------------------------------------------
# Pattern: a static, hashable description; layout arrays computed once in numpy.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Pattern:
    """A codebook layout for ``n_q`` codebooks over ``timesteps`` frames.

    Equality and hash use (kind, n_q, timesteps, params) only, so a Pattern is a valid
    ``jax.jit`` static argument. The layout is held as flat entry arrays in audiocraft's order:
    entry i puts (entry_t[i], entry_q[i]) at step entry_step[i].
    """

    kind: str
    n_q: int
    timesteps: int
    params: tuple[tuple[str, Any], ...]
    n_steps: int
    entry_step: np.ndarray
    entry_t: np.ndarray
    entry_q: np.ndarray

    def _key(self):
        return (self.kind, self.n_q, self.timesteps, self.params)

    def __eq__(self, other):
        return isinstance(other, Pattern) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        sep = ", " if args else ""
        return f"Pattern({self.kind!r}, n_q={self.n_q}, timesteps={self.timesteps}{sep}{args})"

    @functools.cached_property
    def max_delay(self) -> int:
        """max(t + 1 over steps >= 1) - timesteps (audiocraft's definition, may be <= 0)."""
        later = self.entry_t[self.entry_step >= 1]
        top = int(later.max()) + 1 if later.size else 0
        return top - self.timesteps

    @functools.cached_property
    def num_valid_steps(self) -> int:
        # Python slice semantics of audiocraft's layout[:len(layout) - max_delay].
        return len(range(self.n_steps)[: self.n_steps - self.max_delay])

    @functools.cached_property
    def starts_with_special(self) -> bool:
        """True when step 0 is empty (a column of special tokens)."""
        return not bool(np.any(self.entry_step == 0))

    @functools.cached_property
    def _step_bounds(self) -> np.ndarray:
        return np.searchsorted(self.entry_step, np.arange(self.n_steps + 1), side="left")


def _ints(name, value, length=None, what=None):
    """Validates a list of non-negative ints; returns a tuple."""
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of ints, got {value!r}") from None
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {what} = {length} entries, got {len(out)}: {list(out)}")
    if any(v < 0 for v in out):
        raise ValueError(f"{name} must be >= 0, got {list(out)}")
    return out


def _sorted(name, values, kind):
    if list(values) != sorted(values):
        raise ValueError(f"{name} must be sorted (non-decreasing) for kind {kind!r}, got {list(values)}")


def _int(name, value, lo):
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _delay_layout(n_q, T, delays, flatten_first, empty_initial):
    """audiocraft DelayedPatternProvider.get_pattern as entry arrays."""
    lead = 0 if empty_initial < 0 else 1 + empty_initial
    n_flat = min(T, flatten_first)
    fs = lead + np.arange(n_flat * n_q)
    ft = np.repeat(np.arange(n_flat), n_q)
    fq = np.tile(np.arange(n_q), n_flat)
    base = lead + n_flat * n_q
    tt = np.arange(flatten_first, T + max(delays))[:, None]
    t_for_q = tt - np.asarray(delays)[None, :]
    ok = t_for_q >= flatten_first
    step = np.broadcast_to(base + np.arange(tt.shape[0])[:, None], ok.shape)
    qq = np.broadcast_to(np.arange(n_q)[None, :], ok.shape)
    n_steps = base + tt.shape[0]
    return (n_steps, np.concatenate([fs, step[ok]]), np.concatenate([ft, t_for_q[ok]]),
            np.concatenate([fq, qq[ok]]))


def _unroll_layout(n_q, T, flattening, delays):
    """audiocraft UnrolledPatternProvider.get_pattern as entry arrays, same sort and ties."""
    groups = {}
    for q, (inner, d) in enumerate(zip(flattening, delays)):
        groups.setdefault(inner, (d, []))[1].append(q)
    n_inner = max(flattening) + 1
    horizon = T + max(delays)
    # One candidate per (t, inner step); audiocraft sorts (key, coords) tuples: key first, then an
    # empty coords list before any non-empty one, then the first coordinate (t, q).
    t_grid, i_grid = np.meshgrid(np.arange(horizon), np.arange(n_inner), indexing="ij")
    t_grid, i_grid = t_grid.ravel(), i_grid.ravel()
    has = np.array([i in groups for i in range(n_inner)])[i_grid]
    gdelay = np.array([groups[i][0] if i in groups else 0 for i in range(n_inner)])[i_grid]
    gfirst = np.array([groups[i][1][0] if i in groups else -1 for i in range(n_inner)])[i_grid]
    key = np.where(has, t_grid + gdelay, t_grid)
    keep = ~has | (key < horizon)
    t_grid, i_grid, has, key, gfirst = (a[keep] for a in (t_grid, i_grid, has, key, gfirst))
    order = np.lexsort((gfirst, t_grid * has, has, key))  # last key is primary
    # Expand each kept non-empty candidate into its codebooks; step 0 is audiocraft's (-1, []).
    width = max(len(m) for _, m in groups.values())
    members = np.full((n_inner, width), -1)
    for i, (_, m) in groups.items():
        members[i, : len(m)] = m
    step_of = np.arange(1, 1 + order.size)
    q = members[i_grid[order]]  # [N, width]
    ok = (q >= 0) & has[order][:, None]
    step = np.broadcast_to(step_of[:, None], q.shape)[ok]
    t = np.broadcast_to(t_grid[order][:, None], q.shape)[ok]
    return 1 + order.size, step, t, q[ok]


def _coarse_first_layout(n_q, T, delays):
    steps = [1 + np.arange(T)]
    ts = [np.arange(T)]
    qs = [np.zeros(T, np.int64)]
    tt = np.arange(T + max(delays))[:, None]
    t_for_q = tt - np.asarray(delays)[None, :]
    ok = t_for_q >= 0
    steps.append(np.broadcast_to(1 + T + tt, ok.shape)[ok])
    ts.append(t_for_q[ok])
    qs.append(np.broadcast_to(1 + np.arange(n_q - 1)[None, :], ok.shape)[ok])
    return 1 + T + tt.shape[0], np.concatenate(steps), np.concatenate(ts), np.concatenate(qs)


def _musiclm_layout(n_q, T, group_by):
    g, t, j = np.meshgrid(np.arange(n_q // group_by), np.arange(T), np.arange(group_by),
                          indexing="ij")
    steps = 1 + np.arange(n_q * T)
    return 1 + n_q * T, steps, t.ravel(), (g * group_by + j).ravel()


def make(kind: str, n_q: int, timesteps: int, **kwargs) -> Pattern:
    """Builds the pattern ``kind`` for ``n_q`` codebooks and ``timesteps`` frames.

    Keyword arguments per kind are listed in the module docstring; omitted ones take
    audiocraft's defaults, and two calls that resolve to the same arguments give equal Patterns.
    Raises ValueError naming the argument and the rule it breaks.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    n_q = _int("n_q", n_q, 1)
    T = _int("timesteps", timesteps, 1)
    allowed = {
        "parallel": ("empty_initial",),
        "delay": ("delays", "flatten_first", "empty_initial"),
        "unroll": ("flattening", "delays"),
        "coarse_first": ("delays",),
        "musiclm": ("group_by",),
        "stream_delay": ("delays",),
    }[kind]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"kind {kind!r} takes keyword arguments {allowed}, got unknown {unknown}")

    if kind in ("parallel", "delay"):
        empty_initial = _int("empty_initial", kwargs.get("empty_initial", 0), -1)
        if kind == "parallel":
            delays, flatten_first = (0,) * n_q, 0
            params = (("empty_initial", empty_initial),)
        else:
            d = kwargs.get("delays")
            delays = tuple(range(n_q)) if d is None else _ints("delays", d, n_q, "n_q")
            _sorted("delays", delays, kind)
            flatten_first = _int("flatten_first", kwargs.get("flatten_first", 0), 0)
            params = (("delays", delays), ("empty_initial", empty_initial),
                      ("flatten_first", flatten_first))
        layout = _delay_layout(n_q, T, delays, flatten_first, empty_initial)
    elif kind == "stream_delay":
        if kwargs.get("delays") is None:
            raise ValueError("delays is required for kind 'stream_delay' (one per stream)")
        delays = _ints("delays", kwargs["delays"], n_q, "n_q")
        if min(delays) != 0:
            raise ValueError(f"delays must contain a 0 for kind 'stream_delay' (Moshi's text stream "
                             f"has delay 0; otherwise the valid layout is not T+1 steps), got {list(delays)}")
        params = (("delays", delays),)
        layout = _delay_layout(n_q, T, delays, 0, 0)
    elif kind == "unroll":
        f = kwargs.get("flattening")
        flattening = tuple(range(n_q)) if f is None else _ints("flattening", f, n_q, "n_q")
        d = kwargs.get("delays")
        delays = (0,) * n_q if d is None else _ints("delays", d, n_q, "n_q")
        _sorted("flattening", flattening, kind)
        _sorted("delays", delays, kind)
        for q in range(1, n_q):
            if flattening[q] == flattening[q - 1] and delays[q] != delays[q - 1]:
                raise ValueError(
                    f"delays must agree for codebooks flattened to the same inner step: "
                    f"flattening[{q - 1}]=flattening[{q}]={flattening[q]} but "
                    f"delays[{q - 1}]={delays[q - 1]}, delays[{q}]={delays[q]}")
        params = (("delays", delays), ("flattening", flattening))
        layout = _unroll_layout(n_q, T, flattening, delays)
    elif kind == "coarse_first":
        if n_q < 2:
            raise ValueError(f"n_q must be >= 2 for kind 'coarse_first', got {n_q}")
        d = kwargs.get("delays")
        delays = (0,) * (n_q - 1) if d is None else _ints("delays", d, n_q - 1, "n_q - 1")
        _sorted("delays", delays, kind)
        params = (("delays", delays),)
        layout = _coarse_first_layout(n_q, T, delays)
    else:  # musiclm
        group_by = _int("group_by", kwargs.get("group_by", 2), 1)
        if n_q % group_by:
            raise ValueError(f"group_by must divide n_q, got group_by={group_by}, n_q={n_q}")
        params = (("group_by", group_by),)
        layout = _musiclm_layout(n_q, T, group_by)

    n_steps, step, t, q = layout
    arrays = []
    for a in (step, t, q):
        a = np.ascontiguousarray(a, dtype=np.int64)
        a.setflags(write=False)
        arrays.append(a)
    return Pattern(kind, n_q, T, params, int(n_steps), *arrays)


def moshi_delays(delays, timesteps: int) -> Pattern:
    """Moshi's per-stream delays (text stream first, then audio codebooks) as a Pattern.

    Use with ``keep_only_valid_steps=True`` and ``special`` = the initial token (card).
    """
    delays = list(delays)
    return make("stream_delay", len(delays), timesteps, delays=delays)


# --------------------------------------------------------------------------------------------
# Layout queries (host side, for samplers and docs).
# --------------------------------------------------------------------------------------------


def num_steps(pattern: Pattern, keep_only_valid_steps: bool = False) -> int:
    """Number of sequence steps S produced by ``build`` (leading special step included)."""
    return pattern.num_valid_steps if keep_only_valid_steps else pattern.n_steps


def max_delay(pattern: Pattern) -> int:
    """audiocraft's max_delay: steps beyond the last full frame (may be <= 0)."""
    return pattern.max_delay


def steps_for(pattern: Pattern, s: int) -> list[tuple[int, int]]:
    """The (t, q) pairs laid out at step ``s``, in audiocraft's order.

    Pairs with t >= timesteps can occur (delay/unroll tails); ``build`` fills them with special.
    """
    s = operator.index(s)
    if not 0 <= s < pattern.n_steps:
        raise ValueError(f"s must be in [0, {pattern.n_steps}), got {s}")
    lo, hi = pattern._step_bounds[s], pattern._step_bounds[s + 1]
    return [(int(t), int(q)) for t, q in zip(pattern.entry_t[lo:hi], pattern.entry_q[lo:hi])]


def first_step_with(pattern: Pattern, t: int, q: int | None = None) -> int | None:
    """First step holding frame ``t`` (of codebook ``q`` if given); None if no step does.

    For prompting: with a prompt of P frames, decoding starts at ``first_step_with(p, P)``.
    """
    t = operator.index(t)
    if not 0 <= t <= pattern.timesteps:
        raise ValueError(f"t must be in [0, timesteps={pattern.timesteps}], got {t}")
    hit = pattern.entry_t == t
    if q is not None:
        q = operator.index(q)
        if not 0 <= q < pattern.n_q:
            raise ValueError(f"q must be in [0, n_q={pattern.n_q}), got {q}")
        hit &= pattern.entry_q == q
    idx = np.flatnonzero(hit)
    return int(pattern.entry_step[idx[0]]) if idx.size else None


# --------------------------------------------------------------------------------------------
# Index arrays (numpy, cached) and the run-time gathers (jnp).
# --------------------------------------------------------------------------------------------


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=256)
def _build_index(pattern: Pattern, T: int, keep: bool):
    """src [K, S] flat index q*T + t into codes (0 where empty) and mask [K, S]."""
    S = num_steps(pattern, keep)
    src = np.zeros((pattern.n_q, S), np.int32)
    mask = np.zeros((pattern.n_q, S), bool)
    sel = (pattern.entry_step < S) & (pattern.entry_t < T)
    q, s, t = pattern.entry_q[sel], pattern.entry_step[sel], pattern.entry_t[sel]
    src[q, s] = q * T + t
    mask[q, s] = True
    return _readonly(src, mask)


@functools.lru_cache(maxsize=256)
def _revert_index(pattern: Pattern, S: int, keep: bool, model_output: bool):
    """src [K, T] flat index q*S + s into the sequence (0 where absent) and mask [K, T]."""
    T = pattern.timesteps
    step = pattern.entry_step
    if model_output and pattern.starts_with_special:
        step = step - 1  # output position s predicts layout step s + 1
    sel = (step >= 0) & (step < S) & (pattern.entry_step < num_steps(pattern, keep))
    sel &= pattern.entry_t < T
    src = np.zeros((pattern.n_q, T), np.int32)
    mask = np.zeros((pattern.n_q, T), bool)
    q, s, t = pattern.entry_q[sel], step[sel], pattern.entry_t[sel]
    src[q, t] = q * S + s
    mask[q, t] = True
    return _readonly(src, mask)


def _check(name, x, rank, layout, pattern):
    if not isinstance(pattern, Pattern):
        raise ValueError(f"pattern must be a Pattern from patterns.make, got {type(pattern).__name__}")
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != rank:
        raise ValueError(f"{name} must have shape {layout} (rank {rank}), got shape {shape}")
    if shape[1] != pattern.n_q:
        raise ValueError(f"{name} has K={shape[1]} codebooks (axis 1 of {layout}) but the pattern "
                         f"has n_q={pattern.n_q}")
    return shape


def build(pattern: Pattern, codes, special, keep_only_valid_steps: bool = False):
    """Interleaves codes ``[B, K, T]`` into the sequence ``[B, K, S]``.

    T may be shorter than ``pattern.timesteps`` (frames >= T count as missing). Empty slots get
    ``special``. Returns (seq [B, K, S], mask [K, S] bool: True where a real code landed).
    """
    B, K, T = _check("codes", codes, 3, "[B, K, T]", pattern)
    if not 1 <= T <= pattern.timesteps:
        raise ValueError(f"codes has T={T} frames (axis 2): it must be in [1, "
                         f"pattern.timesteps={pattern.timesteps}]")
    keep = bool(keep_only_valid_steps)
    return _build(pattern, keep, jnp.asarray(codes), special), jnp.asarray(_build_index(pattern, T, keep)[1])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _build(pattern, keep, codes, special):
    B, K, T = codes.shape
    src, mask = _build_index(pattern, T, keep)
    out = jnp.take(codes.reshape(B, K * T), src.reshape(-1), axis=1, mode="clip")
    out = out.reshape(B, K, src.shape[1])
    return jnp.where(mask, out, jnp.asarray(special, dtype=codes.dtype))


def revert(pattern: Pattern, seq, special, keep_only_valid_steps: bool = False):
    """Inverse of ``build``: sequence ``[B, K, S]`` back to codes ``[B, K, T]``.

    S may be shorter than ``num_steps(pattern, keep_only_valid_steps)`` (e.g. a partial decode).
    Frames not present get ``special``. Returns (codes [B, K, T], mask [K, T]).
    """
    B, K, S = _check("seq", seq, 3, "[B, K, S]", pattern)
    L = num_steps(pattern, keep_only_valid_steps)
    if not 1 <= S <= L:
        raise ValueError(f"seq has S={S} steps (axis 2): it must be in [1, num_steps={L}] "
                         f"(keep_only_valid_steps={bool(keep_only_valid_steps)})")
    keep = bool(keep_only_valid_steps)
    mask = _revert_index(pattern, S, keep, False)[1]
    return _revert(pattern, keep, jnp.asarray(seq), special), jnp.asarray(mask)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _revert(pattern, keep, seq, special):
    B, K, S = seq.shape
    src, mask = _revert_index(pattern, S, keep, False)
    out = jnp.take(seq.reshape(B, K * S), src.reshape(-1), axis=1, mode="clip")
    out = out.reshape(B, K, pattern.timesteps)
    return jnp.where(mask, out, jnp.asarray(special, dtype=seq.dtype))


def revert_logits(pattern: Pattern, logits, keep_only_valid_steps: bool = False):
    """Aligns model outputs ``[B, K, S, V]`` with the codes they predict: ``[B, K, T, V]``.

    With a leading special step, output position s predicts layout step s + 1 (audiocraft's
    is_model_output). Gathers whole rows along S. Entries with no prediction are NaN (excluded
    through the returned mask [K, T]).
    """
    B, K, S, V = _check("logits", logits, 4, "[B, K, S, V]", pattern)
    L = num_steps(pattern, keep_only_valid_steps)
    if not 1 <= S <= L:
        raise ValueError(f"logits has S={S} steps (axis 2): it must be in [1, num_steps={L}] "
                         f"(keep_only_valid_steps={bool(keep_only_valid_steps)})")
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"logits must be floating point (invalid entries are NaN), got {logits.dtype}")
    keep = bool(keep_only_valid_steps)
    mask = _revert_index(pattern, S, keep, True)[1]
    return _revert_logits(pattern, keep, logits), jnp.asarray(mask)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _revert_logits(pattern, keep, logits):
    B, K, S, V = logits.shape
    src, mask = _revert_index(pattern, S, keep, True)
    out = jnp.take(logits.reshape(B, K * S, V), src.reshape(-1), axis=1, mode="clip")
    out = out.reshape(B, K, pattern.timesteps, V)
    return jnp.where(mask[None, :, :, None], out, jnp.nan)


# --------------------------------------------------------------------------------------------
# Pictures for docs and notebooks.
# --------------------------------------------------------------------------------------------


def grid(pattern: Pattern, keep_only_valid_steps: bool = False) -> np.ndarray:
    """[K, S] frame index at each slot, -1 where empty (t >= timesteps counts as empty)."""
    S = num_steps(pattern, keep_only_valid_steps)
    out = np.full((pattern.n_q, S), -1, np.int64)
    sel = (pattern.entry_step < S) & (pattern.entry_t < pattern.timesteps)
    out[pattern.entry_q[sel], pattern.entry_step[sel]] = pattern.entry_t[sel]
    return out


def render(pattern: Pattern, keep_only_valid_steps: bool = False) -> str:
    """Text grid: one row per codebook, one column per step, frame index or '.' (special)."""
    table = grid(pattern, keep_only_valid_steps)
    width = max(len(str(pattern.timesteps - 1)), len(str(table.shape[1] - 1)))
    head = " " * 4 + " ".join(f"{s:>{width}}" for s in range(table.shape[1]))
    rows = [f"{pattern!r}, S={table.shape[1]}", "s:" + head[2:]]
    for q in range(pattern.n_q):
        cells = " ".join(f"{'.' if t < 0 else t:>{width}}" for t in table[q])
        rows.append(f"q{q:<2} {cells}")
    return "\n".join(rows)
