"""The learning-rate figures (notebook ``learning_rate``): test accuracy over the grid of batch sizes and
learning rates, the best learning rate per batch size, and the noise temperature."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab import analysis, spread
from batchlab.panels import (
    band, band_key, batch_axis, batch_colors, legend, lr_axis_label, lr_label, of_panel, panels, ramp,
)

# The heatmap's legend entry of the cells whose seeds disagree (the threshold in points).
DISAGREE = "seeds' test accuracies span more than {:g} points"


def accuracy_bands(runs: pd.DataFrame, settings: Mapping | None) -> pd.DataFrame:
    """The seed band of the final test accuracy per cell (:data:`analysis.CELL`) of ``runs``."""
    return spread.seed_band(runs, analysis.CELL, "final_test_acc", **spread.interval(settings))


def accuracy_vs_base_lr(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``accuracy_vs_base_lr`` figure: final test accuracy against the base learning rate lr/B, one curve
    per batch size (mean over seeds, a band the spread between seeds: see :func:`batchlab.spread.seed_band`;
    ``settings``: the config's ``analysis`` section); red crosses mark settings where a seed diverged."""
    bands = accuracy_bands(runs, settings)
    cells = analysis.seed_mean(runs).merge(bands[[*analysis.CELL, "lo", "hi"]], on=analysis.CELL, how="left")
    colors = batch_colors(cells["batch_size"])
    fig, axes = panels(runs)
    for key, ax in axes.items():
        for b, g in of_panel(cells, key).groupby("batch_size"):
            g = g.sort_values("base_lr")
            ax.plot(g["base_lr"], 100 * g["final_test_acc"], "-o", color=colors[b], label=f"B={b}")
            band(ax, g["base_lr"], 100 * g["lo"], 100 * g["hi"], colors[b], alpha=0.15)
            div = g[g["diverged_frac"] > 0]
            ax.plot(div["base_lr"], 100 * div["final_test_acc"], "x", color="crimson", markersize=5, mew=1.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("base learning rate lr / B")
        ax.set_ylabel("test accuracy (%)")
    diverged = (plt.Line2D([], [], ls="", marker="x", color="crimson", mew=1.2), "diverged")
    legend(fig, axes.values(), [diverged, *band_key(bands, settings)])
    return fig


def heatmap(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``heatmap`` figure: seed-mean test accuracy over batch size x learning rate, the value written in
    each cell; a red cross marks cells where a seed diverged, a dot in the corner cells whose seeds' final
    test accuracies span more than ``settings["disagreement"]`` (the config's ``analysis`` section)."""
    disagreement = spread.settings(settings)["disagreement"]
    cells = analysis.seed_mean(runs).merge(spread.seed_span(runs, analysis.CELL, "final_test_acc"),
                                           on=analysis.CELL, how="left")
    fig, axes = panels(runs)
    image = None
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        grid = sub.pivot_table(index="batch_size", columns="lr_grid_value", values="final_test_acc")
        div = sub.pivot_table(index="batch_size", columns="lr_grid_value", values="diverged_frac")
        span = sub.pivot_table(index="batch_size", columns="lr_grid_value", values="span").reindex_like(grid)
        image = ax.imshow(100 * grid.values, origin="lower", aspect="auto", vmin=0, vmax=100, cmap="viridis")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isnan(grid.values[i, j]):
                    continue
                if div.values[i, j] > 0:
                    ax.text(j, i, "×", ha="center", va="center", color="crimson", fontsize=8, fontweight="bold")
                else:
                    v = 100 * grid.values[i, j]
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=5,
                            color="white" if v < 60 else "black")
        rows, cols = np.nonzero(span.to_numpy(float) > disagreement)  # NaN (no seed) compares False
        ax.plot(cols + 0.32, rows + 0.3, ls="", marker="o", markersize=2.2, mfc="white", mec="black", mew=0.5,
                label=DISAGREE.format(100 * disagreement), gid="disagree")
        labels = [lr_label(v) for v in grid.columns]
        long = any(not label.startswith("$") for label in labels) and len(labels) > 4  # decimals need room
        ax.set_xticks(range(grid.shape[1]), labels, rotation=60 if long else 0)
        ax.set_yticks(range(grid.shape[0]), [str(b) for b in grid.index])
        ax.set_xlabel(lr_axis_label(runs))
        ax.set_ylabel("batch size B")
        ax.grid(False)
    fig.colorbar(image, ax=list(axes.values()), label="test accuracy (%)", shrink=0.9)
    diverged = (plt.Line2D([], [], ls="", marker="x", color="crimson", mew=1.2), "a seed diverged")
    legend(fig, axes.values(), [diverged], loc="outside lower center", ncols=2)
    return fig


def best_lr(runs: pd.DataFrame) -> plt.Figure:
    """The ``best_lr`` figure: the best learning rate against batch size on log-log axes, with linear and
    square-root references through the smallest batch size's best lr."""
    best = analysis.best_per_batch(analysis.seed_mean(runs))
    fig, axes = panels(runs)
    for key, ax in axes.items():
        b = of_panel(best, key).sort_values("batch_size")
        x = b["batch_size"].to_numpy(float)
        ax.plot(x, b["lr"], "-o", color="black", label="best lr")
        ax.plot(x, b["lr"].iloc[0] * x / x[0], "--", color="tab:blue", lw=0.9, label="∝ B (linear)")
        ax.plot(x, b["lr"].iloc[0] * np.sqrt(x / x[0]), ":", color="tab:orange", lw=1.1, label="∝ √B (square root)")
        ax.set_yscale("log")
        batch_axis(ax, x)
        ax.set_ylabel("best learning rate")
    legend(fig, axes.values())
    return fig


def noise_temperature(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``noise_temperature`` figure: final test accuracy against batch size, one line per noise
    temperature lr / (B (1 - m)) (Smith & Le 2018), mean over seeds with a band the spread between seeds
    (``settings``: the config's ``analysis`` section): a flat line means equal temperature, equal outcome;
    where it bends is the limit. Crosses mark settings where a seed diverged."""
    bands = accuracy_bands(runs, settings)
    cells = analysis.temperature_cells(runs).merge(bands[[*analysis.CELL, "lo", "hi"]], on=analysis.CELL, how="left")
    color = ramp("plasma", sorted(cells["temperature_bin"].unique()), 0.1, 0.75)
    fig, axes = panels(runs, sharey=True)
    for key, ax in axes.items():
        sub = of_panel(cells, key)
        for t, g in sub.groupby("temperature_bin"):
            g = g.sort_values("batch_size")
            if len(g) < 2:  # one batch size is no line
                continue
            stable = g["final_test_acc"].where(g["diverged_frac"] == 0)
            ax.plot(g["batch_size"], 100 * stable, "-o", color=color[t], label=f"T={lr_label(t)}")
            ok = g["diverged_frac"] == 0
            band(ax, g["batch_size"], 100 * g["lo"].where(ok), 100 * g["hi"].where(ok), color[t], alpha=0.15)
            div = g[g["diverged_frac"] > 0]
            ax.plot(div["batch_size"], 100 * div["final_test_acc"], "x", color=color[t], markersize=5, mew=1.2)
        batch_axis(ax, sub["batch_size"])
        ax.set_ylabel("test accuracy (%)")
    drawn = bands.merge(cells.loc[cells["diverged_frac"] == 0, analysis.CELL], on=analysis.CELL)
    diverged = (plt.Line2D([], [], ls="", marker="x", color="0.3", mew=1.2), "a seed diverged")
    legend(fig, axes.values(), [diverged, *band_key(drawn, settings)])
    return fig
