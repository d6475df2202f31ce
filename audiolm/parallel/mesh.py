"""Device mesh, logical-axis rules and sharded parameter initialisation.

Layers name their weight axes with logical names (`embed`, `heads`, `mlp`, `experts`, `vocab`,
...; see `audiolm.nn`). `config.mesh.rules` maps each logical name to zero, one or several of
the mesh axes `data, fsdp, expert, tensor`, whose sizes come from `config.mesh.axes` (one may be
-1: it takes the remaining devices). Parameters are created already sharded: the family's
`init_params` is traced once with `jax.eval_shape` to read the logical names of every weight,
the names become `NamedSharding`s through the rules, and `jit(init, out_shardings=...)` writes
each shard straight onto its devices. Batches are split along their leading (batch) axis over
`data` x `fsdp`.

Multi-host (several processes, e.g. a TPU pod slice or several GPU hosts): call
`jax.distributed.initialize()` once at program start on every host (on TPU / SLURM / Open MPI
it finds the coordinator by itself; elsewhere pass `coordinator_address`, `num_processes` and
`process_id`), before any other JAX call. `jax.devices()` then lists the devices of all hosts
and `make_mesh` builds one global mesh over them (devices ordered by `mesh_utils` so that the
inner axes `tensor` and `expert` stay within a host). Every host runs the same program. Process
p of P feeds only its rows [p B/P, (p+1) B/P) of each global batch of B = `data.batch_size` rows
(`process_rows`): `data.loader="grain"` reads just those from disk, the other iterators build
the same global batch on every host and the rows are sliced from it (`local_batch`). The rows
become global arrays with `jax.make_array_from_process_local_data` (`shard_local_batch`), so no
host-to-host data traffic is needed (a host's rows land on its devices' batch shards: the mesh
order decides their place in the global array, which a mean over rows ignores). The batch shards (data x fsdp) of different processes must
be disjoint, and B a multiple of P (`check_batch_layout`, at build). The loop's steps and the
"loss" evaluator (`eval_step`) go through this; an evaluator that works on a batch's numpy rows
itself sees only this host's rows of a grain batch.
Checkpoints are written collectively by Orbax (each host writes its own shards); metrics and
logs are written by process 0 only.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
from flax.core import unfreeze
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiolm.config import ConfigError

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: Any, num_devices: int) -> dict[str, int]:
    """Sizes of the mesh axes from `config.mesh.axes`, the -1 axis resolved.

    Without a -1 axis the product may be smaller than `num_devices` (the first devices are used);
    a product that does not divide / exceed the device count raises ConfigError.
    """
    sizes = {axis: int(mesh_config.axes[axis]) for axis in MESH_AXES}
    auto = [a for a, s in sizes.items() if s == -1]
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if auto:
        if num_devices % fixed:
            raise ConfigError(
                f"mesh.axes={sizes}: the fixed axes multiply to {fixed}, which does not divide "
                f"the {num_devices} available devices, so mesh.axes.{auto[0]}=-1 cannot be filled")
        sizes[auto[0]] = num_devices // fixed
    elif fixed > num_devices:
        raise ConfigError(
            f"mesh.axes={sizes}: needs {fixed} devices but only {num_devices} are available")
    return sizes


def make_mesh(mesh_config: Any, devices: Sequence[Any] | None = None) -> Mesh:
    """The `Mesh` with axes (data, fsdp, expert, tensor) described by `config.mesh`."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_config, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    n = math.prod(shape)
    if n < len(devices):
        logging.warning("mesh %s uses %d of %d devices", sizes, n, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices[:n])
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices[:n], dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)


def logical_rules(mesh_config: Any) -> tuple[tuple[str, Any], ...]:
    """`config.mesh.rules` as a tuple of (logical_name, mesh_axes) for flax."""
    out = []
    for name, target in mesh_config.rules:
        if isinstance(target, list):
            target = tuple(target)
        out.append((name, target))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Parameter shardings


def logical_param_specs(init_fn: Callable[[jax.Array], Any], rng: jax.Array) -> tuple[Any, Any]:
    """(shapes, logical PartitionSpecs) of the params `init_fn(rng)` returns, without allocating.

    `init_fn` is a family's `init_params` (it unboxes). Its top-level `Module.init` call is
    intercepted to read the boxed (`nn.LogicallyPartitioned`) variables before they are
    unboxed. Weights without logical names get `PartitionSpec()` (replicated). If the family
    assembles its params from several separate `init` calls, each top-level part is matched to
    the captured tree of the same structure; if none matches, the specs fall back to fully
    replicated (logged).
    """
    captured: list[Any] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        scope = getattr(module, "scope", None)
        if scope is not None and scope.path == () and context.method_name != "setup":
            variables = scope.variables()
            if "params" in variables:
                captured.append(nn.get_partition_spec(unfreeze(variables["params"])))
        return out

    with nn.intercept_methods(interceptor):
        shapes = jax.eval_shape(init_fn, rng)
    found = _match(shapes, captured)
    if found is not None:
        return shapes, found
    logging.warning("could not read logical axis names of the params; replicating them")
    return shapes, jax.tree_util.tree_map(lambda _: P(), shapes)


def _same_structure(tree: Any, shapes: Any) -> bool:
    try:
        return (jax.tree_util.tree_structure(tree, is_leaf=lambda x: isinstance(x, P))
                == jax.tree_util.tree_structure(shapes))
    except Exception:  # noqa: BLE001 - any failure means "not this tree"
        return False


def _match(shapes: Any, captured: list[Any]) -> Any:
    """The captured spec tree shaped like `shapes`; for a dict of separately initialised parts
    ({"aut": ..., "thinker": ..., "talker": ...}) each part is matched on its own."""
    for tree in reversed(captured):  # the last root call is the complete init
        if _same_structure(tree, shapes):
            return tree
    if not isinstance(shapes, dict):
        return None
    out = {}
    for key, sub in shapes.items():
        candidates = [t[key] for t in reversed(captured) if isinstance(t, dict) and key in t]
        candidates += list(reversed(captured))
        match = next((c for c in candidates if _same_structure(c, sub)), None)
        if match is None:
            match = _match(sub, [c for c in candidates if isinstance(c, dict)])
        if match is None:
            return None
        out[key] = match
    return out


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes from dimensions they do not divide (e.g. 2 kv heads over tensor=4)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            out.append(None)
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        kept = []
        size = 1
        for name in names:
            if dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        out.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*out)


def param_shardings(shapes: Any, logical_specs: Any, mesh: Mesh, rules: Any) -> Any:
    """NamedShardings of the params from their logical specs and the rules."""
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    return jax.tree_util.tree_map(
        lambda s, spec: NamedSharding(mesh, _fit_spec(spec, s.shape, mesh)),
        shapes, mesh_specs, is_leaf=lambda x: isinstance(x, P))


def init_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh,
                 rules: Any) -> tuple[Any, Any]:
    """(params, shardings): params created directly in their shards by `jit(init_fn)`."""
    shapes, specs = logical_param_specs(init_fn, rng)
    shardings = param_shardings(shapes, specs, mesh, rules)
    params = jax.jit(init_fn, out_shardings=shardings)(rng)
    return params, shardings


# ---------------------------------------------------------------------------------------------
# Batches


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_size_divisor(mesh: Mesh) -> int:
    """Number of shards of the batch axis (data x fsdp)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def rows_per_process(batch_size: int, process_count: int | None = None) -> int:
    """Rows of each global batch of `batch_size` that one process reads: batch_size / processes.

    Raises ConfigError naming `data.batch_size` when the processes cannot share it evenly."""
    count = jax.process_count() if process_count is None else int(process_count)
    if int(batch_size) % count:
        raise ConfigError(
            f"data.batch_size={batch_size}: must be a multiple of the {count} processes "
            "(jax.process_count()): each process reads batch_size / processes rows of a step")
    return int(batch_size) // count


def process_rows(batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> slice:
    """The rows [p B/P, (p+1) B/P) of a global batch of B = `batch_size` rows that process p of
    P reads (defaults: this process of `jax.process_count()`). The hosts' rows are disjoint and
    together the whole batch; `data.loader="grain"` decodes only these (`data.streaming`)."""
    rows = rows_per_process(batch_size, process_count)
    index = jax.process_index() if process_index is None else int(process_index)
    return slice(index * rows, (index + 1) * rows)


def local_batch(batch: dict[str, np.ndarray], batch_size: int | None = None, *,
                process_index: int | None = None,
                process_count: int | None = None) -> dict[str, np.ndarray]:
    """This process's rows of a step's batch, from either form a batch iterator yields.

    `batch`'s fields are [N, ...] (0-d fields pass through) and N is either the global batch
    (`batch_size` rows; None: N), built alike on every host (in-memory loaders, synthetic
    batches), whose rows `process_rows` are taken, or already this host's rows (batch_size /
    processes: loaders that read host shards, `data.loader="grain"`), returned as they are. With
    one process both forms are the batch itself (returned unchanged). ValueError names the field
    and its shape when N is neither.
    """
    count = jax.process_count() if process_count is None else int(process_count)
    if count == 1:
        return batch
    rows = next((np.shape(v)[0] for v in batch.values() if np.ndim(v)), None)
    if rows is None:
        return batch
    total = rows if batch_size is None else int(batch_size)
    if rows == total:
        where = process_rows(total, process_index, count)
        return {k: v[where] if np.ndim(v) else v for k, v in batch.items()}
    out = {}
    for key, value in batch.items():
        if np.ndim(value) and np.shape(value)[0] * count != total:
            raise ValueError(
                f"batch field {key!r} has shape {np.shape(value)}: a step's batch must hold "
                f"either the global batch (data.batch_size={total} rows) or this process's "
                f"{total // count} rows (batch_size / {count} processes)")
        out[key] = value
    return out


def process_batch_shards(mesh: Mesh) -> dict[int, tuple[int, ...]]:
    """{process index: the batch shards its devices hold}, a batch shard being a position on
    data x fsdp (row-major, the order of the rows of a batch sharded by `batch_sharding`)."""
    fsdp = mesh.shape["fsdp"]
    out: dict[int, set[int]] = {}
    for (d, f, *_), device in np.ndenumerate(mesh.devices):
        out.setdefault(int(device.process_index), set()).add(d * fsdp + f)
    return {p: tuple(sorted(s)) for p, s in sorted(out.items())}


@functools.lru_cache(maxsize=8)
def _local_batch_shards(mesh: Mesh) -> int:
    """How many batch shards this process's devices hold (once per mesh, not per step)."""
    return len(process_batch_shards(mesh).get(jax.process_index(), ())) or 1


def check_batch_layout(batch_size: int, mesh: Mesh, process_count: int | None = None) -> int:
    """Rows per process (`rows_per_process`) once the mesh is known to take host-local rows:
    every process holds devices of the mesh, and the batch shards (data x fsdp) of different
    processes are disjoint and equally many, so each process's rows fill only its own devices.
    ConfigError (naming data.batch_size or mesh.axes) otherwise; one process always passes."""
    count = jax.process_count() if process_count is None else int(process_count)
    rows = rows_per_process(batch_size, count)
    if count == 1:
        return rows
    shards = process_batch_shards(mesh)
    held = [s for shard in shards.values() for s in shard]
    if len(shards) != count or len(held) != len(set(held)) or len(
            {len(s) for s in shards.values()}) != 1:
        raise ConfigError(
            f"mesh.axes={dict(mesh.shape)}: the batch shards (data x fsdp = "
            f"{batch_size_divisor(mesh)}) held by each of the {count} processes are "
            f"{shards}; each process must hold its own, equally many, so that it feeds only its "
            "rows of a batch: make mesh.axes.data x mesh.axes.fsdp a multiple of the process "
            "count (and keep tensor / expert within a host)")
    return rows


def shard_local_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows [B / processes, ...] -> global jax arrays [B, ...] split on the
    batch axis over data x fsdp (`jax.make_array_from_process_local_data`: each device gets its
    slice of the local rows, no host-to-host traffic); 0-d fields are replicated.

    ConfigError (a ValueError) names the field, its shape and the rule when the local rows do
    not split evenly over this process's batch shards.
    """
    sharding = batch_sharding(mesh)
    local_shards = _local_batch_shards(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[key] = jax.device_put(value, replicated(mesh))
            continue
        if value.shape[0] % local_shards:
            raise ConfigError(
                f"data.batch_size: batch field {key!r} has shape {value.shape}: its "
                f"{value.shape[0]} rows on this process must split evenly over the "
                f"{local_shards} batch shards of its devices (mesh data x fsdp = "
                f"{batch_size_divisor(mesh)}); pick a batch size that is a multiple")
        global_shape = (value.shape[0] * batch_size_divisor(mesh) // local_shards,
                        *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh,
                batch_size: int | None = None) -> dict[str, jax.Array]:
    """A step's host numpy batch -> global jax arrays split on the batch axis over data x fsdp.

    `batch` is the global batch of `batch_size` rows or this process's rows (`local_batch`);
    each process feeds only its rows to its devices (`shard_local_batch`). With one process: the
    batch as it is, on the mesh.
    """
    return shard_local_batch(local_batch(batch, batch_size), mesh)
