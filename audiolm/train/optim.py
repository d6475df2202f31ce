"""Optimizer from `config.train`: AdamW / Adafactor / SGD, warmup + decay, clipping, decay mask.

Parameter groups: `train.param_groups.<name>` gives the top-level params subtree `<name>` (e.g.
the codec's `discriminator`) its own transformation: the same optimizer and schedule shape,
with any of `learning_rate`, `b1`, `b2`, `eps`, `weight_decay`, `clip_norm` overridden. Every
other subtree forms the "default" group with the `train.*` settings. Groups are combined with
`optax.multi_transform`, so each keeps its own moments and its own clipping norm, all inside the
one optimizer state (and so in the one checkpoint).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

from audiolm.config import PARAM_GROUP_KEYS, ConfigError

DEFAULT_GROUP = "default"  # label of every params subtree without a train.param_groups entry

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


class _GroupSettings:
    """`train` seen through one group's overrides (the fields the optimizer reads)."""

    def __init__(self, train: Any, overrides: Mapping[str, Any]):
        self._train, self._overrides = train, dict(overrides)

    def __getattr__(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        return getattr(self._train, key)


def param_groups(train: Any) -> dict[str, dict[str, Any]]:
    """{group name: overridden settings} of `train.param_groups` (empty when absent); unknown
    settings raise ConfigError naming the field."""
    groups = getattr(train, "param_groups", None) or {}
    out = {}
    for name in groups.keys():
        settings = dict(groups[name])
        for key in settings:
            if key not in PARAM_GROUP_KEYS:
                raise ConfigError(f"train.param_groups.{name}.{key} is not a known field; "
                                  f"expected one of {list(PARAM_GROUP_KEYS)}")
        if name == DEFAULT_GROUP:
            raise ConfigError(f"train.param_groups.{name}: {DEFAULT_GROUP!r} names the "
                              "ungrouped params; use a top-level params subtree name")
        out[name] = settings
    return out


def group_labels(params: Any, groups: Any) -> dict[str, str]:
    """{top-level key: its group} of the params dict: the key itself when it names a group,
    else "default". ConfigError when a group names no top-level subtree."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"train.param_groups={sorted(groups)}: needs a params dict with "
                          f"top-level subtrees; got {type(params).__name__}")
    for name in groups:
        if name not in params:
            raise ConfigError(f"train.param_groups.{name}: no top-level params subtree "
                              f"{name!r}; the params have {sorted(params)}")
    return {key: jax.tree_util.tree_map(lambda _, k=key: k if k in groups else DEFAULT_GROUP,
                                        sub) for key, sub in params.items()}


def make_optimizer(train: Any) -> optax.GradientTransformation:
    """The optax transformation for `config.train`: clip -> optimizer with decoupled decay;
    per parameter group (module docstring) when `train.param_groups` has entries."""
    groups = param_groups(train)
    if not groups:
        return _make_transform(train)
    transforms = {DEFAULT_GROUP: _make_transform(train)}
    for name, overrides in groups.items():
        transforms[name] = _make_transform(_GroupSettings(train, overrides))
    return optax.multi_transform(transforms, lambda params: group_labels(params, groups))


def _make_transform(train: Any) -> optax.GradientTransformation:
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
