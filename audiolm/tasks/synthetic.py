"""Synthetic batches: a family's `example_batch`, as a deterministic resumable dataset.

With `config.data.name == "synthetic"` every task draws its batches here: split s has
`data.num_<split>` examples, i.e. ceil(num / batch_size) distinct batches
`family.example_batch(config.model, batch_size, rng)` with
`rng = np.random.default_rng([data.seed, split, k])`. Training cycles through them
(`data.num_train == data.batch_size` trains on one fixed batch); evaluation makes one pass.
Batch k is a pure function of the seed, so the iterator state is `{"index": n}` and resume is
exact.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from audiolm.config import ConfigError

SPLITS = ("train", "validation", "test")


class SyntheticBatches:
    """Deterministic, resumable stream of `family.example_batch` batches.

    Args:
      family: the family module.
      model_config: `config.model`.
      batch_size: rows per batch.
      seed: `config.data.seed`.
      split: "train" | "validation" | "test" (different streams).
      num_batches: distinct batches of the split.
      repeat: cycle through them endlessly (training) or stop after one pass.
    """

    def __init__(self, family: Any, model_config: Any, batch_size: int, seed: int,
                 split: str = "train", num_batches: int = 1, repeat: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: must be one of {SPLITS}")
        self.family = family
        self.model_config = model_config
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.split_id = SPLITS.index(split)
        self.num_batches = max(int(num_batches), 1)
        self.repeat = bool(repeat)
        self.index = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if not self.repeat and self.index >= self.num_batches:
            raise StopIteration
        rng = np.random.default_rng([self.seed, self.split_id, self.index % self.num_batches])
        self.index += 1
        return {k: np.asarray(v) for k, v in
                self.family.example_batch(self.model_config, self.batch_size, rng).items()}

    def get_state(self) -> dict[str, int]:
        return {"index": self.index}

    def set_state(self, state: dict[str, Any]) -> None:
        self.index = int(state["index"])


def is_synthetic(config: Any) -> bool:
    return str(config.data.get("name", "")) == "synthetic"


def make_batches(config: Any, family: Any, split: str, finite: bool = False) -> SyntheticBatches:
    """The synthetic iterator of `split` (endless for training, one pass when `finite`)."""
    size = config.data.get("batch_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"data.batch_size={size!r}: must be a positive int")
    examples = int(config.data.get(f"num_{split}", size))
    return SyntheticBatches(family, config.model, size, int(config.data.get("seed", 0)),
                            split, -(-examples // size), repeat=not finite)
