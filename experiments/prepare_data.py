"""Prepare a corpus once before training on it: decode every clip, report, cache log-mel features.

  python experiments/prepare_data.py --out=/data/prep \
      --config.data.name=manifest --config.data.manifest=/data/my_corpus.jsonl
  python experiments/prepare_data.py --out=/tmp/prep --splits=train --features=false

The data section is the config's (`--config`, the main job by default; `data.sources` mixes are
prepared source by source). For each split, with a progress bar:
  * every line and file is checked as the in-memory loader does (missing, corrupt, truncated,
    silent, cancelling channels, length limits, characters outside a `chars` alphabet), but one
    clip at a time, so memory stays flat on a corpus of any size;
  * `<out>/<split>.jsonl` is written: the kept utterances (absolute audio path, text, speaker,
    duration), a clean manifest for `data.manifest` (`{split}` placeholder: `<out>/{split}.jsonl`);
  * the data report goes to `<out>/report.json` (per split: kept, hours, bad lines/files and
    dropped utterances with their reasons, unknown characters) and is printed;
  * with --features, log-mel features of `model.audio` are cached in `<out>/features`
    (`audiolm.data.cache.ArrayCache`, key `log_mel_key(config)`; one entry per audio file, id
    `cache.file_id(path)`, so an edited file or another feature config never reuses an entry).
    They are computed on bucket-padded batches, as the training step computes them.
"""

from __future__ import annotations

import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from experiments import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined when run as a script, so tests can import the functions)."""
    cli.define_config("thinker_talker.py:variant=tiny_asr",
                      "Experiment config file (+:arg); its data section names the corpus.")
    flags.DEFINE_string("out", None, "Output directory: manifests, report, feature cache.")
    flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to prepare.")
    flags.DEFINE_boolean("features", True, "Cache log-mel features of model.audio.")
    flags.DEFINE_integer("feature_batch", 16, "Clips per log-mel batch.")


def log_mel_key(config) -> str:
    """Cache key of the log-mel features of `config` (model.audio + the data's audio reading)."""
    from audiolm.data import cache, resolve_config

    data = resolve_config(config.data)
    return cache.cache_key(kind="log_mel", audio=config.model.audio.to_dict(),
                           sample_rate=int(data.sample_rate), resample=bool(data.resample),
                           format=cache.FORMAT_VERSION)


def prepare_split(config, split: str, out: str, features_cache=None,
                  feature_batch: int = 16) -> dict:
    """Checks, writes `<out>/<split>.jsonl` and caches features of one split; returns its report
    {"kept", "hours", "bad": [[name, reason]], "filtered": [[name, reason]], "unknown_chars",
    "features_cached", "features_computed", "seconds"}."""
    import numpy as np
    import tqdm

    from audiolm.data import cache as cache_lib
    from audiolm.data import manifest as manifest_lib
    from audiolm.data import resolve_config, streaming
    from audiolm.data.batching import bucket_lengths
    from audiolm.data.tokenizer import make_tokenizer

    t0 = time.perf_counter()
    data = resolve_config(config.data)
    index = streaming.index_sources(data, split)
    tokenizer = make_tokenizer(data)
    sr = int(data.sample_rate)
    buckets = bucket_lengths(data.bucket_seconds, float(data.max_audio_seconds), sr)
    report = manifest_lib.Report(source=f"decoding [{split}]")
    unknown: dict[str, int] = {}
    kept, seconds = 0, 0.0
    pending: dict[int, list[tuple[str, np.ndarray]]] = {}  # bucket -> [(file id, clip)]
    counts = {"features_cached": 0, "features_computed": 0}

    def flush(bucket: int) -> None:
        rows = pending.pop(bucket, [])
        if not rows:
            return
        ids = [i for i, _ in rows]
        have = features_cache.get_many(ids)
        todo = [(i, clip) for i, clip in rows if i not in have]
        counts["features_cached"] += len(rows) - len(todo)
        if todo:
            from audiolm.audio.features import log_mel_from_config

            length = int(buckets[bucket])
            wave = np.zeros((feature_batch, length), np.float32)  # fixed shape: one compile
            lengths = np.full((feature_batch,), length, np.int32)
            for row, (_, clip) in enumerate(todo):
                wave[row, :min(clip.shape[0], length)] = clip[:length]
                lengths[row] = min(clip.shape[0], length)
            feats, frames = log_mel_from_config(wave, config.model.audio, lengths=lengths)
            feats, frames = np.asarray(feats), np.asarray(frames)
            features_cache.put_many({i: feats[row, :frames[row]].astype(np.float16)
                                     for row, (i, _) in enumerate(todo)})
            counts["features_computed"] += len(todo)

    os.makedirs(out, exist_ok=True)
    bucket_of = np.searchsorted(buckets, index.lengths, side="left")
    tmp = os.path.join(out, f".{split}.jsonl.tmp")
    with open(tmp, "w") as f:
        for i in tqdm.tqdm(range(len(index)), desc=f"preparing {split}", unit="file"):
            path = index.audio[i]
            clip = manifest_lib.read_clip(path, sr, resample=bool(data.resample), report=report)
            if clip is None:
                continue
            text = index.text[i]
            for char in tokenizer.unknown_chars(text):
                unknown[char] = unknown.get(char, 0) + 1
            speaker = int(index.speaker_ids[i])
            f.write(json.dumps({"audio": path, "text": text,
                                "speaker": index.speakers[speaker] if speaker >= 0 else "",
                                "duration": round(clip.shape[0] / sr, 4)}) + "\n")
            kept += 1
            seconds += clip.shape[0] / sr
            if features_cache is not None:
                bucket = int(bucket_of[i])
                pending.setdefault(bucket, []).append((cache_lib.file_id(path), clip))
                if len(pending[bucket]) == feature_batch:
                    flush(bucket)
        for bucket in list(pending):
            flush(bucket)
    os.replace(tmp, os.path.join(out, f"{split}.jsonl"))
    bad = [list(b) for r in index.reports for b in r.bad] + [list(b) for b in report.bad]
    return {"kept": kept, "hours": round(seconds / 3600, 4), "bad": bad,
            "filtered": [list(x) for x in index.filtered], "unknown_chars": unknown,
            **(counts if features_cache is not None else {}),
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required: the directory for manifests, report, cache")
    from audiolm.data import cache as cache_lib
    from audiolm.data import validate_section

    config = FLAGS.config
    validate_section(config)
    out = os.path.expanduser(FLAGS.out)
    features = None
    if FLAGS.features:
        if "audio" not in config.model:
            raise app.UsageError("--features: the config's model has no audio section "
                                 "(model.audio); pass --features=false")
        features = cache_lib.ArrayCache(os.path.join(out, "features"), log_mel_key(config))
    report = {}
    for split in FLAGS.splits:
        report[split] = prepare_split(config, split, out, features, FLAGS.feature_batch)
        r = report[split]
        print(f"{split}: kept {r['kept']} ({r['hours']:.3f} h), bad {len(r['bad'])}, "
              f"dropped for length {len(r['filtered'])}, "
              f"unknown characters {sum(r['unknown_chars'].values())} in {r['seconds']} s"
              + (f"; features cached {r['features_cached']}, computed "
                 f"{r['features_computed']}" if features is not None else ""))
        for name, reason in r["bad"] + r["filtered"]:
            print(f"  {name}: {reason}")
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    print(f"wrote {out}/report.json and {', '.join(f'{s}.jsonl' for s in report)}"
          + (f"; features in {features.directory}" if features is not None else ""))


if __name__ == "__main__":
    define_flags()
    app.run(main)
