"""Config validation and description.

`validate(config)` checks an experiment ConfigDict (sections `model`, `data`, `train`,
`sample`, `mesh`, plus `seed`, `init_from` and `init_from_subtrees`) before anything is built or
compiled. Each model family registers its own rules with `register_rules`; the shared sections
are checked against the schemas below. Every failure is a `ConfigError` naming the dotted path,
the value and the rule, e.g.
``model.talker.num_codebooks=4 but model.code2wav.num_codebooks=8: they must match``.

`describe(config)` counts parameters (total and active per token), bytes and FLOPs from the
config alone via `jax.eval_shape`: nothing is allocated.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from typing import Any, Callable, Iterable, Mapping

import ml_collections

__all__ = [
    "ConfigError", "register_rules", "validate", "describe", "require", "get_path",
    "check_keys", "check_int", "check_float", "check_choice", "check_bool", "check_str",
    "check_schema", "count_params", "print_description",
]


class ConfigError(ValueError):
    """A config field is missing, unknown, of the wrong type or breaks a rule."""


_RULES: dict[str, Callable[[Any], None]] = {}


def register_rules(family: str, fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Registers `fn(config)` as the validation rules of model family `family`."""
    _RULES[family] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# The registry: names -> modules, and which (task, family) pairs are valid. Modules are imported
# by name, lazily (validating a Moshi config never imports the Qwen code), so this module stays
# at the bottom of the layers while `validate` reaches every family's and task's rules.

# config.model.family -> module implementing the family contract (`audiolm.models.family`).
FAMILIES = {
    "thinker_talker": "audiolm.models.thinker_talker",
    "moshi": "audiolm.models.moshi",
    "pattern_lm": "audiolm.models.pattern_lm",
    "codec": "audiolm.models.codec",
}

# config.task.name -> module implementing the task contract (`audiolm.tasks.base`).
TASKS = {
    "asr": "audiolm.tasks.asr",
    "codes": "audiolm.tasks.codes",
    "codec": "audiolm.tasks.codec",
    "stt": "audiolm.tasks.stt",
    "tts": "audiolm.tasks.tts",
}

# The valid (task, families) pairs: what each task can teach.
PAIRS = {
    "asr": ("thinker_talker",),  # speech -> transcript: AuT + Thinker
    "codes": ("thinker_talker", "moshi", "pattern_lm"),  # next-code LM over codebook tokens
    "codec": ("codec",),  # waveform -> codes -> waveform: the codec learns to reconstruct
    "stt": ("moshi",),  # codec codes of speech -> time-aligned transcript (delayed streams)
    "tts": ("thinker_talker", "moshi", "pattern_lm"),  # transcript -> codec codes -> speech
}


def family_module(name: str) -> Any:
    """The module of model family `name` (importing it registers its config rules)."""
    if name not in FAMILIES:
        raise ConfigError(f"model.family={name!r}: must be one of {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def task_module(name: str) -> Any:
    """The module of task `name`."""
    if name not in TASKS:
        raise ConfigError(f"task.name={name!r}: must be one of {sorted(TASKS)}")
    return importlib.import_module(TASKS[name])


def check_pair(task_name: str, family_name: str) -> None:
    """ConfigError naming task.name and model.family unless the task can train the family."""
    if family_name not in PAIRS.get(task_name, ()):
        able = sorted(t for t, fams in PAIRS.items() if family_name in fams)
        raise ConfigError(
            f"task.name={task_name!r} with model.family={family_name!r}: not a valid pair; "
            f"task {task_name!r} trains {list(PAIRS.get(task_name, ()))}, model.family "
            f"{family_name!r} can learn {able}")


# ---------------------------------------------------------------------------------------------
# Small checking helpers. `path` is always the full dotted path from the experiment root.


def require(cond: bool, path: str, value: Any, rule: str) -> None:
    """Raises ConfigError("path=value: rule") unless `cond`."""
    if not cond:
        raise ConfigError(f"{path}={value!r}: {rule}")


def get_path(config: Any, path: str) -> Any:
    """Returns the value at dotted `path` of `config`; ConfigError if any part is missing."""
    node = config
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(node, Mapping) or hasattr(node, "keys"):
            if part not in node:
                raise ConfigError(f"{'.'.join(walked)} is missing (required field)")
            node = node[part]
        else:
            raise ConfigError(f"{'.'.join(walked[:-1])} is not a section (got {node!r})")
    return node


def check_keys(config: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Section at `path` (root if empty) has only `allowed` keys and every `required` key."""
    section = get_path(config, path) if path else config
    require(hasattr(section, "keys"), path or "config", section, "must be a section")
    allowed = set(allowed)
    for key in section.keys():
        if key not in allowed:
            raise ConfigError(
                f"{_join(path, key)} is not a known field; expected one of {sorted(allowed)}")
    for key in required:
        if key not in section:
            raise ConfigError(f"{_join(path, key)} is missing (required field)")


def check_int(config: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    value = get_path(config, path)
    require(isinstance(value, int) and not isinstance(value, bool), path, value, "must be an int")
    if lo is not None:
        require(value >= lo, path, value, f"must be >= {lo}")
    if hi is not None:
        require(value <= hi, path, value, f"must be <= {hi}")
    return value


def check_float(config: Any, path: str, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> float:
    value = get_path(config, path)
    require(isinstance(value, (int, float)) and not isinstance(value, bool), path, value,
            "must be a number")
    require(math.isfinite(value), path, value, "must be finite")
    if lo is not None:
        ok = value > lo if lo_open else value >= lo
        require(ok, path, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None:
        ok = value < hi if hi_open else value <= hi
        require(ok, path, value, f"must be {'<' if hi_open else '<='} {hi}")
    return float(value)


def check_choice(config: Any, path: str, choices: Iterable[Any]) -> Any:
    value = get_path(config, path)
    choices = list(choices)
    require(value in choices, path, value, f"must be one of {choices}")
    return value


def check_bool(config: Any, path: str) -> bool:
    value = get_path(config, path)
    require(isinstance(value, bool), path, value, "must be a bool")
    return value


def check_optional_bool(config: Any, path: str) -> bool | None:
    value = get_path(config, path)
    require(value is None or isinstance(value, bool), path, value, "must be a bool or None")
    return value


def check_str(config: Any, path: str, allow_empty: bool = True) -> str:
    value = get_path(config, path)
    require(isinstance(value, str), path, value, "must be a string")
    if not allow_empty:
        require(bool(value), path, value, "must not be empty")
    return value


def check_schema(config: Any, path: str, schema: Mapping[str, Any]) -> None:
    """Checks section `path` has exactly the keys of `schema` with values of the same types.

    Ints are accepted where the schema has a float; `None` in the schema accepts anything;
    nested sections recurse. Ranges are the caller's job.
    """
    section = get_path(config, path) if path else config
    check_keys(config, path, schema.keys(), required=schema.keys())
    for key, default in schema.items():
        sub = _join(path, key)
        value = section[key]
        if default is None:
            continue
        if hasattr(default, "keys"):
            require(hasattr(value, "keys"), sub, value, "must be a section")
            check_schema(config, sub, default)
        elif isinstance(default, bool):
            require(isinstance(value, bool), sub, value, "must be a bool")
        elif isinstance(default, float):
            require(isinstance(value, (int, float)) and not isinstance(value, bool), sub, value,
                    "must be a number")
        elif isinstance(default, int):
            require(isinstance(value, int) and not isinstance(value, bool), sub, value,
                    "must be an int")
        elif isinstance(default, str):
            require(isinstance(value, str), sub, value, "must be a string")
        elif isinstance(default, (tuple, list)):
            require(isinstance(value, (tuple, list)), sub, value, "must be a list")


# ---------------------------------------------------------------------------------------------
# Typed specs: a component's frozen dataclass is the one declaration of its config fields (with a
# comment per field). Its schema (keys and types) is derived from the dataclass; the ConfigDict
# section a preset writes and the spec the model reads are two views of the same fields.

_SCHEMA_VALUE = {int: 0, float: 0.0, bool: False, str: "", tuple: (), list: ()}


def _schema_value(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # Optional / unions: the rules check them
        return None
    if dataclasses.is_dataclass(hint):
        return spec_schema(hint)
    return _SCHEMA_VALUE.get(origin or hint, None)


def spec_schema(cls: type) -> dict[str, Any]:
    """The `check_schema` schema of the frozen dataclass `cls`: one entry per field, valued by
    type (int 0, float 0.0, bool False, str "", tuple (), nested spec a sub-schema, anything
    else or an Optional None = unchecked)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _schema_value(hints[f.name]) for f in dataclasses.fields(cls)}


def spec_from_section(cls: type, config: Any, path: str, **overrides: Any) -> Any:
    """`cls(**section)` for the section at dotted `path`, after `check_schema` (every field
    present, no unknown key, types right); lists become tuples, nested specs recurse.
    `overrides` replace fields that are derived rather than read."""
    check_schema(config, path, spec_schema(cls))
    section = get_path(config, path) if path else config
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            continue
        value = section[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = spec_from_section(hints[f.name], config, _join(path, f.name))
        elif isinstance(value, list):
            value = tuple(value)
        elif hasattr(value, "to_dict"):
            value = ml_collections.FrozenConfigDict(value)
        values[f.name] = value
    return cls(**values, **overrides)


def spec_to_section(spec: Any) -> ml_collections.ConfigDict:
    """The ConfigDict section of a spec (what a preset writes into `config.model`); a mapping
    field (name -> spec, e.g. conditioners) becomes a section of sections."""
    return ml_collections.ConfigDict(_section_value(spec))


def _section_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _section_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _section_value(v) for k, v in value.items()}
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------
# Shared sections. Family rules live beside the family's model code.

# Largest codebook count any family accepts (a validation bound, not a model size).
MAX_CODEBOOKS = 64

TOP_LEVEL_KEYS = ("model", "task", "data", "train", "sample", "mesh", "seed", "init_from",
                  "init_from_subtrees")
TASK_SCHEMA = {"name": "", "evaluators": None, "final_evaluators": None}
# A task module may declare OPTIONAL_FIELDS: task-section keys beyond TASK_SCHEMA that it reads
# and checks (the asr decode_* fields, the speech tasks' `codec`).

TRAIN_SCHEMA = {
    "steps": 0, "optimizer": "", "learning_rate": 0.0, "schedule": "", "warmup_steps": 0,
    "min_lr_ratio": 0.0, "b1": 0.0, "b2": 0.0, "eps": 0.0, "weight_decay": 0.0,
    "clip_norm": 0.0, "grad_accum_steps": 0, "log_every": 0, "eval_every": 0, "eval_steps": 0,
    "checkpoint_every": 0, "keep_checkpoints": 0, "dtype": "", "moe_aux_weight": 0.0,
    "moe_z_weight": 0.0, "loss": None, "compilation_cache_dir": "", "profile_steps": None,
    "param_groups": None,
}
# train.param_groups.<name>: the optimizer settings a top-level params subtree overrides.
PARAM_GROUP_KEYS = ("learning_rate", "b1", "b2", "eps", "weight_decay", "clip_norm")
SAMPLE_SCHEMA = {
    "temperature": 0.0, "top_k": 0, "top_p": 0.0, "max_new_tokens": 0, "cfg_scale": 0.0,
    "seed": 0, "num_samples": 0, "extra": None,
}
MESH_SCHEMA = {"axes": None, "rules": None}
MESH_AXES = ("data", "fsdp", "expert", "tensor")


def _validate_param_groups(config: Any) -> None:
    """train.param_groups: {subtree name: a subset of PARAM_GROUP_KEYS, ranged as train.*}."""
    groups = get_path(config, "train.param_groups")
    require(hasattr(groups, "keys"), "train.param_groups", groups,
            "must be a section: top-level params subtree name -> optimizer settings")
    for name in groups.keys():
        path = f"train.param_groups.{name}"
        require(name.isidentifier() and name != "default", path, groups[name],
                "the group name must be a top-level params subtree (not 'default')")
        require(hasattr(groups[name], "keys"), path, groups[name],
                f"must be a section of settings out of {list(PARAM_GROUP_KEYS)}")
        check_keys(config, path, PARAM_GROUP_KEYS)
        ranges = {"learning_rate": dict(lo=0.0, lo_open=True),
                  "b1": dict(lo=0.0, hi=1.0, hi_open=True),
                  "b2": dict(lo=0.0, hi=1.0, hi_open=True),
                  "eps": dict(lo=0.0, lo_open=True), "weight_decay": dict(lo=0.0),
                  "clip_norm": dict(lo=0.0)}
        for key in groups[name].keys():
            check_float(config, f"{path}.{key}", **ranges[key])


def _validate_train(config: Any) -> None:
    check_schema(config, "train", TRAIN_SCHEMA)
    check_int(config, "train.steps", lo=0)
    check_choice(config, "train.optimizer", ("adamw", "adafactor", "sgd"))
    check_float(config, "train.learning_rate", lo=0.0, lo_open=True)
    check_choice(config, "train.schedule", ("cosine", "linear", "constant"))
    check_int(config, "train.warmup_steps", lo=0)
    check_float(config, "train.min_lr_ratio", lo=0.0, hi=1.0)
    check_float(config, "train.b1", lo=0.0, hi=1.0, hi_open=True)
    check_float(config, "train.b2", lo=0.0, hi=1.0, hi_open=True)
    check_float(config, "train.eps", lo=0.0, lo_open=True)
    check_float(config, "train.weight_decay", lo=0.0)
    check_float(config, "train.clip_norm", lo=0.0)
    check_int(config, "train.grad_accum_steps", lo=1)
    for key in ("log_every", "eval_every", "checkpoint_every"):
        check_int(config, f"train.{key}", lo=1)
    check_int(config, "train.eval_steps", lo=0)
    check_int(config, "train.keep_checkpoints", lo=1)
    check_choice(config, "train.dtype", ("float32", "bfloat16"))
    check_float(config, "train.moe_aux_weight", lo=0.0)
    check_float(config, "train.moe_z_weight", lo=0.0)
    check_str(config, "train.compilation_cache_dir")
    _validate_param_groups(config)
    try:
        parse_profile_steps(get_path(config, "train.profile_steps"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # Family loss weights: every family's `train.loss` is a section of non-negative weights.
    check_keys(config, "train.loss", get_path(config, "train.loss").keys())
    for key in get_path(config, "train.loss").keys():
        check_float(config, f"train.loss.{key}", lo=0.0)


def parse_profile_steps(value: Any, path: str = "train.profile_steps") -> tuple[int, int] | None:
    """"" / None -> None (off); "start,stop" or (start, stop) -> the 1-based steps traced
    (inclusive, 2 <= start <= stop: step 1 compiles). Anything else raises ValueError naming
    `path`."""
    if value is None or value == "":
        return None
    rule = ('must be "" (off), "start,stop" or (start, stop) with 2 <= start <= stop (step 1 '
            'compiles the program)')
    parts = value.split(",") if isinstance(value, str) else value
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(str(p).strip()) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{path}={value!r}: {rule}") from None
    if not 2 <= start <= stop:
        raise ValueError(f"{path}={value!r}: {rule}")
    return start, stop


def _validate_sample(config: Any) -> None:
    check_schema(config, "sample", SAMPLE_SCHEMA)
    check_float(config, "sample.temperature", lo=0.0)
    check_int(config, "sample.top_k", lo=0)
    check_float(config, "sample.top_p", lo=0.0, hi=1.0, lo_open=True)
    check_int(config, "sample.max_new_tokens", lo=1)
    check_float(config, "sample.cfg_scale", lo=0.0)
    check_int(config, "sample.seed", lo=0)
    check_int(config, "sample.num_samples", lo=1)


def _validate_mesh(config: Any) -> None:
    check_schema(config, "mesh", MESH_SCHEMA)
    check_keys(config, "mesh.axes", MESH_AXES, required=MESH_AXES)
    auto = 0
    for axis in MESH_AXES:
        size = get_path(config, f"mesh.axes.{axis}")
        path = f"mesh.axes.{axis}"
        require(isinstance(size, int) and (size == -1 or size >= 1), path, size,
                "must be a positive int or -1 (fill with the remaining devices)")
        auto += size == -1
    require(auto <= 1, "mesh.axes", dict(config.mesh.axes), "at most one axis may be -1")
    rules = config.mesh.rules
    require(isinstance(rules, (list, tuple)), "mesh.rules", rules,
            "must be a list of (logical_name, mesh_axis or None or list of mesh axes)")
    for i, rule in enumerate(rules):
        path = f"mesh.rules[{i}]"
        require(isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str),
                path, rule, "must be a (logical_name, mesh_axes) pair")
        targets = rule[1] if isinstance(rule[1], (list, tuple)) else [rule[1]]
        for t in targets:
            require(t is None or t in MESH_AXES, path, rule,
                    f"mesh axis must be one of {list(MESH_AXES)} or None")


def validate(config: Any) -> Any:
    """Validates the whole experiment config; returns it unchanged or raises ConfigError."""
    check_keys(config, "", TOP_LEVEL_KEYS, required=("model",))
    for key in TOP_LEVEL_KEYS:
        require(key in config, key, None, "is missing (required section)")
    check_int(config, "seed", lo=0)
    check_str(config, "init_from")
    _validate_init_from_subtrees(config)
    family = get_path(config, "model.family")
    require(family in FAMILIES, "model.family", family, f"must be one of {sorted(FAMILIES)}")
    family_module(family)  # importing the family registers its rules
    rules = _RULES.get(family)
    require(rules is not None, "model.family", family, "has no registered validation rules")
    task = _validate_task(config)
    # Shared sections first: family and task rules may read data / train.loss / sample.extra.
    _validate_data(config)
    _validate_train(config)
    _validate_sample(config)
    _validate_mesh(config)
    rules(config)
    task.rules(config)
    return config


def _validate_init_from_subtrees(config: Any) -> None:
    """init_from_subtrees: () (the whole tree) or distinct, non-nested param subtree names /
    '/'-joined paths, read from a non-empty init_from."""
    subtrees = get_path(config, "init_from_subtrees")
    path = "init_from_subtrees"
    require(isinstance(subtrees, (list, tuple)) and all(isinstance(s, str) for s in subtrees),
            path, subtrees, "must be a tuple of param subtree names or '/'-joined paths, e.g. "
            "('aut', 'thinker'); () initialises the whole tree from init_from")
    for s in subtrees:
        require(all(s.split("/")), path, tuple(subtrees),
                f"{s!r} has an empty name: use 'name' or 'name/child' (no leading, trailing or "
                "double '/')")
    require(len(set(subtrees)) == len(subtrees), path, tuple(subtrees), "lists a subtree twice")
    for s in subtrees:
        for t in subtrees:
            require(not t.startswith(s + "/"), path, tuple(subtrees),
                    f"{t!r} lies inside {s!r}, which is listed already")
    require(not subtrees or bool(config.init_from), path, tuple(subtrees),
            "needs init_from (the checkpoint or pretrained model dir they are read from), "
            "which is empty")


# The package that owns the data section. Imported by name, as the families and tasks are:
# it sits beside this module in the base layer and itself uses these checking helpers.
DATA_MODULE = "audiolm.data"


def _validate_data(config: Any) -> None:
    require(hasattr(get_path(config, "data"), "keys"), "data", config.data, "must be a section")
    importlib.import_module(DATA_MODULE).validate_section(config)


def _validate_task(config: Any) -> Any:
    """config.task: a known task that can train model.family, with evaluators it supports."""
    section = get_path(config, "task")
    require(hasattr(section, "keys") and "name" in section, "task", section,
            "must be a section with a name")
    name = check_choice(config, "task.name", tuple(TASKS))
    task = task_module(name)
    # beyond TASK_SCHEMA, a task section may hold the fields its task declares (and only those:
    # any other key is an unknown field, not silently ignored)
    present = [k for k in getattr(task, "OPTIONAL_FIELDS", ()) if k in section]
    check_schema(config, "task", {**TASK_SCHEMA, **dict.fromkeys(present)})
    check_pair(name, config.model.family)
    for key in ("evaluators", "final_evaluators"):
        names = get_path(config, f"task.{key}")
        require(isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names),
                f"task.{key}", names, "must be a tuple of evaluator names")
        for n in names:
            require(n in task.EVALUATORS, f"task.{key}", tuple(names),
                    f"task {name!r} has no evaluator {n!r}; it supports {list(task.EVALUATORS)}")
    return task


# ---------------------------------------------------------------------------------------------
# describe


def count_params(shapes: Any, routed: Callable[[tuple[str, ...]], float] | None = None,
                 embedding: Callable[[tuple[str, ...]], bool] | None = None) -> dict[str, int]:
    """Counts leaves of a (shape) pytree.

    Args:
      shapes: pytree of arrays or ShapeDtypeStructs (nested dicts).
      routed: maps a leaf's key path to the fraction of it used per token (top_k / num_experts
        for routed expert weights); default 1.
      embedding: marks lookup tables (excluded from FLOPs per token).
    Returns:
      dict(total, active, embedding) in parameters.
    """
    total = active = emb = 0
    for path, leaf in _leaves(shapes):
        n = math.prod(leaf.shape)
        total += n
        frac = routed(path) if routed is not None else 1.0
        active += int(round(n * frac))
        if embedding is not None and embedding(path):
            emb += n
    return {"total": total, "active": active, "embedding": emb}


def _leaves(tree: Any, prefix: tuple[str, ...] = ()):
    if hasattr(tree, "keys"):
        for key in tree.keys():
            yield from _leaves(tree[key], prefix + (str(key),))
    else:
        yield prefix, tree


def describe(config: Any) -> dict[str, Any]:
    """Parameter counts, bytes and FLOPs per token of `config.model`, without allocating.

    Returns a dict with `total_params`, `active_params` (per token, MoE routing counted as
    top_k / num_experts of the routed experts), `embedding_params`, `bytes_bf16`,
    `flops_per_token` (forward, 2 x active non-embedding params: matmul work only) and
    `components` (name -> {total, active, embedding}).
    """
    validate(config)
    components = family_module(config.model.family).describe_params(config.model)
    total = sum(c["total"] for c in components.values())
    active = sum(c["active"] for c in components.values())
    emb = sum(c["embedding"] for c in components.values())
    return {
        "family": config.model.family,
        "total_params": total,
        "active_params": active,
        "embedding_params": emb,
        "bytes_bf16": 2 * total,
        "flops_per_token": 2 * (active - emb),
        "components": components,
    }


def print_description(desc: Mapping[str, Any]) -> str:
    """Formats `describe`'s dict as a table; returns the text."""
    lines = [f"family: {desc['family']}",
             f"{'component':<28}{'total':>16}{'active/token':>16}{'embedding':>16}"]
    for name, c in desc["components"].items():
        lines.append(f"{name:<28}{c['total']:>16,}{c['active']:>16,}{c['embedding']:>16,}")
    lines.append(f"{'TOTAL':<28}{desc['total_params']:>16,}{desc['active_params']:>16,}"
                 f"{desc['embedding_params']:>16,}")
    lines.append(f"bytes at bf16: {desc['bytes_bf16'] / 2**30:.3f} GiB; forward FLOPs/token: "
                 f"{desc['flops_per_token'] / 1e9:.3f} GFLOP")
    text = "\n".join(lines)
    print(text)
    return text


def to_dict(config: Any) -> dict:
    """Plain-dict copy of a ConfigDict (for saving next to checkpoints)."""
    if isinstance(config, ml_collections.ConfigDict):
        return config.to_dict()
    return dict(config)
