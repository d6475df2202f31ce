"""Process-level accelerator set-up: the host allocator, multi-host initialisation, the
persistent compilation cache and profiler traces.

`audiolm.main` calls `keep_host_memory()`, `initialize_distributed()` and
`enable_compilation_cache(...)` before any computation; the training loop drives a `Profiler`
over `train.profile_steps`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Mapping

import jax
from absl import logging

from audiolm.config import parse_profile_steps


def keep_host_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (one arena, no mmap'd blocks, no
    trimming) instead of handing it back to the OS. Returns whether it applied (glibc only).

    XLA:CPU allocates the temporary buffers of each run as one block (70 MB for a 4-layer
    Thinker fwd+bwd at B=4, T=128). glibc maps a block that large afresh and unmaps it on free
    (always from a thread's own arena, which holds at most 64 MB), so every step page-faults
    its whole scratch memory in again: 17k faults and ~25 ms of kernel time per step there
    (experiments/bench_thinker.py, one core: fwd+bwd 194 -> 166 ms). Call it before the first
    computation: a thread takes its arena at its first allocation. The cost: the process keeps
    its peak heap.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        mallopt = None
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # glibc's <malloc.h> constants
    return all(mallopt(option, value) == 1 for option, value in (
        (m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2 ** 31 - 1)))


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
