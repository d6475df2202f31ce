"""Datasets: the embedded espeak-ng speech set, user manifests, tokenizers, bucketed batches.

Entry points:
  make_dataset(data_config, split) -> AudioTextDataset    (utterances in memory)
  make_iterator(data_config, split, train=...) -> BatchIterator  (padded, bucketed, resumable)
  make_tokenizer(data_config) -> Tokenizer                  (bytes | chars | sentencepiece)
  DEFAULTS: the `config.data` section with every field this package reads.

`data.name`:
  "speech_synth"  English speech synthesised with espeak-ng, generated once into
                  `data.cache_dir` (`audiolm.data.speech_synth`);
  "manifest"      user audio + transcripts from `data.manifest` (`audiolm.data.manifest`);
  "synthetic"     no audio: the family's `example_batch` random batches (`audiolm.train`).

`data.loader`:
  "memory"        every clip decoded into RAM at start (`audiolm.data.batching`): the embedded
                  set and small manifests;
  "grain"         streamed from disk through grain worker processes (`audiolm.data.streaming`):
                  corpora of any size, `data.sources` mixing, one shard per host.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import ml_collections

from audiolm import config as cfg

NAMES = ("speech_synth", "manifest", "synthetic")
LOADERS = ("memory", "grain")
SPLITS = ("train", "validation", "test")

DEFAULTS = ml_collections.ConfigDict({
    "name": "speech_synth",  # speech_synth | manifest | synthetic (see module docstring)
    "cache_dir": "",  # speech_synth cache parent; "" = ~/.cache/audiolm/speech_synth
    "num_train": 2000,  # speech_synth utterances in the train split
    "num_validation": 100,  # speech_synth utterances in the validation split
    "num_test": 100,  # speech_synth utterances in the test split
    "num_speakers": 64,  # speech_synth speaker profiles (accent, variant, rate, pitch, range)
    # speech_synth: fraction of train utterances saying scrambled lexicon words (no template)
    "train_scrambled": 0.0,
    "num_workers": 0,  # speech_synth generation processes; 0 = one per CPU (at most 8)
    "manifest": "",  # manifest: JSONL file or audio+.txt directory; may contain "{split}"
    "holdout_fraction": 0.05,  # manifest without per-split files: validation and test share each
    "on_bad_file": "skip",  # skip | error: bad lines/files are reported by name either way
    "resample": True,  # resample other rates with soxr; False: other rates are bad files
    "sample_rate": 16000,  # Hz of every waveform the model sees
    "seed": 0,  # speech_synth generation (sentences, speakers) and the shuffle order
    "batch_size": 16,  # utterances per global batch
    "bucket_seconds": (1.5, 2.0, 2.5, 3.0, 4.0),  # padded audio lengths; doubled up to the max
    "max_audio_seconds": 30.0,  # longer utterances are dropped (reported); also the last bucket
    "min_audio_seconds": 0.1,  # shorter utterances are dropped (reported): no speech fits
    "max_text_len": 64,  # text tokens incl. bos/eos (fixed L; speech_synth needs <= 58 as bytes);
    # longer transcripts are dropped (reported)
    "tokenizer": "bytes",  # bytes | chars | sentencepiece
    "alphabet": "",  # chars tokenizer alphabet; "" = lowercase a-z, digits, space, .,?!'-
    "spm_path": "",  # sentencepiece .model file for tokenizer=sentencepiece
    "shuffle": True,  # shuffle training data each epoch (evaluation is never shuffled)
    "loader": "memory",  # memory: clips decoded into RAM once | grain: streamed from disk
    # (`audiolm.data.streaming`: any corpus size, per-host shards, worker processes)
    "loader_workers": 2,  # grain: decoding processes; 0 = threads of the training process
    "loader_prefetch": 4,  # grain: batches decoded ahead (per worker process)
    "sources": (),  # grain: mixed sources "SOURCE" or "SOURCE@WEIGHT", SOURCE = "speech_synth"
    # or a manifest (as data.manifest); () = the one source of data.name
})

log = logging.getLogger("audiolm.data")


def validate_section(config: Any) -> None:
    """`config.data` against DEFAULTS (keys and types), then its ranges and choices (called by
    `audiolm.config.validate`)."""
    cfg.check_schema(config, "data", DEFAULTS)
    validate_config(config)


def validate_config(config: Any) -> None:
    """Ranges and choices of `config.data` (types are checked against DEFAULTS by the caller)."""
    from audiolm.data.manifest import ON_BAD_FILE
    from audiolm.data.tokenizer import TOKENIZERS

    data = config.data
    cfg.require(data.name in NAMES, "data.name", data.name, f"must be one of {list(NAMES)}")
    cfg.check_int(config, "data.batch_size", lo=1)
    for key in ("num_train", "num_validation", "num_test", "num_workers"):
        cfg.check_int(config, f"data.{key}", lo=0)
    cfg.check_int(config, "data.num_speakers", lo=1)
    cfg.check_int(config, "data.sample_rate", lo=1)
    cfg.check_int(config, "data.seed", lo=0)
    cfg.check_int(config, "data.max_text_len", lo=3)
    cfg.require(0.0 <= data.train_scrambled <= 1.0, "data.train_scrambled",
                data.train_scrambled, "must be a fraction in [0, 1]")
    cfg.require(data.on_bad_file in ON_BAD_FILE, "data.on_bad_file", data.on_bad_file,
                f"must be one of {list(ON_BAD_FILE)}")
    cfg.require(data.tokenizer in TOKENIZERS, "data.tokenizer", data.tokenizer,
                f"must be one of {list(TOKENIZERS)}")
    cfg.require(data.tokenizer != "sentencepiece" or bool(data.spm_path), "data.spm_path",
                data.spm_path, "must name a sentencepiece .model file when "
                "data.tokenizer='sentencepiece'")
    cfg.require(data.name != "manifest" or bool(data.manifest) or bool(data.sources),
                "data.manifest", data.manifest,
                "must name a JSONL manifest or an audio directory when data.name='manifest'")
    cfg.require(0.0 <= data.holdout_fraction < 0.5, "data.holdout_fraction",
                data.holdout_fraction, "must be in [0, 0.5)")
    cfg.require(math.isfinite(data.max_audio_seconds) and data.max_audio_seconds > 0,
                "data.max_audio_seconds", data.max_audio_seconds, "must be a finite number > 0")
    cfg.require(math.isfinite(data.min_audio_seconds)
                and 0 <= data.min_audio_seconds < data.max_audio_seconds,
                "data.min_audio_seconds", data.min_audio_seconds,
                f"must be a finite number in [0, data.max_audio_seconds={data.max_audio_seconds})")
    cfg.require(data.loader in LOADERS, "data.loader", data.loader,
                f"must be one of {list(LOADERS)}")
    cfg.check_int(config, "data.loader_workers", lo=0)
    cfg.check_int(config, "data.loader_prefetch", lo=1)
    if data.sources:
        from audiolm.data.streaming import parse_sources

        cfg.require(data.loader == "grain", "data.sources", data.sources,
                    "mixing sources needs data.loader='grain'")
        cfg.require(data.name != "synthetic", "data.sources", data.sources,
                    "must be () when data.name='synthetic' (no audio is read)")
        parse_sources(data.sources)
    cfg.require(all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0
                    for b in data.bucket_seconds), "data.bucket_seconds",
                data.bucket_seconds, "must be positive numbers of seconds")


def check_text_ids(config: Any, vocab_path: str, special_paths: tuple[str, ...],
                   eos_path: str, pad_path: str) -> None:
    """Cross-field rules between a model's text vocabulary and `config.data`'s tokenizer (a
    family's rules call it; nothing to check for data.name='synthetic'):

      * `vocab_path` holds every tokenizer id (ids 0 .. tokenizer.vocab_size - 1);
      * the ids at `special_paths` (audio placeholders, span markers) lie outside the tokenizer's
        ids, so no transcript character is read as one;
      * `eos_path` is the tokenizer's eos or outside its ids, and `pad_path` one of the
        tokenizer's specials (pad, bos, eos...) or outside its ids: neither may be a text token.
    Raises ConfigError naming both fields and the colliding character.
    """
    from audiolm.data.tokenizer import make_tokenizer as make

    data = config.data
    if data.name == "synthetic":
        return
    if data.tokenizer == "sentencepiece" and not os.path.isfile(os.path.expanduser(data.spm_path)):
        return  # the data load names the missing model file
    tokenizer = make(data)
    size = tokenizer.vocab_size
    where = f"data.tokenizer={data.tokenizer!r} (ids 0..{size - 1})"
    vocab = cfg.check_int(config, vocab_path, lo=1)
    cfg.require(vocab >= size, vocab_path, vocab,
                f"must be >= {size}: {where} emits ids up to {size - 1}")
    names = {v: k for k, v in tokenizer.specials.items()}
    for path in special_paths:
        value = cfg.check_int(config, path, lo=0)
        if value < size:
            meaning = (f"its {names[value]} id" if value in names
                       else f"the id of {tokenizer.decode([value])!r}")
            raise cfg.ConfigError(f"{path}={value}: collides with {where}: {value} is {meaning}; "
                                  f"special ids must be >= {size}")
    eos = cfg.check_int(config, eos_path, lo=0)
    cfg.require(eos == tokenizer.eos_id or eos >= size, eos_path, eos,
                f"must be {tokenizer.eos_id} (the eos id of {where}) or >= {size}: "
                f"{eos} is the id of {tokenizer.decode([eos])!r}")
    pad = cfg.check_int(config, pad_path, lo=0)
    cfg.require(pad in names or pad >= size, pad_path, pad,
                f"must be a special id of {where} {tokenizer.specials} or >= {size}: "
                f"{pad} is the id of {tokenizer.decode([pad])!r}")


def resolve_config(data_config: Any) -> ml_collections.ConfigDict:
    """DEFAULTS overridden by `data_config` (a ConfigDict/dict, possibly partial); unknown
    fields raise ConfigError."""
    merged = ml_collections.ConfigDict(DEFAULTS.to_dict())
    items = data_config.items() if hasattr(data_config, "items") else dict(data_config).items()
    for key, value in items:
        if key not in DEFAULTS:
            from audiolm.config import ConfigError

            raise ConfigError(f"data.{key}={value!r}: unknown field; expected one of "
                              f"{sorted(DEFAULTS)}")
        merged[key] = value
    return merged




def make_tokenizer(data_config: Any):
    """The text tokenizer of `config.data` (`audiolm.data.tokenizer`)."""
    from audiolm.data.tokenizer import make_tokenizer as make

    return make(resolve_config(data_config))


def make_dataset(data_config: Any, split: str):
    """The `AudioTextDataset` of `split` ("train" | "validation" | "test") of `config.data`.

    speech_synth generates the set on first use (cached); manifest data is read, resampled and
    checked file by file (bad files reported, skipped or raised per `data.on_bad_file`);
    `data.sources` (any loader) gives the utterances of every source of the split together.
    """
    from audiolm.config import ConfigError
    from audiolm.data.batching import AudioTextDataset
    from audiolm.data.tokenizer import make_tokenizer

    data = resolve_config(data_config)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}")
    tokenizer = make_tokenizer(data)
    common = dict(max_audio_seconds=float(data.max_audio_seconds),
                  min_audio_seconds=float(data.min_audio_seconds),
                  max_text_len=int(data.max_text_len))
    if data.sources:
        from audiolm.data.streaming import load_index

        entries, clips, speakers = load_index(data, split)
        return AudioTextDataset(entries, clips, tokenizer, data.sample_rate, speakers=speakers,
                                **common)
    if data.name == "speech_synth":
        import json
        import os

        import soundfile as sf

        from audiolm.data import speech_synth

        gen = speech_synth.generation_config_of(data)
        path = speech_synth.generate(gen, data.cache_dir, data.num_workers, log=log.info)
        rows = speech_synth.read_split(path, split)
        clips = [sf.read(row["audio"], dtype="int16")[0] for row in rows]
        with open(os.path.join(path, "speakers.json")) as f:
            speakers = [p["name"] for p in json.load(f)]
        return AudioTextDataset(rows, clips, tokenizer, data.sample_rate, speakers=speakers,
                                **common)
    if data.name == "manifest":
        from audiolm.data.manifest import load_manifest

        entries, clips, report = load_manifest(
            data.manifest, split, data.sample_rate, resample=data.resample,
            on_bad_file=data.on_bad_file, holdout_fraction=float(data.holdout_fraction))
        return AudioTextDataset(entries, clips, tokenizer, data.sample_rate, report=report,
                                **common)
    raise ConfigError(f"data.name={data.name!r}: make_dataset reads audio datasets "
                      f"{['speech_synth', 'manifest']}; 'synthetic' batches come from the "
                      "model family's example_batch")


def make_iterator(data_config: Any, split: str, *, train: bool | None = None,
                  dataset: Any = None, shard: Any = None):
    """Batches of `split`: endless, shuffled (per `data.shuffle`) and with full batches when
    `train` (default: split == "train"); otherwise one ordered pass with the last batches padded.

    `data.loader="memory"` (or a `dataset` given): a `BatchIterator` over the clips in RAM,
    the global batch on every host (the loop feeds each host's rows, `parallel.local_batch`);
    `"grain"`: a `streaming.StreamIterator` reading only this host's rows of each global batch,
    those of `shard` (a grain ShardOptions; default: this JAX process of jax.process_count())."""
    from audiolm.data.batching import BatchIterator, bucket_lengths

    data = resolve_config(data_config)
    train = split == "train" if train is None else bool(train)
    if data.loader == "grain" and dataset is None:
        from audiolm.data.streaming import make_stream_iterator

        if split not in SPLITS:
            raise ValueError(f"split={split!r}: must be one of {SPLITS}")
        return make_stream_iterator(data, split, train=train, shard=shard)
    if data.sources:
        from audiolm.config import ConfigError

        raise ConfigError(f"data.sources={tuple(data.sources)!r}: mixing sources needs "
                          "data.loader='grain'")
    if dataset is None:
        dataset = make_dataset(data, split)
    buckets = bucket_lengths(data.bucket_seconds, float(data.max_audio_seconds),
                             int(data.sample_rate))
    return BatchIterator(dataset, int(data.batch_size), buckets, int(data.max_text_len),
                         seed=int(data.seed), shuffle=bool(data.shuffle) and train,
                         repeat=train, drop_remainder=train)
