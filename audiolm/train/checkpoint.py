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
     (Hugging Face / Kyutai files): params only; step, optimizer and data start fresh;
  3. scratch: the family's `init_params`.
A checkpoint (or pretrained model) whose parameter tree or shapes differ from the config's model
raises `CheckpointMismatchError` naming the first differing parameters.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from audiolm.config import to_dict


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters do not match the config's model."""


def _key_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key_str(p): tuple(getattr(x, "shape", np.shape(x))) for p, x in leaves}


def check_params_match(expected: Any, found: Any, source: str) -> None:
    """Raises CheckpointMismatchError if `found` (params or metadata) differs from `expected`."""
    want, got = _flat_shapes(expected), _flat_shapes(found)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if not (missing or extra or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} params of the config are absent (e.g. {missing[:3]})")
    if extra:
        parts.append(f"{len(extra)} params are not in the config's model (e.g. {extra[:3]})")
    if wrong:
        parts.append("shapes differ: " + ", ".join(
            f"{k}: checkpoint {got[k]} vs config {want[k]}" for k in wrong[:3]))
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

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, force: bool = False) -> bool:
        """Saves (asynchronously) if `step` is on the interval or `force`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state.as_dict()),
                                  data=ocp.args.JsonSave(_jsonable(data_state)))
        return self.manager.save(int(step), args=args, force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[dict, Any, int]:
        """(state dict, data iterator state, step) of checkpoint `step` (default latest).

        `abstract_state` is the TrainState of ShapeDtypeStructs with shardings (the target).
        """
        step = self.latest_step() if step is None else step
        target = abstract_state.as_dict()
        check_params_match(target["params"], saved_params_metadata(self.directory, step),
                           f"{self.directory}/{step}")
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                          data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], step

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def saved_params_metadata(directory: str, step: int) -> Any:
    """Tree of the saved params' metadata (with `.shape`) of checkpoint `directory/step`."""
    meta = ocp.StandardCheckpointer().metadata(os.path.join(directory, str(step), "state"))
    tree = getattr(meta, "item_metadata", meta)
    if tree is None or "params" not in tree:
        raise CheckpointMismatchError(f"checkpoint {directory}/{step} has no params")
    return tree["params"]


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


def load_init_params(init_from: str, abstract_params: Any, shardings: Any) -> Any:
    """Params from `config.init_from` (checkpoint dir or pretrained model dir), sharded."""
    if not os.path.exists(init_from):
        raise FileNotFoundError(f"init_from={init_from!r} does not exist")
    found = _find_checkpoint_dir(init_from)
    if found is not None:
        directory, step = found
        manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"init_from={init_from!r}: no finished checkpoint in it")
        check_params_match(abstract_params, saved_params_metadata(directory, step),
                           f"init_from={init_from}/{step}")
        # Restore the params only, straight into their shards.
        target = jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            abstract_params, shardings)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": target},
                restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
                partial_restore=True)))
        manager.close()
        logging.info("initialised params from checkpoint %s step %d", directory, step)
        return restored["state"]["params"]
    from audiolm import importers as ckpt_lib

    load_pretrained = getattr(ckpt_lib, "load_pretrained", None)
    if load_pretrained is None:
        raise ValueError(f"init_from={init_from!r} is not an Orbax checkpoint directory and "
                         "audiolm.importers has no load_pretrained importer")
    _, params = load_pretrained(init_from)
    check_params_match(abstract_params, params, f"init_from={init_from} (pretrained)")
    logging.info("initialised params from pretrained model %s", init_from)
    return jax.tree_util.tree_map(
        lambda x, s, sh: jax.device_put(np.asarray(x, dtype=s.dtype), sh),
        params, abstract_params, shardings)
