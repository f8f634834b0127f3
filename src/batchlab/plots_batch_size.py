"""The batch-size figures (notebook ``batch_size``): how training unfolds per batch size at its best learning
rate, the train-test gap at the end, the steps to target accuracies and the critical batch size. Curves and
points of seed means carry the spread between seeds (:func:`batchlab.spread.seed_band`; ``settings``: the
config's ``analysis`` section)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab import analysis, gradient_noise, spread, uncertainty
from batchlab.panels import (
    band, band_key, batch_axis, batch_colors, errors, legend, note, of_panel, panels, ramp, target_label,
)

KEYS = ["dataset", "arch", "batch_size"]


def curve_bands(runs: pd.DataFrame, history: pd.DataFrame, x: str, column: str,
                settings: Mapping | None) -> pd.DataFrame:
    """The seed band of ``column`` of the history per (dataset, arch, batch size) at that batch size's best
    learning rate (as :func:`analysis.best_lr_curves` picks it), at each ``x`` (step or epoch)."""
    best = analysis.best_per_batch(analysis.seed_mean(runs))[[*KEYS, "lr"]]
    at_best = history.merge(best, on=[*KEYS, "lr"])
    return spread.seed_band(at_best, [*KEYS, x], column, **spread.interval(settings))


def cell_bands(runs: pd.DataFrame, column: str, settings: Mapping | None) -> pd.DataFrame:
    """The seed band of the runs' ``column`` per cell, keyed by (dataset, arch, batch size, lr)."""
    bands = spread.seed_band(runs, analysis.CELL, column, **spread.interval(settings))
    return bands[[*KEYS, "lr", "lo", "hi", "n_seeds", "kind"]]


def learning_curves(runs: pd.DataFrame, history: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``learning_curves`` figure: test accuracy during training, per batch size, at that batch size's
    best learning rate (mean over seeds, a band the spread between seeds)."""
    bands = curve_bands(runs, history, "epoch", "test_acc", settings)
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        for b, c in of_panel(bands, key).groupby("batch_size"):
            c = c.sort_values("epoch")
            ax.plot(c["epoch"], 100 * c["mean"], color=colors[int(b)], label=f"B={int(b)}")
            band(ax, c["epoch"], 100 * c["lo"], 100 * c["hi"], colors[int(b)])
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
    legend(fig, axes.values(), band_key(bands, settings))
    return fig


def generalization_gap(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``generalization_gap`` figure: train minus test accuracy at the end of training against batch size
    (means over seeds, each with a band the spread between seeds): grey per grid lr (runs that did not
    diverge), black at each batch size's best lr."""
    bands = spread.seed_band(runs, analysis.CELL, "gap_acc", **spread.interval(settings))
    cells = analysis.seed_mean(runs).merge(bands[[*analysis.CELL, "lo", "hi"]], on=analysis.CELL, how="left")
    best = analysis.best_per_batch(cells)
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        for _, g in sub[sub["diverged_frac"] == 0].groupby("lr_grid_value"):
            g = g.sort_values("batch_size")
            ax.plot(g["batch_size"], 100 * g["gap_acc"], "-", color="0.7", lw=0.8)
            band(ax, g["batch_size"], 100 * g["lo"], 100 * g["hi"], "0.7", alpha=0.1)
        b = of_panel(best, key).sort_values("batch_size")
        ax.plot(b["batch_size"], 100 * b["gap_acc"], "-o", color="black", label="best lr per B")
        band(ax, b["batch_size"], 100 * b["lo"], 100 * b["hi"], "black", alpha=0.15)
        batch_axis(ax, cells["batch_size"])
        ax.set_ylabel("train − test accuracy (points)")
    legend(fig, axes.values(), [(plt.Line2D([], [], color="0.7", lw=0.8), "one grid lr"), *band_key(bands, settings)])
    return fig


def steps_to_target(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``steps_to_target`` figure: fewest steps to each target test accuracy (best lr per batch size;
    mean over seeds, a band the spread between seeds at that lr) against batch size, with the perfect-scaling
    line (slope -1) through the smallest batch size."""
    cells = analysis.seed_mean(runs)
    targets = analysis.target_columns(runs)
    bands = {col: cell_bands(runs, col, settings) for col in targets}
    colors = ramp("plasma", targets, 0.15, 0.7)
    drawn = []
    fig, axes = panels(runs)
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        reached = False
        for col in targets:
            s = analysis.steps_to_target(sub, col).sort_values("batch_size")
            s = s[s["steps"].notna()].merge(bands[col], on=[*KEYS, "lr"], how="left")
            if s.empty:
                continue
            x = s["batch_size"].to_numpy(float)
            ax.plot(x, s["steps"], "-o", color=colors[col], label=target_label(col))
            band(ax, x, s["lo"], s["hi"], colors[col], alpha=0.15)
            ax.plot(x, s["steps"].iloc[0] * x[0] / x, "--", color=colors[col], lw=0.7)
            drawn.append(s)
            reached = True
        if not reached:
            note(ax, "no target reached")
        ax.set_yscale("log")
        batch_axis(ax, sub["batch_size"])
        ax.set_ylabel("steps to target")
    perfect = (plt.Line2D([], [], ls="--", color="0.4", lw=0.7), "perfect scaling (slope −1)")
    legend(fig, axes.values(), [perfect, *band_key(pd.concat(drawn) if drawn else cells.iloc[:0], settings)])
    return fig


def noise_scale(runs: pd.DataFrame, history: pd.DataFrame, decay: float | None = None, level: float | None = None,
                resamples: int | None = None, seed: int | None = None) -> plt.Figure:
    """The ``noise_scale`` figure: the gradient noise scale B_simple over training, per batch size at its best
    learning rate. The line: numerator and denominator each a debiased moving average over the run's
    evaluations (decay ``decay``), averaged over seeds, then divided (:func:`analysis.noise_scale_curves`);
    the band: its spread over seeds (:func:`_seed_band`, at ``level`` from ``resamples`` resamples drawn
    with ``seed``); faint points: the seed-mean ratio of each evaluation alone. Settings left None take the
    schema's defaults of ``analysis``."""
    level, resamples, seed = (gradient_noise.analysis_default(name) if value is None else value
                              for name, value in (("level", level), ("resamples", resamples), ("seed", seed)))
    curves = analysis.noise_scale_curves(runs, history, decay)
    per_run = analysis.noise_scale_runs(runs, history, decay) if len(curves) else curves
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs, sharey=True)
    kinds = set()
    for key, ax in axes.items():
        measured = of_panel(per_run, key)
        for b, c in of_panel(curves, key).groupby("batch_size"):
            color = colors[int(b)]
            raw = c[c["b_simple_raw"] > 0]  # a log axis: a noise scale measured as 0 has no place on it
            ax.plot(raw["progress"], raw["b_simple_raw"], "o", color=color, alpha=0.25, markersize=3, lw=0)
            band = _seed_bands(measured[measured["batch_size"] == b], level, resamples, seed)
            band = band.merge(c[["step", "progress"]], on="step")
            kinds |= set(band["kind"])
            band = band[band["lo"] > 0]
            ax.fill_between(band["progress"], band["lo"], band["hi"], color=color, alpha=0.18, lw=0)
            ok = c[c["b_simple"] > 0]
            ax.plot(ok["progress"], ok["b_simple"], "-", color=color, marker=".", label=f"B={int(b)}")
        ax.set_yscale("log")
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("noise scale $B_{simple}$")
    extra = [(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0), kind) for kind in sorted(kinds)]
    raw = plt.Line2D([], [], ls="", marker="o", color="0.5", alpha=0.4, markersize=3)
    legend(fig, axes.values(), [*extra, (raw, "one evaluation alone (no average)")])
    return fig


def _seed_bands(rows: pd.DataFrame, level: float, resamples: int, seed: int) -> pd.DataFrame:
    """Per evaluated step of one batch size's runs (rows of :func:`analysis.noise_scale_runs`), the band over
    seeds of its smoothed B_simple (:func:`_seed_band`): ``step``, ``lo``, ``hi`` and ``kind``."""
    bands = [(step, *_seed_band(g["noise_trace_ema"], g["noise_grad_sq_ema"], level, resamples, seed))
             for step, g in rows.groupby("step", sort=True)]
    return pd.DataFrame(bands, columns=["step", "lo", "hi", "kind"])


def _seed_band(trace, grad_sq, level: float, resamples: int, seed: int) -> tuple[float, float, str]:
    """The spread over seeds of B_simple = mean(trace) / mean(grad_sq) (one value per seed): with 3 seeds or
    more the ``level`` percentile bootstrap interval of that seed mean (the draws of the other figures'
    bands, batchlab.spread.draws), with fewer the smallest and the largest seed's own ratio; and which one
    it is."""
    trace, grad_sq = np.asarray(trace, float), np.asarray(grad_sq, float)
    if len(trace) < 3:
        own = gradient_noise.ratio(trace, grad_sq)
        return float(own.min()), float(own.max()), "min–max over seeds"
    counts, weights = spread.draws(len(trace), int(resamples), seed)
    means = gradient_noise.ratio(counts @ trace / len(trace), counts @ grad_sq / len(trace))
    lo, hi = uncertainty.interval(means, weights, level)
    return lo, hi, f"{level:.0%} bootstrap interval of the seed mean"


def distance(runs: pd.DataFrame, history: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``distance`` figure: distance from initialization ||w_t - w_0|| against the number of updates on a
    log axis, per batch size at its best learning rate (mean over seeds, a band the spread between seeds);
    Hoffer et al. (2017) expect it to grow like log t."""
    bands = curve_bands(runs, history, "step", "dist_init", settings)
    curves = analysis.best_lr_curves(runs, history, ["dist_init"]).merge(
        bands[[*KEYS, "step", "lo", "hi"]], on=[*KEYS, "step"], how="left")
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        for b, c in of_panel(curves, key).groupby("batch_size"):
            c = c[c["step"] > 0]  # step 0 has no place on a log axis
            ax.plot(c["step"], c["dist_init"], color=colors[int(b)], label=f"B={int(b)}")
            band(ax, c["step"], c["lo"], c["hi"], colors[int(b)])
        ax.set_xscale("log")
        ax.set_xlabel("updates (optimizer steps)")
        ax.set_ylabel(r"$\|w_t - w_0\|_2$")
    legend(fig, axes.values(), band_key(bands[bands["step"] > 0], settings))
    return fig


def grad_norms(runs: pd.DataFrame, history: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``grad_norms`` figure: the distribution of the minibatch gradient norm ||g_B|| over training, per
    batch size at its best learning rate: the median of the steps between two evaluations, and their 10-90%
    range (shaded for the smallest, the middle and the largest batch size), mean over seeds, against the
    epoch; bars on the median are the spread between seeds."""
    columns = ["grad_norm_q10", "grad_norm_q50", "grad_norm_q90"]
    bands = curve_bands(runs, history, "step", "grad_norm_q50", settings)
    curves = analysis.best_lr_curves(runs, history, columns).merge(
        bands[[*KEYS, "step", "lo", "hi"]], on=[*KEYS, "step"], how="left")
    colors = batch_colors(runs["batch_size"])
    sizes = sorted(colors)
    banded = {sizes[0], sizes[len(sizes) // 2], sizes[-1]}  # bands of every batch size would hide each other
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        for b, c in of_panel(curves, key).groupby("batch_size"):
            c = c[c["grad_norm_q50"].notna() & (c["step"] > 0)]
            color = colors[int(b)]
            if int(b) in banded:
                ax.fill_between(c["epoch"], c["grad_norm_q10"], c["grad_norm_q90"], color=color, alpha=0.18, lw=0)
            ax.plot(c["epoch"], c["grad_norm_q50"], color=color, label=f"B={int(b)}")
            ax.errorbar(c["epoch"], c["grad_norm_q50"], yerr=errors(c["grad_norm_q50"], c["lo"], c["hi"]), fmt="none",
                        ecolor=color, elinewidth=0.6, capsize=0)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"gradient norm $\|g_B\|_2$")
    steps = plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0)
    legend(fig, axes.values(), [(steps, "10–90% of steps (smallest, middle, largest B)"),
                                *band_key(bands[bands["step"] > 0], settings, bars=True)])
    return fig


def critical_batch(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``critical_batch`` figure: steps against examples to reach the target (the highest reached at half
    the batch sizes), one point per batch size at its fastest learning rate (mean over seeds, bars the spread
    between seeds), with the fitted trade-off S = S_min + E_min/B of McCandlish et al. (2018); the cross marks
    the critical batch size E_min / S_min."""
    cells = analysis.seed_mean(runs)
    drawn = []
    fits = analysis.critical_batches(runs).set_index(["dataset", "arch"])
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs)
    for key, ax in axes.items():
        column, steps = analysis.main_target(of_panel(cells, key))
        if column is None:
            note(ax, "no target reached")
            continue
        steps = steps.merge(cell_bands(of_panel(runs, key), column, settings), on=[*KEYS, "lr"], how="left")
        steps = steps.sort_values("batch_size")
        drawn.append(steps)
        b, s = steps["batch_size"].to_numpy(float), steps["steps"].to_numpy(float)
        bars = errors(s, steps["lo"], steps["hi"])
        for i, (bi, si) in enumerate(zip(b, s)):  # the spread of S moves a point along the line E = B S
            ax.errorbar(bi * si, si, xerr=bi * bars[:, i:i + 1], yerr=bars[:, i:i + 1], fmt="o", color=colors[int(bi)],
                        elinewidth=0.7, capsize=0, label=f"B={int(bi)}")
        fit = fits.loc[key]
        if np.isfinite(fit["e_min"]):
            grid = np.geomspace(b.min() / 2, b.max() * 2, 100)
            fitted = fit["s_min"] + fit["e_min"] / grid
            ax.plot(grid * fitted, fitted, "-", color="0.3", lw=0.9, label="fit $S=S_{min}+E_{min}/B$")
            if np.isfinite(fit["b_crit"]) and fit["b_crit"] > 0:
                s_crit = 2 * fit["s_min"]  # on the fit, B_crit needs twice the fewest steps
                ax.plot(fit["b_crit"] * s_crit, s_crit, "X", color="crimson", markersize=7,
                        label="$B_{crit}=E_{min}/S_{min}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{ax.get_title()}, {target_label(column)}")
        ax.set_xlabel("examples to target")
        ax.set_ylabel("steps to target")
    legend(fig, axes.values(), band_key(pd.concat(drawn) if drawn else cells.iloc[:0], settings, bars=True))
    return fig
