"""Tests for audiolm.patterns: side by side with audiocraft 1.3.0, round trips, masks, errors.

Exact equality everywhere (integer codes; logits are gathered, not computed, so fp32 values and
NaN fills must match bit for bit).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiolm import patterns

from tests import reference_audiocraft

# Examples per kind. Each run-time example compiles ~6 tiny XLA programs (~0.1-0.2 s each on a
# shared 2-core box), so the gathers get few examples and the (numpy) layouts and index arrays,
# which decide every value the gathers return, get many.
SETTINGS = settings(max_examples=3, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
LAYOUT_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.too_slow])
CARD = 7  # codes in [0, CARD); CARD itself is the special token


# ------------------------------------------------------------------ strategies


def _sorted_ints(draw, n, hi):
    return sorted(draw(st.lists(st.integers(0, hi), min_size=n, max_size=n)))


@st.composite
def pattern_args(draw, kinds=patterns.KINDS):
    """(kind, n_q, T, kwargs) covering every keyword of every kind, small sizes."""
    kind = draw(st.sampled_from(kinds))
    n_q = draw(st.integers(2 if kind == "coarse_first" else 1, 5))
    T = draw(st.integers(1, 9))
    kw = {}
    if kind == "parallel":
        if draw(st.booleans()):
            kw["empty_initial"] = draw(st.integers(-1, 2))
    elif kind == "delay":
        if draw(st.booleans()):
            kw["delays"] = _sorted_ints(draw, n_q, 4)
        if draw(st.booleans()):
            kw["flatten_first"] = draw(st.integers(0, 4))
        if draw(st.booleans()):
            kw["empty_initial"] = draw(st.integers(-1, 2))
    elif kind == "unroll":
        if draw(st.booleans()):
            kw["flattening"] = _sorted_ints(draw, n_q, n_q + 1)
        if draw(st.booleans()):
            flat = kw.get("flattening", list(range(n_q)))
            # one delay per inner step, non-decreasing over inner steps
            steps = sorted(set(flat))
            per_step = dict(zip(steps, _sorted_ints(draw, len(steps), 3)))
            kw["delays"] = [per_step[f] for f in flat]
    elif kind == "coarse_first":
        if draw(st.booleans()):
            kw["delays"] = _sorted_ints(draw, n_q - 1, 3)
    elif kind == "musiclm":
        kw["group_by"] = draw(st.sampled_from([g for g in range(1, n_q + 1) if n_q % g == 0]))
    else:  # stream_delay: any order, at least one zero
        d = draw(st.lists(st.integers(0, 3), min_size=n_q, max_size=n_q))
        d[draw(st.integers(0, n_q - 1))] = 0
        kw["delays"] = d
    return kind, n_q, T, kw


@functools.lru_cache(maxsize=None)
def _ref_module():
    return reference_audiocraft.load()


def _ref_pattern(kind, n_q, T, kw):
    return reference_audiocraft.provider(_ref_module(), kind, n_q, **kw).get_pattern(T)


# ------------------------------------------------------------------ side by side with audiocraft


@pytest.mark.parametrize("kind", patterns.KINDS)
@LAYOUT_SETTINGS
@given(data=st.data())
def test_layout_and_indices_match_audiocraft(kind, data):
    """Layout, lengths, prompting queries and the gather indices of every build/revert length."""
    pytest.importorskip("torch")
    _, n_q, T, kw = data.draw(pattern_args((kind,)))
    ref = _ref_pattern(kind, n_q, T, kw)
    p = patterns.make(kind, n_q, T, **kw)

    assert [patterns.steps_for(p, s) for s in range(patterns.num_steps(p))] == \
        [[(c.t, c.q) for c in step] for step in ref.layout]
    assert patterns.max_delay(p) == ref.max_delay
    assert patterns.num_steps(p, True) == len(ref.valid_layout)
    assert p.starts_with_special == ref.starts_with_special_token()
    q = data.draw(st.integers(0, n_q - 1))
    for t in range(T + 1):
        assert patterns.first_step_with(p, t) == ref.get_first_step_with_timesteps(t)
        assert patterns.first_step_with(p, t, q) == ref.get_first_step_with_timesteps(t, q)

    # audiocraft indexes a flat [K*T (+1 special)] array; ours point anywhere where masked out.
    for keep in (False, True):
        for T_in in range(1, T + 1):
            src, mask = patterns._build_index(p, T_in, keep)
            r_idx, r_mask = ref._build_pattern_sequence_scatter_indexes(T_in, n_q, keep)
            np.testing.assert_array_equal(mask, r_mask.numpy())
            np.testing.assert_array_equal(np.where(mask, src, n_q * T_in), r_idx.numpy())
        for S in range(1, patterns.num_steps(p, keep) + 1):
            for model_output in (False, True):
                src, mask = patterns._revert_index(p, S, keep, model_output)
                r_idx, r_mask = ref._build_reverted_sequence_scatter_indexes(
                    S, n_q, keep, is_model_output=model_output)
                np.testing.assert_array_equal(mask, r_mask.numpy())
                np.testing.assert_array_equal(np.where(mask, src, n_q * S), r_idx.numpy())


@pytest.mark.parametrize("kind", patterns.KINDS)
@SETTINGS
@given(data=st.data())
def test_matches_audiocraft(kind, data):
    """build / revert / revert_logits values and masks, bit for bit, with and without
    keep_only_valid_steps, from fewer frames (build) and partial sequences (revert)."""
    torch = pytest.importorskip("torch")
    _, n_q, T, kw = data.draw(pattern_args((kind,)))
    ref = _ref_pattern(kind, n_q, T, kw)
    p = patterns.make(kind, n_q, T, **kw)

    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    B = 2
    for keep in (False, True):
        # build, possibly from fewer frames than the pattern's T
        T_in = data.draw(st.integers(1, T))
        codes = rng.integers(0, CARD, (B, n_q, T_in))
        seq, mask = patterns.build(p, codes, CARD, keep)
        r_seq, _, r_mask = ref.build_pattern_sequence(torch.from_numpy(codes), CARD, keep)
        np.testing.assert_array_equal(np.asarray(seq), r_seq.numpy())
        np.testing.assert_array_equal(np.asarray(mask), r_mask.numpy())

        # revert, possibly a partial sequence
        L = patterns.num_steps(p, keep)
        S = data.draw(st.integers(1, L))
        seq = rng.integers(0, CARD, (B, n_q, S))
        out, mask = patterns.revert(p, seq, -1, keep)
        r_out, _, r_mask = ref.revert_pattern_sequence(torch.from_numpy(seq), -1, keep)
        np.testing.assert_array_equal(np.asarray(out), r_out.numpy())
        np.testing.assert_array_equal(np.asarray(mask), r_mask.numpy())

        # revert_logits: ours [B, K, S, V], audiocraft [B, V, K, S]; NaN fill in both
        S = data.draw(st.integers(1, L))
        logits = rng.standard_normal((B, n_q, S, 3)).astype(np.float32)
        out, mask = patterns.revert_logits(p, logits, keep)
        r_out, _, r_mask = ref.revert_pattern_logits(
            torch.from_numpy(logits).permute(0, 3, 1, 2), float("nan"), keep)
        np.testing.assert_array_equal(np.asarray(out), r_out.permute(0, 2, 3, 1).numpy())
        np.testing.assert_array_equal(np.asarray(mask), r_mask.numpy())


def test_reference_examples():
    """Sequence lengths S of audiocraft's providers at n_q=4, T=5 (default arguments)."""
    S = {"parallel": 6, "delay": 9, "unroll": 21, "coarse_first": 11, "musiclm": 21}
    for kind, s in S.items():
        assert patterns.num_steps(patterns.make(kind, 4, 5)) == s, kind
    assert patterns.num_steps(patterns.make("delay", 4, 5), True) == 6
    m = patterns.make("musiclm", 4, 5, group_by=2)
    for t in range(5):
        assert patterns.steps_for(m, 1 + 2 * t) == [(t, 0)]
        assert patterns.steps_for(m, 2 + 2 * t) == [(t, 1)]
        assert patterns.steps_for(m, 11 + 2 * t) == [(t, 2)]
        assert patterns.steps_for(m, 12 + 2 * t) == [(t, 3)]
    u = patterns.make("unroll", 4, 5)
    assert all(patterns.steps_for(u, 1 + 4 * t + q) == [(t, q)] for t in range(5) for q in range(4))
    d = patterns.make("delay", 4, 5)
    assert patterns.steps_for(d, 4) == [(3, 0), (2, 1), (1, 2), (0, 3)]
    assert patterns.first_step_with(d, 3) == 4
    assert patterns.first_step_with(d, 5) == 6  # placeholder (5, 0) past the end: prompt == T


def test_render_grid():
    text = patterns.render(patterns.make("delay", 3, 4), keep_only_valid_steps=True)
    assert text.splitlines()[1:] == [
        "s:  0 1 2 3 4",
        "q0  . 0 1 2 3",
        "q1  . . 0 1 2",
        "q2  . . . 0 1",
    ]


def test_plot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from audiolm import plots

    fig = plots.plot_pattern(patterns.make("unroll", 3, 4, flattening=[0, 1, 1], delays=[0, 3, 3]))
    grid = np.ma.filled(np.ma.asarray(fig.axes[0].images[0].get_array(), float), np.nan)
    assert grid.shape == (3, 12)
    assert np.isnan(grid[0, 0]) and grid[0, 1] == 0.0 and grid[1, 4] == 0.0 and grid[2, 10] == 3.0


# ------------------------------------------------------------------ properties (no reference)


@pytest.mark.parametrize("kind", patterns.KINDS)
@SETTINGS
@given(data=st.data())
def test_round_trip_and_masks(kind, data):
    _, n_q, T, kw = data.draw(pattern_args((kind,)))
    seed = data.draw(st.integers(0, 2**31 - 1))
    p = patterns.make(kind, n_q, T, **kw)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, CARD, (2, n_q, T))

    # full layout: every code appears once, and comes back
    seq, smask = patterns.build(p, codes, CARD)
    out, rmask = patterns.revert(p, seq, -1)
    assert bool(np.all(rmask))
    np.testing.assert_array_equal(np.asarray(out), codes)
    # the special token lands exactly where the mask is False
    np.testing.assert_array_equal(np.asarray(seq) == CARD, np.broadcast_to(~np.asarray(smask), seq.shape))
    assert int(np.asarray(smask).sum()) == n_q * T

    # valid steps only: what is kept comes back, the rest is special
    seq, smask = patterns.build(p, codes, CARD, True)
    np.testing.assert_array_equal(np.asarray(seq) == CARD, np.broadcast_to(~np.asarray(smask), seq.shape))
    out, rmask = patterns.revert(p, seq, -1, True)
    rmask = np.broadcast_to(np.asarray(rmask), codes.shape)
    np.testing.assert_array_equal(np.asarray(out)[rmask], codes[rmask])
    assert bool(np.all(np.asarray(out)[~rmask] == -1))

    # teacher forcing: output position s predicts build step s + 1 (s when no leading special)
    shift = 1 if p.starts_with_special else 0
    for keep in (False, True):
        seq, _ = patterns.build(p, codes, CARD, keep)
        seq = np.asarray(seq)
        target = np.concatenate([seq[:, :, shift:], np.full(seq.shape[:2] + (shift,), CARD)], axis=2)
        logits = np.eye(CARD + 1, dtype=np.float32)[target]  # [B, K, S, V], one-hot of next step
        out, lmask = patterns.revert_logits(p, logits, keep)
        out, lmask = np.asarray(out), np.broadcast_to(np.asarray(lmask), codes.shape)
        np.testing.assert_array_equal(out.argmax(-1)[lmask], codes[lmask])
        assert bool(np.all(np.isnan(out[~lmask])))
        assert not np.any(np.isnan(out[lmask]))
        if not keep:  # the full layout has a prediction for every code
            assert bool(np.all(lmask))


def test_jit_static_pattern():
    p = patterns.make("delay", 4, 6, delays=[0, 1, 1, 3])
    assert p == patterns.make("delay", 4, 6, delays=(0, 1, 1, 3), flatten_first=0, empty_initial=0)
    assert hash(p) == hash(patterns.make("delay", 4, 6, delays=[0, 1, 1, 3]))
    assert p != patterns.make("delay", 4, 6, delays=[0, 1, 1, 2])
    assert patterns.make("delay", 3, 6) == patterns.make("delay", 3, 6, delays=[0, 1, 2])

    build = jax.jit(patterns.build, static_argnums=(0, 3))
    revert = jax.jit(patterns.revert, static_argnums=(0, 3))
    revert_logits = jax.jit(patterns.revert_logits, static_argnums=(0, 2))
    codes = jnp.arange(2 * 4 * 6, dtype=jnp.int32).reshape(2, 4, 6)
    for keep in (False, True):
        seq, mask = build(p, codes, -1, keep)
        e_seq, e_mask = patterns.build(p, codes, -1, keep)
        np.testing.assert_array_equal(seq, e_seq)
        np.testing.assert_array_equal(mask, e_mask)
        out, _ = revert(p, seq, -1, keep)
        np.testing.assert_array_equal(out, patterns.revert(p, seq, -1, keep)[0])
        logits = jnp.ones(seq.shape + (3,), jnp.float32)
        np.testing.assert_array_equal(revert_logits(p, logits, keep)[0],
                                      patterns.revert_logits(p, logits, keep)[0])
    # the special token can be traced
    seq, _ = jax.jit(patterns.build, static_argnums=0)(p, codes, jnp.int32(99))
    assert int(seq[0, 3, 0]) == 99


def test_stream_delay_matches_moshi():
    """stream_delay + keep_only_valid_steps == moshi's _delay_sequence / _undelay_sequence."""
    torch = pytest.importorskip("torch")
    lm_utils = pytest.importorskip("moshi.models.lm_utils")
    delays = [0, 0, 1, 1, 2, 0, 1, 2]  # text, then two audio streams: unsorted
    K, T, B, V = len(delays), 6, 2, 5
    p = patterns.moshi_delays(delays, T)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 9, (B, K, T))
    initial = np.array([11, 10, 10, 10, 10, 10, 10, 10])  # text and audio initial tokens differ

    # input: shift each stream by its delay with its initial token, prepend an initial column
    init_t = torch.from_numpy(initial)[None, :, None].expand(B, -1, 1)
    ref = lm_utils._delay_sequence(delays, torch.from_numpy(codes), init_t)
    ref = torch.cat([init_t, ref], dim=2).numpy()
    seq, mask = patterns.build(p, codes, -1, keep_only_valid_steps=True)
    seq = np.where(np.asarray(mask), np.asarray(seq), initial[None, :, None])
    np.testing.assert_array_equal(seq, ref)

    # outputs: the model reads seq[..., :-1] and gives T logits per stream
    logits = rng.standard_normal((B, K, T, V)).astype(np.float32)
    r_out, r_mask = lm_utils._undelay_sequence(delays, torch.from_numpy(logits), float("nan"))
    out, mask = patterns.revert_logits(p, logits, keep_only_valid_steps=True)
    np.testing.assert_array_equal(np.asarray(out), r_out.numpy())
    np.testing.assert_array_equal(np.broadcast_to(np.asarray(mask), (B, K, T)), r_mask.numpy())


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("call, match", [
    (lambda: patterns.make("zigzag", 4, 5), r"kind must be one of"),
    (lambda: patterns.make("delay", 0, 5), r"n_q must be >= 1"),
    (lambda: patterns.make("delay", 4, 0), r"timesteps must be >= 1"),
    (lambda: patterns.make("delay", 4, 5, delays=[0, 2, 1, 3]), r"delays must be sorted"),
    (lambda: patterns.make("delay", 4, 5, delays=[0, 1, 2]), r"delays must have n_q = 4 entries"),
    (lambda: patterns.make("delay", 4, 5, delays=[-1, 0, 1, 2]), r"delays must be >= 0"),
    (lambda: patterns.make("delay", 4, 5, flatten_first=-1), r"flatten_first must be >= 0"),
    (lambda: patterns.make("delay", 4, 5, empty_initial=-2), r"empty_initial must be >= -1"),
    (lambda: patterns.make("delay", 4, 5, group_by=2), r"unknown \['group_by'\]"),
    (lambda: patterns.make("unroll", 3, 5, flattening=[0, 2, 1]), r"flattening must be sorted"),
    (lambda: patterns.make("unroll", 3, 5, flattening=[0, 1]), r"flattening must have n_q = 3"),
    (lambda: patterns.make("unroll", 3, 5, flattening=[0, 1, 1], delays=[0, 1, 2]),
     r"delays must agree for codebooks flattened to the same inner step"),
    (lambda: patterns.make("coarse_first", 1, 5), r"n_q must be >= 2 for kind 'coarse_first'"),
    (lambda: patterns.make("coarse_first", 4, 5, delays=[0, 1, 1, 1]), r"delays must have n_q - 1 = 3"),
    (lambda: patterns.make("musiclm", 6, 5, group_by=4), r"group_by must divide n_q"),
    (lambda: patterns.make("musiclm", 6, 5, group_by=0), r"group_by must be >= 1"),
    (lambda: patterns.make("stream_delay", 3, 5), r"delays is required"),
    (lambda: patterns.make("stream_delay", 3, 5, delays=[1, 2, 1]), r"delays must contain a 0"),
    (lambda: patterns.make("delay", 4, 5, delays="0123"), r"delays must be a sequence of ints"),
])
def test_make_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_run_time_errors():
    p = patterns.make("delay", 4, 5)
    codes = np.zeros((2, 4, 5), np.int32)
    with pytest.raises(ValueError, match=r"codes must have shape \[B, K, T\] \(rank 3\)"):
        patterns.build(p, codes[0], 0)
    with pytest.raises(ValueError, match=r"codes has K=3 codebooks .* n_q=4"):
        patterns.build(p, codes[:, :3], 0)
    with pytest.raises(ValueError, match=r"codes has T=6 frames"):
        patterns.build(p, np.zeros((2, 4, 6), np.int32), 0)
    with pytest.raises(ValueError, match=r"codes has T=0 frames"):
        patterns.build(p, codes[:, :, :0], 0)
    with pytest.raises(ValueError, match=r"seq has S=10 steps .* num_steps=9"):
        patterns.revert(p, np.zeros((2, 4, 10), np.int32), 0)
    with pytest.raises(ValueError, match=r"seq has S=7 steps .* num_steps=6"):
        patterns.revert(p, np.zeros((2, 4, 7), np.int32), 0, keep_only_valid_steps=True)
    with pytest.raises(ValueError, match=r"logits must have shape \[B, K, S, V\] \(rank 4\)"):
        patterns.revert_logits(p, np.zeros((2, 4, 9), np.float32))
    with pytest.raises(ValueError, match=r"logits must be floating point"):
        patterns.revert_logits(p, np.zeros((2, 4, 9, 3), np.int32))
    with pytest.raises(ValueError, match=r"pattern must be a Pattern"):
        patterns.build("delay", codes, 0)
    with pytest.raises(ValueError, match=r"s must be in \[0, 9\)"):
        patterns.steps_for(p, 9)
    with pytest.raises(ValueError, match=r"t must be in \[0, timesteps=5\]"):
        patterns.first_step_with(p, 6)
