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

Evaluators: "loss" (validation loss / token accuracy) and "cer": transcripts of the split (greedy,
or the joint CTC / attention beam search of `make_joint_decoder` when task.decode_beam > 1 or
task.decode_ctc_weight > 0; up to min(sample.max_new_tokens, data.max_text_len - 1) tokens or
eos) written to `workdir/transcripts_<split>.jsonl` (one {"index", "speaker", "reference",
"hypothesis", "cer"} per utterance, plus "ctc_hypothesis", the CTC head's best path, when the
model has one) and `workdir/asr_<split>.json` (corpus CER / WER, edit counts; on the espeak set
also per group: template / scrambled sentences, seen / unseen voices; "ctc_cer" of the CTC head;
"decoding", in words), then prints a short summary (scores, the decoding, where the transcripts
are, a few example lines).
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
# Test-time decoding (optional task fields, these defaults when absent): beam width, weight of the
# CTC prefix score in the joint score, attention candidates per beam (`make_joint_decoder`).
# beam 1 with ctc weight 0 is the greedy decoder.
DECODE_DEFAULTS = dict(decode_beam=1, decode_ctc_weight=0.0, decode_candidates=8)
OPTIONAL_FIELDS = tuple(DECODE_DEFAULTS)  # task.decode_*: absent = greedy


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
    beam, ctc_weight, _ = decode_options(config)
    if ctc_weight > 0 and get_path(config, "model.family") == "thinker_talker":
        r = aut_lib.ctc_frames_per_token(get_path(config, "model"))
        require(r > 0, "task.decode_ctc_weight", ctc_weight,
                f"needs a CTC head: model.aut.ctc_frames_per_token={r} must be > 0")
    if "cer" in tuple(get_path(config, "task.evaluators")) + tuple(
            get_path(config, "task.final_evaluators")) and synthetic.is_synthetic(config):
        raise ConfigError(
            f"task.final_evaluators={tuple(config.task.final_evaluators)!r}: the 'cer' "
            "evaluator transcribes real utterances, but data.name='synthetic' has no "
            "transcripts; drop 'cer' or use speech data (e.g. data.name='speech_synth')")


def decode_options(config: Any) -> tuple[int, float, int]:
    """(task.decode_beam, task.decode_ctc_weight, task.decode_candidates), validated; the
    DECODE_DEFAULTS for fields the task section does not hold."""
    task = get_path(config, "task")
    beam = check_int(config, "task.decode_beam", lo=1) if "decode_beam" in task \
        else DECODE_DEFAULTS["decode_beam"]
    weight = check_float(config, "task.decode_ctc_weight", lo=0.0, hi=1.0) \
        if "decode_ctc_weight" in task else DECODE_DEFAULTS["decode_ctc_weight"]
    candidates = check_int(config, "task.decode_candidates", lo=1) \
        if "decode_candidates" in task else DECODE_DEFAULTS["decode_candidates"]
    return beam, weight, candidates


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


def decoder_prompt(module: Any, model_config: Any, params: Any, audio: jax.Array,
                   audio_mask: jax.Array, bos_id: int, text_len: int):
    """What both test decoders start from: (tokens [B, L] in the training layout with a text of
    [bos] only, start [B] = each row's bos position, AuT embeddings [B, N, D] and their mask
    [B, N]); the AuT runs once."""
    b, samples = audio.shape
    feats, frame_lengths = tt.features_from_batch(model_config,
                                                  {"audio": audio, "audio_mask": audio_mask})
    audio_lengths = jnp.sum(audio_mask, axis=1)
    text = jnp.zeros((b, text_len), jnp.int32).at[:, 0].set(bos_id)
    text_mask = jnp.zeros((b, text_len), bool).at[:, 0].set(True)
    tokens, _ = tt.asr_sequence(model_config, audio_lengths, text, text_mask, samples)
    start = tt.audio_token_count(model_config, audio_lengths.astype(jnp.int32)) + 2  # bos
    embeds, embed_mask = module.apply({"params": params}, feats, frame_lengths,
                                      method=lambda m, f, n: m.aut(f, n))
    return tokens, start, embeds, embed_mask


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
        tokens, start, embeds, _ = decoder_prompt(module, model_config, params, audio,
                                                  audio_mask, bos_id, text_len)
        b = audio.shape[0]
        rows = jnp.arange(b)

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


# ---------------------------------------------------------------------------------------------
# Joint CTC / attention beam search (hybrid CTC/attention decoding, Watanabe et al. 2017): the
# Thinker proposes, the CTC head's prefix probability vetoes what the audio does not say.


def ctc_prefix_start(log_probs: jax.Array, frame_mask: jax.Array, blank_id: int,
                     hyps: int) -> tuple[jax.Array, jax.Array]:
    """CTC forward variables of the empty prefix, for `hyps` hypotheses per row.

    log_probs [B, T, V] (log-softmax over V), frame_mask [B, T] (a prefix of valid frames) ->
    (r_label, r_blank) [B, hyps, T]: log P(frames 0..t emit the prefix, frame t in its last
    label / in a blank). The empty prefix is all blanks; frames past a row's length repeat the
    last valid value (they emit nothing).
    """
    blank = jnp.where(frame_mask, log_probs[..., blank_id], 0.0)
    r_blank = jnp.broadcast_to(jnp.cumsum(blank, axis=1)[:, None], (blank.shape[0], hyps,
                                                                     blank.shape[1]))
    return jnp.full_like(r_blank, -jnp.inf), r_blank


def ctc_prefix_scores(log_probs: jax.Array, frame_mask: jax.Array, r_label: jax.Array,
                      r_blank: jax.Array, last: jax.Array, empty: jax.Array, labels: jax.Array,
                      blank_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CTC prefix scores of each hypothesis g extended by each candidate label c.

    log_probs [B, T, V], frame_mask [B, T]; the forward variables of g, r_label / r_blank
    [B, H, T] (`ctc_prefix_start`, or this function's outputs); last [B, H] int (g's last label,
    any value when g is empty); empty: bool scalar (g is the empty prefix); labels [B, H, C] int.
    Returns (psi [B, H, C], r_label [B, H, C, T], r_blank [B, H, C, T]): psi = log P(the frames
    start with g + c, any continuation), the forward variables of g + c. A candidate equal to the
    blank has psi = -inf. The full probability of g (its score at eos) is
    `ctc_full_score(r_label, r_blank)`.
    """
    b, t, _ = log_probs.shape
    _, h, c = labels.shape
    emit = jnp.take_along_axis(log_probs, labels.reshape(b, 1, h * c), axis=2)
    emit = jnp.moveaxis(emit.reshape(b, t, h, c), 1, 0)  # [T, B, H, C]: log x_t(c)
    blank = jnp.moveaxis(log_probs[..., blank_id], 1, 0)[:, :, None, None]  # [T, B, 1, 1]
    valid = jnp.moveaxis(jnp.asarray(frame_mask, bool), 1, 0)[:, :, None, None]
    # g's variables at frame t - 1; before frame 0 only the empty prefix has probability 1.
    before = jnp.where(empty, 0.0, -jnp.inf) * jnp.ones((b, h, 1), jnp.float32)
    prev_label = jnp.concatenate([jnp.full_like(before, -jnp.inf), r_label[..., :-1]], axis=-1)
    prev_blank = jnp.concatenate([before, r_blank[..., :-1]], axis=-1)
    # phi_t: g is complete by frame t - 1 and c may start at t; a repeated label needs a blank
    # between the two.
    repeat = (labels == last[..., None]) & ~empty
    phi = jnp.where(repeat[None], jnp.moveaxis(prev_blank, -1, 0)[..., None],
                    jnp.moveaxis(jnp.logaddexp(prev_blank, prev_label), -1, 0)[..., None])
    start = jnp.where(valid, phi + emit, -jnp.inf)  # c's first frame is t
    psi = jax.nn.logsumexp(start, axis=0)

    def frame(carry, xs):
        label, blank_ = carry
        phi_t, emit_t, blank_t, valid_t = xs
        new_label = jnp.logaddexp(label, phi_t) + emit_t
        new_blank = jnp.logaddexp(blank_, label) + blank_t
        carry = (jnp.where(valid_t, new_label, label), jnp.where(valid_t, new_blank, blank_))
        return carry, carry

    init = jnp.full((b, h, c), -jnp.inf, jnp.float32)
    _, (new_label, new_blank) = jax.lax.scan(frame, (init, init), (phi, emit, blank, valid))
    psi = jnp.where(labels == blank_id, -jnp.inf, psi)
    return psi, jnp.moveaxis(new_label, 0, -1), jnp.moveaxis(new_blank, 0, -1)


def ctc_full_score(r_label: jax.Array, r_blank: jax.Array) -> jax.Array:
    """log P(the frames emit exactly the prefix): [..., T] forward variables -> [...]."""
    return jnp.logaddexp(r_label[..., -1], r_blank[..., -1])


def joint_beam_search(thinker_logits: Any, tokens: jax.Array, start: jax.Array,
                      ctc_log_probs: jax.Array | None, ctc_mask: jax.Array | None, *,
                      max_new: int, beam: int, candidates: int, ctc_weight: float, eos_id: int,
                      pad_id: int) -> jax.Array:
    """Beam search over Thinker tokens with the joint score
    (1 - ctc_weight) * log p_att(prefix) + ctc_weight * log p_ctc(prefix).

    thinker_logits(tokens [B * beam, L]) -> logits [B * beam, L, V] (row b * beam + k is
    hypothesis k of row b); tokens [B, L], the input with the first output to be written at
    start[b] + 1 (start [B]: the bos position); ctc_log_probs [B, T, V] log-softmax of the CTC
    head (blank = pad_id) and ctc_mask [B, T], None when ctc_weight is 0. Each step takes the
    top `candidates` tokens of every live hypothesis by attention log-prob, scores them (eos with
    the full CTC probability of the prefix, others with their CTC prefix probability) and keeps
    the best `beam`; a finished hypothesis keeps its score and writes pad. A row stops when its
    best finished score is no lower than every live one (scores never rise). Returns ids
    [B, max_new] of each row's best finished hypothesis (the best unfinished one if none
    finished within max_new), after eos pad, like the greedy decoder.
    """
    b, length = tokens.shape
    k = beam
    use_ctc = ctc_weight > 0
    rows = jnp.arange(b * k)
    tokens = jnp.repeat(tokens, k, axis=0)
    pos0 = jnp.repeat(start, k)
    vocab = jax.eval_shape(thinker_logits, tokens).shape[-1]
    c = min(candidates, vocab)
    # Only the first hypothesis exists at the start; the others enter through the first top-k.
    score = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf) * jnp.ones((b, 1), jnp.float32)
    att = jnp.zeros((b, k), jnp.float32)
    ctc = jnp.zeros((b, k), jnp.float32)
    done = jnp.zeros((b, k), bool)
    last = jnp.full((b, k), pad_id, jnp.int32)
    if use_ctc:
        r_label, r_blank = ctc_prefix_start(ctc_log_probs, ctc_mask, pad_id, k)
    else:  # no CTC state to carry
        r_label = r_blank = jnp.zeros((b, k, 0), jnp.float32)

    def best_finished(score, done):
        return jnp.max(jnp.where(done, score, -jnp.inf), axis=1)

    def cond(carry):
        i, _, score, _, _, done, *_ = carry
        settled = best_finished(score, done) >= jnp.max(jnp.where(done, -jnp.inf, score), axis=1)
        return (i < max_new) & ~jnp.all(settled)

    def body(carry):
        i, tokens, score, att, ctc, done, last, r_label, r_blank = carry
        logits = thinker_logits(tokens)[rows, pos0 + i]
        att_lp, cand = jax.lax.top_k(jax.nn.log_softmax(logits.astype(jnp.float32)), c)
        att_lp, cand = att_lp.reshape(b, k, c), cand.reshape(b, k, c)
        att_new = att[..., None] + att_lp
        if use_ctc:
            psi, label_new, blank_new = ctc_prefix_scores(
                ctc_log_probs, ctc_mask, r_label, r_blank, last, i == 0, cand, pad_id)
            psi = jnp.where(cand == eos_id, ctc_full_score(r_label, r_blank)[..., None], psi)
            total = ctc_weight * psi
            if ctc_weight < 1:
                total = total + (1 - ctc_weight) * att_new
        else:
            psi, total = jnp.zeros_like(att_new), att_new
        # A hypothesis that does not exist yet (score -inf at the start) proposes nothing.
        total = jnp.where(jnp.isfinite(score)[..., None], total, -jnp.inf)
        # A finished hypothesis continues once, with pad, at its own score.
        first = jnp.arange(c) == 0
        finished = done[..., None]
        total = jnp.where(finished, jnp.where(first, score[..., None], -jnp.inf), total)
        cand = jnp.where(finished, pad_id, cand)
        att_new = jnp.where(finished, att[..., None], att_new)
        psi = jnp.where(finished, ctc[..., None], psi)
        score, pick = jax.lax.top_k(total.reshape(b, k * c), k)  # [B, K]
        origin = pick // c

        def chosen(x):  # [B, K, C, ...] -> the picked [B, K, ...]
            flat = x.reshape((b, k * c) + x.shape[3:])
            return jnp.take_along_axis(flat, pick.reshape((b, k) + (1,) * (x.ndim - 3)), axis=1)

        token = chosen(cand)
        tokens = jnp.take_along_axis(tokens.reshape(b, k, length), origin[..., None], axis=1)
        tokens = tokens.reshape(b * k, length).at[rows, pos0 + i + 1].set(token.reshape(-1))
        done = jnp.take_along_axis(done, origin, axis=1) | (token == eos_id)
        if use_ctc:
            r_label, r_blank = chosen(label_new), chosen(blank_new)
        return (i + 1, tokens, score, chosen(att_new), chosen(psi), done, token, r_label,
                r_blank)

    carry = (jnp.int32(0), tokens, score, att, ctc, done, last, r_label, r_blank)
    _, tokens, score, _, _, done, *_ = jax.lax.while_loop(cond, body, carry)
    any_finished = jnp.isfinite(best_finished(score, done))
    best = jnp.where(any_finished, jnp.argmax(jnp.where(done, score, -jnp.inf), axis=1),
                     jnp.argmax(score, axis=1))
    tokens = tokens.reshape(b, k, length)[jnp.arange(b), best]
    idx = start[:, None] + 1 + jnp.arange(max_new)[None, :]
    return jnp.take_along_axis(tokens, idx, axis=1)


def make_joint_decoder(module: Any, config: Any, max_new: int, bos_id: int, beam: int,
                       ctc_weight: float, candidates: int):
    """Returns jitted `decode(params, audio [B, S], audio_mask [B, S]) -> ids [B, max_new]`:
    `joint_beam_search` on the greedy decoder's layout (the AuT once; the Thinker's full causal
    forward on the [B * beam] hypotheses each step), the CTC scores from the AuT's CTC head.
    beam=1, ctc_weight=0 gives the greedy decoder's ids."""
    if not (isinstance(beam, int) and beam >= 1):
        raise ValueError(f"beam={beam!r}: must be an int >= 1")
    if not (isinstance(candidates, int) and candidates >= 1):
        raise ValueError(f"candidates={candidates!r}: must be an int >= 1")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight={ctc_weight!r}: must be in [0, 1]")
    if ctc_weight > 0 and module.ctc_head is None:
        raise ValueError(f"ctc_weight={ctc_weight!r}: the model has no CTC head "
                         "(model.aut.ctc_frames_per_token=0); use ctc_weight=0")
    model_config = config.model
    th = model_config.thinker
    text_len = max_new + 1

    def decode(params, audio, audio_mask):
        tokens, start, embeds, embed_mask = decoder_prompt(module, model_config, params, audio,
                                                           audio_mask, bos_id, text_len)
        ctc_log_probs = ctc_mask = None
        if ctc_weight > 0:
            ctc_logits, ctc_mask = module.apply({"params": params}, embeds, embed_mask,
                                                method=lambda m, e, n: m.ctc_head(e, n))
            ctc_log_probs = jax.nn.log_softmax(ctc_logits.astype(jnp.float32), axis=-1)
        hyp_embeds = jnp.repeat(embeds, beam, axis=0)

        def thinker_logits(tokens):
            return module.apply({"params": params}, tokens, hyp_embeds,
                                method=lambda m, t, e: m.thinker(t, audio_embeds=e)["logits"])

        return joint_beam_search(thinker_logits, tokens, start, ctc_log_probs, ctc_mask,
                                 max_new=max_new, beam=beam, candidates=candidates,
                                 ctc_weight=float(ctc_weight), eos_id=th.eos_token_id,
                                 pad_id=th.pad_token_id)

    return jax.jit(decode)


def ids_to_text(ids: np.ndarray, tokenizer: Any, eos_id: int) -> str:
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[:ids.index(eos_id)]
    return tokenizer.decode(ids)


def decoding_name(config: Any) -> str:
    """How `transcribe` decodes under config.task's decode_* fields, in words."""
    beam, ctc_weight, candidates = decode_options(config)
    if beam == 1 and ctc_weight == 0:
        return "greedy decoding"
    return (f"joint CTC/attention beam search: beam {beam}, CTC weight {ctc_weight:g}, "
            f"{candidates} candidates per beam")


def transcribe(config: Any, module: Any, params: Any, split: str = "test",
               limit: int | None = None) -> list[dict[str, Any]]:
    """Transcripts of `split` (first `limit` utterances if given), in dataset order: greedy, or
    the joint CTC/attention beam search when task.decode_beam > 1 or task.decode_ctc_weight > 0
    (`decoding_name`)."""
    dataset = data_lib.make_dataset(config.data, split)
    tokenizer = data_lib.make_tokenizer(config.data)
    max_new = max(1, min(int(config.sample.max_new_tokens), int(config.data.max_text_len) - 1))
    beam, ctc_weight, candidates = decode_options(config)
    if beam == 1 and ctc_weight == 0:
        decode = make_greedy_decoder(module, config, max_new, tokenizer.bos_id)
    else:
        decode = make_joint_decoder(module, config, max_new, tokenizer.bos_id, beam, ctc_weight,
                                    candidates)
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
            transcripts: str, examples: int = 3, decoding: str = "greedy decoding") -> str:
    """The few lines a person reads at the end of a run: scores, groups, where, examples."""
    lines = [f"{split} CER {scores['cer']:.3f}  WER {scores['wer']:.3f}  over "
             f"{int(scores['utterances'])} utterances ({decoding})"]
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
        decoding = decoding_name(ctx.config)
        with open(os.path.join(workdir, f"asr_{split}.json"), "w") as f:
            json.dump({**scores, "decoding": decoding}, f, indent=2)
        print(summary(split, scores, rows, transcripts, decoding=decoding), flush=True)
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
