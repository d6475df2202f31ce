"""Pictures for people: matplotlib figures of codebook patterns (matplotlib is optional and
imported on use; `audiolm.patterns` itself stays on numpy / jax alone)."""

from __future__ import annotations

from typing import Any

import numpy as np

from audiolm import patterns


def plot_pattern(pattern: patterns.Pattern, keep_only_valid_steps: bool = False,
                 ax: Any = None) -> Any:
    """The layout of `pattern` as an image [codebook q, step s] coloured by frame index (blank =
    special token); draws into `ax` if given. Returns the Figure."""
    import matplotlib.pyplot as plt

    table = patterns.grid(pattern, keep_only_valid_steps).astype(float)
    table[table < 0] = np.nan
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * table.shape[1]),
                                        max(2.0, 0.4 * table.shape[0])))
    else:
        fig = ax.figure
    im = ax.imshow(table, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("sequence step s")
    ax.set_ylabel("codebook q")
    ax.set_title(repr(pattern))
    fig.colorbar(im, ax=ax, label="frame t")
    return fig
