"""Pattern-LM text-to-speech: the `tts` task (`audiolm.tasks.tts`) for model.family="pattern_lm".

The codec's codes of an utterance [K, T] are laid out by the model's pattern (`model.pattern`,
delay by default; any pattern with a leading special step can generate) and learnt by the
pattern LM's cross-entropy (`audiolm.tasks.codes.pattern_loss`), conditioned on

* the transcript, by cross-attention: conditioner ``text`` of type "text" (the byte text
  encoder, `audiolm.models.conditioners.ByteTextEncoder`) listed in
  `model.conditioning.cross_attention_ids`;
* the speaker, as a global condition: conditioner ``speaker`` of type "lookup" listed in
  `model.conditioning.global_ids`, row 0 = unknown speaker, row s + 1 = speaker profile s of
  the speech set (so num_classes >= data.num_speakers + 1).

Classifier-free guidance: each condition type is dropped to the null condition per sample with
probability `model.conditioning.cfg_dropout` while training; `sample.cfg_scale` guides the
sampler (`audiolm.sample.pattern_lm.sample`).

End of speech: the LM's vocabulary is the codec's codebook plus one END code (id = the codec's
codebook_size, so `model.pretransform.codebook_size` = codec codebook_size + 1). Every frame
after an utterance is END in all codebooks, and the loss covers the real frames and the first
END frame; generation runs `sample.max_new_tokens` frames and cuts each row at its first frame
holding an END code.

Batches (from `audiolm.tasks.speech_codes.make_batches`): codes [B, K, T + 1] (END after each
utterance), target_mask [B, T + 1], cond.text [B, L] (UTF-8 bytes + 1, 0 = pad) + cond.text.mask,
cond.speaker [B] (speaker + 1).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from audiolm import data as data_lib
from audiolm.config import check_int, get_path, require
from audiolm.models import conditioners as cond_lib
from audiolm.models import pattern_lm as lm
from audiolm.sample import pattern_lm as pattern_sample
from audiolm.tasks import codes as codes_task
from audiolm.tasks import speech_codes

TEXT_ID = "text"  # the transcript conditioner (cross-attention)
SPEAKER_ID = "speaker"  # the speaker conditioner (global)


def end_code(config: Any) -> int:
    """The END code id: the codec's codebook_size (= model.pretransform.codebook_size - 1)."""
    return int(config.model.pretransform.codebook_size) - 1


def rules(config: Any) -> None:
    """The pattern LM's fit to the codec codes and the tts conditioning (ConfigError)."""
    c = "model.conditioning"
    conds = get_path(config, f"{c}.conditioners")
    require(set(conds.keys()) == {TEXT_ID, SPEAKER_ID}, f"{c}.conditioners",
            sorted(conds.keys()), f"the tts batches feed exactly {[SPEAKER_ID, TEXT_ID]}")
    require(TEXT_ID in conds and conds[TEXT_ID].get("type") == "text",
            f"{c}.conditioners.{TEXT_ID}", conds.get(TEXT_ID),
            "the tts task reads the transcript through a conditioner 'text' of type 'text' "
            "(the byte text encoder)")
    require(TEXT_ID in tuple(get_path(config, f"{c}.cross_attention_ids")),
            f"{c}.cross_attention_ids", tuple(get_path(config, f"{c}.cross_attention_ids")),
            f"must list {TEXT_ID!r}: the transcript is read by cross-attention")
    text_len = check_int(config, f"{c}.conditioners.{TEXT_ID}.max_length", lo=1)
    max_text = int(get_path(config, "data.max_text_len"))
    require(text_len >= max_text - 2, f"{c}.conditioners.{TEXT_ID}.max_length", text_len,
            f"must be >= data.max_text_len - 2 = {max_text - 2} (the longest transcript the "
            "data keeps, without bos/eos): a shorter one cuts transcripts")
    require(SPEAKER_ID in conds and conds[SPEAKER_ID].get("type") == "lookup",
            f"{c}.conditioners.{SPEAKER_ID}", conds.get(SPEAKER_ID),
            "the tts task gives the speaker through a conditioner 'speaker' of type 'lookup'")
    require(SPEAKER_ID in tuple(get_path(config, f"{c}.global_ids")), f"{c}.global_ids",
            tuple(get_path(config, f"{c}.global_ids")),
            f"must list {SPEAKER_ID!r}: the speaker is a global condition")
    classes = check_int(config, f"{c}.conditioners.{SPEAKER_ID}.num_classes", lo=1)
    require(int(get_path(config, f"{c}.conditioners.{SPEAKER_ID}.min_val")) == 0,
            f"{c}.conditioners.{SPEAKER_ID}.min_val",
            get_path(config, f"{c}.conditioners.{SPEAKER_ID}.min_val"),
            "must be 0 (row 0 = unknown speaker, row s + 1 = speaker s)")
    if config.data.name == "speech_synth":
        speakers = int(config.data.num_speakers)
        require(classes >= speakers + 1, f"{c}.conditioners.{SPEAKER_ID}.num_classes", classes,
                f"must be >= data.num_speakers + 1 = {speakers + 1} (row 0 = unknown speaker)")

    p = "model.pretransform"
    require(get_path(config, f"{p}.type") == "codes", f"{p}.type", get_path(config, f"{p}.type"),
            "must be 'codes': the tts task reads the codes of task.codec")
    n_q = int(get_path(config, f"{p}.n_q"))
    want_q = int(get_path(config, "task.codec.num_codebooks"))
    require(n_q == want_q, f"{p}.n_q", n_q, f"must equal task.codec.num_codebooks={want_q}")
    card = int(speech_codes.codec_spec(config).quantizer.codebook_size)
    size = int(get_path(config, f"{p}.codebook_size"))
    require(size == card + 1, f"{p}.codebook_size", size,
            f"must be the codec's codebook_size + 1 = {card + 1} (the END code)")
    kind = config.model.pattern.kind
    require(lm.pattern_for(lm.spec_from_config(config.model), 2).starts_with_special,
            "model.pattern.kind", kind,
            "tts generates codes, so the pattern needs a leading special step (set "
            "model.pattern.kwargs.empty_initial >= 0)")


# ---------------------------------------------------------------------------------------------
# Batches and loss.


def pattern_batch(batch: Mapping[str, np.ndarray], config: Any, tokenizer: Any
                  ) -> dict[str, np.ndarray]:
    """A speech-codes batch (codes [B, K, T], codes_mask [B, T], text ids [B, L] + text_mask,
    speaker [B]) -> the pattern LM's (see the module docstring). Rows with no frame (padding
    of a finite pass) get an all-False target_mask."""
    codes = np.asarray(batch["codes"])
    mask = np.asarray(batch["codes_mask"]).astype(bool)
    b, k, t = codes.shape
    end = end_code(config)
    lengths = mask.sum(axis=1)
    frames = np.arange(t + 1)[None, :]
    real = frames < lengths[:, None]
    out_codes = np.full((b, k, t + 1), end, np.int32)
    out_codes[:, :, :t] = np.where(mask[:, None, :], codes, end)
    target = real | ((frames == lengths[:, None]) & (lengths[:, None] > 0))
    texts = [tokenizer.decode([int(i) for i, m in zip(ids, row_mask) if m])
             for ids, row_mask in zip(np.asarray(batch["text"]), np.asarray(batch["text_mask"]))]
    spec = config.model.conditioning.conditioners[TEXT_ID]
    text, text_mask = cond_lib.byte_tokenize(texts, int(spec.max_length))
    speaker = np.asarray(batch["speaker"]).astype(np.int32)
    return {"codes": out_codes, "target_mask": target, f"cond.{TEXT_ID}": text,
            f"cond.{TEXT_ID}.mask": text_mask,
            f"cond.{SPEAKER_ID}": np.maximum(speaker, -1) + 1}


def make_batches(config: Any, family: Any, split: str, finite: bool = False
                 ) -> speech_codes.MappedBatches:
    """The speech-codes iterator of a split seen as pattern-LM batches (resumable)."""
    del family
    tokenizer = data_lib.make_tokenizer(config.data)
    return speech_codes.MappedBatches(speech_codes.make_batches(config, split, finite),
                                      lambda batch: pattern_batch(batch, config, tokenizer))


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool):
    """Pattern cross-entropy over codebooks (+ the END frame), CFG dropout when training."""
    return codes_task.pattern_lm_loss(module, params, batch, rng, config, train)


# ---------------------------------------------------------------------------------------------
# Generation.


def cut_at_end(codes: np.ndarray, end: int) -> np.ndarray:
    """codes [K, T] -> [K, T'] with T' the first frame holding END in any codebook (T if none)."""
    hit = np.flatnonzero((np.asarray(codes) == end).any(axis=0))
    return np.asarray(codes[:, :int(hit[0]) if hit.size else codes.shape[1]], np.int32)


def generate_codes(module: Any, params: Any, config: Any, texts: Sequence[str],
                   speakers: Sequence[int], rng: jax.Array) -> list[np.ndarray]:
    """Speaks `texts` with speaker profiles `speakers` (-1 = unknown): codec codes [K, T_i] per
    text, T_i <= sample.max_new_tokens (cut at END). Rows go in chunks of data.batch_size (the
    last chunk padded by repetition: one compile per run) with `sample` settings (temperature,
    top_k, top_p, cfg_scale)."""
    if len(texts) != len(speakers):
        raise ValueError(f"generate_codes: {len(texts)} texts but {len(speakers)} speakers")
    s = config.sample
    conds = module.spec.conditioning.conditioners
    chunk = max(1, min(int(config.data.batch_size), len(texts)))
    end = end_code(config)
    out: list[np.ndarray] = []
    for start in range(0, len(texts), chunk):
        rows = list(range(start, min(start + chunk, len(texts))))
        rows += [rows[-1]] * (chunk - len(rows))
        raw = {TEXT_ID: [texts[i] for i in rows],
               SPEAKER_ID: [max(int(speakers[i]), -1) + 1 for i in rows]}
        conditions = cond_lib.prepare(conds, raw)
        key = jax.random.fold_in(rng, start)
        codes = np.asarray(jax.device_get(pattern_sample.sample(
            module, params, conditions, frames=int(s.max_new_tokens), rng=key,
            temperature=float(s.temperature), top_k=int(s.top_k), top_p=float(s.top_p),
            cfg_scale=float(s.cfg_scale))))
        out += [cut_at_end(codes[j], end) for j in range(min(chunk, len(texts) - start))]
    return out

