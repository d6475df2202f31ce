"""Data pipeline throughput against training speed, and peak memory against corpus size.

  python experiments/bench_data.py
  python experiments/bench_data.py --clips=2000 --batches=100 --workers=0,2,4 --json=/tmp/bd.jsonl
  python experiments/bench_data.py --cases=rss --rss_clips=200,4000

Cases (`--cases`, comma-separated; one JSON line each, then a table):
  pipeline  batches/s each loader delivers (`data.loader` memory | grain with each of
            `--workers` decoding processes) on the embedded set (`data.name=speech_synth` of
            the tiny ASR config) and on a synthetic corpus of `--clips` WAVs (0.5-3.5 s) written
            to a temporary directory; startup_s is the time to the first batch (index, decoding
            everything for the memory loader, worker start-up for grain), batches/s is measured
            over the next `--batches`.
  train     steps/s of the tiny ASR training step (`configs/thinker_talker.py:variant=tiny_asr`)
            at the same batch size, on one batch repeated (compiled once, excluded): what the
            pipeline has to keep up with.
  rss       peak RSS (MB, `resource.getrusage` in a fresh subprocess) of building each loader
            over manifests of `--rss_clips` short clips (0.5-1.5 s) and reading `--batches`
            batches; the streamed loader's must not grow with the corpus.
  train_rss peak RSS of a short tiny-ASR training run (`--train_steps` steps through
            `audiolm.main`) on `--rss_clips` clips: the same bar for a whole run. XLA's compile
            dominates and varies between runs (the first run on a busy machine peaked 440 MB
            above later ones): repeat a size (`--rss_clips=4000,200,4000`) to see the spread.
`--rss_loaders` picks the loaders of both RSS cases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

RATE = 16000
CASES = ("pipeline", "train", "rss", "train_rss")


def write_corpus(root: str, n: int, *, min_s: float = 0.5, max_s: float = 3.5,
                 seed: int = 0, name: str = "all") -> str:
    """n WAVs (speech-like noise bursts, `min_s`..`max_s` s, 16-bit) + `<name>.jsonl`; its
    path."""
    import numpy as np
    import soundfile as sf

    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = os.path.join(root, f"{name}.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            length = int(rng.uniform(min_s, max_s) * RATE)
            envelope = np.abs(np.sin(np.arange(length) * (np.pi * 3 / length)))
            audio = 0.2 * envelope * rng.standard_normal(length)
            name = f"{os.path.basename(path)[:-6]}{i:06d}.wav"
            sf.write(os.path.join(root, name), audio.astype(np.float32), RATE, subtype="PCM_16")
            f.write(json.dumps({"audio": name, "text": f"utterance {i}",
                                "speaker": f"s{i % 8}"}) + "\n")
    return path


def tiny_asr_config():
    from ml_collections import config_flags  # noqa: F401  (config files import it)

    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "thinker_talker_config", os.path.join(_ROOT, "configs", "thinker_talker.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("variant=tiny_asr")


def pipeline_rate(data: dict, batches: int) -> dict:
    """{"startup_s", "batches_per_s", "clips_per_s", "audio_s_per_s"} of one loader config."""
    from audiolm import data as data_lib

    t0 = time.perf_counter()
    it = data_lib.make_iterator(data, "train")
    first = next(it)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    audio_s = 0.0
    for _ in range(batches):
        batch = next(it)
        audio_s += float(batch["audio_mask"].sum()) / RATE
    seconds = time.perf_counter() - t1
    if hasattr(it, "close"):
        it.close()
    rows = first["audio"].shape[0]
    return {"startup_s": round(startup, 3), "batches_per_s": round(batches / seconds, 2),
            "clips_per_s": round(batches * rows / seconds, 1),
            "audio_s_per_s": round(audio_s / seconds, 1)}


def train_rate(batch_size: int, steps: int) -> dict:
    """steps/s of the tiny ASR train step on one real batch of the embedded set."""
    import jax

    from audiolm import data as data_lib
    from audiolm import parallel
    from audiolm.train import loop
    from audiolm.train import step as step_lib

    config = tiny_asr_config()
    config.data.batch_size = batch_size
    exp = loop.build(config)
    state = exp.init_state()
    batch = next(data_lib.make_iterator(config.data, "train"))
    sharded = parallel.shard_batch(batch, exp.mesh)
    step = step_lib.jit_train_step(
        step_lib.make_train_step(exp.module, exp.task.loss_fn, exp.tx, config, exp.lr_schedule),
        exp.state_shardings, {k: v.sharding for k, v in sharded.items()},
        parallel.replicated(exp.mesh))
    t0 = time.perf_counter()
    state, metrics = step(state, sharded)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, sharded)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t1
    return {"steps_per_s": round(steps / seconds, 2), "compile_s": round(compile_s, 1),
            "audio_len": int(batch["audio"].shape[1])}


_RSS_CHILD = """
import json, resource, sys
from audiolm import data as data_lib
config, batches = json.loads(sys.argv[1]), int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
it = data_lib.make_iterator(config, "train")
for _ in range(batches):
    next(it)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_mb": before / 1024, "peak_mb": peak / 1024}))
"""


def peak_rss(data: dict, batches: int) -> dict:
    """{"import_mb", "peak_mb"}: RSS after imports and peak RSS of a fresh process that builds
    the loader of `data` and reads `batches` batches (ru_maxrss, KiB on Linux)."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(data), str(batches)],
                         capture_output=True, text=True, check=False, cwd=_ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if out.returncode:
        raise RuntimeError(f"rss child failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: round(v, 1) for k, v in row.items()}


def train_peak_rss(corpus_dir: str, steps: int, batch_size: int, loader: str = "grain") -> dict:
    """{"peak_mb", "seconds"} of a short tiny-ASR training run (`audiolm.main`, `loader`; grain
    decodes in the training process, no final evaluators) on `corpus_dir`'s split manifests."""
    with tempfile.TemporaryDirectory(prefix="bench_data_run_") as workdir:
        cmd = [sys.executable, "-m", "audiolm.main",
               "--config=configs/thinker_talker.py:variant=tiny_asr", f"--workdir={workdir}",
               f"--config.train.steps={steps}", "--config.train.warmup_steps=1",
               f"--config.train.log_every={steps}", f"--config.train.checkpoint_every={steps}",
               f"--config.train.eval_every={steps}", "--config.train.eval_steps=1",
               "--config.task.final_evaluators=()", "--config.data.name=manifest",
               f"--config.data.manifest={corpus_dir}", f"--config.data.batch_size={batch_size}",
               f"--config.data.loader={loader}", "--config.data.loader_workers=0"]
        code = ("import resource, runpy, sys; sys.argv = ['audiolm.main', *sys.argv[1:]]\n"
                "try:\n    runpy.run_module('audiolm.main', run_name='__main__')\n"
                "finally:\n    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF)"
                ".ru_maxrss, file=sys.stderr)")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, *cmd[2:]], capture_output=True,
                             text=True, check=False, cwd=_ROOT)
        seconds = time.perf_counter() - t0
    peak = [line for line in out.stderr.splitlines() if line.startswith("PEAK_KB")]
    if out.returncode or not peak:
        raise RuntimeError(f"training run failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return {"peak_mb": round(int(peak[-1].split()[1]) / 1024, 1), "seconds": round(seconds, 1)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--clips", type=int, default=400, help="synthetic corpus size")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per case")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", default="0,2", help="grain decoding processes to try")
    parser.add_argument("--train_steps", type=int, default=10)
    parser.add_argument("--rss_clips", default="200,4000")
    parser.add_argument("--rss_loaders", default="memory,grain", help="loaders of rss cases")
    parser.add_argument("--json", default="", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    for case in cases:
        if case not in CASES:
            parser.error(f"--cases: {case!r} is not one of {CASES}")
    workers = [int(w) for w in args.workers.split(",") if w]
    loaders = [x for x in args.rss_loaders.split(",") if x]
    for loader in loaders:
        if loader not in ("memory", "grain"):
            parser.error(f"--rss_loaders: {loader!r} is not 'memory' or 'grain'")
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        if "pipeline" in cases:
            embedded = tiny_asr_config().data.to_dict()
            corpus = write_corpus(os.path.join(tmp, "disk"), args.clips)
            disk = {"name": "manifest", "manifest": corpus, "holdout_fraction": 0.0}
            for source, base in (("embedded", embedded), (f"disk{args.clips}", disk)):
                loaders = [("memory", {})] + [(f"grain w={w}", {"loader": "grain",
                                                               "loader_workers": w})
                                              for w in workers]
                for loader, extra in loaders:
                    data = {**base, "batch_size": args.batch_size, **extra}
                    emit({"case": "pipeline", "source": source, "loader": loader,
                          **pipeline_rate(data, args.batches)})
        if "train" in cases:
            emit({"case": "train", "config": "tiny_asr", "batch_size": args.batch_size,
                  **train_rate(args.batch_size, args.train_steps)})
        if "rss" in cases:
            for n in [int(c) for c in args.rss_clips.split(",") if c]:
                corpus = write_corpus(os.path.join(tmp, f"rss{n}"), n, min_s=0.5, max_s=1.5)
                for loader in loaders:
                    data = {"name": "manifest", "manifest": corpus, "holdout_fraction": 0.0,
                            "batch_size": args.batch_size, "loader": loader,
                            "loader_workers": 0}
                    emit({"case": "rss", "clips": n, "loader": loader,
                          **peak_rss(data, args.batches)})
        if "train_rss" in cases:
            for n in [int(c) for c in args.rss_clips.split(",") if c]:
                root = os.path.join(tmp, f"train_rss{n}")
                write_corpus(root, n, min_s=0.5, max_s=1.5, name="train")
                for split in ("validation", "test"):
                    write_corpus(root, 8, min_s=0.5, max_s=1.5, name=split, seed=1)
                for loader in loaders:
                    emit({"case": "train_rss", "clips": n, "loader": loader,
                          **train_peak_rss(root, args.train_steps, args.batch_size, loader)})
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'case':9s} {'what':26s} {'startup s':>10s} {'rate':>22s}")
    for r in rows:
        if r["case"] == "pipeline":
            print(f"{'pipeline':9s} {r['source'] + ' / ' + r['loader']:26s} "
                  f"{r['startup_s']:10.2f} {r['batches_per_s']:>12.2f} batches/s")
        elif r["case"] == "train":
            print(f"{'train':9s} {'tiny_asr B=' + str(r['batch_size']):26s} "
                  f"{r['compile_s']:10.1f} {r['steps_per_s']:>12.2f} steps/s  ")
        else:
            print(f"{r['case']:9s} {str(r['clips']) + ' clips / ' + r['loader']:26s} "
                  f"{'':10s} {r['peak_mb']:>12.1f} MB peak  ")


if __name__ == "__main__":
    main()
