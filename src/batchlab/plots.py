"""The study's figures, in one paper-ready style. Each function takes the tables (never run folders) and
returns a matplotlib Figure with one panel per (dataset, architecture); :func:`save` writes PDF and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab import analysis, models  # noqa: E402

WIDTH = 6.5  # inches: the text width of the paper
PANEL_HEIGHT = 2.1


def style() -> None:
    """One consistent style for every figure: serif 8 pt text, light grid, no top/right spines."""
    plt.rcParams.update({
        "font.family": "serif", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
        "legend.fontsize": 6.5, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
        "grid.linewidth": 0.5, "lines.linewidth": 1.2, "lines.markersize": 3.5, "legend.frameon": False,
        "savefig.dpi": 200, "savefig.bbox": "tight", "pdf.fonttype": 42, "ps.fonttype": 42,
        "image.cmap": "viridis",
    })


def save(fig: plt.Figure, path_stem: str | Path) -> list[Path]:
    """Write ``<stem>.pdf`` (for the paper) and ``<stem>.png`` (for the report and README)."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for p in paths:
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def _panels(runs: pd.DataFrame, sharey: bool = False):
    order = {a: i for i, a in enumerate(models.ARCHITECTURES)}  # registry order: simplest model first
    keys = sorted(runs[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    datasets = list(dict.fromkeys(k[0] for k in keys))
    ncols = max(sum(k[0] == d for k in keys) for d in datasets)
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(WIDTH, PANEL_HEIGHT * len(datasets)), squeeze=False,
                             sharey=sharey, constrained_layout=True)
    placed = {}
    for r, d in enumerate(datasets):
        archs = [k[1] for k in keys if k[0] == d]
        for c in range(ncols):
            if c < len(archs):
                ax = axes[r][c]
                ax.set_title(f"{models.label(archs[c])} ({d})" if len(datasets) > 1 else models.label(archs[c]))
                placed[(d, archs[c])] = ax
            else:
                axes[r][c].set_visible(False)
    return fig, placed


def _batch_colors(batch_sizes) -> dict[int, tuple]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    cmap = plt.get_cmap("viridis")
    return {b: cmap(i / max(1, len(sizes) - 1)) for i, b in enumerate(sizes)}


def _log2_axis(ax, values) -> None:
    """Batch sizes on a log2 axis; with many of them, every other one is labelled so labels never collide."""
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(v) for v in values))
    step = 1 if len(ticks) <= 6 else 2
    ax.set_xticks(ticks, [str(t) if i % step == 0 else "" for i, t in enumerate(ticks)])
    ax.minorticks_off()


def _legend(fig: plt.Figure, axes: dict, extra: list[tuple] | tuple = (), loc: str = "outside right center",
            ncols: int = 1) -> None:
    """One legend right of the panels (or at ``loc``): every panel's entries once, then ``extra`` (handle,
    label) pairs."""
    handles, labels = [], []
    for ax in axes.values():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc=loc, ncols=ncols)


def _lr_label(value: float) -> str:
    """A grid learning rate as a tick label: powers of two as 2^k, anything else with 2 significant digits."""
    exponent = np.log2(value)
    return f"$2^{{{int(round(exponent))}}}$" if abs(exponent - round(exponent)) < 1e-9 else f"{value:.2g}"


def _lr_axis_label(runs: pd.DataFrame) -> str:
    rule = runs["lr_scaling"].iloc[0]
    ref = int(runs["lr_reference_batch_size"].iloc[0])
    if rule == "none":
        return "learning rate"
    return f"base learning rate (lr at B={ref}, {rule} scaling)" if ref != 1 else "base learning rate (lr / B)"


def accuracy_vs_base_lr(runs: pd.DataFrame) -> plt.Figure:
    """(a) Final test accuracy against the base learning rate lr/B, one curve per batch size."""
    cells = analysis.seed_mean(runs)
    colors = _batch_colors(cells["batch_size"])
    fig, axes = _panels(runs)
    for (d, arch), ax in axes.items():
        sub = cells[(cells["dataset"] == d) & (cells["arch"] == arch)]
        for b, g in sub.groupby("batch_size"):
            g = g.sort_values("base_lr")
            ax.plot(g["base_lr"], 100 * g["final_test_acc"], "-o", color=colors[b], label=f"B={b}")
            div = g[g["diverged_frac"] > 0]
            ax.plot(div["base_lr"], 100 * div["final_test_acc"], "x", color="crimson", markersize=5, mew=1.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("base learning rate lr / B")
        ax.set_ylabel("test accuracy (%)")
    _legend(fig, axes, [(plt.Line2D([], [], ls="", marker="x", color="crimson", mew=1.2), "diverged")])
    return fig


def heatmap(runs: pd.DataFrame) -> plt.Figure:
    """(b) Test accuracy over batch size x learning rate; a red cross marks cells where a seed diverged."""
    cells = analysis.seed_mean(runs)
    fig, axes = _panels(runs)
    image = None
    for (d, arch), ax in axes.items():
        sub = cells[(cells["dataset"] == d) & (cells["arch"] == arch)]
        grid = sub.pivot_table(index="batch_size", columns="lr_grid_value", values="final_test_acc")
        div = sub.pivot_table(index="batch_size", columns="lr_grid_value", values="diverged_frac")
        image = ax.imshow(100 * grid.values, origin="lower", aspect="auto", vmin=0, vmax=100, cmap="viridis")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isnan(grid.values[i, j]):
                    continue
                if div.values[i, j] > 0:
                    ax.text(j, i, "×", ha="center", va="center", color="crimson", fontsize=8, fontweight="bold")
                else:
                    v = 100 * grid.values[i, j]
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=5, color="white" if v < 60 else "black")
        labels = [_lr_label(v) for v in grid.columns]
        long = any(not label.startswith("$") for label in labels) and len(labels) > 4
        ax.set_xticks(range(grid.shape[1]), labels, rotation=60 if long else 0)
        ax.set_yticks(range(grid.shape[0]), [str(b) for b in grid.index])
        ax.set_xlabel(_lr_axis_label(runs))
        ax.set_ylabel("batch size B")
        ax.grid(False)
    fig.colorbar(image, ax=list(axes.values()), label="test accuracy (%)", shrink=0.9)
    return fig


def learning_curves(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """(c) Test accuracy during training, per batch size, at that batch size's best learning rate."""
    best = analysis.best_per_batch(analysis.seed_mean(runs))
    colors = _batch_colors(best["batch_size"])
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        for _, row in best[(best["dataset"] == d) & (best["arch"] == arch)].iterrows():
            h = history[(history["dataset"] == d) & (history["arch"] == arch) & (history["batch_size"] == row["batch_size"])
                        & np.isclose(history["lr"], row["lr"])]
            curve = h.groupby("epoch")["test_acc"].mean()
            ax.plot(curve.index, 100 * curve.values, color=colors[int(row["batch_size"])], label=f"B={int(row['batch_size'])}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
    _legend(fig, axes)
    return fig


def generalization_gap(runs: pd.DataFrame) -> plt.Figure:
    """(d) Train minus test accuracy at the end of training against batch size: grey per grid lr (runs that
    did not diverge), black at each batch size's best lr."""
    cells = analysis.seed_mean(runs)
    best = analysis.best_per_batch(cells)
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        sub = cells[(cells["dataset"] == d) & (cells["arch"] == arch) & (cells["diverged_frac"] == 0)]
        for _, g in sub.groupby("lr_grid_value"):
            g = g.sort_values("batch_size")
            ax.plot(g["batch_size"], 100 * g["gap_acc"], "-", color="0.7", lw=0.8)
        b = best[(best["dataset"] == d) & (best["arch"] == arch)].sort_values("batch_size")
        ax.plot(b["batch_size"], 100 * b["gap_acc"], "-o", color="black", label="best lr per B")
        _log2_axis(ax, cells["batch_size"])
        ax.set_xlabel("batch size B")
        ax.set_ylabel("train − test accuracy (points)")
    _legend(fig, axes, [(plt.Line2D([], [], color="0.7", lw=0.8), "one grid lr")])
    return fig


def best_lr(runs: pd.DataFrame) -> plt.Figure:
    """(e) The best learning rate against batch size on log-log axes, with linear and square-root
    references through the smallest batch size's best lr."""
    best = analysis.best_per_batch(analysis.seed_mean(runs))
    fig, axes = _panels(runs)
    for (d, arch), ax in axes.items():
        b = best[(best["dataset"] == d) & (best["arch"] == arch)].sort_values("batch_size")
        x = b["batch_size"].to_numpy(float)
        ax.plot(x, b["lr"], "-o", color="black", label="best lr")
        ax.plot(x, b["lr"].iloc[0] * x / x[0], "--", color="tab:blue", lw=0.9, label="∝ B (linear)")
        ax.plot(x, b["lr"].iloc[0] * np.sqrt(x / x[0]), ":", color="tab:orange", lw=1.1, label="∝ √B (square root)")
        ax.set_yscale("log")
        _log2_axis(ax, x)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("best learning rate")
    _legend(fig, axes)
    return fig


def steps_to_target(runs: pd.DataFrame) -> plt.Figure:
    """(f) Fewest steps to each target test accuracy (best lr per batch size) against batch size, with the
    perfect-scaling line (slope -1) through the smallest batch size."""
    cells = analysis.seed_mean(runs)
    targets = analysis.target_columns(runs)
    fig, axes = _panels(runs)
    cmap = plt.get_cmap("plasma")
    for (d, arch), ax in axes.items():
        sub = cells[(cells["dataset"] == d) & (cells["arch"] == arch)]
        drawn = False
        for i, col in enumerate(targets):
            s = analysis.steps_to_target(sub, col).sort_values("batch_size")
            s = s[s["steps"].notna()]
            if s.empty:
                continue
            color = cmap(0.15 + 0.7 * i / max(1, len(targets) - 1))
            x = s["batch_size"].to_numpy(float)
            ax.plot(x, s["steps"], "-o", color=color, label=f"{100 * float(col.rsplit('_', 1)[1]):.0f}% test acc.")
            ax.plot(x, s["steps"].iloc[0] * x[0] / x, "--", color=color, lw=0.7)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no target reached", ha="center", va="center", transform=ax.transAxes)
        ax.set_yscale("log")
        _log2_axis(ax, sub["batch_size"])
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to target")
    _legend(fig, axes, [(plt.Line2D([], [], ls="--", color="0.4", lw=0.7), "perfect scaling (slope −1)")])
    return fig


FIGURES = {
    "accuracy_vs_base_lr": accuracy_vs_base_lr,
    "heatmap": heatmap,
    "best_lr": best_lr,
    "learning_curves": learning_curves,
    "generalization_gap": generalization_gap,
    "steps_to_target": steps_to_target,
}


def noise_scale(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """(g) The gradient noise scale B_simple over training, per batch size at its best learning rate
    (numerator and denominator averaged over seeds, then divided)."""
    curves = analysis.noise_scale_curves(runs, history)
    colors = _batch_colors(runs["batch_size"])
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        for b, c in curves[(curves["dataset"] == d) & (curves["arch"] == arch)].groupby("batch_size"):
            ok = c[c["b_simple"] > 0]
            ax.plot(ok["progress"], ok["b_simple"], color=colors[int(b)], marker="o", label=f"B={int(b)}")
        ax.set_yscale("log")
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("noise scale $B_{simple}$")
    _legend(fig, axes)
    return fig


def distance(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """(h) Distance from initialization ||w_t - w_0|| against the number of updates on a log axis, per batch
    size at its best learning rate (mean over seeds); Hoffer et al. (2017) expect it to grow like log t."""
    curves = analysis.best_lr_curves(runs, history, ["dist_init"])
    colors = _batch_colors(runs["batch_size"])
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        for b, c in curves[(curves["dataset"] == d) & (curves["arch"] == arch)].groupby("batch_size"):
            c = c[c["step"] > 0]
            ax.plot(c["step"], c["dist_init"], color=colors[int(b)], label=f"B={int(b)}")
        ax.set_xscale("log")
        ax.set_xlabel("updates (optimizer steps)")
        ax.set_ylabel(r"$\|w_t - w_0\|_2$")
    _legend(fig, axes)
    return fig


def grad_norms(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """(i) The distribution of the minibatch gradient norm ||g_B|| over training, per batch size at its best
    learning rate: the median of the steps between two evaluations, and their 10-90% range (shaded for the
    smallest, the middle and the largest batch size), mean over seeds, against the epoch."""
    columns = ["grad_norm_q10", "grad_norm_q50", "grad_norm_q90"]
    curves = analysis.best_lr_curves(runs, history, columns)
    colors = _batch_colors(runs["batch_size"])
    sizes = sorted(colors)
    banded = {sizes[0], sizes[len(sizes) // 2], sizes[-1]}  # bands of every batch size would hide each other
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        for b, c in curves[(curves["dataset"] == d) & (curves["arch"] == arch)].groupby("batch_size"):
            c = c[c["grad_norm_q50"].notna() & (c["step"] > 0)]
            color = colors[int(b)]
            if int(b) in banded:
                ax.fill_between(c["epoch"], c["grad_norm_q10"], c["grad_norm_q90"], color=color, alpha=0.18, lw=0)
            ax.plot(c["epoch"], c["grad_norm_q50"], color=color, label=f"B={int(b)}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"gradient norm $\|g_B\|_2$")
    _legend(fig, axes, [(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0), "10–90% of steps (smallest, middle, largest B)")])
    return fig


def noise_temperature(runs: pd.DataFrame) -> plt.Figure:
    """(j) Final test accuracy against batch size, one line per noise temperature lr / (B (1 - m)) (Smith & Le
    2018): a flat line means equal temperature, equal outcome; where it bends is the limit. Crosses mark
    settings where a seed diverged."""
    cells = analysis.temperature_cells(runs)
    temps = sorted(cells["temperature_bin"].unique())
    cmap = plt.get_cmap("plasma")
    color = {t: cmap(0.1 + 0.75 * i / max(1, len(temps) - 1)) for i, t in enumerate(temps)}
    fig, axes = _panels(runs, sharey=True)
    for (d, arch), ax in axes.items():
        sub = cells[(cells["dataset"] == d) & (cells["arch"] == arch)]
        for t, g in sub.groupby("temperature_bin"):
            g = g.sort_values("batch_size")
            if len(g) < 2:
                continue
            stable = g["final_test_acc"].where(g["diverged_frac"] == 0)
            ax.plot(g["batch_size"], 100 * stable, "-o", color=color[t], label=f"T={_lr_label(t)}")
            div = g[g["diverged_frac"] > 0]
            ax.plot(div["batch_size"], 100 * div["final_test_acc"], "x", color=color[t], markersize=5, mew=1.2)
        _log2_axis(ax, sub["batch_size"])
        ax.set_xlabel("batch size B")
        ax.set_ylabel("test accuracy (%)")
    _legend(fig, axes, [(plt.Line2D([], [], ls="", marker="x", color="0.3", mew=1.2), "a seed diverged")])
    return fig


def critical_batch(runs: pd.DataFrame) -> plt.Figure:
    """(k) Steps against examples to reach the target (the highest reached at half the batch sizes), one
    point per batch size at its fastest learning rate, with the fitted trade-off S = S_min + E_min/B of
    McCandlish et al. (2018); the cross marks the critical batch size E_min / S_min."""
    cells = analysis.seed_mean(runs)
    fits = analysis.critical_batches(runs).set_index(["dataset", "arch"])
    colors = _batch_colors(runs["batch_size"])
    fig, axes = _panels(runs)
    for (d, arch), ax in axes.items():
        column, steps = analysis.main_target(cells[(cells["dataset"] == d) & (cells["arch"] == arch)])
        if column is None:
            ax.text(0.5, 0.5, "no target reached", ha="center", va="center", transform=ax.transAxes)
            continue
        steps = steps.sort_values("batch_size")
        b, s = steps["batch_size"].to_numpy(float), steps["steps"].to_numpy(float)
        for bi, si in zip(b, s):
            ax.plot(bi * si, si, "o", color=colors[int(bi)], label=f"B={int(bi)}")
        fit = fits.loc[(d, arch)]
        if np.isfinite(fit["e_min"]):
            grid = np.geomspace(b.min() / 2, b.max() * 2, 100)
            fitted = fit["s_min"] + fit["e_min"] / grid
            ax.plot(grid * fitted, fitted, "-", color="0.3", lw=0.9, label="fit $S=S_{min}+E_{min}/B$")
            if np.isfinite(fit["b_crit"]) and fit["b_crit"] > 0:
                s_crit = 2 * fit["s_min"]
                ax.plot(fit["b_crit"] * s_crit, s_crit, "X", color="crimson", markersize=7,
                        label="$B_{crit}=E_{min}/S_{min}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{ax.get_title()}, {100 * float(column.rsplit('_', 1)[1]):.0f}% test acc.")
        ax.set_xlabel("examples to target")
        ax.set_ylabel("steps to target")
    _legend(fig, axes)
    return fig


def _log_values_axis(ax) -> None:
    """A log y axis labelled at 1, 2 and 5 times powers of ten, so a range of less than a decade is labelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def time_to_target(runs: pd.DataFrame, hardware: pd.DataFrame) -> plt.Figure:
    """Time to target on the measured hardware against batch size, one column per (dataset, architecture).
    Top: the fewest steps to the target of analysis.main_target (best lr per batch size) times the measured seconds per
    step, log-log, the fastest batch size ringed, and grey the same steps at the smallest batch size's cost
    per step (what the time would be if a step cost the same at every batch size). Bottom: the measured
    throughput (samples/s) up to the largest batch size that fits, grid batch sizes filled; a red cross marks
    the first batch size that ran out of memory."""
    times = analysis.time_to_target(runs, hardware)
    order = {a: i for i, a in enumerate(models.ARCHITECTURES)}
    keys = sorted(runs[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    several = runs["dataset"].nunique() > 1
    fig, axes = plt.subplots(2, len(keys), figsize=(WIDTH, 2 * PANEL_HEIGHT), squeeze=False, constrained_layout=True)
    for c, (d, arch) in enumerate(keys):
        top, bottom = axes[0][c], axes[1][c]
        label = models.label(arch)
        t = times[(times["dataset"] == d) & (times["arch"] == arch)].sort_values("batch_size")
        hw = hardware[(hardware["dataset"] == d) & (hardware["arch"] == arch)].sort_values("batch_size") if len(hardware) else hardware
        target = t["target"].iloc[0] if len(t) else np.nan
        top.set_title(f"{label} ({d})" if several else label)
        ok = t[t["seconds"].notna()]
        if ok.empty:
            why = "hardware not measured" if hw.empty else "no target reached"
            top.text(0.5, 0.5, why, ha="center", va="center", transform=top.transAxes)
            top.set_xticks([])
            top.set_yticks([])
        else:
            x = ok["batch_size"].to_numpy(float)
            top.plot(x, ok["seconds"], "-o", color="black", label="steps × measured time per step")
            top.plot(x, ok["steps"] * ok["seconds_per_step"].iloc[0], "--", color="0.6", lw=0.8,
                     label="steps × time per step at the smallest B")
            best = ok[ok["fastest"]]
            top.plot(best["batch_size"], best["seconds"], "o", ms=9, mfc="none", mec="crimson", mew=1.3,
                     label="fastest to target")
            _log_values_axis(top)
            top.set_ylabel(f"seconds to {100 * target:.0f}% test acc.")
            _log2_axis(top, t["batch_size"])
        top.set_xlabel("batch size B")
        if hw.empty:
            bottom.text(0.5, 0.5, "hardware not measured", ha="center", va="center", transform=bottom.transAxes)
            bottom.set_xticks([])
            bottom.set_yticks([])
        else:
            fits = hw[hw["fits"].astype(bool)]
            bottom.plot(fits["batch_size"], fits["samples_per_s"], "-", color="tab:blue")
            grid = fits[fits["in_grid"].astype(bool)]
            extra = fits[~fits["in_grid"].astype(bool)]
            bottom.plot(grid["batch_size"], grid["samples_per_s"], "o", color="tab:blue", label="measured (grid B)")
            bottom.plot(extra["batch_size"], extra["samples_per_s"], "o", mfc="white", color="tab:blue",
                        label="measured (beyond the grid)")
            failed = hw[~hw["fits"].astype(bool)]
            if len(failed):
                bottom.axvline(failed["batch_size"].min(), color="crimson", lw=0.8, ls=":", label="out of memory")
            if len(fits):
                last = fits.iloc[-1]
                bottom.annotate(f"{last['peak_memory_mb']:.3g} MB", (last["batch_size"], last["samples_per_s"]),
                                textcoords="offset points", xytext=(-4, -10), ha="right", fontsize=6)
            _log_values_axis(bottom)
            _log2_axis(bottom, hw["batch_size"])
            bottom.set_ylabel("samples / s")
            device = str(hw["device_name"].iloc[0]) if hw["device"].iloc[0] == "cuda" else "CPU"
            bottom.set_title(f"throughput on {device}", fontsize=7)
        bottom.set_xlabel("batch size B")
    _legend(fig, {i: ax for i, ax in enumerate(axes.flat)}, loc="outside lower center", ncols=3)
    return fig


ROLE_STYLE = {  # role of a variant run -> (label, color, line style)
    "constant": ("constant lr and B", "0.45", "-"),
    "lr_decay": ("lr decay", "tab:blue", "-"),
    "batch_growth": ("batch-size growth", "tab:orange", "-"),
    "batch_drop": ("drops to a small batch", "tab:green", "-"),
    "drop_constant": ("the drops' B and lr, no drops", "tab:green", ":"),
}


def _empty(message: str) -> plt.Figure:
    """A one-panel figure that says why there is nothing to draw (the study measured none of it)."""
    fig, ax = plt.subplots(figsize=(WIDTH, PANEL_HEIGHT), constrained_layout=True)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def interpolation(table: pd.DataFrame) -> plt.Figure:
    """(h) The 1-D interpolation theta(alpha) = alpha theta_large + (1 - alpha) theta_small between the
    small-batch (alpha 0) and the large-batch (alpha 1) solution of each architecture (Keskar et al. 2017):
    train and test loss (left axis) and accuracy (right axis) along alpha, means over seeds."""
    curves = analysis.interpolation_curves(table)
    if curves.empty:
        return _empty("no interpolation in this study (evaluation.interpolation)")
    fig, axes = _panels(curves)
    loss_color, acc_color = "tab:blue", "tab:orange"
    last_in_row = {d: arch for d, arch in axes}  # panels are placed left to right
    for (d, arch), ax in axes.items():
        sub = curves[(curves["dataset"] == d) & (curves["arch"] == arch)]
        twin = ax.twinx()
        for split, ls in (("train", "-"), ("test", "--")):
            c = sub[sub["split"] == split].sort_values("alpha")
            ax.plot(c["alpha"], c["loss"], ls, color=loss_color)
            twin.plot(c["alpha"], 100 * c["accuracy"], ls, color=acc_color)
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
        if ax is next(a for (dd, _), a in axes.items() if dd == d):
            ax.set_ylabel("cross-entropy", color=loss_color)
        twin.set_ylim(0, 100)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        if arch == last_in_row[d]:
            twin.set_ylabel("accuracy (%)", color=acc_color)
    handles = [plt.Line2D([], [], color=col, ls=ls) for col in (loss_color, acc_color) for ls in ("-", "--")]
    fig.legend(handles, ["train loss", "test loss", "train accuracy", "test accuracy"], loc="outside right center")
    return fig


def sharpness(runs: pd.DataFrame) -> plt.Figure:
    """(i) The epsilon-sharpness of the final weights (Keskar et al. 2017) at each batch size's best learning
    rate against batch size, one line per box size epsilon: mean over seeds, bars one standard deviation."""
    phi = analysis.sharpness_at_best(runs)
    if phi.empty:
        return _empty("no sharpness measured in this study (evaluation.sharpness)")
    fig, axes = _panels(phi)
    epsilons = sorted(phi["epsilon"].unique(), reverse=True)
    colors = {e: plt.get_cmap("plasma")(0.15 + 0.6 * i / max(1, len(epsilons) - 1)) for i, e in enumerate(epsilons)}
    for (d, arch), ax in axes.items():
        sub = phi[(phi["dataset"] == d) & (phi["arch"] == arch)]
        for e in epsilons:
            c = sub[sub["epsilon"] == e].sort_values("batch_size")
            ax.errorbar(c["batch_size"], c["sharpness"], yerr=c["sharpness_std"], fmt="-o", color=colors[e],
                        capsize=2, label=f"ε = {e:g}")
        ax.set_ylim(bottom=0)
        _log2_axis(ax, sub["batch_size"])
        ax.set_xlabel("batch size B")
        ax.set_ylabel("sharpness φ(ε) (%)")
    _legend(fig, axes)
    return fig


def batch_schedules(runs: pd.DataFrame, history: pd.DataFrame) -> plt.Figure:
    """(h) Batch-size schedules (Smith, Kindermans & Le 2017): test accuracy against epochs and against
    optimizer updates for a constant run, lr decay, batch-size growth at the same milestones, and drops to
    a small batch on loss plateaus (triangles: where drops began, over all seeds) beside the constant run at
    the drops' batch size and lr (dotted); each at its best cell (see analysis.schedule_cells), mean over
    seeds."""
    curves = analysis.schedule_curves(runs, history)
    if curves.empty:
        return _empty("no batch-schedule variants in this study (config key variants)")
    panels = list(curves[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None))
    order = {a: i for i, a in enumerate(models.ARCHITECTURES)}
    panels.sort(key=lambda k: (k[0], order.get(k[1], len(order))))
    fig, axes = plt.subplots(len(panels), 2, figsize=(WIDTH, PANEL_HEIGHT * len(panels)), squeeze=False,
                             sharey="row", constrained_layout=True)
    drops = runs.assign(role=analysis.variant_roles(runs))
    drops = drops[drops["role"] == "batch_drop"] if "batch_drop_steps" in drops else drops.iloc[:0]
    cells = analysis.schedule_cells(runs)
    for row, (d, arch) in enumerate(panels):
        title = models.label(arch) + (f" ({d})" if curves["dataset"].nunique() > 1 else "")
        for col, x in enumerate(("epoch", "step")):
            ax = axes[row][col]
            for role, (label, color, line) in ROLE_STYLE.items():
                c = curves[(curves["dataset"] == d) & (curves["arch"] == arch) & (curves["role"] == role)]
                if c.empty:
                    continue
                ax.plot(c[x], c["test_acc"], color=color, linestyle=line, marker="o" if line == "-" else None, label=label)
                if role == "batch_drop":  # where drops began, placed on the curve
                    cell = cells[(cells["dataset"] == d) & (cells["arch"] == arch) & (cells["role"] == role)].iloc[0]
                    of = drops[(drops["dataset"] == d) & (drops["arch"] == arch) & (drops["variant"] == cell["variant"])
                               & (drops["batch_size"] == cell["batch_size"]) & np.isclose(drops["lr"], cell["lr"])]
                    at = np.array(sorted(s for text in of["batch_drop_steps"].dropna() for s in json.loads(text)), float)
                    if len(at):
                        xs = at if x == "step" else np.interp(at, c["step"], c["epoch"])
                        ax.plot(xs, np.interp(at, c["step"], c["test_acc"]), "v", color=color, markersize=5,
                                linestyle="none", label="drop begins")
            ax.set_xlabel("epochs" if x == "epoch" else "optimizer updates")
            ax.set_title(f"{title}: per {'epoch' if x == 'epoch' else 'update'}")
        axes[row][0].set_ylabel("test accuracy")
    _legend(fig, {i: ax for i, ax in enumerate(axes.flat)})
    return fig


def budgets(runs: pd.DataFrame) -> plt.Figure:
    """(i) Re-tuning at a fixed step budget (Shallue et al. 2018; Hoffer et al. 2017): per batch size of the
    fixed-step variant, the best learning rate's final test accuracy (mean over seeds) at the main grid's
    fixed epoch budget and at the fixed step budget, side by side."""
    table = analysis.budget_comparison(runs)
    if table.empty:
        return _empty("no fixed-step variant in this study (config key variants)")
    fig, axes = _panels(table, sharey=True)
    for (d, arch), ax in axes.items():
        t = table[(table["dataset"] == d) & (table["arch"] == arch)].sort_values("batch_size")
        pos = np.arange(len(t))
        steps = int(t["steps_steps"].iloc[0])
        ax.bar(pos - 0.2, t["epochs_acc"], width=0.4, color="tab:blue", label="fixed epochs (main grid)")
        ax.bar(pos + 0.2, t["steps_acc"], width=0.4, color="tab:orange", label=f"fixed steps ({steps})")
        ax.set_xticks(pos, [str(int(b)) for b in t["batch_size"]])
        ax.set_xlabel("batch size")
        ax.set_ylabel("best final test accuracy")
        ax.grid(axis="x", visible=False)
    _legend(fig, axes)
    return fig
