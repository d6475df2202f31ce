"""Benchmark: training-step throughput and MFU of the Thinker and the Talker, dense and MoE.

One case = one jitted optimizer step of this codebase (forward, backward, AdamW update through
`audiolm.train.optim.make_optimizer`, parameters fp32, compute in --dtype) on random weights:

  thinker   the Thinker as a text LM: next-token cross-entropy of B x T random text ids
            (thinker_talker preset "tiny" with the Thinker resized by --size)
  talker    the Talker + code predictor as a codec-frame LM (`audiolm.tasks.codes.talker_loss`,
            the loss the `codes` / `tts` tasks train) over B x T frames of random codes

`dense` variants make every Thinker layer a dense SwiGLU; MoE variants run once per MoE dispatch
of --dispatch (`audiolm.nn.moe.DISPATCHES`: dropless picks the backend's grouped matmul; tiles,
ragged_dot, gmm force one; capacity is the einsum dispatch), so the fastest dispatch per backend
can be read off one run (`audiolm.nn.moe.DEFAULT_GROUPED` records it).

Reported per case (one JSON line each, then a table): median step seconds (after a compile
call, reported apart), tokens/s (Thinker: text positions; Talker: frames), model FLOPs per step
= 3 x forward FLOPs (forward = 2 x active non-embedding parameters of the component from
`audiolm.config.describe` per token, plus causal attention 2 x layers x T x heads x head_dim)
and MFU = model FLOP/s / peak. Peak: a table of bf16 dense peaks per accelerator kind
(`PEAK_BF16`); on CPU, the measured FLOP/s of a large fp32 matmul on the same threads (so CPU MFU
says how close the step runs to this machine's matmul speed). `xla_flops` is XLA's own count
of the compiled step (cost analysis), a cross-check of the model FLOPs.

    python experiments/bench_train.py                               # small sizes, CPU
    python experiments/bench_train.py --size=medium --dtype=bfloat16 --batch=16 --seq=1024
    python experiments/bench_train.py --cases=thinker_moe --dispatch=tiles,ragged_dot,capacity
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

CASES = ("thinker_dense", "thinker_moe", "talker_moe")
# Thinker sizes (`model.thinker` overrides of the "tiny" preset); the Talker keeps the preset's.
SIZES = {
    "tiny": {},
    "small": dict(vocab_size=4096, hidden_size=256, ffn_hidden=512, num_layers=4, num_heads=8,
                  num_kv_heads=4, head_dim=32, moe_hidden=128, num_experts=16,
                  num_experts_per_tok=4, mlp_only_layers=()),
    "medium": dict(vocab_size=8192, hidden_size=512, ffn_hidden=1024, num_layers=8, num_heads=8,
                   num_kv_heads=4, head_dim=64, moe_hidden=256, num_experts=32,
                   num_experts_per_tok=4, mlp_only_layers=()),
}
# Dense bf16 peak FLOP/s by device kind (vendor figures, no sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
             "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
             "TPU v6 lite": 918e12, "TPU v6e": 918e12}
# HBM bandwidth in bytes/s by device kind (vendor figures), for decode rooflines.
HBM_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12, "A10": 0.6e12,
                 "TPU v4": 1.2e12, "TPU v5 lite": 0.82e12, "TPU v5e": 0.82e12,
                 "TPU v5p": 2.765e12, "TPU v6 lite": 1.64e12, "TPU v6e": 1.64e12}


def _lookup(table: dict, kind: str):
    return next((v for name, v in table.items() if name.lower() in kind.lower()), None)


def hbm_bandwidth() -> tuple[str, float | None]:
    """(device kind, HBM bytes/s from `HBM_BANDWIDTH`, None where unknown, e.g. on CPU)."""
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return kind, _lookup(HBM_BANDWIDTH, kind)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma separated of {CASES}")
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="override the Thinker layer count")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128, help="Thinker tokens / Talker frames")
    ap.add_argument("--dispatch", default="dropless,capacity",
                    help="MoE dispatches to run (audiolm.nn.moe.DISPATCHES)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fast-compile", action="store_true",
                    help="XLA backend optimisation off (smoke tests only)")
    ap.add_argument("--json", default="", help="write the results to this JSON file")
    return ap.parse_args(argv)


def device_peak(matmul_size: int = 1024) -> tuple[str, float, str]:
    """(device kind, peak FLOP/s, source): the table for accelerators, else a measured matmul."""
    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    peak = _lookup(PEAK_BF16, kind)
    if peak is not None:
        return kind, peak, "table (bf16 dense)"
    n = matmul_size
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return kind, 2 * n ** 3 / t, f"measured fp32 {n}x{n} matmul"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_config(size: str, layers: int, dense: bool, dispatch: str, dtype: str):
    """The thinker_talker "tiny" experiment config with the Thinker resized."""
    from audiolm.presets import experiment

    config = experiment.load_experiment_config("configs/thinker_talker.py",
                                               "variant=tiny,data=synthetic")
    th = config.model.thinker
    for key, value in SIZES[size].items():
        th[key] = value
    if layers:
        th.num_layers = layers
    if dense:
        th.mlp_only_layers = tuple(range(th.num_layers))
    elif th.mlp_only_layers:
        th.mlp_only_layers = tuple(i for i in th.mlp_only_layers if i < th.num_layers)
    th.moe_dispatch = dispatch
    config.model.talker.moe_dispatch = dispatch
    config.model.talker.thinker_hidden_size = th.hidden_size
    config.model.talker.accept_hidden_layer = min(config.model.talker.accept_hidden_layer,
                                                  th.num_layers)
    config.model.aut.output_dim = th.hidden_size
    config.train.dtype = dtype
    return config


def attention_flops(cfg, seq: int) -> float:
    """Forward FLOPs per token of causal attention scores and values (mean over positions)."""
    return 2.0 * cfg.num_layers * seq * cfg.num_heads * cfg.head_dim


def thinker_case(config, batch: int, seq: int):
    """(loss_fn(params, batch), params, batch, tokens per step, forward FLOPs per token)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from audiolm import config as config_lib
    from audiolm.models import thinker_talker
    from audiolm.nn.losses import token_nll

    module = thinker_talker.build(config.model, dtype=jnp.dtype(config.train.dtype))
    params = thinker_talker.init_params(config.model, jax.random.PRNGKey(0))
    th = config.model.thinker
    text_ids = min(th.audio_token_id, th.vocab_size)  # plain text ids only
    data = {"tokens": np.random.default_rng(0).integers(3, text_ids, (batch, seq), np.int32)}

    def loss_fn(p, b):
        logits = module.apply({"params": p}, b["tokens"])["logits"]
        nll, _ = token_nll(logits[:, :-1], b["tokens"][:, 1:])
        return jnp.mean(nll)

    comp = config_lib.describe(config)["components"]["thinker"]
    flops = 2.0 * (comp["active"] - comp["embedding"]) + attention_flops(th, seq)
    return loss_fn, params, data, batch * seq, flops


def talker_case(config, batch: int, seq: int):
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    from audiolm import config as config_lib
    from audiolm.models import thinker_talker
    from audiolm.tasks import codes as codes_task

    config.task.name = "codes"  # the Talker frame LM task and its loss weights
    config.train.loss = ml_collections.ConfigDict(dict(codebook0_weight=1.0,
                                                       predictor_weight=1.0))
    module = thinker_talker.build(config.model, dtype=jnp.dtype(config.train.dtype))
    params = thinker_talker.init_params(config.model, jax.random.PRNGKey(0))
    tk = config.model.talker
    rng = np.random.default_rng(0)
    data = {"codes": rng.integers(0, tk.codebook_size, (batch, tk.num_codebooks, seq), np.int32),
            "frame_mask": np.ones((batch, seq), np.float32)}

    def loss_fn(p, b):
        return codes_task.talker_loss(module, p, b, None, config, True)[0]

    comps = config_lib.describe(config)["components"]
    flops = sum(2.0 * (comps[k]["active"] - comps[k]["embedding"])
                for k in ("talker", "talker_code_predictor")) + attention_flops(tk, seq)
    return loss_fn, params, data, batch * seq, flops


def run_case(name: str, dispatch: str, args, peak: float) -> dict:
    import jax
    import optax

    from audiolm.nn.compile import FAST_COMPILER_OPTIONS
    from audiolm.train import optim

    dense = name.endswith("dense")
    config = make_config(args.size, args.layers, dense, dispatch, args.dtype)
    build = thinker_case if name.startswith("thinker") else talker_case
    loss_fn, params, data, tokens, fwd_flops = build(config, args.batch, args.seq)
    tx = optim.make_optimizer(config.train)

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1), compiler_options=(
        dict(FAST_COMPILER_OPTIONS) if args.fast_compile else None))
    opt_state = tx.init(params)
    compiled = jitted.lower(params, opt_state, data).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float((cost or {}).get("flops", float("nan")))
    t0 = time.perf_counter()
    params, opt_state, loss = jitted(params, opt_state, data)
    loss.block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        params, opt_state, loss = jitted(params, opt_state, data)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    model_flops = 3.0 * fwd_flops * tokens
    return {"case": name, "dispatch": "-" if dense else dispatch, "dtype": args.dtype,
            "batch": args.batch, "seq": args.seq, "step_s": sec, "first_s": first,
            "tokens_per_s": tokens / sec, "model_flops": model_flops, "xla_flops": xla_flops,
            "mfu": model_flops / sec / peak, "loss": float(loss)}


def main(argv=None) -> dict:
    args = parse(argv)
    import jax

    from audiolm.nn import moe

    cases = [c for c in args.cases.split(",") if c]
    dispatches = [d for d in args.dispatch.split(",") if d]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"--cases: {c!r} is not one of {CASES}")
    for d in dispatches:
        if d not in moe.DISPATCHES:
            raise SystemExit(f"--dispatch: {d!r} is not one of {moe.DISPATCHES}")
    kind, peak, source = device_peak()
    print(f"device: {kind} ({jax.default_backend()}); peak {peak / 1e12:.3f} TFLOP/s ({source}); "
          f"dropless runs {moe.grouped_method('dropless')} here")
    rows = []
    for name in cases:
        for dispatch in (["dropless"] if name.endswith("dense") else dispatches):
            row = run_case(name, dispatch, args, peak)
            rows.append(row)
            print(json.dumps(row))
    print(f"{'case':<15}{'dispatch':<12}{'step ms':>10}{'1st s':>8}{'tokens/s':>12}"
          f"{'GFLOP/step':>12}{'XLA GFLOP':>11}{'MFU':>8}")
    for r in rows:
        print(f"{r['case']:<15}{r['dispatch']:<12}{1e3 * r['step_s']:>10.2f}{r['first_s']:>8.1f}"
              f"{r['tokens_per_s']:>12.0f}{r['model_flops'] / 1e9:>12.3f}"
              f"{r['xla_flops'] / 1e9:>11.3f}{100 * r['mfu']:>7.1f}%")
    result = {"device": kind, "backend": jax.default_backend(), "peak_flops": peak,
              "peak_source": source, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    rows = main()["rows"]
    sys.exit(0 if all(math.isfinite(r["loss"]) for r in rows) else 1)
