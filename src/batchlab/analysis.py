"""Summaries of the runs table that figures and the paper's numbers share: means over seeds, the best
learning rate per batch size, the stable learning-rate range, steps to a target, log-log slopes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab import gradient_noise

# re-exported: figures, notebooks and numbers read the fits as analysis.<name>
from batchlab.fits import critical_batch, log_fit, loglog_slope, spearman, split_slopes  # noqa: F401

CELL = ["dataset", "arch", "batch_size", "lr_grid_value", "lr", "base_lr"]
METRICS = ["final_test_acc", "final_train_acc", "gap_acc", "gap_loss", "best_test_acc", "final_dist_init", "final_test_loss"]


def first_dataset(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of ``table`` on the study's first dataset (that of ``runs``' first row; ``table``'s own
    without ``runs``): every number of the paper but the study facts is of that dataset."""
    source = table if runs is None else runs
    if not len(source) or not len(table):
        return table.iloc[:0]
    return table[table["dataset"] == source["dataset"].iloc[0]]


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
    size = g.size()
    for col in targets:  # the mean where every seed has a value (count = size), NaN otherwise
        out[col] = g[col].mean().where(g[col].count() == size)
    return out.reset_index()


def best_per_batch(cells: pd.DataFrame, metric: str = "final_test_acc") -> pd.DataFrame:
    """Per (dataset, arch, batch size), the lr with the best seed-mean ``metric`` among lrs where no seed
    diverged (all lrs if every one diverged); ties to the smaller lr."""
    keys = ["dataset", "arch", "batch_size"]
    # a stable lr sorts before every unstable one of its batch size, so the first row is the best stable one
    ranked = cells.assign(_unstable=cells["diverged_frac"] != 0).sort_values(
        [*keys, "_unstable", metric, "lr"], ascending=[True, True, True, True, False, True], kind="stable")
    return ranked.drop_duplicates(keys).drop(columns="_unstable").reset_index(drop=True)


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
    keys = ["dataset", "arch", "batch_size"]
    ranked = cells.sort_values([*keys, column], kind="stable")  # NaN (not reached) last in each batch size
    first = ranked.drop_duplicates(keys)
    steps = first[column].astype(float)
    return pd.DataFrame({**{k: first[k].to_numpy() for k in keys}, "steps": steps.to_numpy(),
                         "lr": first["lr"].astype(float).where(steps.notna()).to_numpy()})


def noise_scale_curves(runs: pd.DataFrame, history: pd.DataFrame, decay: float | None = None) -> pd.DataFrame:
    """The gradient noise scale over training, per (dataset, arch, batch size) at that batch size's best
    learning rate (batchlab.gradient_noise): per evaluated step, ``b_simple`` from numerator and denominator
    each averaged over the run's evaluations so far (debiased moving average of decay ``decay``, the schema's
    ``analysis.noise_ema`` by default), then over seeds, their ratio taken last (McCandlish et al. 2018), and
    ``b_simple_raw`` from that evaluation alone; with the mean train loss and test accuracy and the fraction
    of training done."""
    if "noise_trace" not in history or history["noise_trace"].isna().all():
        return pd.DataFrame(columns=gradient_noise.CURVE_COLUMNS)
    return gradient_noise.curves(noise_scale_runs(runs, history, decay))


def noise_scale_runs(runs: pd.DataFrame, history: pd.DataFrame, decay: float | None = None) -> pd.DataFrame:
    """The history's noise-scale measurements of each run at its batch size's best learning rate, with their
    moving averages and the run's own smoothed ``b_simple`` (:func:`batchlab.gradient_noise.smooth`)."""
    keys = ["dataset", "arch", "batch_size"]
    best = best_per_batch(seed_mean(runs))[keys + ["lr"]]
    measured = history[history["noise_trace"].notna() & history["noise_grad_sq"].notna()]
    return gradient_noise.smooth(measured.merge(best, on=keys + ["lr"]), decay)


def best_lr_curves(runs: pd.DataFrame, history: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the history over training, per (dataset, arch, batch size) at that batch size's best
    learning rate, averaged over seeds at each evaluated step (with the epoch and the examples seen)."""
    keys = ["dataset", "arch", "batch_size"]
    best = best_per_batch(seed_mean(runs))[keys + ["lr"]]
    at_best = history.merge(best, on=keys + ["lr"])
    return (at_best.groupby(keys + ["step"], sort=True)[["epoch", "examples", *columns]].mean().reset_index())


def temperature_cells(runs: pd.DataFrame, resolution: float = 0.25) -> pd.DataFrame:
    """:func:`seed_mean` cells with their noise temperature (the runs table's ``noise_temperature``,
    lr / (B (1 - m)), Smith & Le 2018) and ``temperature_bin``, the temperature rounded to ``resolution``
    octaves, so settings of equal temperature group together whatever the learning-rate grid."""
    temps = runs.groupby(CELL)["noise_temperature"].first().reset_index()
    cells = seed_mean(runs).merge(temps, on=CELL)
    cells["temperature_bin"] = 2.0 ** (np.round(np.log2(cells["noise_temperature"]) / resolution) * resolution)
    return cells


def temperature_spreads(cells: pd.DataFrame, max_batch: float) -> tuple[float, float]:
    """How alike runs of equal temperature are, against runs of unequal temperature, over the batch sizes up
    to ``max_batch`` and the stable settings only: the mean over temperatures of the standard deviation of
    test accuracy across batch sizes (within), and the mean over batch sizes of its standard deviation
    across temperatures (across). Groups of a single setting are left out."""
    ok = cells[(cells["diverged_frac"] == 0) & (cells["batch_size"] <= max_batch)]
    if ok.empty:  # every setting diverged: nothing to compare (and no numeric column to average)
        return math.nan, math.nan
    std = lambda g: g["final_test_acc"].std(ddof=0) if len(g) > 1 else math.nan  # noqa: E731
    within = ok.groupby("temperature_bin").apply(std, include_groups=False).mean()
    across = ok.groupby("batch_size").apply(std, include_groups=False).mean()
    return float(within), float(across)


# How far (a fraction) test accuracy may fall below the best so far at equal temperature and still count as
# 'alike' (:func:`alike_limit`).
ALIKE_TOLERANCE = 0.02


def alike_limit(cells: pd.DataFrame, tolerance: float = ALIKE_TOLERANCE) -> tuple[float, float]:
    """At the temperature whose best setting is the best of all (stable settings only): that temperature and
    the largest batch size up to which every batch size's test accuracy stays within ``tolerance`` of the best
    accuracy at that temperature among the batch sizes so far (the limit of 'equal temperature, equal
    outcome')."""
    ok = cells[cells["diverged_frac"] == 0]
    if ok.empty:
        return math.nan, math.nan
    t = ok.loc[ok["final_test_acc"].idxmax(), "temperature_bin"]
    line = cells[cells["temperature_bin"] == t].sort_values("batch_size")
    limit, best = math.nan, -math.inf
    for row in line.itertuples():
        best = max(best, row.final_test_acc) if row.diverged_frac == 0 else best
        if row.diverged_frac > 0 or row.final_test_acc < best - tolerance:
            break
        limit = float(row.batch_size)
    return float(t), limit


def noise_scale_at_target(runs: pd.DataFrame, history: pd.DataFrame, target: float,
                          decay: float | None = None) -> float:
    """B_simple where training reaches a target: per batch size at its best learning rate, the smoothed noise
    scale of :func:`noise_scale_curves` at the first measured step whose seed-mean test accuracy is at least
    ``target``; the median over batch sizes (NaN where none reaches it)."""
    curves = noise_scale_curves(runs, history, decay)
    reached = curves[(curves["test_acc"] >= target) & curves["b_simple"].notna()].sort_values("step")
    found = reached.groupby(["dataset", "arch", "batch_size"])["b_simple"].first()
    return float(found.median()) if len(found) else math.nan


def main_target(cells: pd.DataFrame) -> tuple[str | None, pd.DataFrame | None]:
    """The highest target (a ``steps_to_acc_<t>`` column) that at least half of the batch sizes of ``cells``
    (one dataset and architecture) reach, with the fewest steps to it per batch size where reached."""
    for column in reversed(target_columns(cells)):
        s = steps_to_target(cells, column)
        if s["steps"].notna().sum() >= max(2, math.ceil(len(s) / 2)):
            return column, s.dropna(subset=["steps"])
    return None, None


def critical_batches(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch): the target of :func:`main_target` and the fit of :func:`critical_batch` to the fewest
    steps to it at each batch size (S_min, E_min, B_crit), with its quality (batchlab.fits.fit_quality:
    ``fit_r2`` and ``fit_rms_log`` in log space, ``fit_good``, and ``extrapolated`` for a B_crit outside the
    batch sizes' range)."""
    rows = []
    cells = seed_mean(runs)
    for (dataset, arch), group in cells.groupby(["dataset", "arch"], sort=True):
        column, steps = main_target(group)
        fit = critical_batch(steps["batch_size"], steps["steps"]) if column else critical_batch([], [])
        rows.append({"dataset": dataset, "arch": arch,
                     "target": float(column.rsplit("_", 1)[1]) if column else math.nan, **fit})
    return pd.DataFrame(rows, columns=["dataset", "arch", "target", "s_min", "e_min", "b_crit", "points", "fit_r2",
                                       "fit_rms_log", "fit_good", "extrapolated"])


TIME_COLUMNS = ["dataset", "arch", "batch_size", "target", "steps", "lr", "seconds_per_step", "samples_per_s",
                "seconds", "fastest"]


def time_to_target(runs: pd.DataFrame, hardware: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, batch size) of the study: the time to the target of :func:`main_target`
    on the measured hardware, ``seconds`` = the fewest steps to it over learning rates (seed means) x the
    measured seconds per training step at that batch size (batchlab.hardware); NaN where the target was not
    reached or the batch size not measured (or did not fit). ``fastest`` marks the batch size of least time.
    ``target`` is the target accuracy (a fraction), NaN for an architecture that reaches none."""
    rows = []
    measured = hardware[hardware["fits"].astype(bool)] if len(hardware) else hardware
    for (dataset, arch), sub in runs.groupby(["dataset", "arch"], sort=True):
        cells = seed_mean(sub)
        column, _ = main_target(cells)
        if column is None:
            steps = pd.DataFrame({"batch_size": sorted(cells["batch_size"].unique()), "steps": math.nan, "lr": math.nan})
        else:
            steps = steps_to_target(cells, column)[["batch_size", "steps", "lr"]]
        hw = measured[(measured["dataset"] == dataset) & (measured["arch"] == arch)] if len(measured) else measured
        speed = hw[["batch_size", "seconds_per_step", "samples_per_s"]] if len(hw) else pd.DataFrame(
            columns=["batch_size", "seconds_per_step", "samples_per_s"], dtype="float64")
        t = steps.merge(speed.astype({"batch_size": "int64"}), on="batch_size", how="left")
        t.insert(0, "dataset", dataset)
        t.insert(1, "arch", arch)
        t.insert(3, "target", float(column.rsplit("_", 1)[1]) if column else math.nan)
        t["seconds"] = t["steps"] * t["seconds_per_step"]
        t["fastest"] = False
        if t["seconds"].notna().any():
            t.loc[t["seconds"].idxmin(), "fastest"] = True
        rows.append(t)
    if not rows:
        return pd.DataFrame(columns=TIME_COLUMNS)
    return pd.concat(rows, ignore_index=True)[TIME_COLUMNS]


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
