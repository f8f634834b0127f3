"""Fits and correlations of plain arrays that the analysis and the paper's numbers share: log-log slopes
(over all points and over each half), Spearman's rank correlation, the steps-examples trade-off of
McCandlish et al. (2018) with the quality of its fit, and a line in log(x)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) on log(x) over the finite, positive points (NaN with fewer than 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def split_slopes(x, y) -> tuple[float, float]:
    """Log-log slopes over the smaller and the larger half of the x values (the halves share the middle
    point): 'scales, then flattens' shows as a first slope near the ideal and a second one nearer 0."""
    order = np.argsort(np.asarray(x, float))
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    mid = len(x) // 2
    return loglog_slope(x[: mid + 1], y[: mid + 1]), loglog_slope(x[mid:], y[mid:])


def spearman(x, y) -> float:
    """Spearman rank correlation (NaN when undefined)."""
    s = pd.Series(np.asarray(y, float)).rank().corr(pd.Series(np.asarray(x, float)).rank())
    return float(s) if s is not None else math.nan


# The critical-batch fit is good when it explains at least this share of the variance of log(steps) over the
# batch sizes (``fit_r2`` of :func:`critical_batch`): below it the fewest steps do not follow S_min (1 + B_crit
# / B) (they rise, then fall, or scatter), and the B_crit read off the fit says little about the runs.
GOOD_FIT_R2 = 0.9


def critical_batch(batch_sizes, steps) -> dict[str, float]:
    """Fit the steps-examples trade-off of McCandlish et al. (2018), S(B) = S_min + E_min / B, which is
    (S/S_min - 1)(E/E_min - 1) = 1 with E = B S, to the fewest steps to a target at each batch size (least
    squares on the relative error, both terms at least 0), and return S_min, E_min and the critical batch
    size B_crit = E_min / S_min (infinite when the steps never stop falling like 1/B: S_min = 0), with the
    fit's quality (:func:`fit_quality`)."""
    b, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    keep = np.isfinite(b) & np.isfinite(s) & (b > 0) & (s > 0)
    b, s = b[keep], s[keep]
    if len(b) < 2:
        fit = {"s_min": math.nan, "e_min": math.nan, "b_crit": math.nan, "points": int(len(b))}
        return {**fit, **fit_quality(b, s, fit)}
    design = np.column_stack([np.ones_like(b), 1.0 / b]) / s[:, None]  # rows scaled by 1/S: relative error
    coef = np.linalg.lstsq(design, np.ones_like(s), rcond=None)[0]
    if coef[0] < 0:  # no floor within reach: steps fall like 1/B over the whole range
        coef = np.array([0.0, np.sum(design[:, 1]) / np.sum(design[:, 1] ** 2)])
    elif coef[1] < 0:  # no scaling at all: steps flat in B
        coef = np.array([np.sum(design[:, 0]) / np.sum(design[:, 0] ** 2), 0.0])
    s_min, e_min = (float(c) for c in coef)
    s_min = 0.0 if s_min <= 1e-9 * s.min() else s_min  # zero to rounding
    b_crit = e_min / s_min if s_min > 0 else math.inf
    fit = {"s_min": s_min, "e_min": e_min, "b_crit": b_crit, "points": int(len(b))}
    return {**fit, **fit_quality(b, s, fit)}


def fit_quality(batch_sizes, steps, fit: dict[str, float]) -> dict[str, float | bool]:
    """How well the ``fit`` of :func:`critical_batch` (``s_min``, ``e_min``, ``b_crit``), S = S_min + E_min / B,
    describes the (finite, positive) ``steps`` at ``batch_sizes``, judged in log space, where a step count
    twice too large and one half too small weigh alike:

    - ``fit_r2``: the share of the variance of log(steps) the fit explains, 1 - sum(r^2) / sum((log S -
      mean log S)^2) with r = log S - log S_fit (1 for steps that follow the curve exactly; it can fall below
      0, and it is NaN for steps all equal);
    - ``fit_rms_log``: the root mean square of r, about the typical relative error of the fit;
    - ``fit_good``: ``fit_r2`` at least :data:`GOOD_FIT_R2`;
    - ``extrapolated``: B_crit = E_min / S_min outside the batch sizes' range (above the largest, below the
      smallest, infinite), or no fit at all: the critical batch size is then a guess beyond the data.

    Both measures are NaN with fewer than 3 points: two parameters fit any two points."""
    b, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    s_min, e_min = fit["s_min"], fit["e_min"]
    inside = len(b) > 0 and bool(b.min() <= fit["b_crit"] <= b.max())
    quality = {"fit_r2": math.nan, "fit_rms_log": math.nan, "fit_good": False, "extrapolated": not inside}
    if len(b) < 3 or not (np.isfinite(s_min) and np.isfinite(e_min)):
        return quality
    residual = np.log(s) - np.log(s_min + e_min / b)
    total = float(np.sum((np.log(s) - np.log(s).mean()) ** 2))
    r2 = 1 - float(np.sum(residual**2)) / total if total > 0 else math.nan
    return {**quality, "fit_r2": r2, "fit_rms_log": float(np.sqrt(np.mean(residual**2))),
            "fit_good": bool(r2 >= GOOD_FIT_R2)}


def log_fit(x, y) -> tuple[float, float]:
    """Least-squares fit of y = a + b log(x) over the finite points with x > 0: the slope b and the share of
    the variance of y it explains (R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    if keep.sum() < 3:
        return math.nan, math.nan
    lx, y = np.log(x[keep]), y[keep]
    slope, intercept = np.polyfit(lx, y, 1)
    residual = y - (intercept + slope * lx)
    total = np.sum((y - y.mean()) ** 2)
    return float(slope), float(1 - np.sum(residual**2) / total) if total > 0 else math.nan
