"""Speech + text datasets in memory, length-bucketed padded batches, a resumable iterator.

A batch of `BatchIterator` is a dict of numpy arrays (B = batch_size, N = the bucket's length in
samples, L = max_text_len):
    audio       [B, N] float32   waveform, zero past the end
    audio_mask  [B, N] bool      True on real samples
    text        [B, L] int32     [bos, tokens..., eos] then pad (0)
    text_mask   [B, L] bool      True on bos..eos
    speaker     [B]    int32     speaker id (index into `dataset.speakers`; -1 unknown/padding)
    index       [B]    int32     utterance index in the dataset (-1 for padding rows)
N takes one value per bucket, so a jitted step compiles once per bucket. Rows past the end of a
partial batch (evaluation only) are all padding: masks False, index -1.

Order: epoch e shuffles with `np.random.default_rng([seed, e])`, groups utterances by bucket,
cuts each bucket into batches and shuffles the batches. The state is (epoch, position), so
`set_state(get_state())` continues with exactly the batches an uninterrupted run would yield.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

from audiolm.data.tokenizer import Tokenizer


class AudioTextDataset:
    """Utterances in memory.

    Attributes:
      entries: [{"text", "speaker", "duration", ...}] per utterance.
      clips: waveforms, int16 (16-bit sources, scaled by 1/32768 on use) or float32 [N].
      tokens: int32 [bos, ids..., eos] per utterance.
      speaker_ids: int32 [U]; `speakers[speaker_ids[i]]` is the name (-1 = none given).
      sample_rate: of every clip.
      report: the bad-file report of the load (None for the generated set).
      filtered: [(name, reason)] of utterances dropped for length limits (too long, or shorter
        than `min_audio_seconds`).
      unknown_chars: {character: count} of transcript characters the tokenizer maps to unk
        (`chars` alphabet); kept as unk, reported once as a warning.
    """

    def __init__(self, entries: Sequence[dict[str, Any]], clips: Sequence[np.ndarray],
                 tokenizer: Tokenizer, sample_rate: int, *, max_audio_seconds: float,
                 max_text_len: int, min_audio_seconds: float = 0.0, report: Any = None,
                 speakers: Sequence[str] | None = None):
        if len(entries) != len(clips):
            raise ValueError(f"{len(entries)} entries but {len(clips)} clips")
        self.tokenizer = tokenizer
        self.sample_rate = int(sample_rate)
        self.report = report
        self.filtered: list[tuple[str, str]] = []
        self.unknown_chars: dict[str, int] = {}
        unknown_in = 0
        self.entries, self.clips, self.tokens = [], [], []
        for entry, clip in zip(entries, clips):
            name = entry.get("audio", entry["text"])
            ids = np.asarray(tokenizer.encode_with_specials(entry["text"]), np.int32)
            problem = length_problem(clip.shape[0], ids.shape[0], sample_rate,
                                     min_audio_seconds=min_audio_seconds,
                                     max_audio_seconds=max_audio_seconds,
                                     max_text_len=max_text_len)
            if problem:
                self.filtered.append((name, problem))
                continue
            unknown = tokenizer.unknown_chars(entry["text"])
            unknown_in += bool(unknown)
            for char in unknown:
                self.unknown_chars[char] = self.unknown_chars.get(char, 0) + 1
            self.entries.append(entry)
            self.clips.append(clip)
            self.tokens.append(ids)
        import logging

        log = logging.getLogger("audiolm.data")
        for name, reason in self.filtered:
            log.warning("data: skipping %s: %s", name, reason)
        if self.unknown_chars:
            counts = ", ".join(f"{c!r} x{n}" for c, n in sorted(
                self.unknown_chars.items(), key=lambda kv: (-kv[1], kv[0])))
            log.warning("data: %d characters outside the tokenizer's alphabet in %d utterances "
                        "(kept as unk): %s; extend data.alphabet or normalise the transcripts",
                        sum(self.unknown_chars.values()), unknown_in, counts)
        if speakers is None:
            speakers = sorted({e.get("speaker", "") for e in self.entries} - {""})
        self.speakers = list(speakers)
        lookup = {name: i for i, name in enumerate(self.speakers)}
        self.speaker_ids = np.asarray([lookup.get(e.get("speaker", ""), -1)
                                       for e in self.entries], np.int32)
        self.lengths = np.asarray([c.shape[0] for c in self.clips], np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    def audio(self, i: int) -> np.ndarray:
        """float32 [N] waveform of utterance i."""
        clip = self.clips[i]
        if clip.dtype == np.int16:
            return clip.astype(np.float32) / 32768.0
        return np.asarray(clip, np.float32)

    def text(self, i: int) -> str:
        return self.entries[i]["text"]


def length_problem(num_samples: int, num_tokens: int, sample_rate: int, *,
                   min_audio_seconds: float, max_audio_seconds: float,
                   max_text_len: int) -> str | None:
    """Why an utterance of `num_samples` samples and `num_tokens` text tokens (with bos/eos) is
    dropped by the length limits of `config.data`, or None when it is kept."""
    if num_samples > int(round(max_audio_seconds * sample_rate)):
        return f"{num_samples / sample_rate:.2f} s > data.max_audio_seconds={max_audio_seconds}"
    if num_samples < int(round(min_audio_seconds * sample_rate)):
        return (f"too short: {num_samples} samples ({num_samples / sample_rate:.3f} s) < "
                f"data.min_audio_seconds={min_audio_seconds}")
    if num_tokens > max_text_len:
        return f"{num_tokens} tokens with bos/eos > data.max_text_len={max_text_len}"
    return None


def plan_epoch(bucket_of: np.ndarray, num_buckets: int, batch_size: int, *, seed: int,
               epoch: int, shuffle: bool, drop_remainder: bool) -> list[np.ndarray]:
    """Positions (into `bucket_of`, [U] bucket per utterance) of every batch of `epoch`, in
    yield order: the order of the module docstring (one implementation for every loader)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(bucket_of)
    order = rng.permutation(n) if shuffle else np.arange(n)
    full, partial = [], []
    for bucket in range(num_buckets):
        members = order[bucket_of[order] == bucket]
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            (full if len(chunk) == batch_size else partial).append(chunk)
    batches = full if (drop_remainder and full) else full + partial
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        batches.sort(key=lambda b: int(b[0]) if len(b) else 0)
    return batches


def collate(rows: Sequence[tuple[np.ndarray, np.ndarray, int, int]], batch_size: int,
            length: int, max_text_len: int) -> dict[str, np.ndarray]:
    """The padded batch (module docstring) of `rows` [(audio float32 [n], tokens int32 [l],
    speaker, index)], at most `batch_size` of them; audio longer than `length` is cut to it."""
    b, l_max = batch_size, max_text_len
    batch = {
        "audio": np.zeros((b, length), np.float32),
        "audio_mask": np.zeros((b, length), bool),
        "text": np.zeros((b, l_max), np.int32),
        "text_mask": np.zeros((b, l_max), bool),
        "speaker": np.full((b,), -1, np.int32),
        "index": np.full((b,), -1, np.int32),
    }
    for row, (audio, tokens, speaker, index) in enumerate(rows):
        n = min(audio.shape[0], length)
        batch["audio"][row, :n] = audio[:n]
        batch["audio_mask"][row, :n] = True
        batch["text"][row, :tokens.shape[0]] = tokens
        batch["text_mask"][row, :tokens.shape[0]] = True
        batch["speaker"][row] = speaker
        batch["index"][row] = index
    return batch


def bucket_lengths(boundaries_s: Sequence[float], max_audio_seconds: float,
                   sample_rate: int) -> np.ndarray:
    """Padded lengths in samples: the configured boundaries up to `max_audio_seconds`, then
    doubling from the last boundary until `max_audio_seconds` is covered (the last bucket is
    exactly `max_audio_seconds`)."""
    bounds = sorted(float(b) for b in boundaries_s if 0 < float(b) < max_audio_seconds)
    edge = bounds[-1] if bounds else max_audio_seconds
    while edge * 2 < max_audio_seconds:
        edge *= 2
        bounds.append(edge)
    bounds.append(float(max_audio_seconds))
    return np.asarray(sorted({int(math.ceil(b * sample_rate)) for b in bounds}), np.int64)


class BatchIterator:
    """Deterministic, resumable batches of an `AudioTextDataset` (module docstring).

    Args:
      dataset: the utterances.
      batch_size: rows per batch (B).
      buckets: padded audio lengths in samples, ascending (`bucket_lengths`); the last one must
        hold the longest clip.
      max_text_len: L.
      seed: shuffle seed.
      shuffle: shuffle utterances and batches each epoch (False: dataset order within buckets).
      repeat: endless epochs (training) or one pass (evaluation).
      drop_remainder: drop each bucket's last partial batch (training keeps shapes full); if that
        would leave an epoch empty, partial batches are kept.
    """

    def __init__(self, dataset: AudioTextDataset, batch_size: int, buckets: Sequence[int],
                 max_text_len: int, *, seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 drop_remainder: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: no utterance to batch (see the load report)")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.buckets = np.asarray(buckets, np.int64)
        if dataset.lengths.max() > self.buckets[-1]:
            raise ValueError(f"longest clip has {dataset.lengths.max()} samples, more than the "
                             f"last bucket ({self.buckets[-1]})")
        self.max_text_len = int(max_text_len)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.repeat = bool(repeat)
        self.drop_remainder = bool(drop_remainder)
        self.bucket_of = np.searchsorted(self.buckets, dataset.lengths, side="left")
        self.epoch = 0
        self.position = 0
        self._plan_epoch: int | None = None
        self._plan: list[np.ndarray] = []

    # -- order -------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Utterance indices of every batch of `epoch`, in yield order."""
        return plan_epoch(self.bucket_of, len(self.buckets), self.batch_size, seed=self.seed,
                          epoch=epoch, shuffle=self.shuffle, drop_remainder=self.drop_remainder)

    def _batches(self) -> list[np.ndarray]:
        if self._plan_epoch != self.epoch:
            self._plan = self.epoch_batches(self.epoch)
            self._plan_epoch = self.epoch
        return self._plan

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.epoch_batches(0))

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.position >= len(self._batches()):
            if not self.repeat:
                raise StopIteration
            self.epoch += 1
            self.position = 0
        indices = self._batches()[self.position]
        self.position += 1
        return self.collate(indices)

    def collate(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The padded batch of utterances `indices` (at most batch_size of them)."""
        indices = np.asarray(indices, np.int64)
        length = int(self.buckets[int(self.bucket_of[indices].max())]) if len(indices) else \
            int(self.buckets[0])
        rows = [(self.dataset.audio(int(i)), self.dataset.tokens[int(i)],
                 int(self.dataset.speaker_ids[int(i)]), int(i)) for i in indices]
        return collate(rows, self.batch_size, length, self.max_text_len)

    # -- checkpointing -----------------------------------------------------------------------

    def get_state(self) -> dict[str, int]:
        """JSON-able position: {"epoch", "position", "seed", "num_examples"}."""
        return {"epoch": int(self.epoch), "position": int(self.position), "seed": self.seed,
                "num_examples": len(self.dataset)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from `state` (from `get_state`); the seed and dataset size must match."""
        if state.get("loader", "memory") != "memory":
            raise ValueError(f"data iterator state was saved by data.loader={state['loader']!r} "
                             "but this run uses data.loader='memory'; resume with the same loader")
        for key in ("epoch", "position"):
            if key not in state:
                raise ValueError(f"data iterator state {state!r} has no {key!r}")
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"data iterator state has seed {int(state['seed'])} but this "
                             f"iterator uses data.seed={self.seed}; the order would differ")
        if "num_examples" in state and int(state["num_examples"]) != len(self.dataset):
            raise ValueError(f"data iterator state is for {int(state['num_examples'])} "
                             f"utterances but the dataset has {len(self.dataset)}; the data "
                             "changed since the checkpoint")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
