"""Orbax checkpoints of the train state and the data iterator, with auto-resume.

Layout of a workdir:

  workdir/config.json            the resolved experiment config (written before training)
  workdir/checkpoints/<step>/    one Orbax checkpoint per saved step:
        state/                   params, opt_state, step, rng (sharded arrays, each host its shards)
        data/                    the training iterator state (JSON), for exact resume
  workdir/metrics.jsonl, workdir/tensorboard/

Where the starting point comes from (`restore_or_init`), in this order:
  1. the latest checkpoint in `workdir/checkpoints` (resume after a crash / pre-emption):
     params, optimizer state, step, RNG and the data iterator position;
  2. `config.init_from`: a checkpoint directory (a workdir, its `checkpoints/` folder or one
     step folder) or a pretrained model directory read by `audiolm.importers.load_pretrained`
     (Hugging Face / Kyutai files): params only; step, optimizer and data start fresh. With
     `config.init_from_subtrees` (e.g. ('aut', 'thinker')) only those subtrees come from it
     (an Orbax partial restore) and the rest from the scratch init of config.seed;
  3. scratch: the family's `init_params`.
A checkpoint (or pretrained model) whose parameter tree or shapes differ from the config's model
raises `CheckpointMismatchError` naming the first differing parameters (with subtrees: only theirs
are compared, and dtypes too); one whose optimizer state
differs (another `train.optimizer`, or clipping / weight decay toggled) names `train.optimizer`.

Nothing silent, nothing lost:
  * `Checkpointer.save` writes a step only when every float leaf of the params and optimizer
    state is finite (one scalar fetched from the device); otherwise it refuses, logs why and
    records the step in `Checkpointer.refused`.
  * Resuming from the latest checkpoint falls back past incomplete or corrupt step folders (a
    kill during a save, truncated or deleted files) to the newest readable one, with a warning
    naming each skipped folder; `CheckpointCorruptError` when none is readable.
  * After a non-finite loss, `last_good_step(ckpt, loss_of_params, abstract_params)` names the
    newest checkpoint whose params are finite and give a finite loss.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from audiolm.config import to_dict


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters (or optimizer state) do not match the config."""


class CheckpointCorruptError(ValueError):
    """A checkpoint folder cannot be read: incomplete (killed during a save) or damaged files."""


def _key_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _leaf_specs(tree: Any, dtypes: bool = False) -> dict[str, tuple]:
    """{'/'-joined key: shape, or (shape, dtype name) with `dtypes`} of a params / metadata
    tree's leaves."""
    def spec(x):
        shape = tuple(getattr(x, "shape", np.shape(x)))
        return (shape, np.dtype(x.dtype).name) if dtypes else shape

    return {_key_str(p): spec(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def leaf_differences(want: dict[str, Any], got: dict[str, Any], differs: str
                     ) -> tuple[list[str], str | None]:
    """(phrases naming the leaves missing from `got`, extra in it, or whose spec differs (at most
    three of each), the first such leaf); ([], None) when `want` == `got`."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} params of the config are absent (e.g. {missing[:3]})")
    if extra:
        parts.append(f"{len(extra)} params are not in the config's model (e.g. {extra[:3]})")
    if wrong:
        parts.append(f"{differs}: " + ", ".join(
            f"{k}: checkpoint {got[k]} vs config {want[k]}" for k in wrong[:3]))
    return parts, next(iter(missing + extra + wrong), None)


def check_params_match(expected: Any, found: Any, source: str) -> None:
    """Raises CheckpointMismatchError if `found` (params or metadata) differs from `expected`."""
    parts, _ = leaf_differences(_leaf_specs(expected), _leaf_specs(found), "shapes differ")
    if not parts:
        return
    raise CheckpointMismatchError(
        f"checkpoint {source} was written for another model config: " + "; ".join(parts)
        + ". Use a fresh --workdir, or the config the checkpoint was trained with "
        "(saved as config.json beside it).")


def save_config(config: Any, workdir: str) -> str:
    """Writes the resolved config as `workdir/config.json` (process 0); returns the path."""
    path = os.path.join(workdir, "config.json")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(to_dict(config), f, indent=2, sort_keys=True, default=_json_default)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def _jsonable(value: Any) -> Any:
    """Iterator states -> plain JSON values (numpy scalars/arrays converted)."""
    return json.loads(json.dumps(value, default=_json_default))


class Checkpointer:
    """A CheckpointManager over `workdir/checkpoints` with keep-N and interval from config.train."""

    def __init__(self, workdir: str, train_config: Any, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(train_config.keep_checkpoints),
            save_interval_steps=int(train_config.checkpoint_every),
            create=True,
            enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))
        self.refused: list[int] = []  # steps not saved because the state was not finite
        self.skipped: list[str] = []  # unreadable checkpoints passed over by the last restore

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, force: bool = False) -> bool:
        """Saves (asynchronously) if `step` is on the interval or `force`, and only when the
        params and optimizer state are finite; returns whether a save was started."""
        step = int(step)
        if not (force or self.manager.should_save(step)):
            return False
        bad = nonfinite_leaves(state.params, state.opt_state)
        if bad:
            self.refused.append(step)
            logging.warning("checkpoint step %d NOT saved: %d non-finite leaves, e.g. %s; the "
                            "previous checkpoint (%s) is kept as the latest", step, len(bad),
                            ", ".join(bad[:3]), self.latest_step())
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state.as_dict()),
                                  data=ocp.args.JsonSave(_jsonable(data_state)))
        return self.manager.save(step, args=args, force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[dict, Any, int]:
        """(state dict, data iterator state, step) of checkpoint `step` (default: the newest
        readable one; unreadable newer folders are skipped with a warning naming them).

        `abstract_state` is the TrainState of ShapeDtypeStructs with shardings (the target).
        Raises CheckpointMismatchError (another model or optimizer: never skipped),
        CheckpointCorruptError (the requested step, or every step, is unreadable).
        """
        target = abstract_state.as_dict()
        if step is not None:
            return self._restore_step(target, int(step))
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        skipped = []
        for candidate in steps:
            try:
                restored = self._restore_step(target, candidate)
            except CheckpointCorruptError as e:
                skipped.append(str(e))
                logging.warning("%s; falling back to the previous checkpoint", e)
                continue
            if skipped:
                logging.warning("resumed from %s/%d after skipping %d unreadable newer "
                                "checkpoint(s)", self.directory, candidate, len(skipped))
            self.skipped = skipped
            return restored
        raise CheckpointCorruptError(
            f"no readable checkpoint in {self.directory}:\n  " + "\n  ".join(skipped)
            + "\nDelete the damaged step folders or use a fresh --workdir.")

    def _restore_step(self, target: dict, step: int) -> tuple[dict, Any, int]:
        where = f"{self.directory}/{step}"
        saved = saved_state_metadata(self.directory, step)
        check_params_match(target["params"], saved["params"], where)
        check_opt_state_match(target["opt_state"], saved.get("opt_state"), where)
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                              data=ocp.args.JsonRestore()))
        except Exception as e:  # Orbax/tensorstore raise many types for damaged files
            raise CheckpointCorruptError(
                f"checkpoint {where} is incomplete or corrupt "
                f"({type(e).__name__}: {_first_line(e)})") from e
        return restored["state"], restored["data"], step

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else repr(e)


def saved_state_metadata(directory: str, step: int) -> Any:
    """Tree of the saved train state's metadata (leaves with `.shape`) of `directory/step`.

    Raises CheckpointCorruptError when the folder's metadata cannot be read or holds no params.
    """
    where = os.path.join(directory, str(step))
    try:
        # Absolute: Orbax finds no item metadata under a relative path (returns None).
        meta = ocp.StandardCheckpointer().metadata(os.path.abspath(os.path.join(where, "state")))
        tree = getattr(meta, "item_metadata", meta)
    except Exception as e:
        raise CheckpointCorruptError(f"checkpoint {where} is incomplete or corrupt: its state "
                                     f"metadata is unreadable ({type(e).__name__}: "
                                     f"{_first_line(e)})") from e
    if tree is None or "params" not in tree:
        raise CheckpointCorruptError(f"checkpoint {where} is incomplete or corrupt: no params "
                                     "in its state metadata")
    return tree


def saved_params_metadata(directory: str, step: int) -> Any:
    """Tree of the saved params' metadata (with `.shape`) of checkpoint `directory/step`."""
    return saved_state_metadata(directory, step)["params"]


def check_opt_state_match(expected: Any, found: Any, source: str) -> None:
    """Raises CheckpointMismatchError naming `train.optimizer` when the saved optimizer state
    (leaf count or shapes, in tree order) differs from the config's optimizer."""
    want = [tuple(getattr(x, "shape", np.shape(x))) for x in jax.tree_util.tree_leaves(expected)]
    got = [tuple(getattr(x, "shape", np.shape(x))) for x in jax.tree_util.tree_leaves(found)]
    if want == got:
        return
    raise CheckpointMismatchError(
        f"checkpoint {source} was written with another optimizer: its optimizer state has "
        f"{len(got)} arrays, train.optimizer (with train.clip_norm / train.weight_decay) of this "
        f"config makes {len(want)}"
        + ("" if len(want) != len(got) else " of other shapes")
        + ". Resume with the train.optimizer settings the checkpoint was trained with (its "
        "config.json), start a new --workdir with --config.init_from=<that checkpoint> to keep "
        "the params only, or use a fresh --workdir.")


def _float_leaves(tree: Any) -> list[tuple[str, Any]]:
    return [(_key_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            if jnp.issubdtype(getattr(x, "dtype", np.asarray(x).dtype), jnp.inexact)]


@jax.jit
def _all_finite(leaves: list[Any]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def nonfinite_leaves(params: Any, opt_state: Any = None) -> list[str]:
    """Names ("params/...", "opt_state/...") of float leaves holding NaN or inf; [] if all are
    finite. One scalar is fetched from the device in the usual (finite) case."""
    named = ([("params/" + k, x) for k, x in _float_leaves(params)]
             + [("opt_state/" + k, x) for k, x in _float_leaves(opt_state)])
    if not named or bool(_all_finite([x for _, x in named])):
        return []
    return [k for k, x in named if not bool(jnp.all(jnp.isfinite(x)))]


def last_good_step(ckpt: "Checkpointer", loss_of_params: Callable[[Any], Any],
                   abstract_params: Any) -> int | None:
    """The newest saved step whose params are finite and give a finite loss, else None.

    Call it after a non-finite loss (the checkpoints on disk are all finite, but the params of
    the newest may be the ones that produced the NaN):

        ckpt.wait()
        good = ckpt_lib.last_good_step(
            ckpt, lambda p: eval_step(p, batch, rng)["loss"], exp.abstract_state.params)

    Args:
      ckpt: the run's Checkpointer (saves finished: call `ckpt.wait()` first).
      loss_of_params: params -> scalar loss (e.g. the eval step on the batch whose loss was
        not finite).
      abstract_params: ShapeDtypeStructs (with shardings) of the params to restore into.
    Returns:
      the step, or None when no checkpoint qualifies (a fresh start with a lower learning rate is
      the way out). Checkpoints are only read, never deleted.
    """
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=getattr(s, "sharding", None)),
        abstract_params)
    # A manager of its own: the run's has bound "state" to the save handler, and a params-only
    # (partial) restore needs another.
    reader = ocp.CheckpointManager(ckpt.directory, item_names=("state", "data"))
    try:
        for step in sorted(ckpt.all_steps(), reverse=True):
            where = f"{ckpt.directory}/{step}"
            try:
                params = restore_params(ckpt.directory, step, target, manager=reader)
            except (CheckpointCorruptError, CheckpointMismatchError) as e:
                logging.warning("last good checkpoint: skipping %s (%s)", where, e)
                continue
            bad = nonfinite_leaves(params)
            if bad:
                logging.warning("last good checkpoint: %s has non-finite params (%s)", where,
                                bad[0])
                continue
            loss = float(np.asarray(jax.device_get(loss_of_params(params))))
            if np.isfinite(loss):
                return step
            logging.warning("last good checkpoint: the params of %s give loss %s", where, loss)
        return None
    finally:
        reader.close()


def restore_params(directory: str, step: int, target: Any, manager: Any = None) -> Any:
    """The params of checkpoint `directory/step`, restored into `target` (ShapeDtypeStructs
    with shardings). Raises CheckpointMismatchError / CheckpointCorruptError."""
    check_params_match(target, saved_params_metadata(directory, step), f"{directory}/{step}")
    return _restore_params_subset(directory, step, target, manager)


def _restore_params_subset(directory: str, step: int, target: Any, manager: Any = None) -> Any:
    """The params of checkpoint `directory/step` that `target` names (all or some subtrees;
    Orbax partial restore), restored into `target`'s shapes and shardings."""
    own = manager is None
    if own:
        manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": target},
                restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
                partial_restore=True)))
    except Exception as e:  # Orbax/tensorstore raise many types for damaged files
        raise CheckpointCorruptError(f"checkpoint {directory}/{step} is incomplete or corrupt "
                                     f"({type(e).__name__}: {_first_line(e)})") from e
    finally:
        if own:
            manager.close()
    return restored["state"]["params"]


def _find_checkpoint_dir(path: str) -> tuple[str, int | None] | None:
    """(manager directory, step or None for latest) if `path` holds Orbax checkpoints."""
    path = os.path.abspath(path)
    for candidate in (os.path.join(path, "checkpoints"), path):
        if os.path.isdir(candidate) and any(
                d.isdigit() and os.path.isdir(os.path.join(candidate, d))
                for d in os.listdir(candidate)):
            return candidate, None
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.isdir(os.path.join(path, "state")):
        return parent, int(name)
    return None


def _init_source(init_from: str) -> tuple[str, int] | None:
    """(manager directory, step) of the checkpoint `init_from` names, or None when it is not an
    Orbax checkpoint directory (then it is a pretrained model directory)."""
    if not os.path.exists(init_from):
        raise FileNotFoundError(f"init_from={init_from!r} does not exist")
    found = _find_checkpoint_dir(init_from)
    if found is None:
        return None
    directory, step = found
    if step is None:
        manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
        try:
            step = manager.latest_step()
        finally:
            manager.close()
        if step is None:
            raise FileNotFoundError(f"init_from={init_from!r}: no finished checkpoint in it")
    return directory, step


def _load_pretrained(init_from: str) -> Any:
    from audiolm import importers

    load_pretrained = getattr(importers, "load_pretrained", None)
    if load_pretrained is None:
        raise ValueError(f"init_from={init_from!r} is not an Orbax checkpoint directory and "
                         "audiolm.importers has no load_pretrained importer")
    return load_pretrained(init_from)[1]


def load_init_params(init_from: str, abstract_params: Any, shardings: Any,
                     subtrees: tuple[str, ...] = (), scratch_params: Any = None) -> Any:
    """Params from `config.init_from` (checkpoint dir or pretrained model dir), sharded.

    With `subtrees` (`config.init_from_subtrees`: top-level subtree names or '/'-joined paths),
    only those are read from `init_from` (an Orbax partial restore, or a selection of the
    imported tree) and every other leaf is `scratch_params`' (the scratch init of the run, same
    tree as `abstract_params`). Raises CheckpointMismatchError (the tree, a subtree or a leaf's
    shape / dtype differs), ConfigError (a subtree the model does not have).
    """
    if subtrees:
        if scratch_params is None:
            raise ValueError("load_init_params: subtrees need scratch_params (the scratch init "
                             "that gives the other params)")
        return _load_init_subtrees(init_from, tuple(subtrees), abstract_params, shardings,
                                   scratch_params)
    found = _init_source(init_from)
    if found is not None:
        directory, step = found
        target = _sharded_target(abstract_params, shardings)
        try:
            params = restore_params(directory, step, target)
        except CheckpointMismatchError as e:
            raise CheckpointMismatchError(f"init_from={init_from}: {e}") from None
        logging.info("initialised params from checkpoint %s step %d", directory, step)
        return params
    params = _load_pretrained(init_from)
    check_params_match(abstract_params, params, f"init_from={init_from} (pretrained)")
    logging.info("initialised params from pretrained model %s", init_from)
    return jax.tree_util.tree_map(
        lambda x, s, sh: jax.device_put(np.asarray(x, dtype=s.dtype), sh),
        params, abstract_params, shardings)


def _sharded_target(abstract_params: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        abstract_params, shardings)


def _under(key: str, subtree: str) -> bool:
    return key == subtree or key.startswith(subtree + "/")


def _node(tree: Any, path: str) -> Any:
    """The node at '/'-joined `path` of a nested-mapping tree; KeyError naming the first part
    that is absent."""
    node = tree
    for part in path.split("/"):
        if not hasattr(node, "keys") or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def _children(tree: Any, path: str) -> list[str]:
    """Names under the deepest existing node on `path` (for error messages)."""
    node, parts = tree, path.split("/")
    for part in parts[:-1]:
        if not hasattr(node, "keys") or part not in node:
            break
        node = node[part]
    return sorted(node.keys()) if hasattr(node, "keys") else []


def _select(tree: Any, subtrees: tuple[str, ...]) -> dict:
    """A nested dict holding only the nodes of `tree` at `subtrees` (the partial-restore target)."""
    out: dict = {}
    for path in subtrees:
        *parents, last = path.split("/")
        where = out
        for part in parents:
            where = where.setdefault(part, {})
        where[last] = _node(tree, path)
    return out


def _check_subtrees(model: Any, found: Any, subtrees: tuple[str, ...], source: str,
                    dtypes: bool) -> None:
    """Each subtree is in the model's params (else ConfigError) and in `found` (the checkpoint's
    metadata or the imported params) with the same leaves, shapes and, with `dtypes`, dtypes
    (else CheckpointMismatchError naming the subtree and the leaf)."""
    from audiolm.config import ConfigError

    for path in subtrees:
        try:
            _node(model, path)
        except KeyError as e:
            raise ConfigError(
                f"init_from_subtrees={subtrees!r}: {path!r} is not a subtree of the model's "
                f"params (no {e.args[0]!r}; there: {_children(model, path)}); name top-level "
                "subtrees or '/'-joined paths of the config's model") from None
        try:
            _node(found, path)
        except KeyError as e:
            raise CheckpointMismatchError(
                f"init_from={source}: init_from_subtrees {path!r} is not in its params (no "
                f"{e.args[0]!r}; there: {_children(found, path)}); each listed subtree must be "
                "in both the checkpoint and the config's model") from None
    want = _leaf_specs(_select(model, subtrees), dtypes)
    got = _leaf_specs(_select(found, subtrees), dtypes)
    parts, first = leaf_differences(want, got, "shape" + ("/dtype" if dtypes else "") + " differs")
    if not parts:
        return
    subtree = next(s for s in subtrees if _under(first, s))
    raise CheckpointMismatchError(
        f"init_from={source}: init_from_subtrees {subtree!r} differs from the config's model: "
        + "; ".join(parts) + ". Each listed subtree must have the same parameters, shapes and "
        "dtypes in the checkpoint and in the config (the checkpoint's config.json has its sizes).")


def _load_init_subtrees(init_from: str, subtrees: tuple[str, ...], abstract_params: Any,
                        shardings: Any, scratch_params: Any) -> Any:
    found = _init_source(init_from)
    if found is not None:
        directory, step = found
        where = f"{directory} step {step}"
        _check_subtrees(abstract_params, saved_params_metadata(directory, step), subtrees,
                        init_from, dtypes=True)
        target = _select(_sharded_target(abstract_params, shardings), subtrees)
        restored = _restore_params_subset(directory, step, target)
    else:
        where = f"pretrained model {init_from}"
        imported = _load_pretrained(init_from)
        _check_subtrees(abstract_params, imported, subtrees, f"{init_from} (pretrained)",
                        dtypes=False)
        wanted = _select(_sharded_target(abstract_params, shardings), subtrees)
        restored = jax.tree_util.tree_map(
            lambda x, s: jax.device_put(np.asarray(x, dtype=s.dtype), s.sharding),
            _select(imported, subtrees), wanted)
    loaded = {_key_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}

    def pick(path, scratch):
        key = _key_str(path)
        return loaded[key] if any(_under(key, s) for s in subtrees) else scratch

    params = jax.tree_util.tree_map_with_path(pick, scratch_params)
    rest = []
    for name in sorted(scratch_params.keys()):
        if name in subtrees:
            continue
        inside = [s for s in subtrees if _under(s, name)]
        rest.append(f"{name} (but {', '.join(inside)})" if inside else name)
    logging.info("initialised params %s from %s; %s from the scratch init (config.seed)",
                 ", ".join(subtrees), where, ", ".join(rest) or "nothing")
    return params

