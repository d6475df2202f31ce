"""Next-code language modelling (`task.name = "codes"`) for the multi-codebook families.

Batches: `batch["codes"]` multi-codebook token streams (+ conditions) from the family's example
batches (`data.name="synthetic"`, `audiolm.tasks.synthetic`; the thinker_talker family's
example batch is the ASR layout, so its code batches come from `talker_example_batch`). The loss is the family's way of
laying the codebooks out in time:

* moshi: Kyutai's delayed streams. codes [B, 1+K, T] (text stream first), shifted right by each
  stream's delay (`moshi.delayed_inputs`); text CE + audio CE of the depformer, -1 ids and delay
  padding masked, text targets >= text_out_vocab_size excluded. Weights
  train.loss.{text_weight, audio_weight, semantic_weight} (semantic = the first audio codebook,
  weighted semantic_weight against 1 for each other codebook).
* thinker_talker: the Talker + code predictor (Qwen3-Omni's speech head) as a frame LM. codes
  [B, G, T], frame_mask [B, T]; the Talker input at frame t is the summed embedding of frame
  t-1's G codes (`Talker.embed_frames`; frame 0 reads codec_bos_id), codec_head predicts
  codebook 0 of frame t and the code predictor, teacher-forced, codebooks 1..G-1. Loss =
  codebook0_ce + predictor_ce (mean over codebooks 1..G-1) + the Talker's MoE aux losses.
* pattern_lm: the codebook interleaving pattern (MusicGen / stable-audio-tools). codes
  [B, K, T] and target_mask [B, T]; the pattern sequence is built with valid steps only
  (special = card), the logits are reverted to frames, and the per-codebook CE is averaged over
  K; CFG condition dropout while training.

Evaluators: "loss". Samples: the family's decoder (`audiolm.sample.moshi` /
`audiolm.sample.pattern_lm`) writes tokens (and WAVs where a decoder exists).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import config as config_lib
from audiolm import patterns
from audiolm.config import check_float, check_schema
from audiolm.models import moshi as moshi_lib
from audiolm.models import pattern_lm as pattern_lib
from audiolm.nn import losses
from audiolm.sample import moshi as moshi_sample
from audiolm.sample import pattern_lm as pattern_sample
from audiolm.sample import thinker_talker as tt_sample
from audiolm.tasks import synthetic

NAME = "codes"
EVALUATORS = ("loss",)
MOSHI_LOSS_SCHEMA = dict(text_weight=0.0, audio_weight=0.0, semantic_weight=0.0)


def rules(config: Any) -> None:
    """train.loss weights of the family's code loss; synthetic data only for now."""
    config_lib.require(synthetic.is_synthetic(config), "data.name", config.data.get("name"),
                       "task 'codes' trains on the family's synthetic code batches: set "
                       "data.name='synthetic'")
    family = config.model.family
    if family == "thinker_talker":
        config_lib.require(bool(config.model.enable_audio_output), "model.enable_audio_output",
                           config.model.enable_audio_output,
                           "task 'codes' trains the Talker: it must be True")
    schema = LOSS_SCHEMAS.get(family, {})
    check_schema(config, "train.loss", schema)
    for key in schema:
        check_float(config, f"train.loss.{key}", lo=0.0)


class _TalkerCodes:
    """Stands in for the thinker_talker family in `synthetic.make_batches`: code batches."""

    @staticmethod
    def example_batch(model_config: Any, batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
        return talker_example_batch(model_config, batch_size, rng)


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    if config.model.family == "thinker_talker":
        family = _TalkerCodes()
    return synthetic.make_batches(config, family, split, finite)


def talker_example_batch(model_config: Any, batch_size: int, rng: np.random.Generator,
                         frames: int = 16) -> dict[str, np.ndarray]:
    """Learnable Talker frames: codes [B, G, frames] where codebook q of a row counts up from a
    random start with stride q + 1 (mod codebook_size), and frame_mask [B, frames] with random
    right padding (at least half of each row real)."""
    tk = model_config.talker
    g, card = int(tk.num_codebooks), int(tk.codebook_size)
    start = rng.integers(0, card, (batch_size, g, 1))
    stride = np.arange(1, g + 1)[None, :, None]
    codes = ((start + stride * np.arange(frames)[None, None, :]) % card).astype(np.int32)
    lengths = rng.integers((frames + 1) // 2, frames + 1, (batch_size,))
    return {"codes": codes, "frame_mask": np.arange(frames)[None, :] < lengths[:, None]}


# ---------------------------------------------------------------------------------------------
# Losses per family.


def moshi_loss(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Delayed-stream text + audio CE (see the module docstring). codes [B, 1+K, T]."""
    del rng, train  # no dropout in the Kyutai models
    spec = module.spec
    w = config.train.loss
    inputs, targets, valid = moshi_lib.delayed_inputs(spec, jnp.asarray(batch["codes"]))
    out = module.apply({"params": params}, inputs, batch.get("conditions"))
    text_targets = targets[:, 0]
    text_ok = valid[:, 0] & (text_targets < spec.text_out_vocab_size)
    text_loss, _, t_n = losses.masked_cross_entropy(out["text_logits"], text_targets, text_ok)
    metrics = {"text_loss": text_loss, "text_tokens": t_n}
    loss = w.text_weight * text_loss
    if spec.dep_q:
        logits = module.apply({"params": params}, targets, out["hidden"],
                              method=moshi_lib.MoshiLM.depformer_forward)  # [B, K, T, card]
        a_t = targets[:, 1:1 + spec.dep_q]
        a_ok = valid[:, 1:1 + spec.dep_q] & (a_t < spec.card)
        nll, _ = losses.token_nll(logits, a_t, a_ok)
        per_q = losses.masked_mean(nll, a_ok, axis=(0, 2))  # [K]
        weights = jnp.ones((spec.dep_q,), jnp.float32).at[0].set(w.semantic_weight)
        audio_loss = jnp.sum(per_q * weights) / jnp.sum(weights)
        metrics.update(audio_loss=audio_loss, semantic_loss=per_q[0],
                       audio_tokens=jnp.sum(a_ok.astype(jnp.float32)))
        loss = loss + w.audio_weight * audio_loss
    metrics["loss"] = loss
    return loss, metrics


def pattern_loss(logits_fn: Callable[[jax.Array], jax.Array], codes: jax.Array,
                 target_mask: jax.Array, spec: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of codes [B, K, T] under the pattern of `spec` (a PatternLMSpec).

    Builds the sequence with keep_only_valid_steps and special = card, runs
    `logits_fn(seq) -> [B, K, S, card]`, reverts the logits to frames, masks with
    target_mask [B, T] AND the pattern's mask, and averages the per-codebook CE over K.
    Returns (loss, metrics {ce_q<k>, accuracy, frames}).
    """
    b, k, t = codes.shape
    pattern = pattern_lib.pattern_for(spec, t)
    seq, _ = patterns.build(pattern, codes, spec.card, keep_only_valid_steps=True)
    logits = logits_fn(seq)
    logits, pmask = patterns.revert_logits(pattern, logits, keep_only_valid_steps=True)
    mask = target_mask.astype(bool)[:, None, :] & pmask[None]  # [B, K, T]
    nll, correct = losses.token_nll(logits, codes, mask)
    per_q = losses.masked_mean(nll, mask, axis=(0, 2))
    metrics = {f"ce_q{q}": per_q[q] for q in range(k)}
    metrics["accuracy"] = losses.masked_mean(correct, mask)
    metrics["frames"] = jnp.sum(target_mask.astype(jnp.float32))
    return jnp.mean(per_q), metrics


def pattern_lm_loss(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array,
                    config: Any, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pattern CE with CFG condition dropout when training. codes [B, K, T], target_mask
    [B, T] (optional), conditions under "cond.<id>" keys."""
    del config
    spec = module.spec
    codes = jnp.asarray(batch["codes"])
    target_mask = batch.get("target_mask")
    if target_mask is None:
        target_mask = jnp.ones((codes.shape[0], codes.shape[2]), bool)
    conditions = {k: v for k, v in batch.items() if k.startswith("cond.")}
    drop = None
    if train and spec.conditioning.cfg_dropout > 0:
        drop = pattern_lib.cfg_drop_mask(rng, codes.shape[0], spec.conditioning.cfg_dropout)

    def logits_fn(seq):
        return module.apply({"params": params}, seq, conditions, drop)

    return pattern_loss(logits_fn, codes, jnp.asarray(target_mask), spec)


def talker_loss(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array,
                config: Any, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Talker frame LM (see the module docstring). codes [B, G, T], frame_mask [B, T]."""
    del rng, train
    codes = jnp.asarray(batch["codes"], jnp.int32)
    mask = jnp.asarray(batch["frame_mask"]).astype(jnp.float32)
    bos = int(config.model.talker.codec_bos_id)

    def forward(m):
        frames = m.talker.embed_frames(codes)  # [B, T, D]: the input of the next frame
        first = m.talker.embed_codec(jnp.full((codes.shape[0], 1), bos, jnp.int32))
        x = jnp.concatenate([first, frames[:, :-1]], axis=1)
        return m.talker(x, codes)

    out = module.apply({"params": params}, method=forward)
    frame = talker_frame_losses(out, codes, mask)
    ce0, predictor_ce = frame["codebook0_ce"], frame["predictor_ce"]
    lb, z = out["aux"]["load_balance_loss"], out["aux"]["router_z_loss"]
    w = config.train.loss
    loss = (w.codebook0_weight * ce0 + w.predictor_weight * predictor_ce
            + config.train.moe_aux_weight * lb + config.train.moe_z_weight * z)
    metrics = dict(frame, loss=loss, load_balance_loss=lb, router_z_loss=z)
    return loss, metrics


def talker_frame_losses(outputs: Mapping[str, Any], codes: jax.Array, mask: jax.Array
                        ) -> dict[str, jax.Array]:
    """Teacher-forced cross-entropies of a Talker forward run with `codes`.

    outputs: `Talker.__call__(inputs_embeds, codes)`; codes [B, G, T] the frame predicted at
    every position (target of codec_head for codebook 0 and of the code predictor for 1..G-1);
    mask [B, T] (1 = a frame target). Returns {"codebook0_ce", "predictor_ce" (mean over
    codebooks 1..G-1), "codebook0_accuracy", "predictor_accuracy", "frames"}.
    """
    mask = jnp.asarray(mask).astype(jnp.float32)
    ce0, acc0, n = losses.masked_cross_entropy(outputs["logits"], codes[:, 0], mask)
    rest = jnp.moveaxis(codes[:, 1:], 1, -1)  # [B, T, G-1]
    nll, correct = losses.token_nll(outputs["predictor_logits"], rest,
                                    jnp.broadcast_to(mask[..., None] > 0, rest.shape))
    return {"codebook0_ce": ce0,
            "predictor_ce": losses.masked_mean(jnp.mean(nll, axis=-1), mask),
            "codebook0_accuracy": acc0,
            "predictor_accuracy": losses.masked_mean(jnp.mean(correct, axis=-1), mask),
            "frames": n}


LOSSES: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
    "moshi": moshi_loss,
    "pattern_lm": pattern_lm_loss,
    "thinker_talker": talker_loss,
}
# train.loss weights of each family's code loss (others: an empty section).
LOSS_SCHEMAS = {
    "moshi": MOSHI_LOSS_SCHEMA,
    "thinker_talker": dict(codebook0_weight=0.0, predictor_weight=0.0),
}


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    return LOSSES[config.model.family](module, params, batch, rng, config, train)


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """Codes sampled by the family's decoder; see `audiolm.sample.moshi.write_samples` and
    `audiolm.sample.pattern_lm.write_samples` (conditions from the test batches) and
    `audiolm.sample.thinker_talker.write_samples` (Thinker -> Talker -> Code2Wav speech)."""
    if config.model.family == "moshi":
        return moshi_sample.write_samples(module, params, config, workdir)
    if config.model.family == "thinker_talker":
        return tt_sample.write_samples(module, params, config, workdir)
    family = config_lib.family_module(config.model.family)
    return pattern_sample.write_samples(module, params, config, workdir,
                                        make_batches(config, family, "test", finite=True))
