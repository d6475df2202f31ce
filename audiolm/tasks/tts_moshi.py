"""Moshi-family text-to-speech (`task.name = "tts"`, `model.family = "moshi"`): Kyutai's delayed
streams with the text leading.

Streams: a time-aligned text stream, then the K codec codebooks (`audiolm.tasks.speech_codes`),
each shifted by its `model.delays` entry; the text stream has delay 0 and every audio codebook a
delay >= 1, so the text of a frame is read before its audio. The depformer predicts all K
codebooks of a frame (model.depformer.num_slices = K); the speaker profile is a `lut`
conditioner named "speaker" (optional; n_bins = data.num_speakers).

The aligned text stream (`aligned_text`), one id per code frame, from espeak's word timings:
every word is preceded by one EPAD (model.text_end_padding_id) and its tokens (the data
tokenizer's ids) are written from its start frame on, one per frame (a word whose tokens run
past the next word's start pushes that word later); one more EPAD marks the end of the last word
(the end of speech); every other frame is PAD (model.text_padding_id); frames past the
utterance are -1 (masked). PAD and EPAD lie past the tokenizer's ids, below
model.text_out_vocab_size; the text initial id (text_in_vocab_size - 1) is above both.

Loss: the codes task's delayed-stream loss (`audiolm.tasks.codes.moshi_loss`: text CE +
depformer audio CE, weights train.loss.{text_weight, audio_weight, semantic_weight}).

Generation (`generate_codes`), frame by frame through the streaming step of
`audiolm.sample.moshi`: the model decides *when* (its text token: PAD waits, EPAD starts the next
word, or ends the speech once every word is spoken) and the transcript decides *what* (a word's
tokens are forced once it starts). A row stops at its end EPAD (or after sample.max_new_tokens
steps); its codes are the frames before it.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import data as data_lib
from audiolm.config import check_float, check_schema, require
from audiolm.models import moshi as moshi_lib
from audiolm.sample import moshi as moshi_sample
from audiolm.tasks import codes as codes_task
from audiolm.tasks import speech_codes

SPEAKER = "speaker"  # the lut conditioner of the speaker profile


# ---------------------------------------------------------------------------------------------
# Rules


def check_text_ids(config: Any) -> None:
    """PAD / EPAD / the initial text id against the data tokenizer (shared with stt)."""
    m = config.model
    vocab = data_lib.make_tokenizer(config.data).vocab_size
    pad, epad = int(m.text_padding_id), int(m.text_end_padding_id)
    out, tin = int(m.text_out_vocab_size), int(m.text_in_vocab_size)
    where = f"data.tokenizer={config.data.tokenizer!r} has ids 0..{vocab - 1}"
    for path, value in (("model.text_padding_id", pad), ("model.text_end_padding_id", epad)):
        require(vocab <= value < out, path, value,
                f"must be in [{vocab}, model.text_out_vocab_size={out}): {where}, and the model "
                "predicts it")
    require(pad != epad, "model.text_end_padding_id", epad,
            f"must differ from model.text_padding_id={pad} (EPAD marks a word start)")
    require(tin >= out + 1, "model.text_in_vocab_size", tin,
            f"must be >= model.text_out_vocab_size + 1 = {out + 1} (its last id is the initial "
            "token, which no target may take)")


def check_codec_streams(config: Any) -> None:
    """model.audio_codebooks / audio_vocab_size against task.codec (shared with stt)."""
    m = config.model
    k = speech_codes.num_codebooks(config)
    card = speech_codes.codec_spec(config).quantizer.codebook_size
    require(int(m.audio_codebooks) == k, "model.audio_codebooks", m.audio_codebooks,
            f"must equal task.codec.num_codebooks={k}")
    require(int(m.audio_vocab_size) == card + 1, "model.audio_vocab_size", m.audio_vocab_size,
            f"must be the codec's codebook_size + 1 = {card + 1} (the last id is the initial "
            "token)")


def rules(config: Any) -> None:
    """Streams, delays, text ids, conditioners and loss weights of Moshi tts."""
    m = config.model
    check_codec_streams(config)
    check_text_ids(config)
    k = int(m.audio_codebooks)
    require(int(m.depformer.num_slices) == k, "model.depformer.num_slices",
            m.depformer.num_slices, f"must equal model.audio_codebooks={k}: tts generates "
            "every codebook")
    require(m.fusion != "concat", "model.fusion", m.fusion,
            "tts decodes frame by frame; 'concat' is text-first (use add, cross_attention or "
            "interleave)")
    delays = list(m.delays)
    require(delays[0] == 0 and min(delays[1:]) >= 1, "model.delays", delays,
            "tts needs the text leading: the text delay 0 and every audio delay >= 1")
    names = sorted(m.conditioners.keys())
    require(names in ([], [SPEAKER]), "model.conditioners", names,
            f"tts provides one condition, the speaker profile: {{}} or {{{SPEAKER!r}: lut}}")
    if names:
        c = m.conditioners[SPEAKER]
        require(c.type == "lut" and c.fuse == "sum", f"model.conditioners.{SPEAKER}.type",
                c.type, "must be a 'lut' conditioner fused by 'sum'")
        require(int(c.n_bins) == int(config.data.num_speakers),
                f"model.conditioners.{SPEAKER}.n_bins", c.n_bins,
                f"must equal data.num_speakers={config.data.num_speakers} (one row per profile)")
    check_schema(config, "train.loss", codes_task.MOSHI_LOSS_SCHEMA)
    for key in codes_task.MOSHI_LOSS_SCHEMA:
        check_float(config, f"train.loss.{key}", lo=0.0)
    lag = int(moshi_sample.stream_lags(moshi_lib.spec_from_config(m)).max())
    require(int(config.sample.max_new_tokens) > lag + 1, "sample.max_new_tokens",
            config.sample.max_new_tokens, f"must exceed the largest stream delay + 1 = {lag + 1}")
    require(float(config.sample.cfg_scale) == 1.0, "sample.cfg_scale", config.sample.cfg_scale,
            "classifier-free guidance is not implemented for the moshi family; use 1.0")


# ---------------------------------------------------------------------------------------------
# The aligned text stream and batches


def split_words(ids: Sequence[int], space_id: int) -> list[list[int]]:
    """Token ids of a transcript (no bos / eos) cut at the space token into words."""
    words, cur = [], []
    for i in ids:
        if int(i) == space_id:
            if cur:
                words.append(cur)
            cur = []
        else:
            cur.append(int(i))
    if cur:
        words.append(cur)
    return words


def transcript_words(tokenizer: Any, text: str) -> list[list[int]]:
    return split_words(tokenizer.encode(text), tokenizer.encode(" ")[0])


def aligned_text(words: Sequence[Sequence[int]], starts: Sequence[int], end: int, frames: int,
                 pad_id: int, epad_id: int) -> np.ndarray:
    """int32 [frames] aligned text stream (module docstring) of `words` (token ids each) starting
    at frames `starts`, speech ending at frame `end` (the end EPAD goes there, or on the last
    frame when `end` is past it). Words that do not fit are dropped."""
    out = np.full((frames,), pad_id, np.int32)
    cursor = 0  # first frame free after the previous word
    for word, start in zip(words, starts):
        pos = max(int(start), cursor + 1)  # room for the EPAD before it
        if pos + len(word) > frames:
            break
        out[pos - 1] = epad_id
        out[pos:pos + len(word)] = word
        cursor = pos + len(word)
    mark = min(max(int(end), cursor), frames - 1)  # the clip's last frame at the latest
    if mark >= cursor:
        out[mark] = epad_id
    return out


def stream_codes(config: Any, batch: Mapping[str, np.ndarray], tokenizer: Any) -> np.ndarray:
    """codes [B, 1+K, T]: the aligned text stream (-1 past each row's end) on top of the codec
    codes (-1 past the end) of a `speech_codes` batch."""
    m = config.model
    codes, mask = batch["codes"], batch["codes_mask"]
    b, _, t = codes.shape
    text = np.full((b, 1, t), moshi_lib.ZERO_TOKEN, np.int32)
    space = tokenizer.encode(" ")[0]
    specials = set(tokenizer.specials.values())
    for row in range(b):
        n = int(mask[row].sum())
        if batch["index"][row] < 0 or n == 0:
            continue
        ids = [int(i) for i in batch["text"][row][batch["text_mask"][row]]
               if int(i) not in specials]
        words = split_words(ids, space)
        spans = batch["word_frames"][row][batch["word_mask"][row]]
        if len(words) != len(spans):
            raise ValueError(f"utterance {int(batch['index'][row])}: {len(words)} words in the "
                             f"transcript but {len(spans)} word timings")
        text[row, 0, :n] = aligned_text(words, spans[:, 0], int(spans[-1, 1]), n,
                                        int(m.text_padding_id), int(m.text_end_padding_id))
    audio = np.where(mask[:, None, :], codes, moshi_lib.ZERO_TOKEN).astype(np.int32)
    return np.concatenate([text, audio], axis=1)


def init_params(params: Any, config: Any) -> Any:
    """The tts hook: `audio_emb` from the codec's codebooks when task.codec.init_embeddings."""
    return speech_codes.init_moshi_embeddings(params, config)


def make_batches(config: Any, family: Any, split: str, finite: bool = False
                 ) -> speech_codes.MappedBatches:
    """`speech_codes` batches in the Moshi layout: {"codes" [B, 1+K, T], and with a speaker
    conditioner "speaker" [B] (-1 = absent)}; resumable. (Batches are flat: the loop shards
    each top-level array.)"""
    del family
    tokenizer = data_lib.make_tokenizer(config.data)
    speaker = SPEAKER in config.model.conditioners

    def layout(batch):
        out: dict[str, Any] = {"codes": stream_codes(config, batch, tokenizer)}
        if speaker:
            out[SPEAKER] = batch["speaker"]
        return out

    return speech_codes.MappedBatches(speech_codes.make_batches(config, split, finite), layout)


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The delayed-stream loss of `audiolm.tasks.codes` on the aligned streams."""
    streams = {"codes": batch["codes"]}
    if SPEAKER in batch:
        streams["conditions"] = {SPEAKER: batch[SPEAKER]}
    return codes_task.moshi_loss(module, params, streams, rng, config, train)


# ---------------------------------------------------------------------------------------------
# Generation


def _word_table(config: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, W, Lw] int32, lengths [B, W] int32; 0 past each row's words)."""
    tokenizer = data_lib.make_tokenizer(config.data)
    words = [transcript_words(tokenizer, t) for t in texts]
    for text, w in zip(texts, words):
        if not w:
            raise ValueError(f"texts: {text!r} has no word to speak")
    wmax = max(len(w) for w in words)
    lmax = max(len(x) for w in words for x in w)
    table = np.zeros((len(texts), wmax, lmax), np.int32)
    lengths = np.zeros((len(texts), wmax), np.int32)
    for i, w in enumerate(words):
        for j, x in enumerate(w):
            table[i, j, :len(x)] = x
            lengths[i, j] = len(x)
    return table, lengths


def make_generator(module: Any, config: Any, num_steps: int):
    """`compiled_generator` for the sampling settings and text ids of `config`."""
    return compiled_generator(module, moshi_sample.options_from_config(config),
                              int(config.model.text_padding_id),
                              int(config.model.text_end_padding_id), int(num_steps))


@functools.lru_cache(maxsize=4)
def compiled_generator(module: Any, options: moshi_sample.Options, pad: int, epad: int,
                       num_steps: int):
    """Jitted `generate(params, table [B, W, Lw], lengths [B, W], speakers [B] | None, rng) ->
    (tokens [B, 1+K, num_steps] per step, end [B] the frame of each row's end EPAD
    (num_steps if none))`: the forced-transcript loop of the module docstring, one
    `audiolm.sample.moshi.step` per frame (run twice: the free text sample decides, the forced
    token is what the frame keeps). Kept per settings: evaluations do not recompile."""

    def generate(params, table, lengths, speakers, rng):
        b = table.shape[0]
        rows = jnp.arange(b)
        n_words = jnp.sum(lengths > 0, axis=1)
        conditions = None if speakers is None else {SPEAKER: speakers}
        user = jnp.zeros((b, 0), jnp.int32)

        def body(carry, key):
            stream, word, pos, armed, end, s = carry
            _, free = moshi_sample.step(module, params, stream, user, key, conditions, options)
            sampled = free["tokens"][:, 0]
            done = end < num_steps
            in_word = pos > 0
            w = jnp.minimum(word, table.shape[1] - 1)
            length = lengths[rows, w]
            start_word = ~done & ~in_word & armed
            wants = ~done & ~in_word & ~armed & (sampled != pad)  # EPAD (or a word token)
            finishing = wants & (word >= n_words)
            p = jnp.where(start_word, 0, pos)
            token = table[rows, w, jnp.minimum(p, table.shape[2] - 1)]
            text = jnp.where(in_word | start_word, token, jnp.where(wants, epad, pad))
            advance = in_word | start_word
            nxt = jnp.where(advance, p + 1, pos)
            word_done = advance & (nxt >= length)
            new_word = jnp.where(word_done, word + 1, word)
            new_pos = jnp.where(word_done, 0, nxt)
            new_armed = wants & ~finishing
            new_end = jnp.where(finishing, s, end)
            stream, out = moshi_sample.step(module, params, stream, user, key, conditions,
                                            options, text_given=text)
            return (stream, new_word, new_pos, new_armed, new_end, s + 1), out["tokens"]

        init = (moshi_sample.init_stream(module, b), jnp.zeros((b,), jnp.int32),
                jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool),
                jnp.full((b,), num_steps, jnp.int32), jnp.int32(0))
        (_, _, _, _, end, _), tokens = jax.lax.scan(body, init, jax.random.split(rng, num_steps))
        return jnp.moveaxis(tokens, 0, 2), end

    return jax.jit(generate)


def generate_codes(module: Any, params: Any, config: Any, texts: Sequence[str],
                   speakers: Sequence[int], rng: jax.Array) -> list[np.ndarray]:
    """Codes [K, T_i] of each text spoken by its speaker profile (module docstring); at most
    sample.max_new_tokens - (largest delay + 1) frames each."""
    if len(texts) != len(speakers):
        raise ValueError(f"texts ({len(texts)}) and speakers ({len(speakers)}) must pair up")
    if not texts:
        return []
    spec = module.spec
    speakers = np.asarray(speakers, np.int32)
    num_speakers = int(config.data.num_speakers)
    if ((speakers < 0) | (speakers >= num_speakers)).any():
        raise ValueError(f"speakers {speakers.tolist()}: each must be a profile index in "
                         f"0..data.num_speakers-1={num_speakers - 1}")
    table, lengths = _word_table(config, texts)
    steps = int(config.sample.max_new_tokens)
    generate = make_generator(module, config, steps)
    cond = jnp.asarray(speakers) if SPEAKER in config.model.conditioners else None
    tokens, end = generate(params, jnp.asarray(table), jnp.asarray(lengths), cond, rng)
    codes = np.asarray(moshi_sample.generated_codes(spec, tokens))  # [B, 1+K, frames]
    end = np.asarray(end)
    frames = codes.shape[2]
    return [codes[i, 1:, :min(int(end[i]), frames)].astype(np.int32) for i in range(len(texts))]

