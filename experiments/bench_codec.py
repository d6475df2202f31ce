"""Encode / decode real-time factor on CPU: our codec against the `moshi` package's MimiModel
at the same sizes and the same (random) weights, ratios from one run.

  NO_TORCH_COMPILE=1 taskset -c 0,1 python experiments/bench_codec.py     # Mimi, 10 s, 8 cb
  NO_TORCH_COMPILE=1 python experiments/bench_codec.py --preset=tiny_mimi --seconds=4

Both models hold the same weights (moshi's random init, imported with
`audiolm.importers.mimi`); both run offline (whole clip at once) in float32; torch uses
--threads threads and XLA its own pool: pin both with `taskset -c 0,1` for a 2-core figure. Compilation and the first call are excluded (one warm-up call each); the
time is the median of --repeats calls. RTF = compute seconds / audio seconds (lower is faster).
Prints a table and writes bench_codec.json to --out.
"""

from __future__ import annotations

import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_TESTS = os.path.join(_ROOT, "tests", "models")

from absl import app, flags  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "mimi", ["mimi", "tiny_mimi"], "Codec preset.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Clip length in seconds.")
_CODEBOOKS = flags.DEFINE_integer("num_codebooks", 8, "Codebooks encoded / decoded.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (median).")
_THREADS = flags.DEFINE_integer("threads", 2, "torch CPU threads (pin XLA with taskset).")
_OUT = flags.DEFINE_string("out", "/tmp/bench_codec", "Output directory.")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main(argv):
    del argv
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    threads = _THREADS.value
    import jax
    import numpy as np
    import torch

    from audiolm.importers import mimi as mimi_import
    from audiolm.models import codec
    from audiolm.presets import codec as presets

    sys.path.insert(0, _TESTS)
    from test_codec import reference_mimi  # the parity tests' moshi model builder

    torch.set_num_threads(threads)
    spec = presets.SPECS[_PRESET.value]
    n_cb = min(_CODEBOOKS.value, spec.quantizer.num_codebooks)
    ref = reference_mimi(spec)
    ref.set_num_codebooks(n_cb)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = mimi_import.params_from_state(state.__getitem__, state.keys(), spec)
    module = codec.build(spec)
    hop = codec.hop_length(spec)
    samples = int(_SECONDS.value * spec.sample_rate) // hop * hop
    wav = np.random.default_rng(0).normal(0, 0.1, (1, samples)).astype(np.float32)
    seconds = samples / spec.sample_rate

    with torch.no_grad():
        x = torch.from_numpy(wav)[:, None]
        codes_t = ref.encode(x)
        t_enc = _median_seconds(lambda: ref.encode(x), _REPEATS.value)
        t_dec = _median_seconds(lambda: ref.decode(codes_t), _REPEATS.value)
    codes = codec.encode(module, params, wav, n_cb)
    o_enc = _median_seconds(
        lambda: jax.block_until_ready(codec.encode(module, params, wav, n_cb)), _REPEATS.value)
    o_dec = _median_seconds(
        lambda: jax.block_until_ready(codec.decode(module, params, codes)), _REPEATS.value)
    same = float(np.mean(np.asarray(codes) == codes_t.numpy()))
    result = {"preset": _PRESET.value, "seconds": seconds, "codebooks": n_cb, "threads": threads,
              "moshi_encode_rtf": t_enc / seconds, "moshi_decode_rtf": t_dec / seconds,
              "ours_encode_rtf": o_enc / seconds, "ours_decode_rtf": o_dec / seconds,
              "encode_speedup": t_enc / o_enc, "decode_speedup": t_dec / o_dec,
              "codes_equal_fraction": same}
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "bench_codec.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{_PRESET.value}: {seconds:.1f} s of audio, {n_cb} codebooks, {threads} threads")
    print("| | moshi RTF | ours RTF | speed-up |\n|---|---|---|---|")
    print(f"| encode | {result['moshi_encode_rtf']:.4f} | {result['ours_encode_rtf']:.4f} | "
          f"{result['encode_speedup']:.2f}x |")
    print(f"| decode | {result['moshi_decode_rtf']:.4f} | {result['ours_decode_rtf']:.4f} | "
          f"{result['decode_speedup']:.2f}x |")
    print(f"codes equal to moshi's: {same:.4f}")


if __name__ == "__main__":
    app.run(main)
