"""The batch-size figures (notebook ``batch_size``): how training unfolds per batch size at its best learning
rate, the train-test gap at the end, the steps to target accuracies and the critical batch size."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab import analysis
from batchlab.panels import batch_axis, batch_colors, legend, note, of_panel, panels, ramp, target_label


def learning_curves(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """The ``learning_curves`` figure: test accuracy during training, per batch size, at that batch size's
    best learning rate (mean over seeds)."""
    best = analysis.best_per_batch(analysis.seed_mean(runs))
    colors = batch_colors(best["batch_size"])
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        evaluations = of_panel(history, key)
        for _, row in of_panel(best, key).iterrows():
            h = evaluations[(evaluations["batch_size"] == row["batch_size"]) & np.isclose(evaluations["lr"], row["lr"])]
            curve = h.groupby("epoch")["test_acc"].mean()
            b = int(row["batch_size"])
            ax.plot(curve.index, 100 * curve.values, color=colors[b], label=f"B={b}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
    legend(fig, axes.values())
    return fig


def generalization_gap(runs: pd.DataFrame) -> plt.Figure:
    """The ``generalization_gap`` figure: train minus test accuracy at the end of training against batch size:
    grey per grid lr (runs that did not diverge), black at each batch size's best lr."""
    cells = analysis.seed_mean(runs)
    best = analysis.best_per_batch(cells)
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        for _, g in sub[sub["diverged_frac"] == 0].groupby("lr_grid_value"):
            g = g.sort_values("batch_size")
            ax.plot(g["batch_size"], 100 * g["gap_acc"], "-", color="0.7", lw=0.8)
        b = of_panel(best, key).sort_values("batch_size")
        ax.plot(b["batch_size"], 100 * b["gap_acc"], "-o", color="black", label="best lr per B")
        batch_axis(ax, cells["batch_size"])
        ax.set_ylabel("train − test accuracy (points)")
    legend(fig, axes.values(), [(plt.Line2D([], [], color="0.7", lw=0.8), "one grid lr")])
    return fig


def steps_to_target(runs: pd.DataFrame) -> plt.Figure:
    """The ``steps_to_target`` figure: fewest steps to each target test accuracy (best lr per batch size)
    against batch size, with the perfect-scaling line (slope -1) through the smallest batch size."""
    cells = analysis.seed_mean(runs)
    targets = analysis.target_columns(runs)
    colors = ramp("plasma", targets, 0.15, 0.7)
    fig, axes = panels(runs)
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        drawn = False
        for col in targets:
            s = analysis.steps_to_target(sub, col).sort_values("batch_size")
            s = s[s["steps"].notna()]
            if s.empty:
                continue
            x = s["batch_size"].to_numpy(float)
            ax.plot(x, s["steps"], "-o", color=colors[col], label=target_label(col))
            ax.plot(x, s["steps"].iloc[0] * x[0] / x, "--", color=colors[col], lw=0.7)
            drawn = True
        if not drawn:
            note(ax, "no target reached")
        ax.set_yscale("log")
        batch_axis(ax, sub["batch_size"])
        ax.set_ylabel("steps to target")
    legend(fig, axes.values(), [(plt.Line2D([], [], ls="--", color="0.4", lw=0.7), "perfect scaling (slope −1)")])
    return fig


def noise_scale(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """The ``noise_scale`` figure: the gradient noise scale B_simple over training, per batch size at its best
    learning rate (numerator and denominator averaged over seeds, then divided)."""
    curves = analysis.noise_scale_curves(runs, history)
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        for b, c in of_panel(curves, key).groupby("batch_size"):
            ok = c[c["b_simple"] > 0]  # a log axis: a noise scale measured as 0 has no place on it
            ax.plot(ok["progress"], ok["b_simple"], color=colors[int(b)], marker="o", label=f"B={int(b)}")
        ax.set_yscale("log")
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("noise scale $B_{simple}$")
    legend(fig, axes.values())
    return fig


def distance(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """The ``distance`` figure: distance from initialization ||w_t - w_0|| against the number of updates on a
    log axis, per batch size at its best learning rate (mean over seeds); Hoffer et al. (2017) expect it to
    grow like log t."""
    curves = analysis.best_lr_curves(runs, history, ["dist_init"])
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        for b, c in of_panel(curves, key).groupby("batch_size"):
            c = c[c["step"] > 0]  # step 0 has no place on a log axis
            ax.plot(c["step"], c["dist_init"], color=colors[int(b)], label=f"B={int(b)}")
        ax.set_xscale("log")
        ax.set_xlabel("updates (optimizer steps)")
        ax.set_ylabel(r"$\|w_t - w_0\|_2$")
    legend(fig, axes.values())
    return fig


def grad_norms(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """The ``grad_norms`` figure: the distribution of the minibatch gradient norm ||g_B|| over training, per
    batch size at its best learning rate: the median of the steps between two evaluations, and their 10-90%
    range (shaded for the smallest, the middle and the largest batch size), mean over seeds, against the
    epoch."""
    columns = ["grad_norm_q10", "grad_norm_q50", "grad_norm_q90"]
    curves = analysis.best_lr_curves(runs, history, columns)
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
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"gradient norm $\|g_B\|_2$")
    band = plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0)
    legend(fig, axes.values(), [(band, "10–90% of steps (smallest, middle, largest B)")])
    return fig


def critical_batch(runs: pd.DataFrame) -> plt.Figure:
    """The ``critical_batch`` figure: steps against examples to reach the target (the highest reached at half
    the batch sizes), one point per batch size at its fastest learning rate, with the fitted trade-off
    S = S_min + E_min/B of McCandlish et al. (2018); the cross marks the critical batch size E_min / S_min."""
    cells = analysis.seed_mean(runs)
    fits = analysis.critical_batches(runs).set_index(["dataset", "arch"])
    colors = batch_colors(runs["batch_size"])
    fig, axes = panels(runs)
    for key, ax in axes.items():
        column, steps = analysis.main_target(of_panel(cells, key))
        if column is None:
            note(ax, "no target reached")
            continue
        steps = steps.sort_values("batch_size")
        b, s = steps["batch_size"].to_numpy(float), steps["steps"].to_numpy(float)
        for bi, si in zip(b, s):
            ax.plot(bi * si, si, "o", color=colors[int(bi)], label=f"B={int(bi)}")
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
    legend(fig, axes.values())
    return fig
