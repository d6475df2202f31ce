"""Process-level accelerator set-up: multi-host initialisation, the persistent compilation cache
and profiler traces.

`audiolm.main` calls `initialize_distributed()` and `enable_compilation_cache(...)` before any
computation; the training loop drives a `Profiler` over `train.profile_steps`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
from absl import logging

from audiolm.config import parse_profile_steps


def multihost_variable(environ: Mapping[str, str] | None = None) -> str | None:
    """Name of the environment variable that says this process is one of a multi-host job
    (a coordinator address, a SLURM job of several tasks, several TPU worker hosts), else None."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "SLURM_NTASKS"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "TPU_WORKER_HOSTNAMES"
    return None


def initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Calls `jax.distributed.initialize()` when the environment names a multi-host job (once;
    before any computation). Returns whether it did.

    SLURM and Cloud TPU are detected by JAX itself; with `JAX_COORDINATOR_ADDRESS` the process
    count and index come from `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`.
    """
    env = os.environ if environ is None else environ
    variable = multihost_variable(env)
    if variable is None or jax.distributed.is_initialized():
        return False
    kwargs: dict[str, Any] = {}
    if variable == "JAX_COORDINATOR_ADDRESS":
        for key, name in (("num_processes", "JAX_NUM_PROCESSES"),
                          ("process_id", "JAX_PROCESS_ID")):
            if env.get(name):
                try:
                    kwargs[key] = int(env[name])
                except ValueError:
                    raise ValueError(f"{name}={env[name]!r}: must be an int") from None
    logging.info("multi-host job (%s set): jax.distributed.initialize(%s)", variable, kwargs)
    jax.distributed.initialize(**kwargs)
    return True


def enable_compilation_cache(cache_dir: str) -> str:
    """Points JAX's persistent compilation cache at `cache_dir` ("" leaves it off), so a rerun
    or a resumed run skips recompiling. A directory already set (JAX_COMPILATION_CACHE_DIR, the
    test suite) wins. Returns the directory in use ("" if none)."""
    current = jax.config.jax_compilation_cache_dir
    if current or not cache_dir:
        return current or ""
    path = os.path.abspath(os.path.expanduser(cache_dir))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    return path


class Profiler:
    """Writes a `jax.profiler` trace of train steps `start..stop` under `logdir` (the run's
    TensorBoard directory: TensorBoard's profile plugin / XProf open
    `logdir/plugins/profile/<time>/*.xplane.pb`).

    The training loop calls `step(n, state)` with the number of completed steps `n` after every
    step; the trace starts after step start - 1 and stops after step
    `stop`, blocking on `state` so that it holds that step's device work. `close()` stops a
    trace cut short (a run that ends or fails inside the window).
    """

    def __init__(self, logdir: str, profile_steps: Any):
        self.logdir = logdir
        self.window = parse_profile_steps(profile_steps)
        self.active = False
        self.done = False

    def step(self, completed: int, state: Any = None) -> None:
        if self.window is None or self.done:
            return
        start, stop = self.window
        if not self.active and start - 1 <= completed < stop:
            os.makedirs(self.logdir, exist_ok=True)
            jax.profiler.start_trace(self.logdir)
            self.active = True
            logging.info("profiling steps %d..%d into %s", completed + 1, stop, self.logdir)
        elif self.active and completed >= stop:
            if state is not None:
                jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.done = True
