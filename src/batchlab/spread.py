"""The spread between seeds that the figures draw around a seed mean: per cell (a group of rows, one per seed),
the mean and an interval, either the percentile bootstrap interval of the mean (the seeds resampled with
replacement) or, for fewer than 3 seeds, where a bootstrap says little, the seeds' minimum and maximum; and the
words a legend uses for it. Settings come from the config's ``analysis`` section (level, resamples, seed,
disagreement). Numpy and pandas only."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

# The schema's defaults of the config's analysis section (workflow/schemas/config.schema.yaml) that figures use.
DEFAULTS = {"level": 0.95, "resamples": 1000, "seed": 0, "disagreement": 0.02}
# Cells with fewer seeds get the seeds' min-max rather than a bootstrap interval.
MIN_BOOTSTRAP_SEEDS = 3
# Resampled means held at once (cells x resamples): bounds the memory of a table of thousands of cells.
CHUNK = 2_000_000


def settings(given: Mapping | None = None) -> dict:
    """The analysis settings a figure uses: ``given`` (the config's ``analysis`` section, or part of it) over
    :data:`DEFAULTS`."""
    return {**DEFAULTS, **(given or {})}


def interval(given: Mapping | None = None) -> dict:
    """The keyword arguments of :func:`seed_band` (level, resamples, seed) from the analysis settings
    ``given`` (see :func:`settings`)."""
    chosen = settings(given)
    return {name: chosen[name] for name in ("level", "resamples", "seed")}


def seed_band(df: pd.DataFrame, keys: Sequence[str], value: str, level: float = DEFAULTS["level"],
              resamples: int = DEFAULTS["resamples"], seed: int = DEFAULTS["seed"]) -> pd.DataFrame:
    """Per cell of ``df`` (rows grouped by ``keys``, one row per seed): the mean of ``value`` over the seeds
    that have one (NaN is left out), ``lo`` and ``hi``, ``n_seeds`` and ``kind``.

    With at least 3 seeds (``kind`` "bootstrap"), lo and hi are the percentile interval at ``level`` of the
    mean of n seeds drawn with replacement: every distinct draw with its exact probability where there are
    fewer distinct draws than ``resamples`` (3 seeds have 10), else ``resamples`` random draws of a Generator
    seeded by (``seed``, n), so a cell's interval depends on its values alone. With fewer (``kind``
    "min-max"), lo and hi are the seeds' minimum and maximum. A cell without any value has no row."""
    keys = list(keys)
    columns = [*keys, "mean", "lo", "hi", "n_seeds", "kind"]
    rows = df[[*keys, value]].dropna()
    if rows.empty:
        return pd.DataFrame(columns=columns)
    groups = rows.groupby(keys, sort=True)
    out = groups[value].agg(["mean", "min", "max", "size"]).reset_index()
    cell = groups.ngroup().to_numpy()
    order = np.argsort(cell, kind="stable")  # each cell's values contiguous, cells in the order of out
    cell, values = cell[order], rows[value].to_numpy(float)[order]
    lo, hi = out["min"].to_numpy(float).copy(), out["max"].to_numpy(float).copy()
    sizes = out["size"].to_numpy()
    for n in np.unique(sizes[sizes >= MIN_BOOTSTRAP_SEEDS]):
        which = np.flatnonzero(sizes == n)
        matrix = values[np.searchsorted(cell, which)[:, None] + np.arange(n)]  # one row per cell
        lo[which], hi[which] = _bootstrap(matrix, level, resamples, seed)
    out["lo"], out["hi"], out["n_seeds"] = lo, hi, sizes
    out["kind"] = np.where(sizes >= MIN_BOOTSTRAP_SEEDS, "bootstrap", "min-max")
    return out[columns]


def draws(n: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap draws of n seeds as counts (one row per draw: how often each seed was drawn) and the
    probability of each: every distinct draw (a multiset of n of the n seeds) with its exact multinomial
    probability where there are fewer than ``resamples`` of them, else ``resamples`` random draws of equal
    weight from a Generator seeded by (``seed``, n)."""
    if math.comb(2 * n - 1, n) < resamples:
        counts = np.array([np.bincount(c, minlength=n) for c in itertools.combinations_with_replacement(range(n), n)])
        log_p = math.lgamma(n + 1) - np.sum([[math.lgamma(k + 1) for k in row] for row in counts], axis=1)
        return counts, np.exp(log_p - n * math.log(n))
    picks = np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))
    counts = (picks[:, :, None] == np.arange(n)).sum(axis=1)
    return counts, np.full(resamples, 1.0 / resamples)


def _bootstrap(matrix: np.ndarray, level: float, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval at ``level`` of the bootstrap mean of each row of ``matrix`` (cells x seeds):
    the smallest resampled mean whose cumulative probability reaches (1 - level) / 2, and the smallest that
    reaches (1 + level) / 2."""
    n = matrix.shape[1]
    counts, weights = draws(n, resamples, seed)
    lo, hi = np.empty(len(matrix)), np.empty(len(matrix))
    step = max(1, CHUNK // len(counts))
    for start in range(0, len(matrix), step):
        means = matrix[start:start + step] @ counts.T / n  # cells x draws
        order = np.argsort(means, axis=1, kind="stable")
        cumulative = np.cumsum(weights[order], axis=1)
        picked = [np.argmax(cumulative >= q - 1e-12, axis=1) for q in ((1 - level) / 2, (1 + level) / 2)]
        sorted_means = np.take_along_axis(means, order, axis=1)
        rows = np.arange(len(means))
        lo[start:start + step] = sorted_means[rows, picked[0]]
        hi[start:start + step] = sorted_means[rows, picked[1]]
    return lo, hi


def seed_span(df: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """Per cell of ``df`` (rows grouped by ``keys``, one per seed): ``span``, the largest minus the smallest
    ``value`` of its seeds (0 for a single seed; NaN values left out), and ``n_seeds``."""
    g = df[df[value].notna()].groupby(list(keys), sort=True)[value]
    return pd.DataFrame({"span": g.max() - g.min(), "n_seeds": g.size()}).reset_index()


def describe(bands: pd.DataFrame, level: float = DEFAULTS["level"], noun: str = "band") -> str:
    """What the intervals of ``bands`` (from :func:`seed_band`, possibly of several figures' curves) are, as a
    legend or caption says it: "band: 95% bootstrap interval over seeds", "band: min-max of 2 seeds", or both
    where cells differ ("... (min-max where fewer than 3 seeds)"); "" without cells."""
    if bands.empty:
        return ""
    kinds = set(bands["kind"])
    small = sorted(int(n) for n in bands.loc[bands["kind"] == "min-max", "n_seeds"].unique())
    interval = f"{noun}: {100 * level:g}% bootstrap interval over seeds"
    if kinds == {"bootstrap"}:
        return interval
    if kinds == {"min-max"}:
        seeds = str(small[0]) if len(small) == 1 else f"{small[0]}–{small[-1]}"
        return f"{noun}: min-max of {seeds} seed{'s' if small[-1] > 1 else ''}"
    return f"{interval} (min-max where fewer than {MIN_BOOTSTRAP_SEEDS} seeds)"
