"""What every importer shares: one safetensors reader and one name-mapping helper.

`TensorStore(path)` reads a safetensors checkpoint lazily, one tensor at a time, as float32
numpy: a directory (shards listed by `model.safetensors.index.json`, else every `*.safetensors`
/ `*.sft` file in it) or one file. bfloat16 tensors, which numpy lacks, are read through jax.
It behaves as a read-only mapping name -> array.

`Reader(get_tensor, keys, part)` is the mapping table of one part, written as code in the
importer: each `r(their_name, shape)` (or `r.linear`, `r.vector`) reads one of their tensors for
one of our params, the transform applied by the caller (transpose, split per head, stack per
expert). A tensor the layout needs but the checkpoint lacks, or of the wrong shape, raises
`CheckpointError` naming it; `r.check_all_used()` raises `CheckpointError` listing the
checkpoint tensors nothing read (leftovers), so a silent partial import cannot happen.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from audiolm import extras

GetTensor = Callable[[str], np.ndarray]
WEIGHT_SUFFIXES = (".safetensors", ".sft")


class CheckpointError(ValueError):
    """A checkpoint does not match the layout its config implies."""


class TensorStore(Mapping[str, np.ndarray]):
    """Lazy float32 access to the tensors of a safetensors file or checkpoint directory."""

    def __init__(self, path: str, exclude: Callable[[str], bool] = lambda file: False):
        """`exclude(file_name)`: files of a directory to leave out (e.g. a codec's weights)."""
        self._safe_open = extras.require("safetensors", "import",
                                         f"Reading the weights of {path!r}").safe_open
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(path):
            files = [path]
        elif os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            self.file_of = {k: os.path.join(path, v) for k, v in weight_map.items()}
            for file in set(self.file_of.values()):
                if not os.path.exists(file):
                    raise FileNotFoundError(f"{index} lists shard {file!r}, which is missing")
            return
        elif os.path.isdir(path):
            files = [os.path.join(path, f) for f in sorted(os.listdir(path))
                     if f.endswith(WEIGHT_SUFFIXES) and not exclude(f)]
        else:
            raise FileNotFoundError(f"path={path!r} is neither a safetensors file nor a directory")
        if not files:
            raise FileNotFoundError(f"{path!r} has no *.safetensors weights")
        self.file_of = {}
        for file in files:
            with self._open(file) as f:
                for k in f.keys():
                    self.file_of[k] = file

    def _open(self, file: str, framework: str = "numpy"):
        """safe_open, with a damaged file (truncated download, interrupted copy) named."""
        try:
            return self._safe_open(file, framework=framework)
        except Exception as e:  # SafetensorError is not exported under one stable name
            raise CheckpointError(f"{file}: not a readable safetensors file, truncated or "
                                  f"corrupt ({type(e).__name__}: {e}); download it again") from None

    def __getitem__(self, name: str) -> np.ndarray:
        file = self.file_of[name]
        try:
            with self._open(file) as f:
                if f.get_slice(name).get_dtype() in ("BF16", "bfloat16"):
                    with self._open(file, "flax") as g:  # numpy has no bfloat16
                        return np.asarray(g.get_tensor(name), dtype=np.float32)
                return np.asarray(f.get_tensor(name), dtype=np.float32)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{file}: tensor {name} cannot be read, the file is truncated "
                                  f"or corrupt ({type(e).__name__}: {e})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.file_of))

    def __len__(self) -> int:
        return len(self.file_of)

    def __contains__(self, name: object) -> bool:
        return name in self.file_of


def leftovers_error(unused: Iterable[str], where: str) -> CheckpointError | None:
    """The error for checkpoint tensors nothing mapped (None when there are none)."""
    unused = sorted(unused)
    if not unused:
        return None
    shown = ", ".join(unused[:20]) + (f", ... ({len(unused)} in all)" if len(unused) > 20 else "")
    return CheckpointError(f"{where}{len(unused)} checkpoint tensors are not used by the "
                           f"config's layout: {shown}")


class Reader:
    """Reads their tensors by name for our params, checks shapes, records what was read.

    `part` prefixes the names in messages (the checkpoint's own prefix, e.g. "talker").
    """

    def __init__(self, get_tensor: GetTensor, keys: Iterable[str], part: str = ""):
        self.get_tensor = get_tensor
        self.keys = set(keys)
        self.part = part
        self.used: set[str] = set()

    def _full(self, name: str) -> str:
        return f"{self.part}.{name}" if self.part else name

    def has(self, name: str) -> bool:
        return name in self.keys

    def __call__(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Their tensor `name` as float32; `shape` (when given) must match."""
        if name not in self.keys:
            expected = f" (expected shape {tuple(shape)})" if shape is not None else ""
            raise CheckpointError(f"{self.part or 'the'} checkpoint is missing tensor "
                                  f"{self._full(name)}{expected}")
        x = np.asarray(self.get_tensor(name))
        if shape is not None and tuple(x.shape) != tuple(shape):
            raise CheckpointError(f"{self._full(name)} has shape {tuple(x.shape)}, expected "
                                  f"{tuple(shape)} for this config")
        self.used.add(name)
        return x if x.dtype == np.float32 else x.astype(np.float32)

    def linear(self, name: str, d_in: int, d_out: int, bias: bool = False) -> dict:
        """torch Linear `name` ([out, in] weight) -> {'kernel': [in, out], 'bias': [out]}."""
        out = {"kernel": self(f"{name}.weight", (d_out, d_in)).T.copy()}
        if bias:
            out["bias"] = self(f"{name}.bias", (d_out,))
        return out

    def vector(self, name: str, size: int) -> np.ndarray:
        return self(name, (size,))

    def check_all_used(self, where: str = "") -> None:
        """CheckpointError listing the tensors of `keys` that nothing read."""
        error = leftovers_error(self.keys - self.used, where)
        if error is not None:
            raise error
