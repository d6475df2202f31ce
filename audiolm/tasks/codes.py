"""Next-code language modelling (`task.name = "codes"`) for the multi-codebook families.

Batches: `batch["codes"]` multi-codebook token streams (+ conditions) from the family's example
batches (`data.name="synthetic"`, `audiolm.tasks.synthetic`). The loss is the family's way of
laying the codebooks out in time:

* moshi: Kyutai's delayed streams. codes [B, 1+K, T] (text stream first), shifted right by each
  stream's delay (`moshi.delayed_inputs`); text CE + audio CE of the depformer, -1 ids and delay
  padding masked, text targets >= text_out_vocab_size excluded. Weights
  train.loss.{text_weight, audio_weight, semantic_weight} (semantic = the first audio codebook,
  weighted semantic_weight against 1 for each other codebook).
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

from audiolm import config as config_lib
from audiolm import patterns
from audiolm.config import check_float, check_schema
from audiolm.models import moshi as moshi_lib
from audiolm.models import pattern_lm as pattern_lib
from audiolm.nn import losses
from audiolm.sample import moshi as moshi_sample
from audiolm.sample import pattern_lm as pattern_sample
from audiolm.tasks import synthetic

NAME = "codes"
EVALUATORS = ("loss",)
MOSHI_LOSS_SCHEMA = dict(text_weight=0.0, audio_weight=0.0, semantic_weight=0.0)


def rules(config: Any) -> None:
    """train.loss weights of the family's code loss; synthetic data only for now."""
    config_lib.require(synthetic.is_synthetic(config), "data.name", config.data.get("name"),
                       "task 'codes' trains on the family's synthetic code batches: set "
                       "data.name='synthetic'")
    if config.model.family == "moshi":
        check_schema(config, "train.loss", MOSHI_LOSS_SCHEMA)
        for key in MOSHI_LOSS_SCHEMA:
            check_float(config, f"train.loss.{key}", lo=0.0)
    else:
        config_lib.check_keys(config, "train.loss", ())


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    return synthetic.make_batches(config, family, split, finite)


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
    text_ok = valid[:, 0] & (text_targets < spec.text_out_vocab)
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
    """Cross-entropy of codes [B, K, T] under the pattern of `spec` (`pattern_lm.LMSpec`).

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
    if train and spec.cfg_dropout > 0:
        drop = pattern_lib.cfg_drop_mask(rng, codes.shape[0], spec.cfg_dropout)

    def logits_fn(seq):
        return module.apply({"params": params}, seq, conditions, drop)

    return pattern_loss(logits_fn, codes, jnp.asarray(target_mask), spec)


LOSSES: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
    "moshi": moshi_loss,
    "pattern_lm": pattern_lm_loss,
}


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    return LOSSES[config.model.family](module, params, batch, rng, config, train)


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """Codes sampled by the family's decoder; see `audiolm.sample.moshi.write_samples` and
    `audiolm.sample.pattern_lm.write_samples` (conditions from the test batches)."""
    if config.model.family == "moshi":
        return moshi_sample.write_samples(module, params, config, workdir)
    family = config_lib.family_module(config.model.family)
    return pattern_sample.write_samples(module, params, config, workdir,
                                        make_batches(config, family, "test", finite=True))
