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
inner axes `tensor` and `expert` stay within a host). Every host runs the same program: each
builds the same global batch from the same seeded iterator and `shard_batch` hands each device
only its own rows (`jax.make_array_from_callback`), so no host-to-host data traffic is needed.
Checkpoints are written collectively by Orbax (each host writes its own shards); metrics and
logs are written by process 0 only.
"""

from __future__ import annotations

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


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global numpy batch -> global jax arrays split on the batch axis over data x fsdp.

    Every process passes the same global batch; each device receives only its rows.
    """
    div = batch_size_divisor(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[key] = jax.device_put(value, replicated(mesh))
            continue
        if value.shape[0] % div:
            raise ConfigError(
                f"data.batch_size: batch field {key!r} has {value.shape[0]} rows, not divisible by "
                f"the {div} batch shards (mesh data x fsdp); pick a batch size that is a multiple")
        sharding = batch_sharding(mesh)
        out[key] = jax.make_array_from_callback(value.shape, sharding,
                                                lambda idx, v=value: v[idx])
    return out
