"""A keyed, chunked on-disk cache of derived per-utterance arrays (log-mel features, codec codes).

    key = cache_key(feature=mel_config, source=manifest_identity, version=FORMAT_VERSION)
    cache = ArrayCache(root, key)
    arrays = cache.get_or_compute(ids, compute=lambda ids: [features(i) for i in ids])

The key is the sha256 of the canonical JSON of everything the arrays depend on (feature or codec
config, checkpoint digest, data-source identity, format version), so a changed config never
reuses stale entries: it reads another directory, `root/<key>/`.

Layout of `root/<key>/`: shards `<name>.npz` (arrays `a0, a1, ...`) each completed by
`<name>.json` ({"ids": [...]}: id i is array `a{i}`). A writer writes both files under temporary
names, renames the `.npz` into place and then the `.json`; readers only trust shards whose
`.json` exists, so a crash mid-write leaves a stray file that is ignored, never a corrupt entry,
and concurrent writers never touch each other's files (an id written twice is read from either
shard: the values are equal by construction of the key).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

FORMAT_VERSION = 1  # of the shard layout; callers put it into their cache_key
_KEY = re.compile(r"^[0-9A-Za-z_.-]{1,128}$")


def cache_key(**parts: Any) -> str:
    """sha256 hex digest of the canonical JSON (sorted keys, no spaces) of `parts`.

    Values must be JSON-able (dicts, lists, str, numbers, bool, None); tuples count as lists.
    Raises TypeError naming the part that is not."""
    for name, value in parts.items():
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise TypeError(f"cache_key part {name}={value!r} is not JSON-able ({e}); pass "
                            "plain dicts, lists, strings and numbers") from None
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_id(path: str) -> str:
    """Cache id of a file's derived arrays: its absolute path, size and modification time, so an
    edited or replaced file misses instead of reading stale arrays."""
    path = os.path.abspath(os.path.expanduser(path))
    stat = os.stat(path)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def _check_id(item: Any) -> Hashable:
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise TypeError(f"cache id {item!r}: must be a str or an int (it is stored as JSON)")
    return item


class ArrayCache:
    """Arrays by id under `root/<key>/` (module docstring).

    Args:
      root: parent directory (created on first write).
      key: from `cache_key` (letters, digits, `_.-`; it names a directory).
    """

    def __init__(self, root: str, key: str):
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"key={key!r}: must be 1-128 letters, digits or _.- (use "
                             "cache_key(...))")
        self.directory = os.path.join(os.path.expanduser(root), key)
        self._index: dict[Hashable, tuple[str, str]] = {}  # id -> (shard .npz path, array name)
        self._seen: set[str] = set()  # shard names already indexed

    def _refresh(self) -> None:
        """Indexes shards completed since the last call (their .json exists)."""
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or name.startswith(".") or name in self._seen:
                continue
            stem = name[:-len(".json")]
            try:
                with open(os.path.join(self.directory, name)) as f:
                    ids = json.load(f)["ids"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not one of ours, or unreadable: ignored like a partial shard
            self._seen.add(name)
            shard = os.path.join(self.directory, stem + ".npz")
            for i, item in enumerate(ids):
                self._index.setdefault(item, (shard, f"a{i}"))

    def __contains__(self, item: Any) -> bool:
        if item not in self._index:
            self._refresh()
        return item in self._index

    def __len__(self) -> int:
        self._refresh()
        return len(self._index)

    def get_many(self, ids: Iterable[Any]) -> dict[Any, np.ndarray]:
        """{id: array} of the cached ids among `ids` (missing ids are absent)."""
        ids = [_check_id(i) for i in ids]
        if any(i not in self._index for i in ids):
            self._refresh()
        by_shard: dict[str, list[Any]] = {}
        for item in ids:
            if item in self._index:
                by_shard.setdefault(self._index[item][0], []).append(item)
        out = {}
        for shard, members in by_shard.items():
            with np.load(shard, allow_pickle=False) as arrays:
                for item in members:
                    out[item] = arrays[self._index[item][1]]
        return out

    def put_many(self, arrays: Mapping[Any, np.ndarray]) -> None:
        """Writes `arrays` ({id: array}) as one new shard, atomically (module docstring)."""
        if not arrays:
            return
        ids = [_check_id(i) for i in arrays]
        os.makedirs(self.directory, exist_ok=True)
        stem = uuid.uuid4().hex
        final = os.path.join(self.directory, stem)
        tmp = os.path.join(self.directory, f".{stem}.tmp")
        with open(tmp + ".npz", "wb") as f:
            np.savez(f, **{f"a{i}": np.asarray(arrays[item]) for i, item in enumerate(ids)})
        with open(tmp + ".json", "w") as f:
            json.dump({"ids": ids}, f)
        os.replace(tmp + ".npz", final + ".npz")
        os.replace(tmp + ".json", final + ".json")  # last: completes the shard

    def get_or_compute(self, ids: Sequence[Any],
                       compute: Callable[[list[Any]], Sequence[np.ndarray]], *,
                       batch: int = 256) -> dict[Any, np.ndarray]:
        """{id: array} for every id: cached ones read, the others computed `batch` at a time by
        `compute(ids) -> arrays` (aligned with its ids) and written, one shard per batch."""
        if batch < 1:
            raise ValueError(f"batch={batch}: must be >= 1")
        out = self.get_many(ids)
        missing = list(dict.fromkeys(i for i in ids if i not in out))
        for start in range(0, len(missing), batch):
            chunk = missing[start:start + batch]
            values = list(compute(chunk))
            if len(values) != len(chunk):
                raise ValueError(f"compute returned {len(values)} arrays for {len(chunk)} ids; "
                                 "it must return one array per id, in order")
            computed = {item: np.asarray(v) for item, v in zip(chunk, values)}
            self.put_many(computed)
            out.update(computed)
        return out
