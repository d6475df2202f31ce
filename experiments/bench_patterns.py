"""Benchmark: audiolm.patterns (jitted jnp) vs audiocraft 1.3.0 codebooks_patterns (torch).

Delay pattern, n_q=8, T=1500, B=16, card=2048 (MusicGen sizes), full layout (S=1508):
build [B,K,T] -> [B,K,S], revert [B,K,S] -> [B,K,T], revert_logits on [B,K,S,card] fp32
(audiocraft: [B,card,K,S], its own layout). One torch thread; XLA CPU also single-threaded
unless --xla-threads is given. Prints one table from one run.

    python experiments/bench_patterns.py                      # ~1-3 min, ~5 GB peak RAM
    python experiments/bench_patterns.py --jax-platform cuda  # ours on a GPU, audiocraft on CPU

revert_logits writes B*K*T*V floats (786 MB here), so on CPU it is bound by that copy: the table
also prints XLA's time for a plain contiguous slice copy of the same bytes (the floor).

audiocraft is found like the tests find it (AUDIOLM_AUDIOCRAFT_WHEEL, then /work/refs, then an
installed audiocraft).
"""

import argparse
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_q", type=int, default=8)
    ap.add_argument("--timesteps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--card", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=20, help="timed runs for build/revert")
    ap.add_argument("--logits-repeats", type=int, default=3, help="timed runs for revert_logits")
    ap.add_argument("--xla-threads", action="store_true", help="let XLA use all CPU threads")
    ap.add_argument("--jax-platform", default="cpu", help="where ours runs (cpu, cuda); audiocraft: CPU")
    return ap.parse_args()


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    args = _parse()
    if not args.xla_threads:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    os.environ["JAX_PLATFORMS"] = args.jax_platform
    sys.path.insert(0, _ROOT)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from audiolm import patterns
    from tests import reference_audiocraft

    torch.set_num_threads(1)
    found = reference_audiocraft._find_source()
    if found is None:
        sys.exit("audiocraft 1.3.0 not found (set AUDIOLM_AUDIOCRAFT_WHEEL)")
    ac = reference_audiocraft._load(*found)

    K, T, B, V = args.n_q, args.timesteps, args.batch, args.card
    rows = []  # (op, ac_first, ac_cached, ours_first, ours)

    # ---- build / revert (int64 codes in torch, int32 in jax: jax's default integer width)
    codes_np = np.random.default_rng(0).integers(0, V, (B, K, T))
    t0 = time.perf_counter()
    ref = ac.DelayedPatternProvider(K).get_pattern(T)
    ref_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    pat = patterns.make("delay", K, T)
    ours_make = time.perf_counter() - t0
    S = patterns.num_steps(pat)

    z = torch.from_numpy(codes_np)
    t0 = time.perf_counter()
    r_seq = ref.build_pattern_sequence(z, V)[0]
    ac_first = time.perf_counter() - t0
    ac_cached = _timed(lambda: ref.build_pattern_sequence(z, V), args.repeats)

    codes = jnp.asarray(codes_np, jnp.int32)
    build = jax.jit(lambda c: patterns.build(pat, c, V))
    t0 = time.perf_counter()
    seq = build(codes)[0].block_until_ready()
    ours_first = time.perf_counter() - t0
    ours = _timed(lambda: build(codes)[0].block_until_ready(), args.repeats)
    assert np.array_equal(np.asarray(seq), r_seq.numpy()), "build differs from audiocraft"
    rows.append(("build", ac_first, ac_cached, ours_first, ours))

    t0 = time.perf_counter()
    r_codes = ref.revert_pattern_sequence(r_seq, V)[0]
    ac_first = time.perf_counter() - t0
    ac_cached = _timed(lambda: ref.revert_pattern_sequence(r_seq, V), args.repeats)
    revert = jax.jit(lambda s: patterns.revert(pat, s, V))
    t0 = time.perf_counter()
    out = revert(seq)[0].block_until_ready()
    ours_first = time.perf_counter() - t0
    ours = _timed(lambda: revert(seq)[0].block_until_ready(), args.repeats)
    assert np.array_equal(np.asarray(out), r_codes.numpy()) and np.array_equal(np.asarray(out), codes_np)
    rows.append(("revert", ac_first, ac_cached, ours_first, ours))

    # ---- revert_logits: one array alive at a time (each ~1.6 GB fp32)
    gen = torch.Generator().manual_seed(0)
    logits_t = torch.randn(B, V, K, S, generator=gen)
    t0 = time.perf_counter()
    r_out = ref.revert_pattern_logits(logits_t, float("nan"))[0]
    ac_first = time.perf_counter() - t0
    del r_out
    ac_cached = _timed(lambda: ref.revert_pattern_logits(logits_t, float("nan")), args.logits_repeats)
    del logits_t

    logits = jax.random.normal(jax.random.key(0), (B, K, S, V), jnp.float32).block_until_ready()
    revert_logits = jax.jit(lambda x: patterns.revert_logits(pat, x))
    t0 = time.perf_counter()
    out = revert_logits(logits)[0].block_until_ready()
    ours_first = time.perf_counter() - t0
    # spot check against our own input: codebook q, frame t comes from output position t + q
    q, t = K - 1, T // 2
    assert np.array_equal(np.asarray(out[:, q, t]), np.asarray(logits[:, q, t + q]))
    del out
    ours = _timed(lambda: revert_logits(logits)[0].block_until_ready(), args.logits_repeats)
    rows.append(("revert_logits", ac_first, ac_cached, ours_first, ours))
    # The floor for any [B,K,S,V] -> [B,K,T,V] op under XLA here: copying a contiguous slice.
    copy = jax.jit(lambda x: x[:, :, :T] + 0)
    copy(logits).block_until_ready()
    floor = _timed(lambda: copy(logits).block_until_ready(), args.logits_repeats)

    threads = "all" if args.xla_threads else "1"
    print(f"delay pattern n_q={K} T={T} B={B} card={V} S={S}; torch {torch.__version__} 1 thread, "
          f"jax {jax.__version__} {jax.devices()[0].device_kind} ({threads} XLA CPU thread); "
          f"median of {args.repeats} (build/revert) / {args.logits_repeats} (revert_logits) runs")
    print(f"make pattern: audiocraft {ref_make * 1e3:.1f} ms, ours {ours_make * 1e3:.1f} ms")
    head = (f"{'op':<14}{'audiocraft 1st':>16}{'audiocraft':>12}{'ours 1st':>12}{'ours jit':>12}"
            f"{'speed-up':>10}")
    print(head)
    print("-" * len(head))
    for op, a1, a, o1, o in rows:
        print(f"{op:<14}{a1 * 1e3:>13.2f} ms{a * 1e3:>9.2f} ms{o1 * 1e3:>9.1f} ms{o * 1e3:>9.2f} ms"
              f"{a / o:>9.1f}x")
    print(f"XLA copy floor (x[:, :, :T] + 0, same bytes as revert_logits): {floor * 1e3:.2f} ms")
    print("1st = first call (audiocraft builds its index arrays; ours compiles); speed-up = "
          "audiocraft cached / ours jitted")


if __name__ == "__main__":
    main()
