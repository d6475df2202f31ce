"""Speech + text batches streamed from disk through grain (`data.loader = "grain"`).

Nothing but an index is held in memory: per utterance its audio path, transcript, speaker and
length, read without decoding audio (lengths from the file headers via `soundfile.info`). Audio
is decoded, mixed to mono, resampled and padded into batches inside grain worker processes
(`data.loader_workers`), `data.loader_prefetch` batches ahead, so the memory of a run does not
grow with the corpus.

Order: each source's batches follow `batching.plan_epoch` (the in-memory loader's bucketed,
shuffled order) over its utterances; batch k of the endless stream is batch k mod n of epoch
k // n, computed on demand, so grain's iterator state (a few integers) resumes exactly. Several
`data.sources` are mixed batch by batch in proportion to their weights (`grain.MapDataset.mix`);
a batch always comes from one source.

Hosts: the plan is global (every host computes the same one), and host p of P reads rows
[p B/P, (p+1) B/P) of every global batch of B = `data.batch_size` rows (`parallel.process_rows`):
the hosts read disjoint utterances that together cover the set, and all hosts pad a step's batch
to the same bucket. The host's slice is a `grain.sharding.ShardOptions` (`shard=`), by default
this JAX process of `jax.process_count()`; the training loop assembles the hosts' rows into
global arrays (`parallel.shard_local_batch`). The iterator state is the same on every host at a
step (each host walks the same global plan), so the one state in a checkpoint resumes them all.

Bad files: the index drops what the headers show (missing, unreadable, truncated, another rate
with `data.resample=False`) and reports it like the in-memory loader; a file found bad only when
decoded (silent, NaN, cancelling channels) becomes a padding row of its batch (masks False, index
-1) with a warning, or raises `BadDataError` in the worker with `data.on_bad_file="error"`. The
`prepare` step (`experiments/prepare_data.py`) decodes everything once and reports it all before
a long run.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import math
import os
import sys
import weakref
from typing import Any, Sequence

import numpy as np
import tqdm

from audiolm.data import batching
from audiolm.data import manifest as manifest_lib

log = logging.getLogger("audiolm.data")

EMBEDDED = "speech_synth"  # the source name of the embedded espeak-ng set


def _config_error(message: str) -> Exception:
    from audiolm.config import ConfigError

    return ConfigError(message)


def parse_sources(sources: Sequence[str]) -> list[tuple[str, float]]:
    """[(source, weight)] of `data.sources` entries "SOURCE" (weight 1) or "SOURCE@WEIGHT".

    Raises ConfigError naming the entry when it is empty, repeated or its weight is not a finite
    number > 0."""
    out = []
    for i, spec in enumerate(sources):
        field = f"data.sources[{i}]"
        if not isinstance(spec, str) or not spec.strip():
            raise _config_error(f"{field}={spec!r}: must be 'speech_synth' or a manifest path, "
                                "optionally followed by @WEIGHT")
        source, weight = spec, 1.0
        head, sep, tail = spec.rpartition("@")
        try:
            parsed = float(tail) if sep else None
        except ValueError:
            parsed = None  # an '@' inside a path: the whole entry is the source
        if parsed is not None:
            source, weight = head, parsed
            if not (math.isfinite(weight) and weight > 0):
                raise _config_error(f"{field}={spec!r}: the weight {tail!r} must be a finite "
                                    "number > 0")
        if not source:
            raise _config_error(f"{field}={spec!r}: names no source before '@'")
        if source in [s for s, _ in out]:
            raise _config_error(f"{field}={spec!r}: source {source!r} is listed twice")
        out.append((source, weight))
    return out


@dataclasses.dataclass
class StreamIndex:
    """The utterances of every source, without audio ([U] per field, sources concatenated).

    Attributes:
      audio: absolute audio paths.
      text: transcripts.
      lengths: int64 [U] samples at the target rate, from the headers (rounded up; a decoded
        clip a sample longer than its bucket after resampling loses that sample).
      speaker_ids: int32 [U] index into `speakers` (-1 = none given).
      speakers: names of every source's speakers, sources in order.
      sources: [(source, weight, start, stop)]: utterances start..stop-1 are the source's.
      reports: one `manifest.Report` per source (bad lines and files).
      filtered: [(name, reason)] dropped for the length limits.
    """

    audio: list[str]
    text: list[str]
    lengths: np.ndarray
    speaker_ids: np.ndarray
    speakers: list[str]
    sources: list[tuple[str, float, int, int]]
    reports: list[manifest_lib.Report]
    filtered: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.audio)


def _embedded_rows(data: Any, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (audio, text, speaker, duration) and speaker names of the embedded set (generated
    into its cache on first use)."""
    import json

    from audiolm.data import speech_synth

    gen = speech_synth.generation_config_of(data)
    path = speech_synth.generate(gen, data.cache_dir, data.num_workers, log=log.info)
    with open(os.path.join(path, "speakers.json")) as f:
        speakers = [p["name"] for p in json.load(f)]
    return speech_synth.read_split(path, split), speakers


def header_length(path: str, sample_rate: int, resample: bool,
                  report: manifest_lib.Report) -> int | None:
    """Samples of `path` at `sample_rate` from its header, or None after reporting why not."""
    import soundfile as sf

    if not os.path.isfile(path):
        report.add(path, "missing: no such file")
        return None
    short = manifest_lib.wav_shortfall(path)
    if short is not None:
        report.add(path, f"truncated: the WAV header promises {short[0]} bytes of samples, "
                         f"the file holds {short[1]}")
        return None
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as e:
        report.add(path, f"unreadable ({e})")
        return None
    if info.frames <= 0:
        report.add(path, "empty: the header declares no samples")
        return None
    if info.samplerate != sample_rate and not resample:
        report.add(path, f"at {info.samplerate} Hz, not data.sample_rate={sample_rate}, and "
                         "data.resample=False")
        return None
    return int(math.ceil(info.frames * sample_rate / info.samplerate))


def index_sources(data: Any, split: str) -> StreamIndex:
    """The `StreamIndex` of `split` over `data.sources` (or the one source of `data.name`).

    Raises BadDataError after the scan when `data.on_bad_file="error"` and anything was bad."""
    from audiolm.data.tokenizer import make_tokenizer

    tokenizer = make_tokenizer(data)
    sources = parse_sources(data.sources) if data.sources else [
        (EMBEDDED if data.name == EMBEDDED else data.manifest, 1.0)]
    sr = int(data.sample_rate)
    audio, text, lengths, speaker_ids, speakers = [], [], [], [], []
    spans, reports, filtered = [], [], []
    for source, weight in sources:
        report = manifest_lib.Report(source=f"{source} [{split}]")
        if source == EMBEDDED:
            rows, names = _embedded_rows(data, split)
        else:
            if not os.path.exists(os.path.expanduser(source.replace("{split}", split))):
                raise FileNotFoundError(f"data source {source!r}: no such manifest file or "
                                        "directory")
            rows = manifest_lib.source_entries(source, split, float(data.holdout_fraction),
                                               report)
        kept = []
        for row in tqdm.tqdm(rows, desc=f"indexing {os.path.basename(source)}", unit="file",
                             disable=None):
            length = header_length(row["audio"], sr, bool(data.resample), report)
            if length is not None:
                kept.append({**row, "length": length})
        rows = kept
        if source != EMBEDDED:
            names = sorted({r.get("speaker", "") for r in rows} - {""})
        lookup = {name: len(speakers) + i for i, name in enumerate(names)}
        start = len(audio)
        for row in rows:
            tokens = len(tokenizer.encode_with_specials(row["text"]))
            problem = batching.length_problem(
                row["length"], tokens, sr, min_audio_seconds=float(data.min_audio_seconds),
                max_audio_seconds=float(data.max_audio_seconds),
                max_text_len=int(data.max_text_len))
            if problem:
                filtered.append((row["audio"], problem))
                log.warning("data: skipping %s: %s", row["audio"], problem)
                continue
            audio.append(row["audio"])
            text.append(row["text"])
            lengths.append(row["length"])
            speaker_ids.append(lookup.get(row.get("speaker", ""), -1))
        speakers.extend(names)
        report.kept = len(audio) - start
        spans.append((source, weight, start, len(audio)))
        reports.append(report)
    bad = [r for r in reports if r.bad]
    if bad and data.on_bad_file == "error":
        raise manifest_lib.BadDataError("data.on_bad_file='error' and bad data was found:\n"
                                        + "\n".join(r.summary() for r in bad))
    for report in bad:
        log.warning("data: %s", report.summary())
    return StreamIndex(audio, text, np.asarray(lengths, np.int64),
                       np.asarray(speaker_ids, np.int32), speakers, spans, reports, filtered)


def load_index(data: Any, split: str) -> tuple[list[dict[str, Any]], list[np.ndarray],
                                               list[str]]:
    """(entries, clips, speaker names) of every source of `split` decoded into memory, for an
    in-memory `AudioTextDataset` of `data.sources` (evaluation splits); files bad when decoded
    are reported and dropped."""
    index = index_sources(data, split)
    entries, clips = [], []
    report = manifest_lib.Report(source=f"decoding [{split}]")
    sr = int(data.sample_rate)
    for i in range(len(index)):
        clip = manifest_lib.read_clip(index.audio[i], sr, resample=bool(data.resample),
                                      report=report)
        if clip is None:
            continue
        speaker = int(index.speaker_ids[i])
        entries.append({"audio": index.audio[i], "text": index.text[i],
                        "speaker": index.speakers[speaker] if speaker >= 0 else "",
                        "duration": clip.shape[0] / sr})
        clips.append(clip)
    if report.bad and data.on_bad_file == "error":
        raise manifest_lib.BadDataError(
            f"data.on_bad_file='error' and bad data was found:\n{report.summary()}")
    return entries, clips, index.speakers


class EpochPlan:
    """Batch k of one source's stream -> global utterance indices [<= B] (module docstring)."""

    def __init__(self, bucket_of: np.ndarray, num_buckets: int, start: int, batch_size: int, *,
                 seed: int, shuffle: bool, drop_remainder: bool):
        self.bucket_of, self.num_buckets, self.start = bucket_of, num_buckets, start
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_remainder = shuffle, drop_remainder
        self.batches_per_epoch = len(self._plan(0))
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _plan(self, epoch: int) -> list[np.ndarray]:
        return batching.plan_epoch(self.bucket_of, self.num_buckets, self.batch_size,
                                   seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                                   drop_remainder=self.drop_remainder)

    def __call__(self, k: int) -> np.ndarray:
        epoch, position = divmod(int(k), self.batches_per_epoch)
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._plan(epoch))
        return self._cached[1][position] + self.start


class ReadBatch:
    """Global batch indices -> this host's padded batch (decoded in a grain worker)."""

    def __init__(self, index: StreamIndex, buckets: np.ndarray, data: Any, rows: slice):
        self.audio, self.text = index.audio, index.text
        self.speaker_ids = index.speaker_ids
        self.buckets = buckets
        self.bucket_of = np.searchsorted(buckets, index.lengths, side="left")
        self.rows = rows.stop - rows.start
        self.first = rows.start
        self.sample_rate, self.resample = int(data.sample_rate), bool(data.resample)
        self.max_text_len = int(data.max_text_len)
        self.on_bad_file = str(data.on_bad_file)
        self.tokenizer_config = data.to_dict()
        self._tokenizer = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}  # rebuilt in each worker

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        import ml_collections

        from audiolm.data.tokenizer import make_tokenizer

        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(ml_collections.ConfigDict(self.tokenizer_config))
        length = int(self.buckets[int(self.bucket_of[indices].max())])
        rows = []
        for i in indices[self.first:self.first + self.rows]:
            i = int(i)
            report = manifest_lib.Report(source=self.audio[i])
            clip = manifest_lib.read_clip(self.audio[i], self.sample_rate,
                                          resample=self.resample, report=report)
            if clip is None:
                if self.on_bad_file == "error":
                    raise manifest_lib.BadDataError(
                        f"data.on_bad_file='error' and bad data was found:\n{report.summary()}")
                continue  # reported by read_clip; the row stays padding
            tokens = np.asarray(self._tokenizer.encode_with_specials(self.text[i]), np.int32)
            rows.append((clip, tokens, int(self.speaker_ids[i]), i))
        return batching.collate(rows, self.rows, length, self.max_text_len)


def die_with_parent(worker_index: int = 0, worker_count: int = 0) -> None:
    """grain worker start-up: the worker gets SIGKILL when the training process dies, so a run
    killed with SIGKILL leaves no orphan decoding processes behind (Linux; elsewhere nothing)."""
    del worker_index, worker_count
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _parse_absl_flags() -> None:
    """grain reads absl flags; outside an absl app (tests, notebooks) use their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _close_weakly(ref: "weakref.ref[StreamIterator]") -> None:
    iterator = ref()
    if iterator is not None:
        iterator.close()


class StreamIterator:
    """Endless (training) or one-pass batches from grain; `get_state`/`set_state` resume it
    exactly (the state is grain's iterator state plus what must match on resume)."""

    def __init__(self, dataset: Any, index: StreamIndex, identity: dict[str, Any],
                 batches_per_epoch: int):
        self.index = index
        self.identity = identity
        self.batches_per_epoch = batches_per_epoch
        self._iterator = iter(dataset)
        # Workers stop before interpreter exit tears down the queues they share with us.
        atexit.register(_close_weakly, weakref.ref(self))

    def close(self) -> None:
        """Stops the worker processes (also done at exit); the iterator is spent after this."""
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        del iterator
        gc.collect()  # grain's buffers go now, while the modules they need still exist

    def __iter__(self) -> "StreamIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            raise StopIteration
        # Plain copies: arrays from worker processes live in shared memory that grain frees
        # when they are collected, which must not wait for interpreter exit.
        return {key: np.array(value) for key, value in next(self._iterator).items()}

    def __len__(self) -> int:
        """Batches per epoch (summed over sources)."""
        return self.batches_per_epoch

    def get_state(self) -> dict[str, Any]:
        """JSON-able: {"loader": "grain", "grain": grain's state, **identity}."""
        if self._iterator is None:
            raise ValueError("the data iterator was closed; its state is gone")
        return {"loader": "grain", "grain": self._iterator.get_state(), **self.identity}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from `state` (from `get_state` of any host of the run: the states are
        equal); the data, seed, host count and worker count must be those of the run that saved
        it."""
        if state.get("loader") != "grain" or "grain" not in state:
            raise ValueError(f"data iterator state {sorted(state)} was not saved by "
                             "data.loader='grain'; resume with the loader that saved it")
        for key, value in self.identity.items():
            if key in state and state[key] != value:
                raise ValueError(f"data iterator state has {key}={state[key]!r} but this "
                                 f"iterator has {key}={value!r}; the order would differ")
        if self._iterator is None:
            raise ValueError("the data iterator was closed; make a new one to resume")
        self._iterator.set_state(state["grain"])


def make_stream_iterator(data: Any, split: str, *, train: bool,
                         shard: Any = None) -> StreamIterator:
    """The grain `StreamIterator` of `split` (module docstring).

    Args:
      data: the resolved `config.data`.
      split: "train" | "validation" | "test".
      train: endless, shuffled (per `data.shuffle`), full batches; else one ordered pass.
      shard: `grain.sharding.ShardOptions`: this host reads rows [i B/n, (i+1) B/n) of every
        global batch; None = this JAX process's rows (`grain.sharding.ShardByJaxProcess`: the
        whole batch with one process).
    Raises ConfigError when `data.batch_size` does not split evenly over the hosts.
    """
    from audiolm import extras, parallel

    grain = extras.require("grain", "data", "data.loader='grain'")
    if shard is None:
        shard = grain.sharding.ShardByJaxProcess()
    rows = parallel.process_rows(int(data.batch_size), shard.shard_index, shard.shard_count)
    _parse_absl_flags()
    index = index_sources(data, split)
    if len(index) == 0:
        raise ValueError(f"split {split!r} of {[s for s, *_ in index.sources]} is empty: no "
                         "utterance to batch (see the load report)")
    sr = int(data.sample_rate)
    buckets = batching.bucket_lengths(data.bucket_seconds, float(data.max_audio_seconds), sr)
    bucket_of = np.searchsorted(buckets, index.lengths, side="left")
    shuffle = bool(data.shuffle) and train
    streams, weights, per_epoch = [], [], 0
    for number, (source, weight, start, stop) in enumerate(index.sources):
        if stop == start:
            raise ValueError(f"data source {source!r} has no utterance in split {split!r} "
                             "(see the load report)")
        plan = EpochPlan(bucket_of[start:stop], len(buckets), start, int(data.batch_size),
                         seed=int(data.seed) + 1000003 * number, shuffle=shuffle,
                         drop_remainder=train)
        length = sys.maxsize if train else plan.batches_per_epoch
        streams.append(grain.MapDataset.range(length).map(plan))
        weights.append(weight)
        per_epoch += plan.batches_per_epoch
    if len(streams) > 1 and not train:
        stream = grain.MapDataset.concatenate(streams)  # one pass, sources in order
    elif len(streams) > 1:
        stream = grain.MapDataset.mix(streams, weights)
    else:
        stream = streams[0]
    stream = stream.map(ReadBatch(index, buckets, data, rows))
    workers, prefetch = int(data.loader_workers), int(data.loader_prefetch)
    stream = stream.to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(4, prefetch)),
                                                      prefetch_buffer_size=prefetch))
    if workers:
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=prefetch),
            worker_init_fn=die_with_parent)
    # Not the host index: every host's state is the same (module docstring).
    identity = {"seed": int(data.seed), "num_examples": len(index),
                "hosts": int(shard.shard_count), "loader_workers": workers}
    return StreamIterator(stream, index, identity, per_epoch)

