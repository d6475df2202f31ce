"""audiolm.parallel.runtime: multi-host detection, compilation cache, profiler window."""

import glob
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from audiolm.parallel import runtime


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost"}, None),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS"),
    ({"SLURM_NTASKS": "4"}, "SLURM_NTASKS"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "TPU_WORKER_HOSTNAMES"),
])
def test_multihost_variable(env, expected):
    assert runtime.multihost_variable(env) == expected


def test_single_host_does_not_initialize(monkeypatch):
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
    assert not runtime.initialize_distributed({})
    assert runtime.initialize_distributed(
        {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    assert called == [{"num_processes": 2, "process_id": 1}]
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='x': must be an int"):
        runtime.initialize_distributed({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "x"})


def test_compilation_cache_dir_holds_compiled_programs(tmp_path):
    """In a fresh process (the suite's own cache is set already): "" leaves the cache off, a
    directory receives the compiled program."""
    code = textwrap.dedent(f"""
        import os, jax, jax.numpy as jnp
        from audiolm.parallel import runtime
        assert runtime.enable_compilation_cache("") == ""
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        path = runtime.enable_compilation_cache({str(tmp_path / "cache")!r})
        jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()
        print(path, len(os.listdir(path)))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[0] == str(tmp_path / "cache") and int(out[1]) >= 1


@pytest.mark.parametrize("value, expected", [
    ("", None), (None, None), ("3,5", (3, 5)), ((2, 2), (2, 2)), (" 2, 4", (2, 4))])
def test_parse_profile_steps(value, expected):
    assert runtime.parse_profile_steps(value) == expected


@pytest.mark.parametrize("value", ["5", "1,3", "0,3", "4,2", "a,b", (1, 2, 3), 7])
def test_bad_profile_steps_name_the_field(value):
    with pytest.raises(ValueError, match=r"train.profile_steps=.*start <= stop"):
        runtime.parse_profile_steps(value)


def test_profiler_traces_the_window(tmp_path):
    profiler = runtime.Profiler(str(tmp_path), "2,3")
    f = jax.jit(lambda x: x @ x)
    x = jnp.ones((64, 64))
    states = []
    for step in range(1, 6):
        x = f(x) / 64
        profiler.step(step, x)
        states.append(profiler.active)
    assert states == [True, True, False, False, False]  # started after step 1, stopped after 3
    assert glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))



def test_keep_host_memory_reuses_freed_blocks():
    # XLA:CPU's pattern: a worker thread mallocs a 70 MB block, touches it and frees it, once
    # per run. glibc maps and unmaps it each time (17k page faults per round) unless
    # keep_host_memory() keeps it in the heap.
    script = textwrap.dedent("""
        import ctypes, ctypes.util, resource, sys, threading
        from audiolm.parallel import runtime
        if sys.argv[1] == "1":
            assert runtime.keep_host_memory()
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        size = 70 << 20

        def rounds(n):
            for _ in range(n):
                block = libc.malloc(size)
                ctypes.memset(block, 1, size)
                libc.free(block)

        def faults(n):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            worker = threading.Thread(target=rounds, args=(n,))
            worker.start()
            worker.join()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        faults(1)
        print(faults(5) // 5)
    """)
    faults = {}
    for keep in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", script, keep], capture_output=True,
                             text=True, check=True)
        faults[keep] = int(out.stdout.split()[-1])
    assert faults["0"] > 10_000 and faults["1"] < 1_000, faults
