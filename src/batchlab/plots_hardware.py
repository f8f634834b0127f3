"""The hardware figure (notebook ``hardware``): time to a target accuracy on the measured hardware, and the
throughput behind it, against batch size."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

from batchlab import analysis, spread
from batchlab.panels import (
    PANEL_HEIGHT, WIDTH, band, band_key, legend, log2_axis, log_values_axis, note, of_panel, panel_keys, panel_title,
)


def time_to_target(runs: pd.DataFrame, hardware: pd.DataFrame, settings: Mapping | None = None) -> plt.Figure:
    """The ``time_to_target`` figure: time to target on the measured hardware against batch size, one column
    per (dataset, architecture). Top: the fewest steps to the target of analysis.main_target (best lr per
    batch size) times the measured seconds per step, log-log, the fastest batch size ringed, and grey the same
    steps at the smallest batch size's cost per step (what the time would be if a step cost the same at every
    batch size). Bottom: the measured throughput (samples/s) up to the largest batch size that fits, grid
    batch sizes filled; a red dotted line marks the first batch size that ran out of memory. The band: the
    spread between seeds of the steps (:func:`batchlab.spread.seed_band`; ``settings``: the config's
    ``analysis`` section) times the measured seconds per step."""
    times = time_bands(runs, analysis.time_to_target(runs, hardware), settings)
    keys = panel_keys(runs)
    several = runs["dataset"].nunique() > 1
    fig, axes = plt.subplots(2, len(keys), figsize=(WIDTH, 2 * PANEL_HEIGHT), squeeze=False, constrained_layout=True)
    for c, key in enumerate(keys):
        top, bottom = axes[0][c], axes[1][c]
        hw = of_panel(hardware, key)
        hw = hw if hw.empty else hw.sort_values("batch_size")
        top.set_title(panel_title(key, several))
        _time_panel(top, of_panel(times, key).sort_values("batch_size"), measured=not hw.empty)
        top.set_xlabel("batch size B")
        if hw.empty:
            _nothing(bottom, "hardware not measured")
        else:
            _throughput_panel(bottom, hw)
        bottom.set_xlabel("batch size B")
    drawn = times[times["seconds"].notna()]
    legend(fig, axes.flat, band_key(drawn, settings), loc="outside lower center", ncols=3)
    return fig


def time_bands(runs: pd.DataFrame, times: pd.DataFrame, settings: Mapping | None) -> pd.DataFrame:
    """:func:`analysis.time_to_target`'s ``times`` with ``lo`` and ``hi`` in seconds: the seed band of the
    steps to the target at the chosen learning rate times the seconds per step, and its ``n_seeds`` and
    ``kind``."""
    keys = ["dataset", "arch", "batch_size", "lr", "target"]
    bands = [spread.seed_band(runs, analysis.CELL, column, **spread.interval(settings)).assign(
        target=float(column.rsplit("_", 1)[1])) for column in analysis.target_columns(runs)]
    if not bands:  # no target in the study: no time to one either
        return times.assign(lo=float("nan"), hi=float("nan"), n_seeds=0, kind="")
    out = times.merge(pd.concat(bands)[[*keys, "lo", "hi", "n_seeds", "kind"]], on=keys, how="left")
    out["lo"], out["hi"] = out["lo"] * out["seconds_per_step"], out["hi"] * out["seconds_per_step"]
    return out


def _nothing(ax: Axes, message: str) -> None:
    """A panel with only ``message`` in it, and no ticks."""
    note(ax, message)
    ax.set_xticks([])
    ax.set_yticks([])


def _time_panel(ax: Axes, t: pd.DataFrame, measured: bool) -> None:
    """The top panel of ``time_to_target``: seconds to the target against batch size (``t``: one row per batch
    size, from analysis.time_to_target), or why there are none."""
    ok = t[t["seconds"].notna()]
    if ok.empty:
        _nothing(ax, "no target reached" if measured else "hardware not measured")
        return
    target = t["target"].iloc[0]
    x = ok["batch_size"].to_numpy(float)
    ax.plot(x, ok["seconds"], "-o", color="black", label="steps × measured time per step")
    band(ax, x, ok["lo"], ok["hi"], "black", alpha=0.15)
    ax.plot(x, ok["steps"] * ok["seconds_per_step"].iloc[0], "--", color="0.6", lw=0.8,
            label="steps × time per step at the smallest B")
    best = ok[ok["fastest"]]
    ax.plot(best["batch_size"], best["seconds"], "o", ms=9, mfc="none", mec="crimson", mew=1.3,
            label="fastest to target")
    log_values_axis(ax)
    ax.set_ylabel(f"seconds to {100 * target:.0f}% test acc.")
    log2_axis(ax, t["batch_size"])


def _throughput_panel(ax: Axes, hw: pd.DataFrame) -> None:
    """The bottom panel of ``time_to_target``: samples per second against batch size up to the largest that
    fits (``hw``: one row per batch size measured, from the hardware table), and where memory ran out."""
    fits = hw[hw["fits"].astype(bool)]
    ax.plot(fits["batch_size"], fits["samples_per_s"], "-", color="tab:blue")
    grid = fits[fits["in_grid"].astype(bool)]
    extra = fits[~fits["in_grid"].astype(bool)]
    ax.plot(grid["batch_size"], grid["samples_per_s"], "o", color="tab:blue", label="measured (grid B)")
    ax.plot(extra["batch_size"], extra["samples_per_s"], "o", mfc="white", color="tab:blue",
            label="measured (beyond the grid)")
    failed = hw[~hw["fits"].astype(bool)]
    if len(failed):
        ax.axvline(failed["batch_size"].min(), color="crimson", lw=0.8, ls=":", label="out of memory")
    if len(fits):
        last = fits.iloc[-1]
        ax.annotate(f"{last['peak_memory_mb']:.3g} MB", (last["batch_size"], last["samples_per_s"]),
                    textcoords="offset points", xytext=(-4, -10), ha="right", fontsize=6)
    log_values_axis(ax)
    log2_axis(ax, hw["batch_size"])
    ax.set_ylabel("samples / s")
    device = str(hw["device_name"].iloc[0]) if hw["device"].iloc[0] == "cuda" else "CPU"
    ax.set_title(f"throughput on {device}", fontsize=7)
