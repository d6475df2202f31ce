"""Benchmark: our jitted Thinker forward and forward+backward vs transformers' Qwen3-Omni Thinker.

One run builds a random transformers `Qwen3OmniMoeForConditionalGeneration` (fp32, eval mode,
eager attention, weights drawn by tests/reference_qwen.py), writes it with `save_pretrained`,
imports it with `audiolm.importers.qwen3_omni.load_pretrained` (so both sides hold the same
weights), checks that the logits agree, then times on CPU:

  fwd      logits of a [B, T] text batch (ours: jax.jit of Thinker.apply; reference:
           model.thinker(...) under torch.no_grad)
  fwd+bwd  next-token cross-entropy and its gradient w.r.t. every parameter (ours:
           jax.jit(jax.value_and_grad); reference: thinker(labels=...).loss.backward())

Ours and the reference run alternately inside every repeat (the machine is shared: alternating
spreads load changes over both sides); warm-up calls first (ours: the first call compiles and is
reported apart); median of --repeats. Both sides compute the same thing: text only, positions
0..T-1, no MoE auxiliary loss. torch and XLA get the same cores (--threads, default 1: the
process is pinned to one core, see `setup_threads`; 0 leaves both at their defaults).

    python experiments/bench_thinker.py                          # small config, B=4, T=128
    python experiments/bench_thinker.py --config=medium --batch=2 --seq=256 --json=/tmp/t.json
    python experiments/bench_thinker.py --dispatch=dropless,capacity   # both MoE dispatches

Configs (`SIZES`): tiny = tests/reference_qwen.py's tiny Thinker (48 wide, 4 layers, 8 experts
top-2); small (default) = 256 wide, 4 layers, 16 experts top-4 every layer; medium = 512 wide,
8 layers, 32 experts top-4. `--layers` overrides the layer count.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Thinker text-config overrides of tests/reference_qwen.py's tiny config (transformers names).
SIZES = {
    "tiny": {},
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                  moe_intermediate_size=128, num_experts=16, num_experts_per_tok=4,
                  decoder_sparse_step=1, mlp_only_layers=[]),
    "medium": dict(vocab_size=8192, hidden_size=512, intermediate_size=1024, num_hidden_layers=8,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                   moe_intermediate_size=256, num_experts=32, num_experts_per_tok=4,
                   decoder_sparse_step=1, mlp_only_layers=[]),
}
TEXT_IDS = 140  # ids >= 140 are special tokens (audio placeholder, ...) in the tiny id table


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (0: keep)")
    ap.add_argument("--dense", action="store_true",
                    help="every layer a dense SwiGLU (mlp_only_layers = all): isolates the MoE")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dispatch", default="dropless",
                    help="our MoE dispatch(es), comma separated: dropless, capacity")
    ap.add_argument("--capacity-factor", type=float, default=0.0,
                    help="capacity dispatch: slots per expert = factor * tokens * top_k / experts "
                         "(0: the config's, 2.0; >= num_experts never drops a token)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU cores for torch and XLA (1: both on one pinned core; 0: defaults)")
    ap.add_argument("--fast-compile", action="store_true",
                    help="compile ours with XLA backend optimisation off (smoke tests only: "
                         "fast compiles, slower code)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write the results to this JSON file")
    return ap.parse_args(argv)


def setup_threads(threads: int) -> str:
    """Gives torch and XLA the same `threads` CPU cores; returns how (for the header).

    XLA's CPU runtime runs independent ops concurrently on its own pool even with
    --xla_cpu_multi_thread_eigen=false (measured: ~1.9 CPU-seconds per second on the Thinker),
    so in a fresh process (jax not imported yet) the process is pinned to `threads` cores
    before any pool starts: every thread, torch's and XLA's, inherits the mask. Imported
    already (tests): torch threads are set, nothing is pinned. In a fresh process glibc's
    malloc also keeps freed memory (`audiolm.parallel.runtime.keep_host_memory`, as
    `audiolm.main` does)."""
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    how = "default threads"
    if threads > 0 and "jax" not in sys.modules:
        if threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_cpu_multi_thread_eigen=false").strip()
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))[:threads]
            os.sched_setaffinity(0, cores)
            how = f"process pinned to CPU core(s) {cores}"
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    fresh = "jax" not in sys.modules
    from audiolm.parallel import runtime

    # As in audiolm.main: XLA:CPU's scratch memory stays mapped between runs (torch allocates
    # through the same malloc). Only in a fresh process (threads take their arena early).
    kept = fresh and runtime.keep_host_memory()
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        if how == "default threads":
            how = f"torch {threads} thread(s), XLA unpinned"
    return how + ("; host memory kept (runtime.keep_host_memory)" if kept else "")


def config_dict(size: str, layers: int = 0, audio_output: bool = False,
                dense: bool = False) -> dict:
    """transformers Qwen3-Omni config (dict) whose Thinker has the text sizes of `size`
    (`dense`: no MoE layer)."""
    from tests import reference_qwen as ref

    text = dict(SIZES[size])
    if layers:
        text["num_hidden_layers"] = layers
    n_layers = text.get("num_hidden_layers", ref.TINY_TEXT["num_hidden_layers"])
    if dense:
        text["mlp_only_layers"] = list(range(n_layers))
    elif "mlp_only_layers" not in text:
        text["mlp_only_layers"] = [i for i in ref.TINY_TEXT["mlp_only_layers"] if i < n_layers]
    hidden = text.get("hidden_size", ref.TINY_TEXT["hidden_size"])
    return ref.tiny_config_dict(
        thinker_config={"text_config": text, "audio_config": {"output_dim": hidden},
                        "vision_config": {"out_hidden_size": hidden}},
        talker_config={"thinker_hidden_size": hidden,
                       "accept_hidden_layer": min(ref.tiny_config_dict()["talker_config"][
                           "accept_hidden_layer"], n_layers)},
        enable_audio_output=audio_output)


def build_pair(size: str, layers: int = 0, seed: int = 0, audio_output: bool = False,
               overrides: dict | None = None, dense: bool = False):
    """(transformers model, our model_config, our params): a random reference model written
    with save_pretrained and read back with our importer (same weights on both sides)."""
    from audiolm.importers import qwen3_omni
    from tests import reference_qwen as ref

    d = config_dict(size, layers, audio_output, dense)
    if overrides:
        d = ref.deep_merge(d, overrides)
    model = ref.build_model(ref.hf_config(d), seed=seed)
    with tempfile.TemporaryDirectory(prefix="bench_qwen3_omni_") as path:
        ref.save_model(model, path)
        model_config, params = qwen3_omni.load_pretrained(path)
    return model, model_config, params


def text_tokens(batch: int, seq: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, TEXT_IDS, (batch, seq)).astype(np.int64)


def jit_options(fast_compile: bool) -> dict | None:
    """`compiler_options` for jax.jit: backend optimisation off with --fast-compile (the
    options of `audiolm.nn.compile.fast_jit`)."""
    from audiolm.nn.compile import FAST_COMPILER_OPTIONS

    return dict(FAST_COMPILER_OPTIONS) if fast_compile else None


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternate(fns: dict, repeats: int, cpu: dict | None = None) -> dict:
    """Median wall seconds of each callable, the callables run one after another in every
    repeat. `cpu` (a dict) receives the median CPU seconds of this process per callable: with
    one thread per side it is the compute itself, insensitive to other jobs on the machine."""
    times = {k: [] for k in fns}
    cpu_times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu_times[k].append(time.process_time() - c0)
    if cpu is not None:
        cpu.update({k: statistics.median(v) for k, v in cpu_times.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> dict:
    args = parse(argv)
    threads = setup_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch

    from audiolm.models import thinker as thinker_lib

    model, model_config, params = build_pair(args.config, args.layers, args.seed,
                                             dense=args.dense)
    th_cfg = model_config.thinker
    ref_thinker = model.thinker
    ref_params = sum(p.numel() for p in ref_thinker.model.language_model.parameters()) + sum(
        p.numel() for p in ref_thinker.lm_head.parameters())
    tokens_np = text_tokens(args.batch, args.seq, args.seed)
    ids = torch.from_numpy(tokens_np)
    positions = torch.arange(args.seq)[None].expand(args.batch, -1)
    mask = torch.ones_like(ids)

    def ref_fwd():
        with torch.no_grad():
            return ref_thinker(input_ids=ids, attention_mask=mask, position_ids=positions,
                               use_cache=False, output_router_logits=False).logits

    def ref_fwd_bwd():
        ref_thinker.zero_grad(set_to_none=True)
        out = ref_thinker(input_ids=ids, attention_mask=mask, position_ids=positions, labels=ids,
                          use_cache=False, output_router_logits=False)
        out.loss.backward()
        return out.loss.detach()

    tokens = jnp.asarray(tokens_np, jnp.int32)
    th_params = jax.tree_util.tree_map(jnp.asarray, params["thinker"])
    want = ref_fwd().numpy()
    want_loss = float(ref_fwd_bwd())

    rows, results = [], {"config": args.config, "dense": args.dense, "batch": args.batch,
                         "seq": args.seq, "threads": args.threads, "pinning": threads,
                         "repeats": args.repeats, "params": int(ref_params), "jax": jax.__version__,
                         "torch": torch.__version__, "rows": []}
    for dispatch in [d.strip() for d in args.dispatch.split(",") if d.strip()]:
        if dispatch not in ("dropless", "capacity"):
            raise SystemExit(f"--dispatch={dispatch!r}: expected dropless or capacity")
        cfg = model_config.copy_and_resolve_references()
        cfg.thinker.moe_dispatch = dispatch
        if args.capacity_factor > 0:
            cfg.thinker.moe_capacity_factor = args.capacity_factor
        module = thinker_lib.build(cfg)

        jit = functools.partial(jax.jit, compiler_options=jit_options(args.fast_compile))
        fwd = jit(lambda p, t: module.apply({"params": p}, t)["logits"])

        def loss_fn(p, t):
            logits = module.apply({"params": p}, t)["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], t[:, 1:]).mean()

        fwd_bwd = jit(jax.value_and_grad(loss_fn))

        t0 = time.perf_counter()
        got = np.asarray(fwd(th_params, tokens))
        fwd_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss, grads = fwd_bwd(th_params, tokens)
        jax.block_until_ready(grads)
        bwd_first = time.perf_counter() - t0
        err = float(np.abs(got - want).max())
        loss_err = abs(float(loss) - want_loss)
        # Capacity dispatch may drop tokens (then it differs from the reference by design).
        if dispatch == "dropless" and (err > 1e-3 or loss_err > 1e-3):
            raise SystemExit(f"ours and the reference disagree: logits {err:.2e}, loss "
                             f"{loss_err:.2e} (dispatch {dispatch})")

        run_fwd = lambda: fwd(th_params, tokens).block_until_ready()  # noqa: E731
        run_bwd = lambda: jax.block_until_ready(fwd_bwd(th_params, tokens))  # noqa: E731
        for _ in range(args.warmup):
            run_fwd(), run_bwd(), ref_fwd(), ref_fwd_bwd()
        c = {}
        t = alternate({"ours_fwd": run_fwd, "ref_fwd": ref_fwd, "ours_bwd": run_bwd,
                       "ref_bwd": ref_fwd_bwd}, args.repeats, c)
        n_tok = args.batch * args.seq
        for op, first, key in (("fwd", fwd_first, "fwd"), ("fwd+bwd", bwd_first, "bwd")):
            ours, ref = t["ours_" + key], t["ref_" + key]
            row = dict(op=op, dispatch=dispatch, ref_s=ref, ours_s=ours, ours_first_s=first,
                       ref_tok_s=n_tok / ref, ours_tok_s=n_tok / ours, speedup=ref / ours,
                       ref_cpu_s=c["ref_" + key], ours_cpu_s=c["ours_" + key],
                       cpu_speedup=c["ref_" + key] / c["ours_" + key],
                       max_logit_err=err, loss_err=loss_err)
            rows.append(row)
            results["rows"].append(row)

    moe = len(thinker_lib.build(model_config).moe_layers())
    print(f"Thinker {args.config}: {th_cfg.num_layers} layers ({moe} MoE), width "
          f"{th_cfg.hidden_size}, {th_cfg.num_experts} experts top-{th_cfg.num_experts_per_tok}, "
          f"vocab "
          f"{th_cfg.vocab_size}, {ref_params / 1e6:.2f} M params; B={args.batch} T={args.seq}; "
          f"fp32 CPU, {threads}; torch {torch.__version__}, "
          f"jax {jax.__version__}; median of {args.repeats} alternating runs")
    head = (f"{'op':<9}{'dispatch':<10}{'transformers':>14}{'ours':>11}{'ours 1st':>11}"
            f"{'ref tok/s':>12}{'ours tok/s':>12}{'speed-up':>10}{'CPU-time':>10}"
            f"{'max|dlogit|':>13}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['op']:<9}{r['dispatch']:<10}{r['ref_s'] * 1e3:>11.1f} ms"
              f"{r['ours_s'] * 1e3:>8.1f} ms{r['ours_first_s']:>9.1f} s"
              f"{r['ref_tok_s']:>12.0f}{r['ours_tok_s']:>12.0f}{r['speedup']:>9.2f}x"
              f"{r['cpu_speedup']:>9.2f}x{r['max_logit_err']:>13.1e}")
    print(f"reference MoE experts implementation: "
          f"{ref_thinker.config.text_config._experts_implementation}; 1st = first call "
          f"(compile); speed-up = transformers / ours, wall time (goal >= 2x for fwd+bwd); "
          f"CPU-time = the same ratio of process CPU seconds (robust to other load); max|dlogit| = "
          f"ours vs transformers (capacity dispatch drops tokens over capacity)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
