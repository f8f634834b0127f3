"""The variants' figures (notebook ``variants``): batch-size schedules against lr decay (Smith, Kindermans & Le
2017), and re-tuning at a fixed step budget (Shallue et al. 2018; Hoffer et al. 2017)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from batchlab import analysis, spread
from batchlab.panels import (
    PANEL_HEIGHT, WIDTH, band, band_key, empty, errors, legend, of_panel, panel_keys, panel_title, panels,
)

ROLE_STYLE = {  # role of a variant run -> (label, color, line style)
    "constant": ("constant lr and B", "0.45", "-"),
    "lr_decay": ("lr decay", "tab:blue", "-"),
    "batch_growth": ("batch-size growth", "tab:orange", "-"),
    "batch_drop": ("drops to a small batch", "tab:green", "-"),
    "drop_constant": ("the drops' B and lr, no drops", "tab:green", ":"),
}


def batch_schedules(runs: pd.DataFrame, history: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``batch_schedules`` figure: batch-size schedules (Smith, Kindermans & Le 2017): test accuracy
    against epochs (left) and against optimizer updates (right) for a constant run, lr decay, batch-size
    growth at the same milestones, and drops to a small batch on loss plateaus (triangles: where drops began,
    over all seeds) beside the constant run at the drops' batch size and lr (dotted); each at its best cell
    (see analysis.schedule_cells), mean over seeds with a band the spread between seeds
    (:func:`batchlab.spread.seed_band`; ``settings``: the config's ``analysis`` section). One row per
    (dataset, architecture)."""
    curves = analysis.schedule_curves(runs, history)
    if curves.empty:
        return empty("no batch-schedule variants in this study (config key variants)")
    bands = schedule_bands(runs, history, settings)
    curves = curves.merge(bands[[*ROLE_STEP, "lo", "hi"]], on=ROLE_STEP, how="left")
    keys = panel_keys(curves)
    fig, axes = plt.subplots(len(keys), 2, figsize=(WIDTH, PANEL_HEIGHT * len(keys)), squeeze=False,
                             sharey="row", constrained_layout=True)
    drops = runs.assign(role=analysis.variant_roles(runs))
    drops = drops[drops["role"] == "batch_drop"] if "batch_drop_steps" in drops else drops.iloc[:0]
    cells = analysis.schedule_cells(runs)
    for row, key in enumerate(keys):
        title = panel_title(key, curves["dataset"].nunique() > 1)
        for col, x in enumerate(("epoch", "step")):
            ax = axes[row][col]
            _schedule_curves(ax, of_panel(curves, key), of_panel(cells, key), of_panel(drops, key), x)
            ax.set_xlabel("epochs" if x == "epoch" else "optimizer updates")
            ax.set_title(f"{title}: per {'epoch' if x == 'epoch' else 'update'}")
        axes[row][0].set_ylabel("test accuracy")
    legend(fig, axes.flat, band_key(bands, settings))
    return fig


ROLE_STEP = ["dataset", "arch", "role", "step"]  # a point of a role's curve


def schedule_bands(runs: pd.DataFrame, history: pd.DataFrame, settings: Mapping | None) -> pd.DataFrame:
    """The seed band of the test accuracy of each cell of :func:`analysis.schedule_cells` (the runs of
    :func:`analysis.schedule_curves`' means), per evaluated step."""
    cell = ["dataset", "arch", "variant", "batch_size", "lr"]
    chosen = analysis.schedule_cells(runs)[[*cell, "role"]]
    ids = runs.drop(columns=["role"], errors="ignore").merge(chosen, on=cell)[["run_id", "role"]]
    h = history.drop(columns=["role"], errors="ignore").merge(ids, on="run_id")
    return spread.seed_band(h, ROLE_STEP, "test_acc", **spread.interval(settings))


def _schedule_curves(ax: Axes, curves: pd.DataFrame, cells: pd.DataFrame, drops: pd.DataFrame, x: str) -> None:
    """One panel of ``batch_schedules``: each role's curve against ``x`` (epoch or step) and, on the drops'
    curve, a triangle where each drop began (the drop runs of its cell, every seed)."""
    for role, (label, color, line) in ROLE_STYLE.items():
        c = curves[curves["role"] == role]
        if c.empty:
            continue
        ax.plot(c[x], c["test_acc"], color=color, linestyle=line, marker="o" if line == "-" else None, label=label)
        band(ax, c[x], c["lo"], c["hi"], color, alpha=0.15)
        if role == "batch_drop":  # where drops began, placed on the curve
            cell = cells[cells["role"] == role].iloc[0]
            of = drops[(drops["variant"] == cell["variant"]) & (drops["batch_size"] == cell["batch_size"])
                       & np.isclose(drops["lr"], cell["lr"])]
            at = np.array(sorted(s for text in of["batch_drop_steps"].dropna() for s in json.loads(text)), float)
            if len(at):
                xs = at if x == "step" else np.interp(at, c["step"], c["epoch"])
                ax.plot(xs, np.interp(at, c["step"], c["test_acc"]), "v", color=color, markersize=5,
                        linestyle="none", label="drop begins")


def budgets(runs: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``budgets`` figure: re-tuning at a fixed step budget (Shallue et al. 2018; Hoffer et al. 2017): per
    batch size of the fixed-step variant, the best learning rate's final test accuracy (mean over seeds, bars
    the spread between seeds: :func:`batchlab.spread.seed_band`; ``settings``: the config's ``analysis``
    section) at the main grid's fixed epoch budget and at the fixed step budget, side by side."""
    table = analysis.budget_comparison(runs)
    if table.empty:
        return empty("no fixed-step variant in this study (config key variants)")
    table, bands = budget_bands(runs, table, settings)
    fig, axes = panels(table, sharey=True)
    for key, ax in axes.items():
        t = of_panel(table, key).sort_values("batch_size")
        pos = np.arange(len(t))
        steps = int(t["steps_steps"].iloc[0])
        for shift, name, color, label in ((-0.2, "epochs", "tab:blue", "fixed epochs (main grid)"),
                                          (0.2, "steps", "tab:orange", f"fixed steps ({steps})")):
            ax.bar(pos + shift, t[f"{name}_acc"], width=0.4, color=color, label=label,
                   yerr=errors(t[f"{name}_acc"], t[f"{name}_lo"], t[f"{name}_hi"]), capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(pos, [str(int(b)) for b in t["batch_size"]])
        ax.set_xlabel("batch size")
        ax.set_ylabel("best final test accuracy")
        ax.grid(axis="x", visible=False)
    legend(fig, axes.values(), band_key(bands, settings, bars=True))
    return fig


def budget_bands(runs: pd.DataFrame, table: pd.DataFrame, settings: Mapping | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`analysis.budget_comparison`'s ``table`` with the seed band of each accuracy (``epochs_lo``,
    ``epochs_hi``, ``steps_lo``, ``steps_hi``: the final test accuracy's at the chosen learning rate of
    each budget), and the bands drawn."""
    roles = analysis.variant_roles(runs)
    keys, drawn = ["dataset", "arch", "batch_size"], []
    for name, role in (("epochs", ""), ("steps", "fixed_steps")):
        bands = spread.seed_band(runs[roles == role], analysis.CELL, "final_test_acc", **spread.interval(settings))
        bands = bands.rename(columns={"lr": f"{name}_lr", "lo": f"{name}_lo", "hi": f"{name}_hi"})
        picked = table[[*keys, f"{name}_lr"]].merge(bands, on=[*keys, f"{name}_lr"])
        table = table.merge(picked[[*keys, f"{name}_lo", f"{name}_hi"]], on=keys, how="left")
        drawn.append(picked[["n_seeds", "kind"]])
    return table, pd.concat(drawn)
