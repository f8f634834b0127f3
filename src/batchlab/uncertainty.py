"""Uncertainty over seeds: the bootstrap that resamples whole runs by seed, its percentile intervals, the
three-valued verdict of a claim's margin, and how many seeds a verdict would need.

A study's seeds are its independent repetitions: a resample draws as many seeds as the study has, with
replacement, and takes every run of each drawn seed (all its batch sizes, learning rates and evaluations
together, so a number computed on a resample, a best-of-grid selection included, is computed exactly as on the
study). With ``n`` seeds there are ``C(2n - 1, n)`` distinct resamples (10 for 3 seeds, 126 for 5); where that
is fewer than the ``resamples`` asked for, :func:`seed_resamples` takes each distinct one once with its exact
probability (multinomial: ``n! / prod(repeats!) / n^n``), so the intervals carry no Monte Carlo noise;
otherwise it draws ``resamples`` of them with a seeded generator.

Intervals are percentile intervals of the resampled values (:func:`interval`). With few seeds they are
narrow: with 3 seeds the 95% interval of a seed mean runs from the smallest to the largest seed's value (each
seed drawn three times has probability 1/27 > 2.5%), and covers the true mean less often than 95%; the
paper says how many seeds it has beside every interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from batchlab import spread

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Resample:
    """One bootstrap resample: the drawn seeds (repeats allowed, sorted) and its probability weight."""

    seeds: tuple
    weight: float


def distinct_resamples(n: int) -> int:
    """How many distinct resamples (multisets of n draws from n seeds) there are: C(2n - 1, n)."""
    return math.comb(2 * n - 1, n)


def seed_resamples(seeds: Iterable, resamples: int = 1000, seed: int = 0) -> list[Resample]:
    """The bootstrap resamples of ``seeds``, as the figures' bands draw them (batchlab.spread.draws): every
    distinct one with its exact probability where there are fewer than ``resamples`` of them, else
    ``resamples`` random draws of weight ``1 / resamples`` each. The weights sum to 1."""
    pool = sorted(set(seeds))
    if not pool:
        return []
    counts, weights = spread.draws(len(pool), resamples, seed)
    return [Resample(tuple(np.repeat(pool, row).tolist()), float(w)) for row, w in zip(counts, weights)]


def resample_table(table: pd.DataFrame, drawn: Sequence) -> pd.DataFrame:
    """The rows of ``table`` for the drawn seeds, a seed drawn twice appearing twice: each copy a run of its
    own (``seed`` the draw's position, ``run_id`` suffixed with it), so seed means count it twice and a
    join on ``run_id`` keeps the copies apart."""
    parts = []
    by_seed = dict(tuple(table.groupby("seed", sort=False)))
    for k, s in enumerate(drawn):
        part = by_seed[s].copy()
        part["seed"] = k
        if "run_id" in part:
            part["run_id"] = part["run_id"].astype(str) + f"~{k}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` under probability ``weights`` (NaN values and their weights left
    out, the rest renormalized): the smallest value whose cumulative weight reaches ``q`` (the inverse of the
    empirical distribution function, as numpy's ``inverted_cdf``). NaN when no value is finite."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = ~np.isnan(v)
    if not keep.any():
        return math.nan
    v, w = v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    v, cdf = v[order], np.cumsum(w[order]) / w.sum()
    return float(v[min(np.searchsorted(cdf, q - 1e-12), len(v) - 1)])


def interval(values: Sequence[float], weights: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval at ``level`` of resampled ``values`` (weighted as :func:`weighted_quantile`)."""
    tail = (1 - level) / 2
    return weighted_quantile(values, weights, tail), weighted_quantile(values, weights, 1 - tail)


def weighted_sd(values: Sequence[float], weights: Sequence[float]) -> float:
    """The standard deviation of resampled ``values`` under ``weights`` (NaN left out): the bootstrap
    standard error of the number they resample."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = ~np.isnan(v)
    if not keep.any():
        return math.nan
    v, w = v[keep], w[keep] / w[keep].sum()
    mean = float((w * v).sum())
    return float(math.sqrt(max(0.0, float((w * (v - mean) ** 2).sum()))))


@dataclass(frozen=True)
class Judgement:
    """A claim's answer for one architecture: ``state`` (:data:`HOLDS`, :data:`FAILS` or
    :data:`INCONCLUSIVE`), its margin on the study (``margin``, above 0 where the rule holds) and the
    interval of the margin over the resamples (``lo``, ``hi``), and ``seeds_needed``: about how many seeds
    would take the margin's interval off 0 at the observed effect (:func:`seeds_needed`)."""

    state: str
    margin: float
    lo: float
    hi: float
    seeds_needed: float


def judge(margin: float, resampled: Sequence[float], weights: Sequence[float], level: float, n_seeds: int) -> Judgement:
    """The three-valued verdict of a rule whose ``margin`` on the study is above 0 where it holds, from its
    ``resampled`` margins: holds where the interval at ``level`` lies above 0, does not hold where it lies
    at or below 0, inconclusive where it contains 0, or where more than the interval's tail of the resamples
could not compute the margin (their margins NaN)."""
    lo, hi = interval(resampled, weights, level)
    v, w = np.asarray(resampled, dtype=float), np.asarray(weights, dtype=float)
    untested = float(w[np.isnan(v)].sum() / w.sum()) if len(w) else 1.0
    if untested > (1 - level) / 2 or not math.isfinite(margin) or math.isnan(lo) or math.isnan(hi):
        state = INCONCLUSIVE
    elif lo > 0:
        state = HOLDS
    elif hi <= 0:
        state = FAILS
    else:
        state = INCONCLUSIVE
    needed = seeds_needed(margin, resampled, weights, level, n_seeds)
    if state == INCONCLUSIVE and math.isfinite(needed):  # the normal approximation can ask for fewer than
        needed = max(needed, n_seeds + 1.0)             # the seeds that left it undecided: at least one more
    return Judgement(state, margin, lo, hi, needed)


def seeds_needed(margin: float, resampled: Sequence[float], weights: Sequence[float], level: float,
                 n_seeds: int) -> float:
    """About how many seeds the margin's interval would need to leave 0, were the observed ``margin`` the
    true one: the standard error shrinks as 1 / sqrt(seeds), so ``n * (z * se / margin)^2`` (``se`` the
    bootstrap's, ``z`` the normal quantile of ``level``), at least ``n_seeds``'s worth where the verdict is
    already clear. inf for a margin of 0; NaN where the spread is unknown."""
    se = weighted_sd(resampled, weights)
    if not (math.isfinite(se) and math.isfinite(margin)):
        return math.nan
    if margin == 0:
        return math.inf
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    return float(max(2, math.ceil(n_seeds * (z * se / abs(margin)) ** 2)))
