"""The codec-token view of the speech set, shared by the speech-output tasks (tts, stt).

`config.task.codec` names the codec whose codes a task models:

    task.codec.config         codec experiment config "path[:arg]" (e.g. "configs/codec.py:speech")
    task.codec.workdir        the codec's training run (its latest checkpoint); "" = a randomly
                              initialised codec from task.codec.seed (tests and tiny configs only:
                              logged as such)
    task.codec.num_codebooks  codebooks used, 1..the codec's
    task.codec.seed           init seed of the random codec (ignored with a workdir)
    task.codec.init_embeddings  start the model's audio code embeddings from the codec's own
                              codebooks (`codebook_embeddings`) instead of random rows

`load_codec(config)` -> (module, params, spec). `codes_for_split(config, split)` -> {utterance
index: int32 [K, T]}: every utterance of the split encoded once and kept in an `ArrayCache`
(`audiolm.data.cache`) under `<data cache>/codec_codes/<key>`, key = the codec spec, a digest of
its params, the data identity, num_codebooks and FORMAT_VERSION: a retrained codec, another
split or another data set never reuses stale codes.

`make_batches(config, split, finite)` yields resumable batches (the order and state of
`audiolm.data.batching.BatchIterator`, buckets of `data.bucket_seconds`) of:
    codes        [B, K, T] int32  codec codes, 0 past each row's end (T = the bucket in frames)
    codes_mask   [B, T] bool      True on real frames
    text         [B, L] int32     [bos, ids..., eos] then pad: the data tokenizer's ids
    text_mask    [B, L] bool
    speaker      [B] int32        speaker profile index of the speech set (-1 = padding row)
    word_frames  [B, W, 2] int32  [start, end) frame of each word (espeak's word timings)
    word_mask    [B, W] bool      True on real words (W = `max_words(config)`)
    index        [B] int32        utterance index in the split (-1 = padding row)
Word timings exist for `data.name = "speech_synth"` only (`audiolm.data.speech_synth`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiolm import data as data_lib
from audiolm.config import (ConfigError, check_int, check_schema, check_str, get_path, require)
from audiolm.data import cache as cache_lib
from audiolm.data.batching import BatchIterator, bucket_lengths
from audiolm.models import codec as codec_lib
from audiolm.presets import codec as codec_presets
from audiolm.presets import experiment

FORMAT_VERSION = 1  # bump when the encoding procedure changes (invalidates cached codes)
CODEC_SCHEMA = dict(config="", workdir="", num_codebooks=0, seed=0, init_embeddings=False)
ENCODE_BATCH = 8  # utterances per codec call while filling the cache

log = logging.getLogger("audiolm.tasks")


def codec_section(config: str, num_codebooks: int, workdir: str = "", seed: int = 0,
                  init_embeddings: bool = False) -> ml_collections.ConfigDict:
    """The `config.task.codec` section (module docstring)."""
    return ml_collections.ConfigDict(dict(config=config, workdir=workdir,
                                          num_codebooks=num_codebooks, seed=seed,
                                          init_embeddings=init_embeddings))


@functools.lru_cache(maxsize=8)
def _load_codec_config(spec: str) -> ml_collections.FrozenConfigDict:
    path, _, arg = spec.partition(":")
    return ml_collections.FrozenConfigDict(
        experiment.load_experiment_config(path, arg or None))


def codec_config(config: Any) -> Any:
    """The codec experiment config named by task.codec.config (ConfigError naming it)."""
    spec = check_str(config, "task.codec.config", allow_empty=False)
    try:
        loaded = _load_codec_config(spec)
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"task.codec.config={spec!r}: cannot load it ({e}); expected "
                          "'path[:arg]' of a codec config file, e.g. "
                          "'configs/codec.py:variant=speech'") from None
    family = loaded.model.get("family", None)
    require(family == "codec", "task.codec.config", spec,
            f"must be a codec experiment (its model.family is {family!r})")
    return loaded


def codec_spec(config: Any) -> codec_presets.CodecSpec:
    return codec_lib.spec_of(codec_config(config).model)


def num_codebooks(config: Any) -> int:
    return int(config.task.codec.num_codebooks)


def hop_length(config: Any) -> int:
    """Waveform samples per code frame of the task's codec."""
    return codec_presets.hop_length(codec_spec(config))


def frame_rate(config: Any) -> float:
    """Code frames per second of the task's codec."""
    return codec_presets.frame_rate(codec_spec(config))


def max_words(config: Any) -> int:
    """W of `word_frames`: the most words a transcript of data.max_text_len tokens can hold
    (bos, eos, and at least two tokens, a letter and a space, per word but the last)."""
    return max(1, (int(config.data.max_text_len) - 1) // 2)


def check_section(config: Any) -> None:
    """`task.codec` and its cross-field rules with `config.data` (ConfigError naming the field)."""
    if "codec" not in config.task:
        raise ConfigError(f"task.codec is missing (required field): task {config.task.name!r} "
                          f"models codec codes; set it to a section of {sorted(CODEC_SCHEMA)} "
                          "(see audiolm.tasks.speech_codes)")
    check_schema(config, "task.codec", CODEC_SCHEMA)
    spec = codec_spec(config)
    q = spec.quantizer
    check_int(config, "task.codec.num_codebooks", lo=max(q.num_semantic, 1),
              hi=q.num_codebooks)
    check_int(config, "task.codec.seed", lo=0)
    workdir = check_str(config, "task.codec.workdir")
    if workdir:
        require(_checkpoint_dir(workdir) is not None, "task.codec.workdir", workdir,
                "holds no codec checkpoint (expected <workdir>/checkpoints/<step>/); train the "
                f"codec there first (--config={config.task.codec.config}) or use '' for a "
                "random codec (tests only)")
    name = get_path(config, "data.name")
    require(name == "speech_synth", "data.name", name,
            "speech-output tasks need word timings, which only the espeak set "
            "'speech_synth' carries")
    require(config.data.get("loader", "memory") == "memory", "data.loader",
            config.data.get("loader", None), "codec codes are cached per utterance: use 'memory'")
    rate = int(config.data.sample_rate)
    require(rate == spec.sample_rate, "data.sample_rate", rate,
            f"must equal the codec's sample rate {spec.sample_rate} "
            f"(task.codec.config={config.task.codec.config!r})")


# ---------------------------------------------------------------------------------------------
# The codec


def _checkpoint_dir(workdir: str) -> str | None:
    directory = os.path.join(os.path.expanduser(workdir), "checkpoints")
    if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
        return directory
    return None


def _restore_params(directory: str, target: Any, where: str) -> Any:
    """Params of the latest Orbax checkpoint in `directory` (the trainer's layout: item "state"
    holding "params"), restored into `target` (ShapeDtypeStructs)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)  # Orbax reads absolute paths only
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), target)
    manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
    try:
        step = manager.latest_step()
        _check_saved_shapes(os.path.join(directory, str(step), "state"), target, where)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={"params": target},
            restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
            partial_restore=True)))
    except ConfigError:
        raise
    except Exception as e:  # damaged files, named with the field
        raise ConfigError(f"{where}: cannot restore its codec params from {directory} into the "
                          f"model of task.codec.config ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    finally:
        manager.close()
    log.info("codec: params of %s step %s", directory, step)
    return restored["state"]["params"]


def _check_saved_shapes(state_dir: str, target: Any, where: str) -> None:
    """ConfigError naming `where` unless the saved params have the target's paths and shapes
    (checked on the metadata, before any array is read)."""
    import orbax.checkpoint as ocp

    meta = ocp.StandardCheckpointer().metadata(state_dir)
    saved = getattr(meta, "item_metadata", meta)["params"]
    shapes = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape) for p, x in  # noqa: E731
                           jax.tree_util.tree_flatten_with_path(tree)[0]}
    want, got = shapes(target), shapes(saved)
    for path in sorted(set(want) | set(got)):
        if want.get(path) != got.get(path):
            raise ConfigError(f"{where}: its checkpoint {state_dir} is not a checkpoint of the "
                              f"codec of task.codec.config: params{path} is {got.get(path)} "
                              f"there, {want.get(path)} in the config's codec")


def load_codec(config: Any) -> tuple[Any, Any, codec_presets.CodecSpec]:
    """(module, params, spec) of the task's codec: its latest trained checkpoint, or a random
    codec. Kept per process (evaluations rebuild their batches), keyed by the codec config, the
    seed and the checkpoint steps on disk."""
    section = config.task.codec
    directory = _checkpoint_dir(section.workdir) if section.workdir else None
    steps = tuple(sorted(os.listdir(directory))) if directory else ()
    key = (str(section.config), str(section.workdir), int(section.seed), steps)
    if key not in _LOADED:
        _LOADED.clear()  # one codec at a time: params can be large
        _LOADED[key] = _load_codec(config)
    return _LOADED[key]


_LOADED: dict[tuple, tuple[Any, Any, codec_presets.CodecSpec]] = {}


def _load_codec(config: Any) -> tuple[Any, Any, codec_presets.CodecSpec]:
    model = codec_config(config).model
    module = codec_lib.build(model)
    spec = codec_lib.spec_of(model)
    section = config.task.codec
    if not section.workdir:
        log.warning("codec: task.codec.workdir='': a RANDOMLY INITIALISED codec (seed %d); its "
                    "codes carry little of the speech (tests and tiny configs only)",
                    int(section.seed))
        return module, codec_lib.init_params(model, jax.random.PRNGKey(int(section.seed))), spec
    directory = _checkpoint_dir(section.workdir)
    if directory is None:
        raise ConfigError(f"task.codec.workdir={section.workdir!r}: holds no codec checkpoint")
    target = jax.eval_shape(lambda r: codec_lib.init_params(model, r), jax.random.PRNGKey(0))
    params = _restore_params(directory, target, f"task.codec.workdir={section.workdir!r}")
    return module, params, spec


def codebook_embeddings(config: Any, table: Any) -> np.ndarray:
    """The codec's codebooks as a model's audio code embeddings: `table` [K, V, W] (K =
    task.codec.num_codebooks, V >= the codebook size) -> a copy whose first codebook_size rows
    of codebook k are (decode of code v at level k, every other level at code 0) - decode(all
    codes 0), a [D] latent, times one random [D, W] projection (seeded by task.codec.seed),
    scaled to the RMS of `table`'s rows. Summed over codebooks the rows give P(latent(codes) -
    latent(0)) exactly (the residual VQ decode is a sum of per-level vectors through a linear
    projection), so the model starts reading a linear view of the codec's quantized latent, in
    which similar sounds are near, instead of one unrelated random row per code."""
    module, params, spec = load_codec(config)
    table = np.asarray(table, np.float32)
    k, card = num_codebooks(config), spec.quantizer.codebook_size
    if table.ndim != 3 or table.shape[0] != k or table.shape[1] < card:
        raise ValueError(f"codebook_embeddings: table shape {table.shape} must be [K={k}, "
                         f"V >= {card}, W]")
    codes = np.zeros((k, card, k, 1), np.int32)  # [level, code, codebooks, frame]
    for level in range(k):
        codes[level, :, level, 0] = np.arange(card)
    latent = module.apply({"params": params}, jnp.asarray(codes.reshape(k * card, k, 1)),
                          method=lambda m, c: m.quantizer.decode(c))  # [k * card, 1, D]
    base = module.apply({"params": params}, jnp.zeros((1, k, 1), jnp.int32),
                        method=lambda m, c: m.quantizer.decode(c))
    rows = np.asarray(latent - base, np.float32).reshape(k, card, -1)
    rng = np.random.default_rng(int(config.task.codec.seed))
    proj = rng.standard_normal((rows.shape[-1], table.shape[2])).astype(np.float32)
    rows = rows @ proj
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
    out = table.copy()
    out[:, :card] = rows * (rms(table[:, :card]) / max(rms(rows), 1e-12))
    return out


def init_moshi_embeddings(params: Any, config: Any) -> Any:
    """The Moshi family's scratch params with `audio_emb` from the codec's codebooks when
    `task.codec.init_embeddings` (`codebook_embeddings`); otherwise `params` unchanged."""
    if not config.task.codec.init_embeddings:
        return params
    table = params["audio_emb"]["embedding"]
    new = jnp.asarray(codebook_embeddings(config, jax.device_get(table)), table.dtype)
    emb = {**params["audio_emb"], "embedding": jax.device_put(new, table.sharding)}
    log.info("audio_emb: initialised from the codec's codebooks (task.codec.init_embeddings)")
    return {**params, "audio_emb": emb}


def params_digest(params: Any) -> str:
    """sha256 of every leaf (path, dtype, shape, bytes): names the codec in the cache key."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arr = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Cached codes


def _data_identity(data: Any, split: str) -> dict[str, Any]:
    """What the utterances of `split` (their audio and their order after the length filters)
    depend on."""
    from audiolm.data import speech_synth

    gen = speech_synth.generation_config_of(data)
    keys = ("max_audio_seconds", "min_audio_seconds", "max_text_len", "tokenizer", "alphabet",
            "spm_path")
    return {"speech_synth": speech_synth.config_hash(gen), "split": split,
            **{k: data[k] for k in keys}}


def cache_root(config: Any) -> str:
    """`<data.cache_dir>/codec_codes` ("" = ~/.cache/audiolm/codec_codes)."""
    base = config.data.cache_dir or os.path.join("~", ".cache", "audiolm")
    return os.path.join(os.path.expanduser(base), "codec_codes")


def encode_clips(module: Any, params: Any, clips: list[np.ndarray], n: int,
                 hop: int) -> list[np.ndarray]:
    """int32 [n, ceil(len / hop)] codes of each float32 clip; clips are encoded in groups of
    ENCODE_BATCH right-padded to the group's longest (a whole number of seconds' worth of
    frames, so few shapes compile). The codec is causal: padding after a clip leaves its frames
    unchanged."""
    out: list[np.ndarray | None] = [None] * len(clips)
    order = np.argsort([len(c) for c in clips], kind="stable")
    for start in range(0, len(order), ENCODE_BATCH):
        group = order[start:start + ENCODE_BATCH]
        frames = [math.ceil(len(clips[i]) / hop) for i in group]
        step = max(1, round(module.spec.sample_rate / hop))  # ~1 s of frames
        padded = -(-max(frames) // step) * step * hop
        wav = np.zeros((ENCODE_BATCH, padded), np.float32)
        for row, i in enumerate(group):
            wav[row, :len(clips[i])] = clips[i]
        codes = np.asarray(codec_lib.encode(module, params, wav, n))
        for row, i in enumerate(group):
            out[i] = codes[row, :, :frames[row]].astype(np.int32)
    return out


def codes_for_split(config: Any, split: str, dataset: Any = None,
                    codec: tuple[Any, Any, Any] | None = None) -> dict[int, np.ndarray]:
    """{utterance index: int32 [K, T_i]} of `split` (module docstring). `dataset` / `codec`
    skip reloading them when the caller has them."""
    dataset = data_lib.make_dataset(config.data, split) if dataset is None else dataset
    module, params, spec = load_codec(config) if codec is None else codec
    n = num_codebooks(config)
    key = cache_lib.cache_key(codec=dataclasses.asdict(spec), params=params_digest(params),
                              data=_data_identity(config.data, split), num_codebooks=n,
                              version=FORMAT_VERSION, layout=cache_lib.FORMAT_VERSION)
    cache = ArrayCache(cache_root(config), key)
    hop = codec_presets.hop_length(spec)
    ids = list(range(len(dataset)))
    missing = sum(i not in cache for i in ids)
    if missing:
        log.info("codec codes: encoding %d of %d %s utterances into %s", missing, len(ids), split,
                 cache.directory)
    return cache.get_or_compute(
        ids, lambda chunk: encode_clips(module, params, [dataset.audio(i) for i in chunk], n, hop))


ArrayCache = cache_lib.ArrayCache


# ---------------------------------------------------------------------------------------------
# Batches


def word_frames(entry: dict[str, Any], hop: int, frames: int) -> np.ndarray:
    """int32 [W, 2] [start, end) code frames of the words of a manifest entry (its "words" in
    samples), each at least one frame long and within [0, frames]."""
    if "words" not in entry:
        raise ValueError(f"utterance {entry.get('audio', entry['text'])!r} has no word timings "
                         "('words'): regenerate the espeak set (speech_synth FORMAT_VERSION >= 4)")
    spans = np.asarray(entry["words"], np.int64).reshape(-1, 2)
    # Rounded to the nearest frame boundary, so the spans of touching words still touch.
    start = np.clip(np.round(spans[:, 0] / hop), 0, max(frames - 1, 0)).astype(np.int64)
    end = np.clip(np.round(spans[:, 1] / hop), start + 1, frames).astype(np.int64)
    return np.stack([start, end], axis=1).astype(np.int32)


class MappedBatches:
    """A resumable batch iterator seen through `fn(batch) -> batch`: what each speech task makes
    of the code batches (its own layout); the position is the inner iterator's."""

    def __init__(self, inner: Any, fn: Any):
        self.inner, self.fn = inner, fn

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        return self.fn(next(self.inner))

    def get_state(self) -> dict[str, Any]:
        return self.inner.get_state()

    def set_state(self, state: Any) -> None:
        self.inner.set_state(state)


class CodeBatches(BatchIterator):
    """`BatchIterator` order and state over a split, collated as codec-code batches (module
    docstring)."""

    def __init__(self, dataset: Any, codes: dict[int, np.ndarray], hop: int, num_words: int,
                 **kw: Any):
        super().__init__(dataset, **kw)
        self.codes, self.hop, self.num_words = codes, int(hop), int(num_words)
        self.num_codebooks = int(next(iter(codes.values())).shape[0])

    def collate(self, indices) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        bucket = int(self.bucket_of[indices].max()) if len(indices) else 0
        t = -(-int(self.buckets[bucket]) // self.hop)
        b, k, w, l_max = self.batch_size, self.num_codebooks, self.num_words, self.max_text_len
        batch = {
            "codes": np.zeros((b, k, t), np.int32),
            "codes_mask": np.zeros((b, t), bool),
            "text": np.zeros((b, l_max), np.int32),
            "text_mask": np.zeros((b, l_max), bool),
            "speaker": np.full((b,), -1, np.int32),
            "word_frames": np.zeros((b, w, 2), np.int32),
            "word_mask": np.zeros((b, w), bool),
            "index": np.full((b,), -1, np.int32),
        }
        for row, i in enumerate(int(i) for i in indices):
            codes = self.codes[i]
            n = codes.shape[1]
            tokens = self.dataset.tokens[i]
            words = word_frames(self.dataset.entries[i], self.hop, n)
            if len(words) > w:
                raise ValueError(f"utterance {i} has {len(words)} words, more than W={w} "
                                 "(max_words of data.max_text_len)")
            batch["codes"][row, :, :n] = codes
            batch["codes_mask"][row, :n] = True
            batch["text"][row, :len(tokens)] = tokens
            batch["text_mask"][row, :len(tokens)] = True
            batch["speaker"][row] = self.dataset.speaker_ids[i]
            batch["word_frames"][row, :len(words)] = words
            batch["word_mask"][row, :len(words)] = True
            batch["index"][row] = i
        return batch


def make_batches(config: Any, split: str, finite: bool = False) -> CodeBatches:
    """Endless shuffled batches of `split` (full batches), or one ordered pass when `finite`
    (the last batch padded with rows of index -1)."""
    data = data_lib.resolve_config(config.data)
    dataset = data_lib.make_dataset(data, split)
    codec = load_codec(config)
    codes = codes_for_split(config, split, dataset, codec)
    hop = codec_presets.hop_length(codec[2])
    buckets = bucket_lengths(data.bucket_seconds, float(data.max_audio_seconds),
                             int(data.sample_rate))
    train = not finite
    return CodeBatches(dataset, codes, hop, max_words(config), batch_size=int(data.batch_size),
                       buckets=buckets, max_text_len=int(data.max_text_len),
                       seed=int(data.seed), shuffle=bool(data.shuffle) and train, repeat=train,
                       drop_remainder=train)
