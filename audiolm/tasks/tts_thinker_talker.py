"""Thinker-Talker text-to-speech (task "tts", family thinker_talker): the Talker and its code
predictor learn to speak a transcript fed from the Thinker, as Qwen3-Omni feeds it.

One utterance is laid out exactly as `audiolm.sample.thinker_talker.SpeechSampler` generates it
(both call `talker_inputs`, the one implementation of the prompt):

  Thinker   reads the transcript [bos, ids..., eos] (the data tokenizer's ids);
  Talker    prefill = the transcript projected (text_projection of the Thinker's embeddings,
            or hidden_projection of its `model.talker.accept_hidden_layer` state when
            `sample.extra.prompt_projection = "hidden"`), then the head [tts_pad x 4, tts_bos,
            first id] + codec [nothink, think_bos, think_eos, speaker, codec_pad, codec_bos];
            then one input per codec frame t: the sum of frame t's code embeddings plus the
            "trailing" text (the next transcript id, then tts_eos, then tts_pad).
  targets   the output at codec_bos predicts frame 0, the output after frame t predicts frame
            t + 1 and, after the last frame, codec_eos: codebook 0 by `codec_head` (special ids
            but codec_eos masked, as when sampling), codebooks 1..K-1 by the code predictor
            teacher-forced on the frame.

The speaker is a conditioning id: speech-set speaker profile v speaks with codec id
`sample.extra.speaker_ids[v]` (presets give them; `audiolm.presets.thinker_talker`), so voices
are selectable at generation. Codes are the task codec's (`config.task.codec`,
`audiolm.tasks.speech_codes`): `model.talker.num_codebooks` / `codebook_size` must match it.
Generation ends in that codec's decoder (`stream`: waveform chunks as frames come).

`train.loss` (`LOSS_SCHEMA`): codebook0_weight, predictor_weight (the frame CEs), text_weight
(the Thinker's next-token CE on the transcript; 0 = none), train_thinker (1 = the Thinker's
params are trained with the Talker, 0 = frozen: no gradient reaches them, and
their weight decay (`train.weight_decay`, or `train.param_groups.thinker.weight_decay`) must be
0 so that decoupled decay does not move them either).

Qwen3-Omni's setting is a frozen Thinker that has already learnt (train_thinker=0, started from
the main job): `--config.init_from=runs/asr_base "--config.init_from_subtrees=('aut','thinker')"`
restores the main job's (`configs/thinker_talker.py:variant=tiny_asr`) AuT and Thinker, whose
sizes `tts_speech` shares; the Talker, code predictor, Code2Wav (and the AuT's CTC head, unused
here) start from the scratch init (`audiolm.train.checkpoint`, partial init).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiolm.config import check_float, check_schema, get_path, require
from audiolm.models import codec as codec_lib
from audiolm.models import talker as talker_lib
from audiolm.nn import losses
from audiolm.sample import thinker_talker as tt_sample
from audiolm.tasks import speech_codes

LOSS_SCHEMA = dict(codebook0_weight=0.0, predictor_weight=0.0, text_weight=0.0,
                   train_thinker=0.0)
HEAD = 6  # Talker prompt head: [tts_pad x 4, tts_bos, first id] + 6 codec ids


def rules(config: Any) -> None:
    """train.loss, the speech-output model against the task codec, and the Talker prompt ids
    (`sample.extra`) against the speech set's speakers; ConfigError naming the field."""
    require(bool(config.model.enable_audio_output), "model.enable_audio_output",
            config.model.enable_audio_output, "task 'tts' trains the Talker: it must be True")
    check_schema(config, "train.loss", LOSS_SCHEMA)
    for key in LOSS_SCHEMA:
        check_float(config, f"train.loss.{key}", lo=0.0)
    w = config.train.loss
    require(w.train_thinker in (0, 1), "train.loss.train_thinker", w.train_thinker,
            "must be 1 (the Thinker trains with the Talker) or 0 (frozen)")
    require(w.codebook0_weight + w.predictor_weight > 0, "train.loss.codebook0_weight",
            w.codebook0_weight, "and train.loss.predictor_weight are both 0: nothing to learn")
    if not w.train_thinker:
        # The Thinker's decay: its parameter group's (train.param_groups.thinker) or train's.
        groups = config.train.get("param_groups", None) or {}
        path, decay = "train.weight_decay", config.train.weight_decay
        if "thinker" in groups and "weight_decay" in groups["thinker"]:
            path, decay = "train.param_groups.thinker.weight_decay", \
                groups["thinker"]["weight_decay"]
        require(float(decay) == 0.0, path, decay, "must be 0 with train.loss.train_thinker=0: "
                "decoupled weight decay would move the frozen Thinker")
    tk = config.model.talker
    spec = speech_codes.codec_spec(config)
    k = speech_codes.num_codebooks(config)
    require(tk.num_codebooks == k, "model.talker.num_codebooks", tk.num_codebooks,
            f"must equal task.codec.num_codebooks={k}: the Talker speaks the codec's frames")
    card = spec.quantizer.codebook_size
    require(tk.codebook_size == card, "model.talker.codebook_size", tk.codebook_size,
            f"must equal the codec's codebook_size {card} (task.codec.config="
            f"{config.task.codec.config!r})")
    options = tt_sample.speech_options_from_config(config)
    voices = int(config.data.num_speakers)
    require(len(options.speaker_ids) >= voices, "sample.extra.speaker_ids",
            options.speaker_ids, f"needs a codec id for each of the data.num_speakers={voices} "
            "speaker profiles (voices are conditioning ids)")
    width = int(get_path(config, "model.thinker.max_seq_len"))
    require(int(config.data.max_text_len) <= width, "data.max_text_len",
            config.data.max_text_len, f"must be <= model.thinker.max_seq_len={width}: the "
            "Thinker reads the whole transcript")


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    """The speech set as codec-code batches (`audiolm.tasks.speech_codes.make_batches`)."""
    del family
    return speech_codes.make_batches(config, split, finite)


def speech_options(config: Any) -> tt_sample.SpeechOptions:
    return tt_sample.speech_options_from_config(config)


def voice_ids(options: tt_sample.SpeechOptions, speakers: Any) -> jax.Array:
    """Speech-set speaker indices [B] -> codec ids of their voices (padding rows, -1, take
    voice 0: their targets are masked)."""
    table = jnp.asarray(options.speaker_ids, jnp.int32)
    return table[jnp.clip(jnp.asarray(speakers, jnp.int32), 0, table.shape[0] - 1)]


def forward(module: Any, params: Any, batch: Mapping[str, Any],
            options: tt_sample.SpeechOptions) -> dict[str, jax.Array]:
    """Teacher-forced Thinker + Talker over a batch (module docstring).

    batch: text / text_mask [B, L], codes [B, K, T], codes_mask [B, T], speaker [B]. Returns
    logits0 [B, T + 1, vocab] (codec_head at codec_bos and after each frame; special ids but
    codec_eos masked), targets0 [B, T + 1] (the frames' code 0, then codec_eos), mask0 [B,
    T + 1], predictor_logits [B, T, K - 1, codebook_size], frame_mask [B, T], thinker_logits
    [B, L, vocab], talker_aux, thinker_aux.
    """
    text = jnp.asarray(batch["text"], jnp.int32)
    text_mask = jnp.asarray(batch["text_mask"], bool)
    codes = jnp.asarray(batch["codes"], jnp.int32)
    frame_mask = jnp.asarray(batch["codes_mask"], bool)
    b, l_text = text.shape
    t = codes.shape[2]
    cfg = module.talker.config
    n_tokens = jnp.sum(text_mask, axis=1)
    real = n_tokens >= 3  # bos, at least one id, eos (padding rows have none)
    spoken = text[:, 1:]  # the ids between bos and eos: the text the Talker speaks
    spoken_len = jnp.maximum(n_tokens - 2, 1)
    inputs = tt_sample.talker_inputs(module, params, options, text, text_mask, spoken,
                                     spoken_len, voice_ids(options, batch["speaker"]))
    trailing = inputs["trailing"]
    step = jnp.minimum(jnp.arange(t), trailing.shape[1] - 1)

    def talk(m):
        frames = m.talker.embed_frames(codes) + trailing[:, step]  # input after frame t
        x = jnp.concatenate([inputs["prefill"], frames], axis=1)
        mask = jnp.concatenate([inputs["prefill_mask"], jnp.ones((b, t), bool)], axis=1)
        out = m.talker.decode(x, tt_sample.positions_from_mask(mask))
        first = l_text + HEAD - 1  # codec_bos: predicts frame 0
        hidden = out["hidden"][:, first:first + t + 1]
        logits = out["logits"][:, first:first + t + 1]
        e0 = m.talker.embed_codec(codes[:, 0])
        predictor = m.talker.code_predictor(hidden[:, :t], e0, codes)
        return logits, predictor, out["aux"]

    logits, predictor, aux = module.apply({"params": params}, method=talk)
    n_frames = jnp.sum(frame_mask, axis=1)
    j = jnp.arange(t + 1)[None, :]
    targets0 = jnp.concatenate([codes[:, 0], jnp.zeros((b, 1), jnp.int32)], axis=1)
    targets0 = jnp.where(j == n_frames[:, None], cfg.codec_eos_id, targets0)
    thinker = inputs["thinker"]
    return dict(logits0=talker_lib.mask_codec_logits(logits, cfg), targets0=targets0,
                mask0=(j <= n_frames[:, None]) & real[:, None],
                predictor_logits=predictor, frame_mask=frame_mask & real[:, None],
                thinker_logits=thinker["logits"], talker_aux=aux, thinker_aux=thinker["aux"])


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted frame CEs (+ the Thinker's text CE and the MoE aux losses); see the module
    docstring. With train.loss.train_thinker = 0 the Thinker's params enter through
    stop_gradient: their gradient is exactly zero."""
    del rng, train  # no dropout in the Qwen3-Omni models
    w = config.train.loss
    if not w.train_thinker:
        params = {k: (jax.lax.stop_gradient(v) if k != "talker" else v)
                  for k, v in params.items()}
    out = forward(module, params, batch, speech_options(config))
    ce0, acc0, frames = losses.masked_cross_entropy(out["logits0"], out["targets0"],
                                                    out["mask0"])
    codes = jnp.asarray(batch["codes"], jnp.int32)
    rest = jnp.moveaxis(codes[:, 1:], 1, -1)  # [B, T, K-1]
    fmask = out["frame_mask"]
    nll, correct = losses.token_nll(out["predictor_logits"], rest,
                                    jnp.broadcast_to(fmask[..., None], rest.shape))
    predictor_ce = losses.masked_mean(jnp.mean(nll, axis=-1), fmask)
    text = jnp.asarray(batch["text"], jnp.int32)
    text_ok = jnp.asarray(batch["text_mask"], bool)[:, 1:]
    text_ce, _, _ = losses.masked_cross_entropy(out["thinker_logits"][:, :-1], text[:, 1:],
                                                text_ok)
    lb = out["talker_aux"]["load_balance_loss"]
    z = out["talker_aux"]["router_z_loss"]
    if w.train_thinker:
        lb = lb + out["thinker_aux"]["load_balance_loss"]
        z = z + out["thinker_aux"]["router_z_loss"]
    loss = (w.codebook0_weight * ce0 + w.predictor_weight * predictor_ce
            + w.text_weight * text_ce
            + config.train.moe_aux_weight * lb + config.train.moe_z_weight * z)
    metrics = {"codebook0_ce": ce0, "codebook0_accuracy": acc0, "predictor_ce": predictor_ce,
               "predictor_accuracy": losses.masked_mean(jnp.mean(correct, axis=-1), fmask),
               "text_ce": text_ce, "frames": frames, "load_balance_loss": lb,
               "router_z_loss": z, "loss": loss}
    return loss, metrics


# ---------------------------------------------------------------------------------------------
# Generation: text -> Thinker -> Talker -> code predictor (-> the codec's decoder).


def prompts(config: Any, texts: Sequence[str], speakers: Sequence[int]) -> dict[str, np.ndarray]:
    """Sampler inputs of `texts` spoken by speech-set speakers `speakers`: tokens / mask [B, P]
    (left-padded [bos, ids..., eos]), spoken [B, N] (ids, right-padded), spoken_len [B], voices
    [B] (codec ids). ValueError naming a text or speaker that cannot be spoken."""
    from audiolm import data as data_lib

    if len(texts) != len(speakers) or not texts:
        raise ValueError(f"texts ({len(texts)}) and speakers ({len(speakers)}) must be equally "
                         "long and non-empty")
    options = speech_options(config)
    tokenizer = data_lib.make_tokenizer(config.data)
    ids = [tokenizer.encode(t) for t in texts]
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"texts[{i}]={texts[i]!r}: nothing to speak (no tokens)")
    n_voices = len(options.speaker_ids)
    for i, s in enumerate(speakers):
        if not 0 <= int(s) < n_voices:
            raise ValueError(f"speakers[{i}]={s}: must be a speaker profile in [0, {n_voices}) "
                             "(sample.extra.speaker_ids)")
    th = config.model.thinker
    tokens, mask = tt_sample.left_pad([[tokenizer.bos_id, *r, tokenizer.eos_id] for r in ids],
                                      th.pad_token_id)
    spoken = np.full((len(ids), max(map(len, ids))), th.pad_token_id, np.int32)
    for i, r in enumerate(ids):
        spoken[i, :len(r)] = r
    voices = np.asarray([options.speaker_ids[int(s)] for s in speakers], np.int32)
    return dict(tokens=tokens, mask=mask, spoken=spoken,
                spoken_len=np.asarray([len(r) for r in ids], np.int32), voices=voices)


@functools.lru_cache(maxsize=4)
def _sampler(module: Any, options: tt_sample.SpeechOptions) -> tt_sample.SpeechSampler:
    return tt_sample.SpeechSampler(module, options, fast_compile=True)


def _prepare(module, params, config, texts, speakers):
    sampler = _sampler(module, speech_options(config))
    p = prompts(config, texts, speakers)
    state = sampler.prepare(params, p["tokens"], p["mask"], p["spoken"], p["spoken_len"],
                            speakers=p["voices"])
    return sampler, state


def generate_codes(module: Any, params: Any, config: Any, texts: Sequence[str],
                   speakers: Sequence[int], rng: jax.Array) -> list[np.ndarray]:
    """Codes [K, T_i] of each text spoken by its speaker (sampling: sample.extra codec_* /
    sample.temperature, top_k; at most max_frames = sample.max_new_tokens frames); T_i stops
    before the row's codec_eos (0 when it came first)."""
    sampler, state = _prepare(module, params, config, texts, speakers)
    out = sampler.generate(params, state, rng)
    return [out["codes"][i, :, :int(out["frames"][i])] for i in range(len(texts))]


def stream(module: Any, params: Any, config: Any, codec: tuple[Any, Any, Any],
           texts: Sequence[str], speakers: Sequence[int], rng: jax.Array, chunk: int = 4
           ) -> Iterator[dict[str, Any]]:
    """The whole chain, streamed: yields every `chunk` frames dict(wav [B, n * hop] float32,
    codes [B, K, n], valid [B, n], seconds: wall time since the call) as the Talker makes them,
    decoded by the codec's streaming decoder (`codec.decode_step`). The same frames as
    `generate_codes` with the same rng; the chunks, concatenated and cut at each row's frame
    count, equal `codec.decode` of its codes. Frames of ended rows decode code 0."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    t0 = time.perf_counter()
    codec_module, codec_params, _ = codec
    sampler, state = _prepare(module, params, config, texts, speakers)
    wav_state = codec_lib.init_stream(codec_module, len(texts))
    made, limit = 0, sampler.options.max_frames
    while made < limit:
        state, rng, codes, valid = sampler.run(params, state, rng, min(chunk, limit - made))
        if codes.shape[2] == 0:
            return
        made += codes.shape[2]
        wav_state, wav = codec_lib.decode_step(codec_module, codec_params, wav_state, codes,
                                               fast_compile=True)
        yield dict(wav=np.asarray(wav, np.float32), codes=codes, valid=valid,
                   seconds=time.perf_counter() - t0)

