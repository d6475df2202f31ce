"""Judged intelligibility of a trained `tts` run: speak the test sentences, transcribe them with
the independent judge (Whisper tiny.en) beside the originals, and put the runs side by side.

  python experiments/tts_eval.py --config=configs/pattern_lm.py:variant=tts_speech \
      --workdir=runs/tts_pattern
  python experiments/tts_eval.py --config=configs/moshi.py:variant=tts_speech \
      --workdir=runs/tts_moshi --limit=50 --out=runs/tts_eval

Each call evaluates one run (`--workdir`, restored as `--mode=sample` does) on `--split` (its
first `--limit` sentences; 0 = all) through `audiolm.tasks.tts.speak_and_judge`, and records it
under `--name` (default: the family) in `--out` (default runs/tts_eval), which keeps every run
evaluated so far:
  results.json   {name: scores, workdir, config}
  results.md     one row per run: sentences, judged WER / CER of the generated speech, the
                 judge's WER on the originals, the gap, duration ratio, RTF (generation and
                 codec decoding, after one warm-up batch that compiles them)
  tts_eval.png   judged WER against training wall time per run (the "speech" evaluations in
                 each run's metrics.jsonl; the last point is this evaluation), the judge on the
                 originals dashed
  <name>/        the run's speech_<split>/ folder: WAVs (`--wavs` of them, generated and
                 original), table.md and speech.jsonl (one row per sentence)
`evaluate(config, workdir, out, ...)` is the same from Python (notebooks, tests).
"""

from __future__ import annotations

import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from experiments import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined when run as a script, so tests can import the functions)."""
    cli.define_config("pattern_lm.py:variant=tts_speech",
                      "Experiment config file (+:arg) of the trained tts run.")
    flags.DEFINE_string("workdir", None, "The trained run (its checkpoints/).")
    flags.DEFINE_string("out", os.path.join("runs", "tts_eval"), "Results folder.")
    flags.DEFINE_string("name", "", "Row name in the results (default: the family).")
    flags.DEFINE_string("split", "test", "Split whose sentences are spoken.")
    flags.DEFINE_integer("limit", 0, "Sentences spoken (the first ones; 0 = all).")
    flags.DEFINE_integer("wavs", 8, "WAV pairs written (generated and original).")


COLUMNS = (("utterances", "sentences", "{:.0f}"), ("wer", "judged WER", "{:.3f}"),
           ("cer", "judged CER", "{:.3f}"), ("judge_wer_original", "judge WER originals",
                                             "{:.3f}"),
           ("wer_gap", "gap", "{:+.3f}"), ("duration_ratio", "duration ratio", "{:.2f}"),
           ("rtf", "RTF", "{:.2f}"), ("empty", "empty", "{:.2f}"))


def results_table(results: dict) -> str:
    """The markdown table of every run in `results` ({name: {"scores": ...}})."""
    head = "| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, entry in sorted(results.items()):
        s = entry["scores"]
        lines.append(f"| {name} | " + " | ".join(
            fmt.format(s[key]) if key in s else "" for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def training_curve(workdir: str) -> list[tuple[float, float]]:
    """(wall minutes since the run's first record, judged WER) of the run's "speech"
    evaluations in metrics.jsonl."""
    from audiolm.train import metrics as metrics_lib

    records = metrics_lib.read_metrics(workdir)
    if not records:
        return []
    t0 = min(r["time"] for r in records)
    return [((r["time"] - t0) / 60.0, float(r["wer"])) for r in records
            if r.get("split") in ("eval", "test") and "wer" in r
            and "judge_wer_original" in r]


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, entry) in enumerate(sorted(results.items())):
        color = f"C{i}"
        curve = training_curve(entry["workdir"])
        s = entry["scores"]
        if curve:
            ax.plot([m for m, _ in curve], [w for _, w in curve], "o-", color=color, label=name)
        else:
            ax.plot([0.0], [s["wer"]], "o", color=color, label=f"{name} (no curve)")
        ax.axhline(s["judge_wer_original"], color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("judged WER (dashed: the judge on the originals)")
    ax.set_ylim(bottom=0.0)
    ax.set_title("tts: judged WER of generated test sentences")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(config, workdir: str, out: str, name: str = "", split: str = "test",
             limit: int = 0, wavs: int = 8) -> dict:
    """Speaks and judges `split` with the run in `workdir`, records it under `name` in
    `out/results.json` and rewrites results.md and tts_eval.png; returns the results."""
    from audiolm import config as config_lib
    from audiolm.tasks import tts
    from audiolm.train import sampling

    config_lib.validate(config)
    if config.task.name != tts.NAME:
        raise ValueError(f"config: task.name={config.task.name!r}; tts_eval evaluates task "
                         f"{tts.NAME!r} runs")
    config.sample.num_samples = wavs
    name = name or config.model.family
    module, params, source = sampling.load_params(config, workdir)
    print(f"speaking {split} sentences with {config.model.family} params from {source}")
    # Compile the generation of one batch first, so that the RTF measures speaking only.
    rows, _ = tts.sentences(config, split, int(config.data.batch_size))
    tts.speak(module, params, config, rows)
    scores = tts.speak_and_judge(config, module, params, split, os.path.join(out, name), limit)
    path = os.path.join(out, "results.json")
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            results = json.load(f)
    results[name] = {"scores": scores, "workdir": os.path.abspath(workdir), "params": source,
                     "split": split, "limit": limit, "config": config.to_json_best_effort()}
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    table = results_table(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    plot(results, os.path.join(out, "tts_eval.png"))
    print(table)
    print(f"written: {out}/results.md, tts_eval.png, {out}/{name}/speech_{split}/")
    return results


def main(argv):
    del argv
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required (the trained tts run)")
    evaluate(FLAGS.config, FLAGS.workdir, FLAGS.out, FLAGS.name, FLAGS.split, FLAGS.limit,
             FLAGS.wavs)


if __name__ == "__main__":
    define_flags()
    app.run(main)
