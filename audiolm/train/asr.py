"""Speech recognition glue for the main job: AuT + Thinker on audio/transcript batches.

Training batches are the data pipeline's (`audiolm.data.make_iterator`): audio [B, S] f32,
audio_mask [B, S], text [B, L] ([bos, ids..., eos] then pad), text_mask [B, L] (plus speaker /
index rows the loss ignores); the `thinker_talker` family's `loss_fn` turns them into the
[audio_start, audio x n, audio_end, text] sequence itself.

`transcribe_and_score` decodes held-out test utterances greedily (argmax, up to
min(sample.max_new_tokens, data.max_text_len - 1) tokens or eos) and writes
`workdir/transcripts_test.jsonl` (one {"index", "speaker", "reference", "hypothesis", "cer"} per
utterance) and `workdir/asr_test.json` (corpus CER / WER, edit counts).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging


def make_batches(config: Any, split: str, finite: bool = False):
    """The data pipeline's resumable iterator of `split` (one ordered pass when `finite`)."""
    from audiolm import data as data_lib

    return data_lib.make_iterator(config.data, split, train=not finite)


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def normalize(text: str) -> str:
    """Lower case, single spaces: transcripts are scored on characters, not formatting."""
    return " ".join(text.lower().split())


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus character and word error rates: total edits / total reference length."""
    char_edits = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps))
    chars = sum(len(normalize(r)) for r in refs)
    word_edits = sum(edit_distance(normalize(r).split(), normalize(h).split())
                     for r, h in zip(refs, hyps))
    words = sum(len(normalize(r).split()) for r in refs)
    return {"cer": char_edits / max(chars, 1), "wer": word_edits / max(words, 1),
            "char_edits": float(char_edits), "ref_chars": float(chars),
            "utterances": float(len(refs))}


def make_greedy_decoder(module: Any, config: Any, max_new: int, bos_id: int):
    """Returns jitted `decode(params, audio [B, S], audio_mask [B, S]) -> ids [B, max_new]`.

    The Thinker input is the training layout (`asr_sequence` with a text of [bos] only, so the
    sequence is [audio_start, audio x n_b, audio_end, bos, pad ...]); each step runs the full
    causal forward, reads the logits at every row's last written position and writes the argmax
    after it. Rows stop at eos (later ids are pad). No KV cache: the sequences are short.
    """
    from audiolm.models import thinker_talker as tt

    model_config = config.model
    th = model_config.thinker
    text_len = max_new + 1

    def decode(params, audio, audio_mask):
        b, samples = audio.shape
        feats, frame_lengths = tt.features_from_batch(model_config,
                                                      {"audio": audio, "audio_mask": audio_mask})
        audio_lengths = jnp.sum(audio_mask, axis=1)
        text = jnp.zeros((b, text_len), jnp.int32).at[:, 0].set(bos_id)
        text_mask = jnp.zeros((b, text_len), bool).at[:, 0].set(True)
        tokens, _ = tt.asr_sequence(model_config, audio_lengths, text, text_mask, samples)
        start = tt.audio_token_count(model_config, audio_lengths.astype(jnp.int32)) + 2  # bos
        rows = jnp.arange(b)

        def cond(carry):
            i, _, done = carry
            return (i < max_new) & ~jnp.all(done)

        def body(carry):
            i, tokens, done = carry
            logits = module.apply({"params": params}, tokens, feats, frame_lengths)["logits"]
            pos = start + i
            nxt = jnp.argmax(logits[rows, pos].astype(jnp.float32), axis=-1).astype(jnp.int32)
            nxt = jnp.where(done, th.pad_token_id, nxt)
            tokens = tokens.at[rows, pos + 1].set(nxt)
            return i + 1, tokens, done | (nxt == th.eos_token_id)

        _, tokens, _ = jax.lax.while_loop(
            cond, body, (jnp.int32(0), tokens, jnp.zeros((b,), bool)))
        idx = start[:, None] + 1 + jnp.arange(max_new)[None, :]
        return jnp.take_along_axis(tokens, idx, axis=1)

    return jax.jit(decode)


def ids_to_text(ids: np.ndarray, tokenizer: Any, eos_id: int) -> str:
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[:ids.index(eos_id)]
    return tokenizer.decode(ids)


def transcribe(config: Any, module: Any, params: Any, split: str = "test",
               limit: int | None = None) -> list[dict[str, Any]]:
    """Greedy transcripts of `split` (first `limit` utterances if given), in dataset order."""
    from audiolm import data as data_lib
    from audiolm.data.tokenizer import make_tokenizer

    dataset = data_lib.make_dataset(config.data, split)
    tokenizer = make_tokenizer(data_lib._resolve(config.data))
    max_new = max(1, min(int(config.sample.max_new_tokens), int(config.data.max_text_len) - 1))
    decode = make_greedy_decoder(module, config, max_new, tokenizer.bos_id)
    it = data_lib.make_iterator(config.data, split, train=False, dataset=dataset)
    out = []
    for batch in it:
        keep = batch["index"] >= 0
        if limit is not None:
            keep &= batch["index"] < limit
        if not keep.any():
            continue
        ids = np.asarray(jax.device_get(decode(params, jnp.asarray(batch["audio"]),
                                                jnp.asarray(batch["audio_mask"]))))
        for row in np.nonzero(keep)[0]:
            i = int(batch["index"][row])
            ref = dataset.text(i)
            hyp = ids_to_text(ids[row], tokenizer, config.model.thinker.eos_token_id)
            out.append({"index": i, "speaker": int(batch["speaker"][row]), "reference": ref,
                        "hypothesis": hyp,
                        "cer": edit_distance(normalize(ref), normalize(hyp))
                        / max(len(normalize(ref)), 1)})
    out.sort(key=lambda r: r["index"])
    return out


def transcribe_and_score(exp: Any, params: Any, workdir: str, split: str = "test",
                         limit: int | None = None) -> dict[str, float]:
    """Transcribes `split`, writes the transcripts and scores, returns the corpus scores."""
    rows = transcribe(exp.config, exp.module, params, split, limit)
    scores = error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, f"transcripts_{split}.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(workdir, f"asr_{split}.json"), "w") as f:
            json.dump(scores, f, indent=2)
    for r in rows[:5]:
        logging.info("ref: %s\n     hyp: %s", r["reference"], r["hypothesis"])
    logging.info("%s CER %.4f  WER %.4f over %d utterances", split, scores["cer"], scores["wer"],
                 len(rows))
    print(f"{split} CER {scores['cer']:.4f} WER {scores['wer']:.4f} over {len(rows)} utterances "
          f"(transcripts: {os.path.join(workdir, f'transcripts_{split}.jsonl')})", flush=True)
    return scores
