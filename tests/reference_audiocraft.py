"""Loads audiocraft 1.3.0's `audiocraft/modules/codebooks_patterns.py` by file path (test-only).

The audiocraft package itself does not import on torch 2.13 (torchaudio, xformers), but this one
file needs only torch and the standard library. Where it is looked for, in order:

1. env var AUDIOLM_AUDIOCRAFT_WHEEL: a wheel (.whl), an sdist (.tar.gz) or a directory holding
   one (e.g. the output of `pip download --no-deps audiocraft==1.3.0 -d <dir>`);
2. /work/refs (same kinds of files);
3. an installed `audiocraft` distribution (the file is read, the package is not imported).

If none is found the calling test is skipped with the reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tarfile
import tempfile
import zipfile

import pytest

MEMBER = "audiocraft/modules/codebooks_patterns.py"
DEFAULT_DIRS = ("/work/refs",)
ENV = "AUDIOLM_AUDIOCRAFT_WHEEL"


def _archives(path: str):
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        return [os.path.join(path, n) for n in names
                if n.startswith("audiocraft") and n.endswith((".whl", ".tar.gz", ".zip"))]
    return [path] if os.path.isfile(path) else []


def _read_member(archive: str) -> str | None:
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith(MEMBER):
                    return zf.read(name).decode()
    elif archive.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.name.endswith(MEMBER) and m.isfile():
                    return tf.extractfile(m).read().decode()
    return None


def _installed_source() -> tuple[str, str] | None:
    spec = importlib.util.find_spec("audiocraft")  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "modules", "codebooks_patterns.py")
        if os.path.isfile(path):
            with open(path) as f:
                return f.read(), path
    return None


@functools.lru_cache(maxsize=1)
def _find_source() -> tuple[str, str] | None:
    candidates = []
    if os.environ.get(ENV):
        candidates += _archives(os.environ[ENV])
    for d in DEFAULT_DIRS:
        candidates += _archives(d)
    for archive in candidates:
        src = _read_member(archive)
        if src is not None:
            return src, f"{archive}!{MEMBER}"
    return _installed_source()


@functools.lru_cache(maxsize=1)
def _load(src: str, origin: str):
    tmp = tempfile.mkdtemp(prefix="audiocraft_patterns_")
    path = os.path.join(tmp, "codebooks_patterns.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("audiocraft_codebooks_patterns_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ORIGIN = origin
    return module


def load():
    """Returns audiocraft's codebooks_patterns module, or skips the test with the reason."""
    pytest.importorskip("torch")
    found = _find_source()
    if found is None:
        pytest.skip(f"audiocraft 1.3.0 not found: set {ENV} to the wheel/sdist (or a directory "
                    f"with it, e.g. `pip download --no-deps audiocraft==1.3.0 -d DIR`), or put it "
                    f"in {DEFAULT_DIRS[0]}")
    return _load(*found)


def provider(ac, kind: str, n_q: int, **kw):
    """The audiocraft pattern provider equivalent to `patterns.make(kind, n_q, T, **kw)`."""
    if kind == "parallel":
        return ac.ParallelPatternProvider(n_q, **kw)
    if kind == "delay":
        return ac.DelayedPatternProvider(n_q, **kw)
    if kind == "stream_delay":
        # audiocraft asserts sorted delays, but its layout code does not depend on it: build the
        # provider with sorted delays, then set the per-stream ones.
        delays = list(kw["delays"])
        p = ac.DelayedPatternProvider(n_q, delays=sorted(delays))
        p.delays = delays
        return p
    if kind == "unroll":
        return ac.UnrolledPatternProvider(n_q, **kw)
    if kind == "coarse_first":
        return ac.CoarseFirstPattern(n_q, **kw)
    if kind == "musiclm":
        return ac.MusicLMPattern(n_q, **kw)
    raise ValueError(f"unknown kind {kind!r}")
