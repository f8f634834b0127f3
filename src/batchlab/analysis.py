"""Summaries of the runs table that figures and the paper's numbers share: means over seeds, the best
learning rate per batch size, the stable learning-rate range, steps to a target, log-log slopes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CELL = ["dataset", "arch", "batch_size", "lr_grid_value", "lr", "base_lr"]
METRICS = ["final_test_acc", "final_train_acc", "gap_acc", "gap_loss", "best_test_acc", "final_dist_init", "final_test_loss"]


def target_columns(runs: pd.DataFrame) -> list[str]:
    return sorted((c for c in runs.columns if c.startswith("steps_to_acc_")), key=lambda c: float(c.rsplit("_", 1)[1]))


def seed_mean(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, arch, batch size, lr): metrics averaged over seeds, ``diverged_frac`` the share
    of seeds that diverged, and steps to each target averaged over seeds (NaN unless every seed reached it)."""
    targets = target_columns(runs)
    g = runs.groupby(CELL, sort=True)
    out = g[METRICS].mean()
    out["test_acc_std"] = g["final_test_acc"].std(ddof=0)
    out["diverged_frac"] = g["diverged"].mean()
    out["seeds"] = g.size()
    for col in targets:
        out[col] = g[col].agg(lambda s: s.mean() if s.notna().all() else math.nan)
    return out.reset_index()


def best_per_batch(cells: pd.DataFrame, metric: str = "final_test_acc") -> pd.DataFrame:
    """Per (dataset, arch, batch size), the lr with the best seed-mean ``metric`` among lrs where no seed
    diverged (all lrs if every one diverged)."""
    rows = []
    for _, group in cells.groupby(["dataset", "arch", "batch_size"], sort=True):
        stable = group[group["diverged_frac"] == 0]
        pick = (stable if len(stable) else group).sort_values([metric, "lr"], ascending=[False, True]).iloc[0]
        rows.append(pick)
    return pd.DataFrame(rows).reset_index(drop=True)


def stable_range(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, batch size): how many grid learning rates train without divergence (in every
    seed), the smallest and largest of them, and the width of that range in octaves (factors of 2)."""
    rows = []
    for (dataset, arch, batch_size), group in cells.groupby(["dataset", "arch", "batch_size"], sort=True):
        ok = group[group["diverged_frac"] == 0]
        lo, hi = (ok["lr"].min(), ok["lr"].max()) if len(ok) else (math.nan, math.nan)
        rows.append({
            "dataset": dataset, "arch": arch, "batch_size": batch_size, "n_stable": len(ok), "n_lrs": len(group),
            "lr_min": lo, "lr_max": hi, "octaves": math.log2(hi / lo) if len(ok) else math.nan,
        })
    return pd.DataFrame(rows)


def steps_to_target(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (dataset, arch, batch size): the fewest steps to the target over learning rates (Shallue et al.);
    NaN where no lr reached it."""
    rows = []
    for (dataset, arch, batch_size), group in cells.groupby(["dataset", "arch", "batch_size"], sort=True):
        reached = group[group[column].notna()]
        best = reached.sort_values(column).iloc[0] if len(reached) else None
        rows.append({
            "dataset": dataset, "arch": arch, "batch_size": batch_size,
            "steps": float(best[column]) if best is not None else math.nan,
            "lr": float(best["lr"]) if best is not None else math.nan,
        })
    return pd.DataFrame(rows)


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


def noise_scale_curves(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The gradient noise scale over training, per (dataset, arch, batch size) at that batch size's best
    learning rate: per evaluated step, the numerator and denominator averaged over seeds first and their
    ratio taken last (McCandlish et al. 2018), with the mean train loss and the fraction of training done."""
    columns = ["dataset", "arch", "batch_size", "step", "progress", "train_loss", "noise_grad_sq", "noise_trace", "b_simple"]
    if "noise_trace" not in history or history["noise_trace"].isna().all():
        return pd.DataFrame(columns=columns)
    best = best_per_batch(seed_mean(runs))[["dataset", "arch", "batch_size", "lr"]]
    measured = history[history["noise_trace"].notna()].merge(best, on=["dataset", "arch", "batch_size", "lr"])
    curves = (measured.groupby(["dataset", "arch", "batch_size", "step"], sort=True)
              [["train_loss", "noise_grad_sq", "noise_trace"]].mean().reset_index())
    curves["progress"] = curves["step"] / curves.groupby(["dataset", "arch", "batch_size"])["step"].transform("max")
    curves["b_simple"] = (curves["noise_trace"] / curves["noise_grad_sq"]).where(curves["noise_grad_sq"] > 0)
    return curves[columns]


def main_grid(runs: pd.DataFrame, history: pd.DataFrame | None = None):
    """The main grid's runs (``variant`` empty or absent), and with ``history`` also its rows: what every
    figure and number uses but the variants' own (see ``variants`` in the config)."""
    keep = runs["variant"].fillna("") == "" if "variant" in runs else pd.Series(True, index=runs.index)
    runs = runs[keep].reset_index(drop=True)
    if history is None:
        return runs
    return runs, history[history["run_id"].isin(runs["run_id"])].reset_index(drop=True)
