"""Speech recognition (`task.name = "asr"`): AuT + Thinker learn transcript | audio.

Batches: the data pipeline's (`audiolm.data.make_iterator`) or, with `data.name="synthetic"`,
the family's example batches (`audiolm.tasks.synthetic`): audio [B, S] f32, audio_mask [B, S],
text [B, L] ([bos, ids..., eos] then pad), text_mask [B, L] (plus speaker / index rows the loss
ignores). The loss builds the Thinker input [audio_start, audio x n, audio_end, text]
(`thinker_talker.asr_sequence`) and scores the transcript by next-token cross-entropy (times
train.loss.text_weight) plus the MoE load-balancing / z losses (train.moe_aux_weight /
train.moe_z_weight). With train.loss.text_input_noise > 0, transcript input tokens are replaced
during training so the Thinker must read the audio. With train.loss.ctc_weight > 0 an auxiliary
CTC loss over the transcript characters is added on the AuT's CTC head (`model.aut.
ctc_frames_per_token` frames per audio token), which makes the audio embeddings spell the
transcript. With train.loss.spec_time_masks / spec_freq_masks > 0 the training log-mels are
SpecAugment-masked (`audiolm.audio.features.spec_augment`).

Evaluators: "loss" (validation loss / token accuracy) and "cer": greedy transcripts of the split
(argmax, up to min(sample.max_new_tokens, data.max_text_len - 1) tokens or eos) written to
`workdir/transcripts_<split>.jsonl` (one {"index", "speaker", "reference", "hypothesis", "cer"}
per utterance, plus "ctc_hypothesis", the CTC head's best path, when the model has one) and
`workdir/asr_<split>.json` (corpus CER / WER, edit counts; on the espeak set also per group:
template / scrambled sentences, seen / unseen voices; "ctc_cer" of the CTC head), then prints a
short summary (scores, where the transcripts are, a few example lines).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from audiolm import data as data_lib
from audiolm.audio import features as features_lib
from audiolm.config import ConfigError, check_float, check_int, check_schema, get_path, require
from audiolm.models import aut as aut_lib
from audiolm.models import thinker_talker as tt
from audiolm.nn import losses
from audiolm.sample import rules as sample_rules
from audiolm.sample import thinker_talker as tt_sample
from audiolm.tasks import evaluators, synthetic
from audiolm.tasks.base import EvalContext

NAME = "asr"
EVALUATORS = ("loss", "cer")
LOSS_SCHEMA = dict(text_weight=0.0, text_input_noise=0.0, ctc_weight=0.0, spec_time_masks=0,
                   spec_time_width=0, spec_freq_masks=0, spec_freq_width=0)


def rules(config: Any) -> None:
    """train.loss of the ASR task: transcript CE and CTC weights, the input-noise rate and the
    SpecAugment masks."""
    check_schema(config, "train.loss", LOSS_SCHEMA)
    check_float(config, "train.loss.text_weight", lo=0.0)
    check_float(config, "train.loss.text_input_noise", lo=0.0, hi=1.0)
    ctc = check_float(config, "train.loss.ctc_weight", lo=0.0)
    if ctc > 0 and get_path(config, "model.family") == "thinker_talker":
        r = aut_lib.ctc_frames_per_token(get_path(config, "model"))
        require(r > 0, "train.loss.ctc_weight", ctc,
                f"needs a CTC head: model.aut.ctc_frames_per_token={r} must be > 0")
    for kind in ("time", "freq"):
        masks = check_int(config, f"train.loss.spec_{kind}_masks", lo=0, hi=16)
        width = check_int(config, f"train.loss.spec_{kind}_width", lo=0)
        require(masks == 0 or width > 0, f"train.loss.spec_{kind}_width", width,
                f"must be > 0 when train.loss.spec_{kind}_masks={masks} (a mask of width 0 "
                "masks nothing)")
    n_mels = get_path(config, "model.audio.n_mels") if "audio" in get_path(config, "model") \
        else None
    if n_mels is not None:
        width = get_path(config, "train.loss.spec_freq_width")
        require(width < n_mels, "train.loss.spec_freq_width", width,
                f"must be < model.audio.n_mels={n_mels} (one band must not mask every bin)")
    if "cer" in tuple(get_path(config, "task.evaluators")) + tuple(
            get_path(config, "task.final_evaluators")) and synthetic.is_synthetic(config):
        raise ConfigError(
            f"task.final_evaluators={tuple(config.task.final_evaluators)!r}: the 'cer' "
            "evaluator transcribes real utterances, but data.name='synthetic' has no "
            "transcripts; drop 'cer' or use speech data (e.g. data.name='speech_synth')")


# ---------------------------------------------------------------------------------------------
# Batches and loss.


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    """Resumable iterator of `split` (one ordered pass when `finite`)."""
    if synthetic.is_synthetic(config):
        return synthetic.make_batches(config, family, split, finite)
    return data_lib.make_iterator(config.data, split, train=not finite)


def corrupt_text_inputs(tokens: jax.Array, target_mask: jax.Array, rate: float,
                        rng: jax.Array) -> jax.Array:
    """Replaces each transcript input token (the target positions; bos is kept) with probability
    `rate` by a token drawn from the same row's transcript. Targets stay the originals: the
    Thinker cannot lean on its own text history alone and must read the audio (the template
    sentences of the speech set are otherwise guessable from the prefix).

    tokens [B, T] int32, target_mask [B, T] -> tokens [B, T].
    """
    b, t = tokens.shape
    flip_key, pick_key = jax.random.split(rng)
    is_text = target_mask > 0
    flip = is_text & jax.random.bernoulli(flip_key, rate, (b, t))
    # A random text position of the row: the k-th text position, k uniform in [0, count).
    count = jnp.maximum(jnp.sum(is_text, axis=1, keepdims=True), 1)
    k = jnp.floor(jax.random.uniform(pick_key, (b, t)) * count).astype(jnp.int32)
    text_positions = jnp.argsort(~is_text, axis=1, stable=True)  # text positions first, in order
    pos = jnp.take_along_axis(text_positions, k, axis=1)
    return jnp.where(flip, jnp.take_along_axis(tokens, pos, axis=1), tokens)


def ctc_loss(logits: jax.Array, frame_mask: jax.Array, labels: jax.Array,
             label_mask: jax.Array, blank_id: int) -> tuple[jax.Array, jax.Array]:
    """CTC negative log-likelihood per label character, over the rows where an alignment exists.

    logits [B, T, V], frame_mask [B, T] (a prefix of valid frames), labels [B, N] int,
    label_mask [B, N] (a prefix of valid labels; no label equals `blank_id`)
    -> (sum of the feasible rows' NLL / their label count, feasible rows [B] bool). A row needs
    T_b >= N_b + (repeated neighbours in its labels), else no path exists (a blank must separate
    repeats) and it is left out rather than contributing optax's log-epsilon floor.
    """
    frame_mask = jnp.asarray(frame_mask, bool)
    label_mask = jnp.asarray(label_mask, bool)
    per_row = optax.ctc_loss(logits.astype(jnp.float32), 1.0 - frame_mask.astype(jnp.float32),
                             labels, 1.0 - label_mask.astype(jnp.float32), blank_id=blank_id)
    n_labels = jnp.sum(label_mask, axis=1)
    repeats = jnp.sum(label_mask[:, 1:] & (labels[:, 1:] == labels[:, :-1]), axis=1)
    feasible = jnp.sum(frame_mask, axis=1) >= n_labels + repeats
    total = jnp.sum(jnp.where(feasible, n_labels, 0))
    return jnp.sum(jnp.where(feasible, per_row, 0.0)) / jnp.maximum(total, 1), feasible


def augment_features(feats: jax.Array, frame_lengths: jax.Array, loss_config: Any,
                     rng: jax.Array) -> jax.Array:
    """SpecAugment of the training log-mels per train.loss.spec_* (identity when all are 0)."""
    return features_lib.spec_augment(
        feats, frame_lengths, rng, time_masks=int(loss_config.spec_time_masks),
        time_width=int(loss_config.spec_time_width), freq_masks=int(loss_config.spec_freq_masks),
        freq_width=int(loss_config.spec_freq_width))


def loss_fn(module: Any, params: Any, batch: dict, rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Thinker next-token CE on the transcript given the audio, the optional CTC loss on the
    AuT's CTC head, plus the MoE aux losses."""
    model_config = config.model
    loss_config = config.train.loss
    noise_rng, augment_rng = jax.random.split(rng)
    feats, frame_lengths = tt.features_from_batch(model_config, batch)
    if train and (loss_config.spec_time_masks or loss_config.spec_freq_masks):
        feats = augment_features(feats, frame_lengths, loss_config, augment_rng)
    audio_lengths = jnp.sum(jnp.asarray(batch["audio_mask"]), axis=1)
    tokens, target = tt.asr_sequence(model_config, audio_lengths, batch["text"],
                                     batch["text_mask"], batch["audio"].shape[1])
    inputs = tokens
    noise = loss_config.text_input_noise
    if train and noise > 0:
        inputs = corrupt_text_inputs(tokens, target, noise, noise_rng)
    out = module.apply({"params": params}, inputs, feats, frame_lengths)
    # logits[:, t] predicts tokens[:, t + 1]
    ce, acc, n = losses.masked_cross_entropy(out["logits"][:, :-1], tokens[:, 1:],
                                             target[:, 1:])
    lb, z = out["aux"]["load_balance_loss"], out["aux"]["router_z_loss"]
    loss = (loss_config.text_weight * ce + config.train.moe_aux_weight * lb
            + config.train.moe_z_weight * z)
    metrics = {"text_ce": ce, "text_accuracy": acc, "text_targets": n,
               "load_balance_loss": lb, "router_z_loss": z}
    if loss_config.ctc_weight > 0:
        # Labels: the transcript ids between bos and eos; blank is the pad id (never a label).
        text = jnp.asarray(batch["text"], jnp.int32)[:, 1:]
        label_mask = jnp.asarray(batch["text_mask"], bool)[:, 1:] & (
            text != model_config.thinker.eos_token_id)
        ctc, feasible = ctc_loss(out["ctc_logits"], out["ctc_mask"], text, label_mask,
                                 model_config.thinker.pad_token_id)
        loss = loss + loss_config.ctc_weight * ctc
        metrics.update(ctc_loss=ctc, ctc_feasible=jnp.mean(feasible.astype(jnp.float32)))
    return loss, {"loss": loss, **metrics}


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """Transcripts of `sample.num_samples` clips (and speech through the Talker and Code2Wav
    when model.enable_audio_output); see `audiolm.sample.thinker_talker.write_samples`."""
    return tt_sample.write_samples(module, params, config, workdir)


# ---------------------------------------------------------------------------------------------
# Scoring.


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
    sequence is [audio_start, audio x n_b, audio_end, bos, pad ...]). The AuT runs once; each
    step runs the Thinker's full causal forward on the audio embeddings, reads the logits at
    every row's last written position and writes the argmax after it. Rows stop at eos (later
    ids are pad). No KV cache: the sequences are short.
    """
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
        embeds, _ = module.apply({"params": params}, feats, frame_lengths,
                                 method=lambda m, f, n: m.aut(f, n))

        def cond(carry):
            i, _, done = carry
            return (i < max_new) & ~jnp.all(done)

        def body(carry):
            i, tokens, done = carry
            logits = module.apply(
                {"params": params}, tokens, embeds,
                method=lambda m, t, e: m.thinker(t, audio_embeds=e)["logits"])
            pos = start + i
            nxt = sample_rules.sample_logits(logits[rows, pos], None, temperature=0.0)  # greedy
            nxt, done = sample_rules.stop_after_eos(nxt, done, th.eos_token_id, th.pad_token_id)
            tokens = tokens.at[rows, pos + 1].set(nxt)
            return i + 1, tokens, done

        _, tokens, _ = jax.lax.while_loop(
            cond, body, (jnp.int32(0), tokens, jnp.zeros((b,), bool)))
        idx = start[:, None] + 1 + jnp.arange(max_new)[None, :]
        return jnp.take_along_axis(tokens, idx, axis=1)

    return jax.jit(decode)


def make_ctc_decoder(module: Any, config: Any):
    """Returns jitted `decode(params, audio [B, S], audio_mask [B, S]) -> (ids [B, T], mask
    [B, T])`: the argmax of the AuT's CTC head per CTC frame (`ctc_collapse` turns a row into
    its transcript ids). A diagnostic of how well the encoder alone hears the characters."""
    model_config = config.model

    def heads(m, feats, frame_lengths):
        embeds, mask = m.aut(feats, frame_lengths)
        return m.ctc_head(embeds, mask)

    def decode(params, audio, audio_mask):
        feats, frame_lengths = tt.features_from_batch(model_config,
                                                      {"audio": audio, "audio_mask": audio_mask})
        logits, mask = module.apply({"params": params}, feats, frame_lengths, method=heads)
        return jnp.argmax(logits, axis=-1), mask

    return jax.jit(decode)


def ctc_collapse(ids: np.ndarray, mask: np.ndarray, blank_id: int) -> list[int]:
    """CTC best-path labels of one row: valid frames, repeats merged, blanks dropped."""
    out, prev = [], None
    for i in np.asarray(ids)[np.asarray(mask, bool)]:
        i = int(i)
        if i != prev and i != blank_id:
            out.append(i)
        prev = i
    return out


def ids_to_text(ids: np.ndarray, tokenizer: Any, eos_id: int) -> str:
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[:ids.index(eos_id)]
    return tokenizer.decode(ids)


def transcribe(config: Any, module: Any, params: Any, split: str = "test",
               limit: int | None = None) -> list[dict[str, Any]]:
    """Greedy transcripts of `split` (first `limit` utterances if given), in dataset order."""
    dataset = data_lib.make_dataset(config.data, split)
    tokenizer = data_lib.make_tokenizer(config.data)
    max_new = max(1, min(int(config.sample.max_new_tokens), int(config.data.max_text_len) - 1))
    decode = make_greedy_decoder(module, config, max_new, tokenizer.bos_id)
    ctc_decode = make_ctc_decoder(module, config) if module.ctc_head is not None else None
    it = data_lib.make_iterator(config.data, split, train=False, dataset=dataset)
    out = []
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    bar = tqdm.tqdm(total=total, desc=f"transcribing {split}", unit="utt", disable=None)
    for batch in it:
        keep = batch["index"] >= 0
        if limit is not None:
            keep &= batch["index"] < limit
        if not keep.any():
            continue
        audio, audio_mask = jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_mask"])
        ids = np.asarray(jax.device_get(decode(params, audio, audio_mask)))
        if ctc_decode is not None:
            ctc_ids, ctc_mask = jax.device_get(ctc_decode(params, audio, audio_mask))
        bar.update(int(keep.sum()))
        for row in np.nonzero(keep)[0]:
            i = int(batch["index"][row])
            ref = dataset.text(i)
            hyp = ids_to_text(ids[row], tokenizer, config.model.thinker.eos_token_id)
            out.append({"index": i, "speaker": int(batch["speaker"][row]), "reference": ref,
                        "hypothesis": hyp,
                        "cer": edit_distance(normalize(ref), normalize(hyp))
                        / max(len(normalize(ref)), 1)})
            if ctc_decode is not None:
                out[-1]["ctc_hypothesis"] = tokenizer.decode(ctc_collapse(
                    ctc_ids[row], ctc_mask[row], config.model.thinker.pad_token_id))
    bar.close()
    out.sort(key=lambda r: r["index"])
    return out


def group_scores(rows: Sequence[dict[str, Any]], config: Any, split: str) -> dict[str, float]:
    """CER / WER per group of the espeak set ({} for other data): "template" / "scrambled"
    sentences and "seen" / "unseen" voices (`speech_synth.utterance_groups`), as
    {"cer_<group>", "wer_<group>", "utterances_<group>"}."""
    if config.data.name != "speech_synth":
        return {}
    from audiolm.data import speech_synth

    groups = speech_synth.utterance_groups(speech_synth.generation_config_of(config.data), split)
    out: dict[str, float] = {}
    for field in ("sentence", "voice"):
        for value in sorted({g[field] for g in groups.values()}):
            sel = [r for r in rows if groups.get(r["reference"], {}).get(field) == value]
            if not sel:
                continue
            scores = error_rates([r["reference"] for r in sel], [r["hypothesis"] for r in sel])
            name = value if field == "sentence" else f"{value}_voices"
            out.update({f"cer_{name}": scores["cer"], f"wer_{name}": scores["wer"],
                        f"utterances_{name}": scores["utterances"]})
    return out


def summary(split: str, scores: dict[str, float], rows: Sequence[dict[str, Any]],
            transcripts: str, examples: int = 3) -> str:
    """The few lines a person reads at the end of a run: scores, groups, where, examples."""
    lines = [f"{split} CER {scores['cer']:.3f}  WER {scores['wer']:.3f}  over "
             f"{int(scores['utterances'])} utterances"]
    groups = [k[4:] for k in scores if k.startswith("cer_")]
    if groups:
        lines.append("  " + "  ".join(f"{g} {scores['cer_' + g]:.3f}" for g in groups)
                     + "  (CER per group)")
    if "ctc_cer" in scores:
        lines.append(f"  CTC head alone (best path): CER {scores['ctc_cer']:.3f}")
    lines.append(f"  transcripts: {transcripts}")
    for r in rows[:examples]:
        lines.append(f"  ref: {r['reference']}")
        lines.append(f"  hyp: {r['hypothesis']}")
    return "\n".join(lines)


@evaluators.register("cer")
def transcribe_and_score(ctx: EvalContext, params: Any, split: str = "test",
                         limit: int | None = None) -> dict[str, float]:
    """Transcribes `split`, writes the transcripts and scores, prints the summary, returns the
    corpus scores (plus the per-group scores of the espeak set)."""
    rows = transcribe(ctx.config, ctx.module, params, split, limit)
    scores = error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    scores.update(group_scores(rows, ctx.config, split))
    if rows and "ctc_hypothesis" in rows[0]:
        scores["ctc_cer"] = error_rates([r["reference"] for r in rows],
                                        [r["ctc_hypothesis"] for r in rows])["cer"]
    workdir = ctx.workdir
    transcripts = os.path.join(workdir, f"transcripts_{split}.jsonl")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(transcripts, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(workdir, f"asr_{split}.json"), "w") as f:
            json.dump(scores, f, indent=2)
        print(summary(split, scores, rows, transcripts), flush=True)
        if ctx.writer is not None:
            write_media(ctx.writer, ctx.config, split, rows, ctx.step)
    return scores


def write_media(writer: Any, config: Any, split: str, rows: Sequence[dict[str, Any]], step: int,
                count: int = 3) -> None:
    """TensorBoard summaries of the first `count` transcribed utterances of `split`: their audio,
    their log-mel features as an image, and a reference / hypothesis table."""
    dataset = data_lib.make_dataset(config.data, split)
    for r in rows[:count]:
        wav = dataset.audio(r["index"])
        tag = f"{split}/utterance_{r['index']}"
        writer.audio(tag, wav, int(config.data.sample_rate), step)
        mel, _ = features_lib.log_mel_from_config(wav, config.model.audio)
        writer.spectrogram(f"{tag}/log_mel", mel[0], step)
    lines = ["| # | reference | hypothesis | CER |", "|---|---|---|---|"]
    cell = lambda s: s.replace("|", "\\|")  # noqa: E731  (markdown table cell)
    lines += [f"| {r['index']} | {cell(r['reference'])} | {cell(r['hypothesis'])} | "
              f"{r['cer']:.2f} |" for r in rows[:20]]
    writer.text(f"{split}/transcripts", "\n".join(lines), step)
