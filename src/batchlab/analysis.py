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


# The roles of variant runs, read off their specs (not their names): a batch schedule's kind, a budget in
# steps, or the learning-rate schedule of constant-batch runs.
ROLES = ("constant", "lr_decay", "batch_growth", "batch_drop", "fixed_steps")


def variant_roles(runs: pd.DataFrame) -> pd.Series:
    """Per run, its role: "" for the main grid; "batch_growth" (batch schedule step), "batch_drop" (batch
    schedule drop), "fixed_steps" (a budget in steps), "lr_decay" (step decay of the lr), "constant"
    (constant lr and batch size) or "other" for variant runs."""
    def column(name):
        return runs[name] if name in runs else pd.Series(np.nan, index=runs.index, dtype=object)

    variant = column("variant").fillna("")
    kind, steps_budget = column("batch_schedule_kind"), column("budget_steps")
    role = np.select(
        [variant == "", kind == "step", kind == "drop", steps_budget.notna(), runs["schedule_kind"] == "step",
         runs["schedule_kind"] == "constant"],
        ["", "batch_growth", "batch_drop", "fixed_steps", "lr_decay", "constant"], default="other")
    return pd.Series(role, index=runs.index, dtype=object)


def schedule_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch) and role among lr_decay, batch_growth and batch_drop: the cell (batch size, lr)
    with the best seed-mean final test accuracy, with its mean steps, examples seen and drops; "constant":
    the best constant cell at lr decay's batch size (and lr, where there is one); "drop_constant": the
    constant cell at the drop cell's batch size and lr, where there is one."""
    runs = runs.assign(role=variant_roles(runs))
    runs = runs[runs["role"].isin(ROLES[:4])]
    if "examples_seen" not in runs:
        runs = runs.assign(examples_seen=np.nan)
    if "batch_drops" not in runs:
        runs = runs.assign(batch_drops=np.nan)
    runs = runs.assign(examples_seen=runs["examples_seen"].fillna(runs["steps"] * runs["batch_size"]))
    keys = ["dataset", "arch", "role", "variant", "batch_size", "lr"]
    cells = runs.groupby(keys, sort=True).agg(
        final_test_acc=("final_test_acc", "mean"), final_train_loss=("final_train_loss", "mean"),
        steps=("steps_done", "mean"), examples=("examples_seen", "mean"), drops=("batch_drops", "mean"),
        diverged_frac=("diverged", "mean"), seeds=("seed", "size")).reset_index()
    if cells.empty:
        return cells
    cells = cells.sort_values(["diverged_frac", "final_test_acc"], ascending=[True, False])
    best = cells.groupby(["dataset", "arch", "role"], sort=True).head(1)
    # the constant runs to compare with: at lr decay's batch size where there is one, and, as the role
    # "drop_constant", at the drop runs' batch size and lr
    out = [best[best["role"] != "constant"]]
    for (dataset, arch), group in cells.groupby(["dataset", "arch"], sort=True):
        const = group[group["role"] == "constant"]
        for role, like in (("constant", "lr_decay"), ("drop_constant", "batch_drop")):
            ref = best[(best["dataset"] == dataset) & (best["arch"] == arch) & (best["role"] == like)]
            pick = const
            if len(ref):
                pick = const[(const["batch_size"] == ref["batch_size"].iloc[0]) & np.isclose(const["lr"], ref["lr"].iloc[0])]
                pick = pick if len(pick) or role == "drop_constant" else const
            elif role == "drop_constant":
                pick = const.iloc[:0]
            out.append(pick.head(1).assign(role=role))
    return pd.concat(out).sort_values(["dataset", "arch", "role"]).reset_index(drop=True)


def schedule_curves(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The seed-mean history (epoch, examples, test accuracy, train loss, batch size) of each cell of
    :func:`schedule_cells`, per evaluated step."""
    columns = ["dataset", "arch", "role", "step", "epoch", "examples", "test_acc", "train_loss", "current_batch_size"]
    cells = schedule_cells(runs)
    if cells.empty:
        return pd.DataFrame(columns=columns)
    ids = runs.drop(columns=["role"], errors="ignore").merge(cells[["dataset", "arch", "variant", "batch_size", "lr", "role"]],
                     on=["dataset", "arch", "variant", "batch_size", "lr"])[["run_id", "role"]]
    h = history.drop(columns=[c for c in ("role",) if c in history]).merge(ids, on="run_id")
    if "current_batch_size" not in h:
        h = h.assign(current_batch_size=h["batch_size"])
    return (h.groupby(["dataset", "arch", "role", "step"], sort=True)[columns[4:]].mean().reset_index()[columns])


def budget_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, batch size) of the fixed-step variant runs: the best learning rate's seed-mean final
    test accuracy (and its steps) at the main grid's fixed epoch budget and at the fixed step budget."""
    roles = variant_roles(runs)
    fixed, main = runs[roles == "fixed_steps"], runs[roles == ""]
    columns = ["dataset", "arch", "batch_size", "epochs_acc", "epochs_steps", "epochs_lr", "steps_acc", "steps_steps", "steps_lr"]
    if fixed.empty or main.empty:
        return pd.DataFrame(columns=columns)
    key = ["dataset", "arch", "batch_size"]
    pick = lambda r, name: best_per_batch(seed_mean(r))[key + ["final_test_acc", "lr"]].rename(  # noqa: E731
        columns={"final_test_acc": f"{name}_acc", "lr": f"{name}_lr"})
    steps = lambda r, name: r.groupby(key)["steps"].mean().rename(f"{name}_steps").reset_index()  # noqa: E731
    out = pick(fixed, "steps").merge(steps(fixed, "steps"), on=key)
    out = out.merge(pick(main, "epochs").merge(steps(main, "epochs"), on=key), on=key, how="left")
    return out[columns].sort_values(key).reset_index(drop=True)
