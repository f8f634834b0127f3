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


def sharpness_at_best(runs: pd.DataFrame) -> pd.DataFrame:
    """The epsilon-sharpness of the final weights (runs-table columns ``final_sharpness_<epsilon>``) per
    (dataset, arch, batch size) at that batch size's best learning rate: per epsilon, the mean and standard
    deviation over the seeds that did not diverge, and their count. Empty where nothing was measured."""
    columns = ["dataset", "arch", "batch_size", "lr", "epsilon", "sharpness", "sharpness_std", "seeds"]
    measured = [c for c in runs.columns if c.startswith("final_sharpness_")]
    if not measured or runs[measured].isna().all().all():
        return pd.DataFrame(columns=columns)
    best = best_per_batch(seed_mean(runs))[["dataset", "arch", "batch_size", "lr"]]
    at = runs[~runs["diverged"].astype(bool)].merge(best, on=["dataset", "arch", "batch_size", "lr"])
    long = at.melt(id_vars=["dataset", "arch", "batch_size", "lr"], value_vars=measured, var_name="epsilon",
                   value_name="phi").dropna(subset=["phi"])
    long["epsilon"] = long["epsilon"].str.rsplit("_", n=1).str[1].astype(float)
    g = long.groupby(["dataset", "arch", "batch_size", "lr", "epsilon"], sort=True)["phi"]
    out = pd.DataFrame({"sharpness": g.mean(), "sharpness_std": g.std(ddof=0), "seeds": g.size()}).reset_index()
    return out[columns]


def interpolation_curves(table: pd.DataFrame) -> pd.DataFrame:
    """The interpolation table (:mod:`batchlab.interpolation`) averaged over seeds: per (dataset, arch, small
    and large batch, alpha, split) the mean loss and accuracy, their standard deviations and the seeds."""
    keys = ["dataset", "arch", "small_batch", "large_batch", "split", "alpha"]
    columns = keys + ["loss", "accuracy", "loss_std", "accuracy_std", "seeds"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    g = table.groupby(keys, sort=True)
    out = g[["loss", "accuracy"]].mean()
    out["loss_std"] = g["loss"].std(ddof=0)
    out["accuracy_std"] = g["accuracy"].std(ddof=0)
    out["seeds"] = g.size()
    return out.reset_index()[columns]


def interpolation_rises(curves: pd.DataFrame, delta: float = 0.5, split: str = "train") -> pd.DataFrame:
    """How steeply the seed-mean ``split`` loss rises beyond each solution along the interpolation line: per
    (dataset, arch), with ``d`` the positive alpha step nearest ``delta`` present on both sides, the rise from
    alpha 0 to -d (beyond the small-batch solution) and from alpha 1 to 1 + d (beyond the large-batch one),
    and the largest loss between the two minus the larger of their losses (the barrier, 0 if none)."""
    columns = ["dataset", "arch", "small_batch", "large_batch", "delta", "loss_small", "loss_large",
               "rise_small", "rise_large", "barrier"]
    rows = []
    for (dataset, arch, small_b, large_b), c in curves[curves["split"] == split].groupby(
            ["dataset", "arch", "small_batch", "large_batch"], sort=True):
        loss = dict(zip(np.round(c["alpha"].to_numpy(float), 9), c["loss"].to_numpy(float)))
        if 0.0 not in loss or 1.0 not in loss:
            continue
        steps = sorted({round(-a, 9) for a in loss if a < 0} & {round(a - 1, 9) for a in loss if a > 1},
                       key=lambda d: (abs(d - delta), d))
        d = steps[0] if steps else math.nan
        between = [v for a, v in loss.items() if 0 <= a <= 1]
        rows.append({
            "dataset": dataset, "arch": arch, "small_batch": int(small_b), "large_batch": int(large_b), "delta": d,
            "loss_small": loss[0.0], "loss_large": loss[1.0],
            "rise_small": loss[round(-d, 9)] - loss[0.0] if steps else math.nan,
            "rise_large": loss[round(1 + d, 9)] - loss[1.0] if steps else math.nan,
            "barrier": max(0.0, max(between) - max(loss[0.0], loss[1.0])),
        })
    return pd.DataFrame(rows, columns=columns)
