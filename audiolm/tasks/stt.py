"""Streaming speech-to-text on codec codes (`task.name = "stt"`, `model.family = "moshi"`):
Kyutai's delayed streams with the audio leading.

Streams: the espeak-aligned text stream of `audiolm.tasks.tts_moshi` (PAD, an EPAD before each
word, the word's tokens from its start frame on, an EPAD at the end of speech) and the K codec
codebooks of `audiolm.tasks.speech_codes`, all audio at delay 0 and the text delayed by
`model.delays[0]` = d >= 1 frames: the text of frame t is predicted having heard the audio up
to frame t + d. That delay is the recogniser's streaming delay, d / frame_rate seconds. The
model has no depformer (model.depformer.num_slices = 0): it predicts the text stream only.
Every batch is extended by d frames of absent audio (-1), so the last d text frames of each
utterance are learnt too (the streaming flush).

Loss: the text CE of the codes task's delayed-stream loss (`audiolm.tasks.codes.moshi_loss`,
train.loss.text_weight; no audio term without a depformer). In training,
train.loss.audio_time_masks spans of up to audio_time_width frames of the audio are made absent
(`mask_audio`, SpecAugment's time masks on codes).

Evaluators: "loss" and "stt_cer" (the name "cer" is the asr task's): greedy transcripts of the
split decoded frame by frame through the model's streaming step (`MoshiLM.step`, ring KV cache)
with each predicted text token fed back, the words read between PAD / EPAD tokens; written to
`workdir/stt_<split>.jsonl` (index, speaker, reference, hypothesis, cer) and
`workdir/stt_<split>.json` (corpus CER / WER, per-group scores of the espeak set,
delay_frames, delay_seconds), and summarised on stdout.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import data as data_lib
from audiolm.audio import features
from audiolm.config import check_float, check_int, check_schema, require
from audiolm.models import moshi as moshi_lib
from audiolm.tasks import asr, evaluators, speech_codes, tts_moshi
from audiolm.tasks import codes as codes_task
from audiolm.tasks.base import EvalContext

NAME = "stt"
EVALUATORS = ("loss", "stt_cer")
OPTIONAL_FIELDS = ("codec",)  # task.codec: the codec whose codes it models
# the Moshi stream loss, plus time masks on the audio (`mask_audio`; 0 = none)
LOSS_SCHEMA = dict(codes_task.MOSHI_LOSS_SCHEMA, audio_time_masks=0, audio_time_width=0)


def rules(config: Any) -> None:
    """Codec streams, text ids, the audio-leading delays, no depformer, loss weights."""
    speech_codes.check_section(config)
    m = config.model
    tts_moshi.check_codec_streams(config)
    tts_moshi.check_text_ids(config)
    require(int(m.depformer.num_slices) == 0, "model.depformer.num_slices",
            m.depformer.num_slices, "must be 0: stt predicts the text stream only")
    delays = list(m.delays)
    require(delays[0] >= 1 and not any(delays[1:]), "model.delays", delays,
            "stt needs the audio leading: every audio delay 0 and the text delay (the "
            "streaming delay, in frames) >= 1")
    require(m.fusion != "concat", "model.fusion", m.fusion,
            "stt decodes frame by frame; 'concat' is text-first")
    require(not len(m.conditioners), "model.conditioners", sorted(m.conditioners.keys()),
            "stt provides no condition: must be empty")
    check_schema(config, "train.loss", LOSS_SCHEMA)
    for key in codes_task.MOSHI_LOSS_SCHEMA:
        check_float(config, f"train.loss.{key}", lo=0.0)
    for key in ("audio_time_masks", "audio_time_width"):
        check_int(config, f"train.loss.{key}", lo=0)


def delay_frames(config: Any) -> int:
    return int(config.model.delays[0])


def delay_seconds(config: Any) -> float:
    """The streaming delay: text frame t is emitted after audio frame t + d."""
    return delay_frames(config) / speech_codes.frame_rate(config)


# ---------------------------------------------------------------------------------------------
# Batches and loss


def init_params(params: Any, config: Any) -> Any:
    """The task hook: `audio_emb` from the codec's codebooks when task.codec.init_embeddings."""
    return speech_codes.init_moshi_embeddings(params, config)


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    """`tts_moshi.make_batches` with d frames of absent streams (-1) appended (module
    docstring)."""
    tail_frames = delay_frames(config)

    def flush(batch):
        codes = batch["codes"]
        tail = np.full(codes.shape[:2] + (tail_frames,), moshi_lib.ZERO_TOKEN, np.int32)
        return dict(batch, codes=np.concatenate([codes, tail], axis=2))

    return speech_codes.MappedBatches(tts_moshi.make_batches(config, family, split, finite),
                                      flush)


def mask_audio(codes: jax.Array, rng: jax.Array, masks: int, width: int) -> jax.Array:
    """Time masking of the audio streams (SpecAugment on codes; training only): `masks` spans of
    up to `width` frames inside each row's audio become absent (-1, an exact zero embedding),
    so the text must come from the context around them. codes [B, 1+K, T] -> the same."""
    audio = codes[:, 1:]
    lengths = jnp.sum(audio[:, 0] >= 0, axis=-1).astype(jnp.int32)
    hit = features.random_spans(rng, masks, width, lengths, codes.shape[2])  # [B, T]
    audio = jnp.where(hit[:, None, :], moshi_lib.ZERO_TOKEN, audio)
    return jnp.concatenate([codes[:, :1], audio], axis=1)


def loss_fn(module: Any, params: Any, batch: Any, rng: jax.Array, config: Any, train: bool):
    """The text CE of the delayed streams, the audio time-masked in training
    (train.loss.audio_time_masks spans of up to audio_time_width frames)."""
    w = config.train.loss
    if train and w.audio_time_masks and w.audio_time_width:
        codes = mask_audio(jnp.asarray(batch["codes"]), rng, int(w.audio_time_masks),
                           int(w.audio_time_width))
        batch = {**batch, "codes": codes}
    return codes_task.moshi_loss(module, params, batch, rng, config, train)


# ---------------------------------------------------------------------------------------------
# Decoding


@functools.lru_cache(maxsize=4)
def compiled_transcriber(module: Any, pad: int):
    """Jitted `transcribe(params, audio [B, K, T] (-1 = absent)) -> text stream [B, T]`: greedy
    frame-by-frame decoding through `MoshiLM.step` (module docstring); the audio is followed by
    d absent frames so every text frame is emitted."""
    spec = module.spec
    d = int(spec.delays[0])

    def transcribe(params, audio):
        b, _, t = audio.shape
        audio = jnp.concatenate(
            [audio, jnp.full((b, audio.shape[1], d), moshi_lib.ZERO_TOKEN, jnp.int32)], axis=2)
        text = jnp.full((b, 1, t + d), pad, jnp.int32)
        inputs, _, _ = moshi_lib.delayed_inputs(spec, jnp.concatenate([text, audio], axis=1))

        def body(carry, c):
            state, prev = carry
            column = inputs[:, :, c]
            column = column.at[:, 0].set(jnp.where(c - 1 - d >= 0, prev, column[:, 0]))
            logits, _, state = module.apply({"params": params}, column[:, :, None], state,
                                            method=moshi_lib.MoshiLM.step)
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return (state, nxt), nxt

        init = (module.init_state(b), jnp.full((b,), pad, jnp.int32))
        _, preds = jax.lax.scan(body, init, jnp.arange(t + d))
        return jnp.moveaxis(preds, 0, 1)[:, d:d + t]  # prediction at column c is frame c - d

    return jax.jit(transcribe)


def stream_text(stream: Sequence[int], tokenizer: Any, pad: int, epad: int) -> str:
    """The words of a text stream: token runs between PAD / EPAD, joined by spaces."""
    words, cur = [], []
    for t in list(stream) + [pad]:
        if int(t) in (pad, epad):
            if cur:
                words.append(tokenizer.decode(cur))
            cur = []
        else:
            cur.append(int(t))
    return " ".join(w for w in words if w)


def transcribe(config: Any, module: Any, params: Any, split: str = "test",
               limit: int | None = None) -> list[dict[str, Any]]:
    """Greedy transcripts of `split` (the first `limit` utterances if given), in dataset order."""
    tokenizer = data_lib.make_tokenizer(config.data)
    dataset = data_lib.make_dataset(config.data, split)
    pad, epad = int(config.model.text_padding_id), int(config.model.text_end_padding_id)
    decode = compiled_transcriber(module, pad)
    rows = []
    for batch in speech_codes.make_batches(config, split, finite=True):
        keep = batch["index"] >= 0
        if limit is not None:
            keep &= batch["index"] < limit
        if not keep.any():
            continue
        audio = np.where(batch["codes_mask"][:, None], batch["codes"], moshi_lib.ZERO_TOKEN)
        streams = np.asarray(jax.device_get(decode(params, jnp.asarray(audio, jnp.int32))))
        for row in np.nonzero(keep)[0]:
            i = int(batch["index"][row])
            ref = dataset.text(i)
            n = int(batch["codes_mask"][row].sum())
            hyp = stream_text(streams[row, :n], tokenizer, pad, epad)
            rows.append({"index": i, "speaker": int(batch["speaker"][row]), "reference": ref,
                         "hypothesis": hyp,
                         "cer": asr.edit_distance(asr.normalize(ref), asr.normalize(hyp))
                         / max(len(asr.normalize(ref)), 1)})
    rows.sort(key=lambda r: r["index"])
    return rows


def score(config: Any, rows: Sequence[dict[str, Any]], split: str) -> dict[str, float]:
    scores = asr.error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    scores.update(asr.group_scores(rows, config, split))
    scores.update(delay_frames=float(delay_frames(config)), delay_seconds=delay_seconds(config))
    return scores


@evaluators.register("stt_cer")
def transcribe_and_score(ctx: EvalContext, params: Any, split: str = "test",
                         limit: int | None = None) -> dict[str, float]:
    """Transcribes `split`, writes the transcripts and scores, prints the summary, returns the
    corpus scores with the streaming delay."""
    rows = transcribe(ctx.config, ctx.module, params, split, limit)
    scores = score(ctx.config, rows, split)
    if jax.process_index() == 0:
        path = evaluators.write_jsonl(os.path.join(ctx.workdir, f"stt_{split}.jsonl"), rows)
        with open(os.path.join(ctx.workdir, f"stt_{split}.json"), "w") as f:
            json.dump(scores, f, indent=2)
        print(asr.summary(split, scores, rows, path), flush=True)
        print(f"  streaming delay: {scores['delay_seconds']:.3f} s "
              f"({int(scores['delay_frames'])} frames)", flush=True)
    return scores


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """`--mode=sample`: transcripts of the first sample.num_samples test utterances into
    workdir/samples/stt.jsonl; returns their scores and the streaming delay."""
    rows = transcribe(config, module, params, "test", int(config.sample.num_samples))
    evaluators.write_jsonl(os.path.join(workdir, "samples", "stt.jsonl"), rows)
    scores = score(config, rows, "test")
    return {"family": "moshi", "task": NAME, "num_samples": len(rows), "files": ["stt.jsonl"],
            **{k: scores[k] for k in ("cer", "wer", "delay_frames", "delay_seconds")}}
