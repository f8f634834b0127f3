"""What every figure shares: the paper's style, saving as PDF and PNG, and the building blocks of a figure with
one panel per (dataset, architecture): the grid of panels, a table's rows of one panel, one legend for all
panels, and the axes the figures have in common (batch sizes on a log2 axis, learning rates as powers of two).
The figures themselves are in the ``plots_*`` modules; :mod:`batchlab.plots` gathers them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from batchlab import models, spread  # noqa: E402

WIDTH = 6.5  # inches: the text width of the paper
PANEL_HEIGHT = 2.1  # inches per row of panels

Panel = tuple[str, str]  # (dataset, architecture)


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
    """Write ``<stem>.pdf`` (for the paper) and ``<stem>.png`` (for the report and README), then close the
    figure; returns the two paths, PDF first."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for p in paths:  # no creation date in the PDF, so the same tables give the same bytes
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


# -- the grid of panels ----------------------------------------------------------------------------------


def panel_keys(table: pd.DataFrame) -> list[Panel]:
    """The (dataset, architecture) pairs of ``table`` in panel order: datasets alphabetically, architectures
    in registry order (the simplest model first; one the registry does not know goes last)."""
    order = {a: i for i, a in enumerate(models.ARCHITECTURES)}
    return sorted(table[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))


def panel_title(key: Panel, several_datasets: bool) -> str:
    """A panel's title: the architecture's label, with the dataset when the study has more than one."""
    dataset, arch = key
    return f"{models.label(arch)} ({dataset})" if several_datasets else models.label(arch)


def panels(table: pd.DataFrame, sharey: bool = False) -> tuple[plt.Figure, dict[Panel, Axes]]:
    """A figure with one row per dataset and one titled panel per architecture of ``table`` (unused cells of
    a shorter row hidden); returns the figure and the panels by (dataset, architecture), in panel order."""
    keys = panel_keys(table)
    datasets = list(dict.fromkeys(k[0] for k in keys))
    ncols = max(sum(k[0] == d for k in keys) for d in datasets)
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(WIDTH, PANEL_HEIGHT * len(datasets)), squeeze=False,
                             sharey=sharey, constrained_layout=True)
    placed = {}
    for r, d in enumerate(datasets):
        row = [k for k in keys if k[0] == d]
        for c in range(ncols):
            if c < len(row):
                axes[r][c].set_title(panel_title(row[c], len(datasets) > 1))
                placed[row[c]] = axes[r][c]
            else:
                axes[r][c].set_visible(False)
    return fig, placed


def of_panel(table: pd.DataFrame, key: Panel) -> pd.DataFrame:
    """The rows of ``table`` that belong to one panel (one dataset and architecture)."""
    if table.empty:  # a table with no rows may lack the columns too (hardware not measured)
        return table
    dataset, arch = key
    return table[(table["dataset"] == dataset) & (table["arch"] == arch)]


def legend(fig: plt.Figure, axes: Iterable[Axes], extra: Iterable[tuple] = (), loc: str = "outside right center",
           ncols: int = 1) -> None:
    """One legend right of the panels (or at ``loc``): every panel's entries once, then ``extra`` (handle,
    label) pairs."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc=loc, ncols=ncols)


def note(ax: Axes, message: str) -> None:
    """Say in the middle of a panel why it has nothing drawn (no target reached, nothing measured)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def empty(message: str) -> plt.Figure:
    """A one-panel figure that says why there is nothing to draw (the study measured none of it)."""
    fig, ax = plt.subplots(figsize=(WIDTH, PANEL_HEIGHT), constrained_layout=True)
    note(ax, message)
    ax.set_axis_off()
    return fig


# -- colors and axes -------------------------------------------------------------------------------------


def band(ax: Axes, x, lo, hi, color, alpha: float = 0.2) -> None:
    """The spread between seeds around a curve (``lo`` and ``hi`` of :func:`batchlab.spread.seed_band`), a
    band in the curve's color behind it; a gap where either end is NaN."""
    ax.fill_between(np.asarray(x, float), np.asarray(lo, float), np.asarray(hi, float), color=color, alpha=alpha,
                    lw=0, zorder=1)


def band_key(bands: pd.DataFrame, settings: Mapping | None = None, bars: bool = False) -> list[tuple]:
    """The legend entry that says what the bands (or, with ``bars``, the error bars) drawn from ``bands``
    (:func:`batchlab.spread.seed_band`, at the level of ``settings``) are: a grey patch or a bar and
    :func:`batchlab.spread.describe`'s words; none without bands."""
    text = spread.describe(bands, spread.settings(settings)["level"], "bars" if bars else "band")
    if not text:
        return []
    if bars:
        return [(plt.Line2D([], [], ls="", marker="|", markersize=8, color="0.3"), text)]
    return [(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, lw=0), text)]


def errors(mean, lo, hi) -> np.ndarray:
    """Error bars from a mean and its interval, as matplotlib's ``yerr``/``xerr`` take them: the distances
    below and above the mean (never negative)."""
    mean = np.asarray(mean, float)
    return np.clip(np.stack([mean - np.asarray(lo, float), np.asarray(hi, float) - mean]), 0, None)


def batch_colors(batch_sizes: Iterable) -> dict[int, tuple]:
    """One viridis color per batch size, from the smallest (dark) to the largest (light)."""
    sizes = sorted(set(int(b) for b in batch_sizes))
    cmap = plt.get_cmap("viridis")
    return {b: cmap(i / max(1, len(sizes) - 1)) for i, b in enumerate(sizes)}


def ramp(name: str, values: list, start: float, span: float) -> dict:
    """One color per value of ``values`` from the colormap ``name``, evenly from ``start`` over ``span`` of it
    (both ends of a colormap are too light or too dark beside the others)."""
    cmap = plt.get_cmap(name)
    return {v: cmap(start + span * i / max(1, len(values) - 1)) for i, v in enumerate(values)}


def log2_axis(ax: Axes, values: Iterable) -> None:
    """Batch sizes on a log2 axis; with many of them, every other one is labelled so labels never collide."""
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(v) for v in values))
    step = 1 if len(ticks) <= 6 else 2
    ax.set_xticks(ticks, [str(t) if i % step == 0 else "" for i, t in enumerate(ticks)])
    ax.minorticks_off()


def batch_axis(ax: Axes, values: Iterable) -> None:
    """The x axis of a figure against batch size: ``values`` on a log2 axis, labelled "batch size B"."""
    log2_axis(ax, values)
    ax.set_xlabel("batch size B")


def log_values_axis(ax: Axes) -> None:
    """A log y axis labelled at 1, 2 and 5 times powers of ten, so a range of less than a decade is labelled."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def lr_label(value: float) -> str:
    """A grid learning rate as a tick label: powers of two as 2^k, anything else with 2 significant digits."""
    exponent = np.log2(value)
    return f"$2^{{{int(round(exponent))}}}$" if abs(exponent - round(exponent)) < 1e-9 else f"{value:.2g}"


def lr_axis_label(runs: pd.DataFrame) -> str:
    """The name of the learning-rate grid's axis: the learning rate itself, or the base learning rate of the
    study's scaling rule at its reference batch size."""
    rule = runs["lr_scaling"].iloc[0]
    ref = int(runs["lr_reference_batch_size"].iloc[0])
    if rule == "none":
        return "learning rate"
    return f"base learning rate (lr at B={ref}, {rule} scaling)" if ref != 1 else "base learning rate (lr / B)"


def target_label(column: str) -> str:
    """A target column (``steps_to_acc_0.8``) as a label: "80% test acc."."""
    return f"{100 * float(column.rsplit('_', 1)[1]):.0f}% test acc."
