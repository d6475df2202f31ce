"""Mesh tests compile many small identical programs: share them (tests/compile_cache.py)."""

import tests.compile_cache  # noqa: F401
