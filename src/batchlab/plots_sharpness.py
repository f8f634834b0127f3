"""The sharpness figures (notebook ``interpolation``; Keskar et al. 2017): the loss along the line from the
small-batch to the large-batch solution, and the epsilon-sharpness of the final weights against batch size."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from batchlab import analysis, spread
from batchlab.panels import band, band_key, batch_axis, empty, errors, legend, of_panel, panels, ramp

LOSS_COLOR, ACCURACY_COLOR = "tab:blue", "tab:orange"
KEYS = ["dataset", "arch", "batch_size", "lr"]
ALONG = ["dataset", "arch", "small_batch", "large_batch", "split", "alpha"]  # a point of the interpolation


def interpolation(table: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``interpolation`` figure: the 1-D interpolation theta(alpha) = alpha theta_large + (1 - alpha)
    theta_small between the small-batch (alpha 0) and the large-batch (alpha 1) solution of each architecture
    (Keskar et al. 2017): train and test loss (left axis) and accuracy (right axis) along alpha, means over
    seeds, each with a band the spread between seeds (:func:`batchlab.spread.seed_band`; ``settings``: the
    config's ``analysis`` section)."""
    curves = analysis.interpolation_curves(table)
    if curves.empty:
        return empty("no interpolation in this study (evaluation.interpolation)")
    bands = {name: spread.seed_band(table, ALONG, name, **spread.interval(settings)) for name in ("loss", "accuracy")}
    curves = curves.merge(bands["loss"][[*ALONG, "lo", "hi"]], on=ALONG, how="left").merge(
        bands["accuracy"][[*ALONG, "lo", "hi"]], on=ALONG, how="left", suffixes=("_loss", "_accuracy"))
    fig, axes = panels(curves)
    first_in_row = {d: arch for d, arch in reversed(list(axes))}  # panels are placed left to right
    last_in_row = {d: arch for d, arch in axes}
    for (d, arch), ax in axes.items():
        sub = of_panel(curves, (d, arch))
        twin = ax.twinx()
        for split, ls in (("train", "-"), ("test", "--")):
            c = sub[sub["split"] == split].sort_values("alpha")
            ax.plot(c["alpha"], c["loss"], ls, color=LOSS_COLOR)
            band(ax, c["alpha"], c["lo_loss"], c["hi_loss"], LOSS_COLOR, alpha=0.15)
            twin.plot(c["alpha"], 100 * c["accuracy"], ls, color=ACCURACY_COLOR)
            band(twin, c["alpha"], 100 * c["lo_accuracy"], 100 * c["hi_accuracy"], ACCURACY_COLOR, alpha=0.15)
        small, large = int(sub["small_batch"].iloc[0]), int(sub["large_batch"].iloc[0])
        lo, hi = float(sub["alpha"].min()), float(sub["alpha"].max())
        ticks = sorted({lo, 0.0, 1.0, hi})
        ax.set_xticks(ticks, [f"{t:g}".replace("-", "−") for t in ticks])
        for alpha, b, align in ((0.0, small, "right"), (1.0, large, "left")):  # the two solutions, named on top
            ax.axvline(alpha, color="0.4", lw=0.6, ls=":")
            ax.text(alpha, 0.98, f" B={b} ", transform=ax.get_xaxis_transform(), ha=align, va="top", fontsize=6,
                    color="0.3")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("α")
        if arch == first_in_row[d]:
            ax.set_ylabel("cross-entropy", color=LOSS_COLOR)
        twin.set_ylim(0, 100)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        if arch == last_in_row[d]:
            twin.set_ylabel("accuracy (%)", color=ACCURACY_COLOR)
    handles = [plt.Line2D([], [], color=col, ls=ls) for col in (LOSS_COLOR, ACCURACY_COLOR) for ls in ("-", "--")]
    named = list(zip(handles, ["train loss", "test loss", "train accuracy", "test accuracy"]))
    legend(fig, [], [*named, *band_key(bands["loss"], settings)])
    return fig


def sharpness(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``sharpness`` figure: the epsilon-sharpness of the final weights (Keskar et al. 2017) at each batch
    size's best learning rate against batch size, one line per box size epsilon: mean over the seeds that did
    not diverge, bars the spread between them (:func:`batchlab.spread.seed_band`; ``settings``: the config's
    ``analysis`` section)."""
    phi = analysis.sharpness_at_best(runs)
    if phi.empty:
        return empty("no sharpness measured in this study (evaluation.sharpness)")
    bands = spread.seed_band(sharpness_per_seed(runs, phi), [*KEYS, "epsilon"], "phi", **spread.interval(settings))
    phi = phi.merge(bands[[*KEYS, "epsilon", "lo", "hi"]], on=[*KEYS, "epsilon"], how="left")
    fig, axes = panels(phi)
    epsilons = sorted(phi["epsilon"].unique(), reverse=True)
    colors = ramp("plasma", epsilons, 0.15, 0.6)
    for key, ax in axes.items():
        sub = of_panel(phi, key)
        for e in epsilons:
            c = sub[sub["epsilon"] == e].sort_values("batch_size")
            ax.errorbar(c["batch_size"], c["sharpness"], yerr=errors(c["sharpness"], c["lo"], c["hi"]), fmt="-o",
                        color=colors[e], capsize=2, label=f"ε = {e:g}")
        ax.set_ylim(bottom=0)
        batch_axis(ax, sub["batch_size"])
        ax.set_ylabel("sharpness φ(ε) (%)")
    legend(fig, axes.values(), band_key(bands, settings, bars=True))
    return fig


def sharpness_per_seed(runs: pd.DataFrame, phi: pd.DataFrame) -> pd.DataFrame:
    """The seeds behind :func:`analysis.sharpness_at_best`'s means ``phi``: per run that did not diverge, at
    its batch size's best learning rate, one row per epsilon measured (column ``phi``)."""
    measured = [c for c in runs.columns if c.startswith("final_sharpness_")]
    at = runs[~runs["diverged"].astype(bool)].merge(phi[KEYS].drop_duplicates(), on=KEYS)
    long = at.melt(id_vars=KEYS, value_vars=measured, var_name="epsilon", value_name="phi")
    long["epsilon"] = long["epsilon"].str.rsplit("_", n=1).str[1].astype(float)
    return long
