"""Recogniser CER against wall time, recipe by recipe: the main job's AuT + Thinker (task asr,
issue 16) or the Moshi streaming recogniser on codec codes (task stt, issue 15).

  python experiments/asr_cer.py --workdir=runs/asr_cer
  taskset -c 0,1 python experiments/asr_cer.py --workdir=runs/asr_cer --recipes=ctc,after
  python experiments/asr_cer.py --workdir=/tmp/asr_cer --config.train.steps=300 --cer_every=100
  python experiments/asr_cer.py --config=configs/moshi.py:variant=stt_speech \
      --workdir=runs/stt_cer --recipes=before,codebooks,after

Recipes (`RECIPES[task]`, on the --config given, the same steps; any --config override applies
to all), each one lever more than the one before, "after" the config as given:
  asr (`configs/thinker_talker.py:variant=tiny_asr`, the default):
    before     Thinker cross-entropy only, template sentences only, greedy decoding;
    ctc        + auxiliary character CTC on the AuT (train.loss.ctc_weight,
               model.aut.ctc_frames_per_token) + SpecAugment;
    after      the recipe of `make main`: + scrambled training sentences (data.train_scrambled)
               + joint CTC / attention beam decoding (task.decode_beam, task.decode_ctc_weight).
  stt (`configs/moshi.py:variant=stt_speech`):
    before     random audio embeddings, no time masks (the stt recipe before issue 15's levers);
    codebooks  + audio embeddings from the codec's codebooks (task.codec.init_embeddings);
    after      the stt_speech recipe: + time masks on the audio codes
               (train.loss.audio_time_masks / audio_time_width).
Each recipe trains once (`audiolm.train.loop.train`, in `<workdir>/<recipe>`); every
`--cer_every` steps the clock is paused and the test split is transcribed greedily, so the time
axis is the run's own wall time (data loading, steps, validation, checkpoints) without the
measurement. The last point is the run's final test evaluation. Writes to `--workdir`:
  results.md    one table per recipe: step, wall minutes, test CER (all / template / scrambled
                sentences / seen / unseen voices), WER
  results.csv   the same rows
  <task>_cer.png  test CER against wall minutes, one line per recipe
A recipe whose run directory already holds its rows (`cer_rows.json`) is read back, not
retrained.
Pin the cores to compare with the 2-core goal: `taskset -c 0,1 python experiments/asr_cer.py ...`.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402


RECIPES = {"asr": ("before", "ctc", "after"), "stt": ("before", "codebooks", "after")}
COLUMNS = ("recipe", "step", "wall_minutes", "cer", "cer_template", "cer_scrambled",
           "cer_seen_voices", "cer_unseen_voices", "wer")


def recipe_config(config, recipe: str):
    """The config of `recipe` for the config's task (a copy; "after" is the config as given)."""
    task = config.task.name
    if task not in RECIPES:
        raise ValueError(f"--config: task {task!r} is not a recogniser ({sorted(RECIPES)})")
    if recipe not in RECIPES[task]:
        raise ValueError(f"--recipes: {recipe!r} is not one of {RECIPES[task]} (task {task})")
    config = config.copy_and_resolve_references()
    if task == "stt":
        if recipe in ("before", "codebooks"):
            config.train.loss.audio_time_masks = config.train.loss.audio_time_width = 0
        if recipe == "before":
            config.task.codec.init_embeddings = False
        return config
    if recipe in ("before", "ctc"):
        config.data.train_scrambled = 0.0
        config.task.decode_beam = 1
        config.task.decode_ctc_weight = 0.0
    if recipe == "before":
        config.model.aut.ctc_frames_per_token = 0
        loss = config.train.loss
        loss.ctc_weight = 0.0
        loss.spec_time_masks = loss.spec_time_width = 0
        loss.spec_freq_masks = loss.spec_freq_width = 0
    return config


def _row(recipe: str, step: int, seconds: float, scores: dict) -> dict:
    row = {"recipe": recipe, "step": step, "wall_minutes": round(seconds / 60, 2)}
    for key in COLUMNS[3:]:
        row[key] = round(float(scores[key]), 4) if key in scores else ""
    return row


def test_scores(config, module, params) -> dict:
    """Greedy test-split scores of the config's recogniser (asr or stt)."""
    from audiolm.tasks import asr, stt

    if config.task.name == "stt":
        return stt.score(config, stt.transcribe(config, module, params, "test"), "test")
    done = asr.transcribe(config, module, params, "test")
    scores = asr.error_rates([r["reference"] for r in done], [r["hypothesis"] for r in done])
    scores.update(asr.group_scores(done, config, "test"))
    return scores


def measure(config, recipe: str, workdir: str, cer_every: int) -> list[dict]:
    """Trains `recipe` in `workdir`, measuring test CER every `cer_every` steps; returns rows."""
    import jax

    from audiolm import config as config_lib
    from audiolm.train import loop

    config_lib.validate(config)
    module = config_lib.family_module(config.model.family).build(config.model)
    rows, paused = [], [0.0]
    t0 = time.perf_counter()

    def on_step(step, state, metrics):
        del metrics
        if step % cer_every or step >= int(config.train.steps):
            return
        jax.block_until_ready(state.params)
        start = time.perf_counter()
        scores = test_scores(config, module, state.params)
        rows.append(_row(recipe, step, start - t0 - paused[0], scores))
        print(f"{recipe} step {step}: CER {scores['cer']:.3f}", flush=True)
        paused[0] += time.perf_counter() - start

    last = [0.0]

    def on_last(step, state, metrics):
        del metrics
        if step == int(config.train.steps):
            jax.block_until_ready(state.params)
            last[0] = time.perf_counter() - t0 - paused[0]

    loop.train(config, workdir, callbacks=[on_step, on_last])
    with open(os.path.join(workdir, f"{config.task.name}_test.json")) as f:  # the final eval
        rows.append(_row(recipe, int(config.train.steps), last[0], json.load(f)))
    with open(os.path.join(workdir, "cer_rows.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return rows


def write_results(rows: list[dict], workdir: str, task: str = "asr", title: str = "") -> None:
    """results.md, results.csv and <task>_cer.png in `workdir`."""
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    title = title or {"asr": "tiny_asr main job", "stt": "Moshi stt"}.get(task, task)
    lines = [f"# {title}: test CER against wall time", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        pts = [r for r in rows if r["recipe"] == recipe]
        ax.plot([r["wall_minutes"] for r in pts], [r["cer"] for r in pts], "o-", label=recipe)
    ax.axhline(0.10, color="gray", linestyle="--", linewidth=1, label="goal CER 0.10")
    budget = 15.0 if task == "asr" else 30.0  # the issues' wall-time budgets on 2 cores
    ax.axvline(budget, color="gray", linestyle=":", linewidth=1, label=f"{budget:.0f} min")
    ax.set_xlabel("wall minutes (CER measurement excluded)")
    ax.set_ylabel("test CER")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(f"{title}: test CER vs wall time")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"{task}_cer.png"), dpi=100)
    plt.close(fig)


def define_flags() -> None:
    """The script's flags, defined when it runs (importing it for RECIPES / recipe_config, as the
    tests do, defines none that could clash with another module's --config)."""
    global _CONFIG, _WORKDIR, _RECIPES, _CER_EVERY
    _CONFIG = config_flags.DEFINE_config_file(
        "config", os.path.join(_ROOT, "configs", "thinker_talker.py") + ":variant=tiny_asr",
        "Experiment config file (+:arg); the main job by default.", lock_config=False)
    _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (one run folder per recipe).")
    _RECIPES = flags.DEFINE_list("recipes", None, "Recipes to run, in order (default: all of "
                                 "the config's task, RECIPES[task]).")
    _CER_EVERY = flags.DEFINE_integer("cer_every", 200, "Steps between test-CER measurements.")


def main(argv):
    del argv
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:  # like audiolm.main: library INFO lines on request
        from audiolm.train.metrics import quiet_library_logs

        quiet_library_logs(__file__)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    config, rows = _CONFIG.value, []
    task = config.task.name
    for recipe in _RECIPES.value or RECIPES.get(task, ()):
        run_dir = os.path.join(_WORKDIR.value, recipe)
        saved = os.path.join(run_dir, "cer_rows.json")
        if os.path.isfile(saved):
            with open(saved) as f:
                rows += json.load(f)
            continue
        rows += measure(recipe_config(config, recipe), recipe, run_dir, _CER_EVERY.value)
    write_results(rows, _WORKDIR.value, task)
    with open(os.path.join(_WORKDIR.value, "results.md")) as f:
        print(f.read())


if __name__ == "__main__":
    define_flags()
    app.run(main)
