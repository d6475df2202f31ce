"""Importing this turns on JAX's persistent compilation cache for the tests (train and parallel
tests compile many small identical programs, one loop.run per test; the subprocesses they start
inherit the cache through the environment)."""

import os
import tempfile

import jax

_CACHE = os.path.join(tempfile.gettempdir(), f"audiolm-test-jax-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
