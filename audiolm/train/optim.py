"""Optimizer from `config.train`: AdamW / Adafactor / SGD, warmup + decay, clipping, decay mask."""

from __future__ import annotations

from typing import Any

import jax
import optax

from audiolm.config import ConfigError

# Leaves never decayed: norm scales/biases, biases, embeddings (and every 0/1-d leaf).
_NO_DECAY_NAMES = ("bias", "scale", "embedding")


def learning_rate_schedule(train: Any) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then `schedule` decay to
    `min_lr_ratio * learning_rate` at `steps` (constant: stays at the peak)."""
    peak = float(train.learning_rate)
    warmup = int(train.warmup_steps)
    total = max(int(train.steps), warmup + 1)
    end = peak * float(train.min_lr_ratio)
    decay_steps = total - warmup
    if train.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(train.min_lr_ratio))
    elif train.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif train.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ConfigError(f"train.schedule={train.schedule!r}: must be one of "
                          "['cosine', 'linear', 'constant']")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decays(path: tuple[Any, ...], leaf: Any) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if leaf.ndim < 2:
        return False
    if names and (names[-1] in _NO_DECAY_NAMES or names[-1].endswith("embedding")):
        return False
    return not any("norm" in n.lower() for n in names)


def weight_decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay: matrices that are not norms or embeddings."""
    return jax.tree_util.tree_map_with_path(_decays, params)


def make_optimizer(train: Any) -> optax.GradientTransformation:
    """The optax transformation for `config.train` (clip -> optimizer with decoupled decay)."""
    lr = learning_rate_schedule(train)
    wd = float(train.weight_decay)
    parts = []
    if float(train.clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(train.clip_norm)))
    if train.optimizer == "adamw":
        parts.append(optax.adamw(lr, b1=float(train.b1), b2=float(train.b2), eps=float(train.eps),
                                 weight_decay=wd, mask=weight_decay_mask))
    elif train.optimizer == "adafactor":
        # Adafactor's own second-moment schedule (decay_rate 0.8) and eps; b1/b2/eps are Adam's.
        parts.append(optax.adafactor(lr, weight_decay_rate=wd or None,
                                     weight_decay_mask=weight_decay_mask))
    elif train.optimizer == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=weight_decay_mask))
        parts.append(optax.sgd(lr, momentum=float(train.b1) or None))
    else:
        raise ConfigError(f"train.optimizer={train.optimizer!r}: must be one of "
                          "['adamw', 'adafactor', 'sgd']")
    return optax.chain(*parts)
