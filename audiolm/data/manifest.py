"""User data: a JSONL manifest or a directory of audio files with same-stem `.txt` transcripts.

Manifest lines are JSON objects `{"audio": path, "text": str, "speaker": str (optional)}`;
relative audio paths are relative to the manifest's directory. A directory source pairs every
audio file (.wav .flac .ogg .mp3, searched recursively) with the `.txt` file of the same stem.

Audio is read with soundfile, averaged to mono and resampled with soxr to the target rate.
Problems never stop a load midway: each bad line or file is reported by name with its reason and
then skipped (`on_bad_file="skip"`), or, with `on_bad_file="error"`, all of them are collected and
raised together as one `BadDataError` after the scan. A bad line is one that is not UTF-8 (the
byte and column are named), not a JSON object, lacks an audio path, has an empty or
whitespace-only transcript, repeats an earlier line (duplicate) or gives the same audio another
transcript (conflicting: every line of that audio is dropped, since none can be trusted). A bad
file is one that is missing, unreadable/corrupt, truncated (a WAV whose header promises more
samples than it holds), empty, NaN/inf, silent only (peak below `SILENT_PEAK`), made of channels
that cancel when averaged to mono, or at another rate when resampling is disabled. Clips shorter
than `data.min_audio_seconds` and characters outside a `chars` alphabet are reported by the
dataset (`audiolm.data.batching.AudioTextDataset`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
from typing import Any, Iterable

import numpy as np
import tqdm

from audiolm.audio.io import AudioError, read_audio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SILENT_PEAK = 1e-4  # -80 dBFS: below this everywhere the file carries no speech
ON_BAD_FILE = ("skip", "error")

log = logging.getLogger("audiolm.data")


class BadDataError(ValueError):
    """Raised with `on_bad_file="error"`; the message lists every bad line/file by name."""


@dataclasses.dataclass
class Report:
    """Bad lines/files found while loading one source: [(name, reason)]."""

    source: str
    bad: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    kept: int = 0

    def add(self, name: str, reason: str) -> None:
        self.bad.append((name, reason))
        log.warning("data: skipping %s: %s", name, reason)

    def summary(self) -> str:
        head = f"{self.source}: kept {self.kept}, skipped {len(self.bad)}"
        return "\n".join([head] + [f"  {name}: {reason}" for name, reason in self.bad])


def _check_policy(on_bad_file: str) -> None:
    if on_bad_file not in ON_BAD_FILE:
        from audiolm.config import ConfigError

        raise ConfigError(f"data.on_bad_file={on_bad_file!r}: must be one of {list(ON_BAD_FILE)}")


def read_jsonl(path: str, report: Report) -> list[dict[str, Any]]:
    """Entries {"audio" (absolute), "text", "speaker"} of a JSONL manifest; bad lines reported
    (module docstring), duplicates and conflicting transcripts included."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.manifest={path!r}: no such manifest file")
    root = os.path.dirname(os.path.abspath(path))
    entries = []
    with open(path, "rb") as f:  # bytes: a bad byte is one bad line, named, not a failed load
        raw_lines = f.read().split(b"\n")
    for number, raw in enumerate(raw_lines, start=1):
        name = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            report.add(name, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            report.add(name, f"not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            report.add(name, f"expected a JSON object, got {type(row).__name__}")
            continue
        audio, text = row.get("audio"), row.get("text")
        speaker = row.get("speaker", "")
        if not isinstance(audio, str) or not audio:
            report.add(name, f"'audio' must be a non-empty path string, got {audio!r}")
            continue
        if not isinstance(text, str):
            report.add(name, f"'text' must be a string, got {text!r}")
            continue
        if not text.strip():
            report.add(name, f"empty or whitespace-only transcript {text!r}")
            continue
        if speaker is None:
            speaker = ""
        if not isinstance(speaker, (str, int)):
            report.add(name, f"'speaker' must be a string, got {speaker!r}")
            continue
        entries.append(({"audio": os.path.join(root, os.path.expanduser(audio)),
                         "text": text, "speaker": str(speaker)}, name))
    return _drop_repeats(entries, report)


def _drop_repeats(entries: list[tuple[dict[str, Any], str]],
                  report: Report) -> list[dict[str, Any]]:
    """Drops repeated (audio, text) lines and every line of an audio given two transcripts."""
    texts: dict[str, dict[str, str]] = {}  # audio -> {normalised text: first line name}
    for entry, name in entries:
        texts.setdefault(entry["audio"], {}).setdefault(" ".join(entry["text"].split()), name)
    kept, seen = [], set()
    for entry, name in entries:
        variants = texts[entry["audio"]]
        if len(variants) > 1:
            others = "; ".join(f"{line.rsplit(':', 1)[-1]}: {text!r}"
                               for text, line in variants.items())
            report.add(name, f"conflicting transcripts for {entry['audio']} (lines {others}); "
                             "all its lines dropped")
            continue
        key = (entry["audio"], " ".join(entry["text"].split()))
        if key in seen:
            report.add(name, f"duplicate of line {variants[key[1]].rsplit(':', 1)[-1]} "
                             "(same audio and transcript)")
            continue
        seen.add(key)
        kept.append(entry)
    return kept


def scan_directory(path: str, report: Report) -> list[dict[str, Any]]:
    """Entries of every audio file under `path` that has a same-stem `.txt` transcript."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for filename in sorted(filenames):
            stem, ext = os.path.splitext(filename)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            audio = os.path.join(dirpath, filename)
            transcript = os.path.join(dirpath, stem + ".txt")
            if not os.path.isfile(transcript):
                report.add(audio, f"no transcript {stem}.txt beside it")
                continue
            try:
                with open(transcript, encoding="utf-8") as f:
                    text = f.read().strip()
            except (OSError, UnicodeDecodeError) as e:
                report.add(transcript, f"unreadable transcript ({e})")
                continue
            if not text:
                report.add(transcript, "empty or whitespace-only transcript")
                continue
            speaker = os.path.relpath(dirpath, path)
            entries.append({"audio": audio, "text": text,
                            "speaker": "" if speaker == "." else speaker})
    return entries


def wav_shortfall(path: str) -> tuple[int, int] | None:
    """(bytes the WAV header's data chunk declares, bytes the file holds after it) when the file
    holds fewer than declared (a truncated copy or an interrupted write), else None. libsndfile
    silently reads what is there, so this is checked from the RIFF header. Non-WAV files and
    streaming WAVs (declared size 0 or 0xFFFFFFFF) give None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            offset = 12
            while offset + 8 <= size:
                f.seek(offset)
                chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF):
                        return None
                    held = size - offset - 8
                    return (chunk_size, held) if held < chunk_size else None
                offset += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return None
    return None


def read_clip(path: str, sample_rate: int, *, resample: bool = True,
              report: Report) -> np.ndarray | None:
    """Mono float32 [N] audio of `path` at `sample_rate`, or None after reporting why it is bad
    (missing, corrupt, truncated, empty, silent, cancelling channels: module docstring)."""
    short = wav_shortfall(path) if os.path.isfile(path) else None
    if short is not None:
        report.add(path, f"truncated: the WAV header promises {short[0]} bytes of samples, "
                         f"the file holds {short[1]}")
        return None
    try:
        audio, _ = read_audio(path, sample_rate, mono=False, resample=resample)
    except AudioError as e:
        report.add(path, str(e).removeprefix(f"{path}: "))
        return None
    if audio.size == 0:
        report.add(path, "empty after resampling")
        return None
    channels = audio if audio.ndim == 2 else audio[None]  # [C, N]
    audio = channels.mean(axis=0)
    peak = float(np.max(np.abs(audio)))
    if peak < SILENT_PEAK:
        loudest = float(np.max(np.abs(channels)))
        if loudest >= SILENT_PEAK:
            report.add(path, f"its {channels.shape[0]} channels cancel when averaged to mono "
                             f"(channel peak {loudest:.2e}, mono peak {peak:.2e}): "
                             "opposite polarity; fix the file or keep one channel")
        else:
            report.add(path, f"silent only (peak {peak:.2e} < {SILENT_PEAK:g})")
        return None
    return np.ascontiguousarray(audio, np.float32)


def load_audio_entries(entries: Iterable[dict[str, Any]], sample_rate: int, *,
                       resample: bool = True, report: Report
                       ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Reads every entry's audio (mono float32 at `sample_rate`); bad files reported and dropped.

    Returns (kept entries with "duration" added, clips [N] float32 aligned with them).
    """
    kept, clips = [], []
    for entry in tqdm.tqdm(entries, desc="reading audio", unit="file", disable=None):
        audio = read_clip(entry["audio"], sample_rate, resample=resample, report=report)
        if audio is not None:
            kept.append({**entry, "duration": audio.shape[0] / sample_rate})
            clips.append(audio)
    return kept, clips


def split_of(text: str, holdout_fraction: float) -> str:
    """Deterministic split of a sentence by its hash: equal texts always share a split."""
    u = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)
    if u < holdout_fraction:
        return "validation"
    if u < 2 * holdout_fraction:
        return "test"
    return "train"


def source_entries(source: str, split: str, holdout_fraction: float,
                   report: Report) -> list[dict[str, Any]]:
    """The entries of `split` from `data.manifest`.

    * a path containing "{split}" is formatted with the split name (file or directory);
    * a directory holding `<split>.jsonl` uses that manifest, one holding a `<split>/`
      directory scans it;
    * otherwise the one manifest/directory is split by sentence hash (`split_of`): a fraction
      `holdout_fraction` each for validation and test, sentences never shared between splits.
    """
    source = os.path.expanduser(source)
    if "{split}" in source:
        path = source.format(split=split)
        return scan_directory(path, report) if os.path.isdir(path) else read_jsonl(path, report)
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, f"{split}.jsonl")):
            return read_jsonl(os.path.join(source, f"{split}.jsonl"), report)
        if os.path.isdir(os.path.join(source, split)):
            return scan_directory(os.path.join(source, split), report)
        entries = scan_directory(source, report)
    else:
        entries = read_jsonl(source, report)
    return [e for e in entries if split_of(e["text"], holdout_fraction) == split]


def load_manifest(source: str, split: str, sample_rate: int, *, resample: bool = True,
                  on_bad_file: str = "skip", holdout_fraction: float = 0.05
                  ) -> tuple[list[dict[str, Any]], list[np.ndarray], Report]:
    """Entries, clips and the report of `split` of a user manifest or directory.

    Raises BadDataError (listing every bad item) after the full scan when `on_bad_file="error"`
    and anything was bad; FileNotFoundError when the source itself is missing.
    """
    _check_policy(on_bad_file)
    if not source:
        from audiolm.config import ConfigError

        raise ConfigError("data.manifest='': data.name='manifest' needs a JSONL manifest or a "
                          "directory of audio files with .txt transcripts")
    report = Report(source=f"{source} [{split}]")
    entries = source_entries(source, split, holdout_fraction, report)
    entries, clips = load_audio_entries(entries, sample_rate, resample=resample, report=report)
    report.kept = len(entries)
    if report.bad and on_bad_file == "error":
        raise BadDataError(f"data.on_bad_file='error' and bad data was found:\n{report.summary()}")
    if report.bad:
        log.warning("data: %s", report.summary())
    return entries, clips, report
