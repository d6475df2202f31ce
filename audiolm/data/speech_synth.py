"""The embedded default dataset: English speech synthesised offline with espeak-ng.

libespeak-ng (shipped with data in the `espeakng-loader` wheel) is driven through ctypes in
synchronous mode. Speakers are profiles of (accent, voice variant, rate, pitch, pitch range);
sentences come from a small built-in grammar (`sentences`). Everything is a pure function of the
generation config (seed, counts, sample rate), so two runs write the same audio bytes.

Layout of the cache directory `<cache_dir>/<hash of generation config>/`:
    train.jsonl, validation.jsonl, test.jsonl   one JSON object per utterance:
        {"audio": "train/000000.flac", "text": ..., "speaker": "s017", "duration": 1.82,
         "words": [[start, end], ...]}  (one [start, end) sample span per word of the text)
    train/, validation/, test/                  16-bit FLAC at `sample_rate`
    speakers.json                               the speaker profiles
    complete.json                               written last; its presence means "done"
Generation happens in a temporary sibling directory that is renamed into place, so an interrupted
run never leaves a half-written dataset behind, and a complete one is never regenerated.

Splits have disjoint sentences. Training never hears the held-out voices (the last
`held_out_voices(num_speakers)` profiles); validation and test draw from every profile. Half of
the test split (odd indices) are scrambled sentences: lexicon words in random order, so a
recogniser cannot guess their content words from the templates and must listen
(`utterance_groups` tells each test row's kind and voice).

libespeak keeps global state (current voice, parameters, and hidden synthesis state that leaks
between utterances), so the parallel generation uses processes, never threads, and every
utterance is spoken by a freshly loaded library with its voice set first (`synthesize`): the
audio of an utterance depends only on its text and speaker profile.

Word timings come from espeak's own synthesis events (`synthesize_words`): a WORD event gives
the output sample where a word starts. espeak fuses some function words with a neighbour ("there
are", "the park") and reports one event for both; the words of such a group share its span in
proportion to their characters. A word ends where the next one starts (the last at espeak's END
event), so the spans tile the utterance; they are moved with the resampling and the silence trim.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import time
from typing import Any, Sequence

import numpy as np
import tqdm

SPLITS = ("train", "validation", "test")
NATIVE_RATE = 22050  # libespeak-ng's output rate
FORMAT_VERSION = 4  # bump when the generation procedure changes (invalidates caches)

# espeak-ng English accents (espeak voice names) and voice variants that stay intelligible (the
# robot, whisper and croak variants are left out) and are deterministic: variants with a "breath"
# setting (f2, f3, f5, victor, Alicia, caleb) add noise that differs from process to process.
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f4", "Andrea", "anika", "aunty",
            "steph2", "Alex", "Andy", "Annie", "adam", "belinda", "benjamin", "david",
            "ed", "edward", "iven", "john", "linda", "max", "Michael", "norbert", "paul",
            "quincy", "rob", "robert", "steph", "travis", "zac")

# ---------------------------------------------------------------------------------------------
# sentences: a small grammar over built-in word lists (lowercase, no punctuation)

_NAMES = ("anna", "ben", "carla", "david", "emma", "frank", "grace", "henry", "iris", "jack",
          "kate", "leo", "maria", "nick", "olivia", "peter", "rose", "sam", "tom", "vera")
_ADJ = ("red", "small", "old", "green", "quiet", "bright", "heavy", "warm", "cold", "new",
        "dark", "happy", "tall", "soft", "fast", "blue", "empty", "clean", "strange", "little")
_NOUNS = ("dog", "cat", "car", "house", "river", "book", "table", "garden", "window", "bird",
          "horse", "boat", "letter", "chair", "apple", "teacher", "doctor", "farmer", "city",
          "train", "door", "lamp", "tree", "box", "song", "road", "bridge", "cup", "clock", "ship")
_PLURALS = {"box": "boxes", "city": "cities", "bus": "buses"}
_VERBS_PAST = ("saw", "found", "liked", "moved", "painted", "opened", "carried", "watched",
               "cleaned", "sold", "bought", "fixed", "followed", "visited", "closed", "dropped")
_VERBS_INTR = ("sleeps", "waits", "sings", "runs", "stays", "falls", "shines", "moves", "works",
               "rests")
_PLACES = ("the park", "the station", "the market", "the kitchen", "the school", "the beach",
           "the village", "the office", "the forest", "the harbour", "the hill", "the library")
_PREPS = ("near", "behind", "inside", "under", "beside", "across")
_TIMES = ("today", "yesterday", "every morning", "at night", "on monday", "in the evening",
          "last week", "after lunch", "before dinner", "in winter")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve",
            "twenty")
_ADVERBS = ("slowly", "quickly", "quietly", "again", "carefully", "early", "late")


def _plural(noun: str) -> str:
    return _PLURALS.get(noun, noun + "s")


def _sentence(rng: np.random.Generator) -> str:
    """One sentence of 3-10 words from one of several templates."""
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    template = int(rng.integers(8))
    if template == 0:
        words = ["the", pick(_ADJ), pick(_NOUNS), pick(_VERBS_INTR), pick(_PREPS), pick(_PLACES)]
    elif template == 1:
        words = [pick(_NAMES), pick(_VERBS_PAST), "the", pick(_ADJ), pick(_NOUNS), pick(_TIMES)]
    elif template == 2:
        words = [pick(_NAMES), "has", pick(_NUMBERS), pick(_ADJ), _plural(pick(_NOUNS))]
    elif template == 3:
        words = ["the", pick(_NOUNS), pick(_VERBS_INTR), pick(_ADVERBS)]
    elif template == 4:
        words = [pick(_NAMES), "and", pick(_NAMES), pick(_VERBS_PAST), "a", pick(_NOUNS),
                 pick(_PREPS), pick(_PLACES)]
    elif template == 5:
        words = ["there are", pick(_NUMBERS), _plural(pick(_NOUNS)), "in", pick(_PLACES)]
    elif template == 6:
        words = [pick(_TIMES), pick(_NAMES), pick(_VERBS_PAST), "my", pick(_NOUNS)]
    else:
        words = ["is the", pick(_NOUNS), pick(_PREPS), "the", pick(_ADJ), pick(_NOUNS)]
    return " ".join(words)


def _lexicon() -> tuple[str, ...]:
    """Every word the templates can say (plurals included), sorted."""
    words = set(_NAMES + _ADJ + _NOUNS + _VERBS_PAST + _VERBS_INTR + _PREPS + _NUMBERS
                + _ADVERBS)
    words |= {_plural(n) for n in _NOUNS}
    for phrase in _PLACES + _TIMES:
        words |= set(phrase.split())
    return tuple(sorted(words))


def grammar_digest() -> str:
    """Hash of the word lists and the lexicon: part of the cache key, so editing a list
    re-synthesises the set instead of reusing audio of the old sentences."""
    lists = (_NAMES, _ADJ, _NOUNS, sorted(_PLURALS.items()), _VERBS_PAST, _VERBS_INTR, _PLACES,
             _PREPS, _TIMES, _NUMBERS, _ADVERBS, _lexicon())
    return hashlib.sha256(json.dumps(lists).encode()).hexdigest()[:16]


def scrambled_sentences(num: int, seed: int, exclude: set[str], stream: int = 0x5C4
                        ) -> list[str]:
    """`num` distinct sentences of 4-8 lexicon words in random order (no template), none in
    `exclude`: every word is heard in training, but its place is not predictable. `stream`
    selects an independent random stream (the test split's and the train split's differ)."""
    rng = np.random.default_rng([seed, stream])
    lexicon = _lexicon()
    out: list[str] = []
    seen = set(exclude)
    while len(out) < num:
        words = rng.choice(len(lexicon), size=int(rng.integers(4, 9)), replace=False)
        text = " ".join(lexicon[int(i)] for i in words)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def held_out_voices(num_speakers: int) -> int:
    """Speaker profiles never heard in training: one in eight (none with fewer than 8)."""
    return num_speakers // 8


def sentences(num: int, seed: int) -> list[str]:
    """`num` distinct sentences, a pure function of (num, seed)."""
    rng = np.random.default_rng([seed, 0x5E7])
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < num:
        tries += 1
        if tries > 50 * num + 1000:
            raise ValueError(f"the sentence grammar cannot produce {num} distinct sentences")
        text = _sentence(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# speakers


def speaker_profiles(num_speakers: int, seed: int) -> list[dict[str, Any]]:
    """`num_speakers` distinct (accent, variant, rate, pitch, range) profiles named s000, s001..."""
    rng = np.random.default_rng([seed, 0x5BE])
    profiles, seen = [], set()
    while len(profiles) < num_speakers:
        profile = {
            "accent": ACCENTS[int(rng.integers(len(ACCENTS)))],
            "variant": VARIANTS[int(rng.integers(len(VARIANTS)))],
            "rate": int(rng.integers(135, 196)),  # words per minute (espeak default 175)
            "pitch": int(rng.integers(25, 76)),  # 0-100, default 50
            "range": int(rng.integers(30, 81)),  # pitch range 0-100, default 50
        }
        key = tuple(profile.values())
        if key in seen:
            continue
        seen.add(key)
        profile["name"] = f"s{len(profiles):03d}"
        profiles.append(profile)
    return profiles


# ---------------------------------------------------------------------------------------------
# libespeak-ng through ctypes (one instance per process)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END = 0, 1, 5
_ESPEAK_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)


class _Event(ctypes.Structure):
    """espeak_EVENT of speak_lib.h (the id union read as 8 raw bytes)."""
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_int64)]


class Espeak:
    """libespeak-ng in synchronous mode; `synth(text, profile)` -> int16 [N] at 22.05 kHz, and
    after it `word_events` [(text_position (1-based character), output sample)] of the WORD
    events and `end_sample` (the END event's sample, or N).

    Holds process-global library state: never share an instance across threads. libespeak-ng
    carries hidden state from one utterance to the next (the same text comes out a few samples
    different the second time, even after espeak_Terminate), so deterministic output needs a
    freshly loaded library per utterance: `synthesize` loads a private copy, speaks once, and
    unloads it again (`close`), ~2 ms per utterance.
    """

    def __init__(self, lib_path: str | None = None) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(lib_path or espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                               ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        # The data path is the directory that *contains* espeak-ng-data.
        data_dir = os.path.dirname(espeakng_loader.get_data_path())
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir.encode(), 0)
        if rate != NATIVE_RATE:
            raise RuntimeError(f"libespeak-ng initialisation failed (returned {rate}) with "
                               f"data at {data_dir}")
        self._chunks: list[np.ndarray] = []
        self.word_events: list[tuple[int, int]] = []
        self.end_sample: int | None = None
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive on the instance
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        if events:
            event = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while event[i].type != _EVENT_LIST_TERMINATED:
                if event[i].type == _EVENT_WORD:
                    self.word_events.append((int(event[i].text_position), int(event[i].sample)))
                elif event[i].type == _EVENT_END:
                    self.end_sample = int(event[i].sample)
                i += 1
        return 0  # 0 = continue

    def synth(self, text: str, profile: dict[str, Any]) -> np.ndarray:
        voice = f"{profile['accent']}+{profile['variant']}".encode()
        if self.lib.espeak_SetVoiceByName(voice) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice.decode()!r}")
        for param, key in ((_ESPEAK_RATE, "rate"), (_ESPEAK_PITCH, "pitch"),
                           (_ESPEAK_RANGE, "range")):
            self.lib.espeak_SetParameter(param, int(profile[key]), 0)
        self.lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
        self._chunks, self.word_events, self.end_sample = [], [], None
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        status = self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8,
                                       None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros((0,), np.int16)
        audio = np.concatenate(self._chunks).astype(np.int16)
        if self.end_sample is None:
            self.end_sample = audio.shape[0]
        return audio

    def close(self) -> None:
        """Frees the library's buffers and unloads it (the next load starts from clean state)."""
        import _ctypes

        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)
        self.lib = None


_PRIVATE_LIB: str | None = None


def _private_library() -> str:
    """A per-process copy of libespeak-ng, so no other loader in this process (phonemizer,
    espeakng_loader.load_library) keeps it mapped and dlclose really unloads it."""
    global _PRIVATE_LIB
    if _PRIVATE_LIB is None or not os.path.isfile(_PRIVATE_LIB):
        import atexit
        import tempfile

        import espeakng_loader

        fd, path = tempfile.mkstemp(prefix=f"audiolm-espeak-{os.getpid()}-", suffix=".so")
        os.close(fd)
        shutil.copyfile(espeakng_loader.get_library_path(), path)
        atexit.register(lambda: os.path.exists(path) and os.unlink(path))
        _PRIVATE_LIB = path
    return _PRIVATE_LIB


def synthesize(text: str, profile: dict[str, Any]) -> np.ndarray:
    """int16 [N] at 22.05 kHz; a pure function of (text, profile) (fresh library state)."""
    return synthesize_words(text, profile)[0]


def synthesize_words(text: str, profile: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(int16 [N] at 22.05 kHz, int64 [W, 2] start / end sample of each of the W
    whitespace-separated words of `text`), from espeak's events (module docstring)."""
    engine = Espeak(_private_library())
    try:
        audio = engine.synth(text, profile)
        return audio, word_spans(text, engine.word_events, min(engine.end_sample, len(audio)))
    finally:
        engine.close()


def word_spans(text: str, events: Sequence[tuple[int, int]], end: int) -> np.ndarray:
    """int64 [W, 2] [start, end) samples of the words of `text` from espeak WORD events
    [(1-based character position, sample)] and the end sample. A word without an event joins
    the group of the evented word before it (the first group also takes the words before the
    first event); a group's span is shared by its words in proportion to their characters."""
    words, starts, pos = text.split(), [], 0
    for word in words:
        pos = text.index(word, pos)
        starts.append(pos + 1)  # 1-based, as espeak counts
        pos += len(word)
    if not words:
        return np.zeros((0, 2), np.int64)
    at = {p: s for p, s in events}
    anchors = [i for i, p in enumerate(starts) if p in at] or [0]
    anchors[0] = 0  # words before the first event belong to its group
    first_sample = min(at.values()) if at else 0
    spans = np.zeros((len(words), 2), np.int64)
    for g, lo in enumerate(anchors):
        hi = anchors[g + 1] if g + 1 < len(anchors) else len(words)
        g_start = at.get(starts[anchors[g]], first_sample) if g else first_sample
        g_end = at[starts[hi]] if hi < len(words) else end
        g_end = max(g_end, g_start)
        weights = np.cumsum([0] + [len(w) + 1 for w in words[lo:hi]], dtype=np.float64)
        edges = g_start + np.round((g_end - g_start) * weights / weights[-1]).astype(np.int64)
        spans[lo:hi, 0], spans[lo:hi, 1] = edges[:-1], edges[1:]
    return spans


def trim_silence(audio: np.ndarray, sample_rate: int, threshold: float = 1e-3,
                 margin_s: float = 0.05) -> np.ndarray:
    """Cuts leading/trailing samples below `threshold` (float audio), keeping `margin_s`."""
    start, stop = silence_bounds(audio, sample_rate, threshold, margin_s)
    return audio[start:stop]


def silence_bounds(audio: np.ndarray, sample_rate: int, threshold: float = 1e-3,
                   margin_s: float = 0.05) -> tuple[int, int]:
    """[start, stop) of `audio` that `trim_silence` keeps ((0, 0) for silence only)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return 0, 0
    margin = int(margin_s * sample_rate)
    return max(int(loud[0]) - margin, 0), min(int(loud[-1]) + 1 + margin, audio.shape[0])


def _synth_job(job: tuple[str, list[tuple[str, str, dict[str, Any]]], int]
               ) -> tuple[list[tuple[float, list[list[int]]]], float]:
    """Synthesises [(relpath, text, profile)] into `root`; returns [(duration in seconds, word
    spans [[start, end]] in samples of the written clip)] and the CPU seconds this took."""
    import soundfile as sf

    from audiolm.audio.io import resample_audio

    root, items, sample_rate = job
    cpu_start = time.process_time()
    durations = []
    for relpath, text, profile in items:
        pcm, spans = synthesize_words(text, profile)
        audio = resample_audio(pcm.astype(np.float32) / 32768.0, NATIVE_RATE, sample_rate)
        start, stop = silence_bounds(audio, sample_rate)
        audio = audio[start:stop]
        if audio.size == 0:
            raise RuntimeError(f"espeak-ng produced silence for {text!r} ({profile['name']})")
        sf.write(os.path.join(root, relpath), np.clip(audio, -1.0, 1.0), sample_rate,
                 subtype="PCM_16", format="FLAC")
        # Native samples -> samples of the written (resampled, trimmed) clip.
        words = np.clip(np.round(spans * (sample_rate / NATIVE_RATE)).astype(np.int64) - start,
                        0, audio.shape[0])
        durations.append((round(audio.shape[0] / sample_rate, 4), words.tolist()))
    return durations, time.process_time() - cpu_start


# ---------------------------------------------------------------------------------------------
# the cached dataset


def generation_config(num_train: int, num_validation: int, num_test: int, *, seed: int = 0,
                      sample_rate: int = 16000, num_speakers: int = 64,
                      train_scrambled: float = 0.0) -> dict[str, Any]:
    """Everything the generated files depend on; its hash names the cache directory.

    `train_scrambled`: fraction of the train rows (drawn per row) that say a scrambled sentence
    instead of a template one, so a recogniser cannot lean on the template grammar alone; the
    validation and test splits are the same for every fraction."""
    import espeakng_loader  # noqa: F401  (fail early with ImportError when missing)

    for name, value in (("num_train", num_train), ("num_validation", num_validation),
                        ("num_test", num_test), ("num_speakers", num_speakers),
                        ("sample_rate", sample_rate)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r}: must be a non-negative int")
    if num_speakers < 1 or sample_rate < 1:
        raise ValueError(f"num_speakers={num_speakers}, sample_rate={sample_rate}: must be >= 1")
    if not (isinstance(train_scrambled, (int, float)) and not isinstance(train_scrambled, bool)
            and 0.0 <= train_scrambled <= 1.0):
        raise ValueError(f"train_scrambled={train_scrambled!r}: must be a number in [0, 1]")
    # only when used, so the cache keys of sets without it stay as they were
    extra = {"train_scrambled": float(train_scrambled)} if train_scrambled else {}
    return {**extra, "version": FORMAT_VERSION, "seed": int(seed), "sample_rate": int(sample_rate),
            "num_speakers": int(num_speakers), "accents": list(ACCENTS),
            "variants": list(VARIANTS), "espeak": "espeakng-loader " + _loader_version(),
            "counts": {"train": int(num_train), "validation": int(num_validation),
                       "test": int(num_test)},
            "grammar": grammar_digest(),
            "held_out_voices": held_out_voices(int(num_speakers)),
            "test_scrambled": int(num_test) // 2}


def generation_config_of(data_config: Any) -> dict[str, Any]:
    """`generation_config` of a `config.data` section (its counts, seed, rate and speakers)."""
    return generation_config(int(data_config.num_train), int(data_config.num_validation),
                             int(data_config.num_test), seed=int(data_config.seed),
                             sample_rate=int(data_config.sample_rate),
                             num_speakers=int(data_config.num_speakers),
                             train_scrambled=float(data_config.get("train_scrambled", 0.0)))


def _loader_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("espeakng-loader")
    except metadata.PackageNotFoundError:
        return "unknown"


def config_hash(gen_config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(gen_config, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "audiolm", "speech_synth")


def dataset_dir(gen_config: dict[str, Any], cache_dir: str = "") -> str:
    return os.path.join(os.path.expanduser(cache_dir or default_cache_dir()),
                        config_hash(gen_config))


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "complete.json"))


def plan(gen_config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The utterances of every split: [{"audio", "text", "speaker", "profile", "sentence",
    "voice"}], no audio yet. "sentence" is "template" or "scrambled", "voice" is "seen" or
    "unseen" (a held-out profile, never in train).

    Template sentences are drawn once for all splits and partitioned, so splits never share a
    sentence; the test split's odd rows are scrambled sentences (`scrambled_sentences`, new to
    every split), and a `train_scrambled` fraction of the train rows say scrambled sentences of
    their own stream (never a test one; the template draw is unchanged, so the validation and
    test splits do not depend on the fraction). Each utterance gets a speaker drawn with its own seeded stream; train draws
    from the profiles that are not held out.
    """
    counts = gen_config["counts"]
    seed = gen_config["seed"]
    n_scrambled = gen_config["test_scrambled"]
    total = sum(counts[s] for s in SPLITS)
    texts = sentences(total - n_scrambled, seed)
    scrambled = scrambled_sentences(n_scrambled, seed, set(texts))
    profiles = speaker_profiles(gen_config["num_speakers"], seed)
    n_seen = len(profiles) - gen_config["held_out_voices"]
    rng = np.random.default_rng([seed, 0x59E])
    speaker_of = rng.integers(len(profiles), size=total)
    train_speaker_of = rng.integers(n_seen, size=counts["train"])
    # Test rows 2-3 of every 4 are spoken by held-out voices (when there are any), so both kinds
    # of sentence are heard in seen and unseen voices alike.
    held_out = n_seen + rng.integers(max(len(profiles) - n_seen, 1), size=counts["test"])
    train_kind = np.random.default_rng([seed, 0x5C5]).random(counts["train"])
    train_kind = train_kind < gen_config.get("train_scrambled", 0.0)
    train_scrambled = iter(scrambled_sentences(int(train_kind.sum()), seed,
                                               set(texts) | set(scrambled), stream=0x5C5))
    out, start, next_text = {}, 0, 0
    for split in SPLITS:
        rows = []
        for i in range(counts[split]):
            who = train_speaker_of[i] if split == "train" else speaker_of[start + i]
            if split == "test" and n_seen < len(profiles):
                who = held_out[i] if (i // 2) % 2 == 1 else who % n_seen
            profile = profiles[int(who)]
            if split == "test" and i % 2 == 1 and i // 2 < n_scrambled:
                text, kind = scrambled[i // 2], "scrambled"
            elif split == "train" and train_kind[i]:
                # the template sentence is still drawn, so later splits stay the same
                text, kind = next(train_scrambled), "scrambled"
                next_text += 1
            else:
                text, kind = texts[next_text], "template"
                next_text += 1
            rows.append({"audio": f"{split}/{i:06d}.flac", "text": text,
                         "speaker": profile["name"], "profile": profile, "sentence": kind,
                         "voice": "seen" if int(who) < n_seen else "unseen"})
        out[split] = rows
        start += counts[split]
    return out


def utterance_groups(gen_config: dict[str, Any], split: str) -> dict[str, dict[str, str]]:
    """{text: {"sentence": "template" | "scrambled", "voice": "seen" | "unseen"}} of `split`
    (texts are distinct within a split), for per-group error rates."""
    return {r["text"]: {"sentence": r["sentence"], "voice": r["voice"]}
            for r in plan(gen_config)[split]}


def _remove_stale(final: str) -> None:
    """Deletes `<final>.tmp-<pid>` directories left by generating processes that died."""
    parent, name = os.path.split(final)
    for entry in os.listdir(parent):
        if not entry.startswith(name + ".tmp-"):
            continue
        try:
            os.kill(int(entry.rsplit("-", 1)[1]), 0)  # signal 0: only asks whether it lives
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def generate(gen_config: dict[str, Any], cache_dir: str = "", num_workers: int = 0,
             log: Any = None) -> str:
    """Generates the dataset unless a complete copy exists; returns its directory.

    Args:
      gen_config: from `generation_config`.
      cache_dir: parent directory ("" = ~/.cache/audiolm/speech_synth).
      num_workers: processes (0 = number of CPUs, at most 8). 1 synthesises in this process.
      log: optional callable(str) for progress messages.
    """
    final = dataset_dir(gen_config, cache_dir)
    if is_complete(final):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    _remove_stale(final)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    rows = plan(gen_config)
    for split in SPLITS:
        os.makedirs(os.path.join(tmp, split), exist_ok=True)
    flat = [row for split in SPLITS for row in rows[split]]
    if num_workers <= 0:
        num_workers = min(os.cpu_count() or 1, 8)
    chunk = max(1, min(64, -(-len(flat) // (4 * num_workers))))
    jobs = [(tmp, [(r["audio"], r["text"], r["profile"]) for r in flat[i:i + chunk]],
             gen_config["sample_rate"]) for i in range(0, len(flat), chunk)]
    try:
        # A bar on a terminal (tqdm's disable=None), counted in utterances.
        bar = tqdm.tqdm(total=len(flat), desc="synthesising speech", unit="utt", disable=None)
        if num_workers == 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(_synth_job(job))
                bar.update(len(job[1]))
        else:
            import concurrent.futures
            import multiprocessing

            # spawn: the parent may already run jax threads, which fork would copy unsafely.
            ctx = multiprocessing.get_context("spawn")
            results = []
            with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
                for result in pool.map(_synth_job, jobs):
                    results.append(result)
                    bar.update(len(result[0]))
        bar.close()
        timings = [d for part, _ in results for d in part]
        durations = [d for d, _ in timings]
        cpu_seconds = sum(cpu for _, cpu in results)
        for row, (duration, words) in zip(flat, timings):
            row["duration"], row["words"] = duration, words
        for split in SPLITS:
            with open(os.path.join(tmp, f"{split}.jsonl"), "w") as f:
                for row in rows[split]:
                    f.write(json.dumps({"audio": row["audio"], "text": row["text"],
                                        "speaker": row["speaker"],
                                        "duration": row["duration"],
                                        "words": row["words"]}) + "\n")
        profiles = speaker_profiles(gen_config["num_speakers"], gen_config["seed"])
        with open(os.path.join(tmp, "speakers.json"), "w") as f:
            json.dump(profiles, f, indent=1)
        elapsed = time.perf_counter() - start
        stats = {"config": gen_config, "utterances": len(flat),
                 "audio_seconds": round(float(sum(durations)), 2),
                 "generation_seconds": round(elapsed, 2), "cpu_seconds": round(cpu_seconds, 2),
                 "num_workers": num_workers}
        with open(os.path.join(tmp, "complete.json"), "w") as f:
            json.dump(stats, f, indent=1)
        if os.path.isdir(final) and not is_complete(final):
            shutil.rmtree(final, ignore_errors=True)  # a copy damaged by hand: replace it
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if not is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log is not None:
        log(f"speech_synth: {stats['utterances']} utterances, {stats['audio_seconds']:.0f} s of "
            f"audio in {elapsed:.1f} s ({stats['utterances'] / elapsed:.1f} utt/s, "
            f"{stats['audio_seconds'] / elapsed:.0f}x real time, {num_workers} processes; "
            f"{cpu_seconds:.1f} CPU s = {len(flat) / max(cpu_seconds, 1e-9):.0f} utt/s per core) "
            f"-> {final}")
    return final


def read_split(path: str, split: str) -> list[dict[str, Any]]:
    """The manifest rows of `split` of a generated dataset, with `audio` made absolute."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}")
    rows = []
    with open(os.path.join(path, f"{split}.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            row["audio"] = os.path.join(path, row["audio"])
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m audiolm.data.speech_synth --num_train=2000 ...`: generate and print speed."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_validation", type=int, default=100)
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--num_speakers", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_scrambled", type=float, default=0.0)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--cache_dir", default="")
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args(argv)
    gen = generation_config(args.num_train, args.num_validation, args.num_test, seed=args.seed,
                            sample_rate=args.sample_rate, num_speakers=args.num_speakers,
                            train_scrambled=args.train_scrambled)
    path = generate(gen, args.cache_dir, args.num_workers, log=print)
    with open(os.path.join(path, "complete.json")) as f:
        print(f.read())


if __name__ == "__main__":
    main()
