"""The paper's numbers of the measurements beside the main grid: the variant runs (claims 5 and 7 with more
updates), the time to target on the measured hardware, and the interpolation between solutions (claim 8's
second half). Each is per architecture on the study's first dataset, ``n/a`` where the study has none."""

from __future__ import annotations

import math

import pandas as pd

from batchlab import analysis, claims, models
from batchlab.formatting import (NA, Quantity, duration, integer, latex_text, macro_name, num, one_decimal, pct,
                                 points, three_digits, whole)


def variant_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Claims 5 and 7 from the variant runs (see ``variants`` in the config; roles by
    :func:`batchlab.analysis.variant_roles`), per architecture on the study's first dataset.

    Claim 5 (Smith, Kindermans & Le): each role's best cell (seed-mean final test accuracy); the rule is
    claim "five" of :data:`batchlab.claims.CLAIMS`. Drops: the mean number of drops per run and the final
    accuracy of the drop runs' best cell, and of the constant runs at its batch size and lr.
    Claim 7 (Hoffer; Shallue): per batch size of the fixed-step variant, the best lr's accuracy at the main
    grid's fixed epochs and at the fixed steps; the gap (smallest minus largest of those batch sizes) at
    fixed steps against the gap at fixed epochs (claim "seven_steps")."""
    runs = analysis.first_dataset(runs)
    cells = analysis.schedule_cells(runs)
    table = analysis.budget_comparison(runs)
    values = {"VarTolerance": pct(claims.CLAIMS["five"].thresholds["tolerance"], 0)}
    roles = analysis.variant_roles(runs)
    variant_runs = runs[roles != ""]
    values["VarNumRuns"] = str(len(variant_runs))
    values["VarTrainMinutes"] = num(variant_runs["train_seconds"].sum() / 60, ".1f")
    grown = runs[roles == "batch_growth"]
    values["VarGrowthFactor"] = num(grown["batch_schedule_factor"].iloc[0], "g") if len(grown) else NA
    values["VarGrowthBatch"] = str(int(grown["batch_size"].min())) if len(grown) else NA
    dropped = runs[roles == "batch_drop"]
    values["VarDropSmallBatch"] = str(int(dropped["batch_schedule_small_batch"].iloc[0])) if len(dropped) else NA
    values["VarDropBatch"] = str(int(dropped["batch_size"].iloc[0])) if len(dropped) else NA
    values["VarFixedSteps"] = str(int(table["steps_steps"].iloc[0])) if len(table) else NA
    values["VarStepsSmallB"] = str(int(table["batch_size"].min())) if len(table) else NA
    values["VarStepsLargeB"] = str(int(table["batch_size"].max())) if len(table) else NA
    evidence = {}
    for arch in models.ARCHITECTURES:
        c = cells[cells["arch"] == arch].set_index("role")
        get = lambda role, col: float(c.loc[role, col]) if role in c.index else math.nan  # noqa: E731
        e = {"decay_acc": get("lr_decay", "final_test_acc"), "growth_acc": get("batch_growth", "final_test_acc"),
             "decay_steps": get("lr_decay", "steps"), "growth_steps": get("batch_growth", "steps")}
        values.update({
            macro_name("VarConstAcc", arch): Quantity(get("constant", "final_test_acc"), pct),
            macro_name("VarDecayAcc", arch): Quantity(e["decay_acc"], pct),
            macro_name("VarGrowthAcc", arch): Quantity(e["growth_acc"], pct),
            macro_name("VarDecaySteps", arch): Quantity(e["decay_steps"], whole),
            macro_name("VarGrowthSteps", arch): Quantity(e["growth_steps"], whole),
            macro_name("VarDropAcc", arch): Quantity(get("batch_drop", "final_test_acc"), pct),
            macro_name("VarDropConstAcc", arch): Quantity(get("drop_constant", "final_test_acc"), pct),
            macro_name("VarDrops", arch): Quantity(get("batch_drop", "drops"), one_decimal),
        })
        t = table[table["arch"] == arch].sort_values("batch_size")
        e["epochs_gap"] = e["steps_gap"] = math.nan
        if len(t) >= 2:
            e["epochs_gap"] = float(t["epochs_acc"].iloc[0] - t["epochs_acc"].iloc[-1])
            e["steps_gap"] = float(t["steps_acc"].iloc[0] - t["steps_acc"].iloc[-1])
        values[macro_name("VarEpochGap", arch)] = Quantity(e["epochs_gap"], points)
        values[macro_name("VarStepGap", arch)] = Quantity(e["steps_gap"], points)
        values[macro_name("VarLargeEpochsAcc", arch)] = Quantity(float(t["epochs_acc"].iloc[-1]) if len(t) else math.nan, pct)
        values[macro_name("VarLargeStepsAcc", arch)] = Quantity(float(t["steps_acc"].iloc[-1]) if len(t) else math.nan, pct)
        if len(c) or len(t):  # the architecture has variant runs
            evidence[arch] = e
    values.update(claims.macros("five", evidence, absent="the study has no variant runs"))
    values.update(claims.macros("seven_steps", evidence, absent="the study has no variant runs"))
    return values


HARDWARE_STEMS = ("HwTarget", "FastestBatch", "FastestTime", "FewestStepsBatch", "TimeSmallB", "MaxFitBatch",
                  "MaxFitMemory", "PeakThroughput", "PeakThroughputBatch")


def _hardware_arch(t: pd.DataFrame, h: pd.DataFrame) -> tuple[dict[str, str], dict[str, float], str | None]:
    """One architecture's hardware macros (by stem), its evidence for claim "hw_soonest", and what ran out
    of memory ("MLP from $B=512$"), from its rows ``t`` of the time-to-target table and ``h`` of the
    hardware table."""
    out = dict.fromkeys(HARDWARE_STEMS, NA)
    e = {"fastest_batch": math.nan, "max_fit_batch": math.nan}
    fits = h[h["fits"].astype(bool)].sort_values("batch_size")
    if len(fits):
        e["max_fit_batch"] = float(fits["batch_size"].iloc[-1])
        out["MaxFitBatch"] = str(int(fits["batch_size"].iloc[-1]))
        out["MaxFitMemory"] = num(fits["peak_memory_mb"].iloc[-1], ".3g")
        top = fits.loc[fits["samples_per_s"].idxmax()]
        out["PeakThroughput"] = f"{top['samples_per_s']:,.0f}".replace(",", "{,}")
        out["PeakThroughputBatch"] = str(int(top["batch_size"]))
    failed = h[~h["fits"].astype(bool)]
    oom = f"{models.label(h['arch'].iloc[0])} from $B={int(failed['batch_size'].min())}$" if len(failed) else None
    if t["target"].notna().any():
        out["HwTarget"] = pct(float(t["target"].iloc[0]), 0)
    reached = t[t["steps"].notna()]
    if len(reached):
        out["FewestStepsBatch"] = Quantity(float(reached.loc[reached["steps"].idxmin(), "batch_size"]), integer)
    timed = t[t["seconds"].notna()].sort_values("batch_size")
    if len(timed):
        fastest = timed[timed["fastest"]].iloc[0]
        e["fastest_batch"] = float(fastest["batch_size"])
        out["FastestBatch"] = Quantity(float(fastest["batch_size"]), integer)
        out["FastestTime"] = Quantity(float(fastest["seconds"]), duration)
        out["TimeSmallB"] = Quantity(float(t.sort_values("batch_size").iloc[0]["seconds"]), duration)
    return out, e, oom


def hardware_numbers(runs: pd.DataFrame, hardware: pd.DataFrame | None) -> dict[str, str]:
    """Time to target on the measured hardware (batchlab.hardware, analysis.time_to_target), per
    architecture on the study's first dataset: the target of analysis.main_target, the batch size that
    reaches it soonest and its time (with its unit), the batch size of fewest steps, the time at the smallest
    batch size, the largest batch size measured to fit and its peak memory (MB), the highest throughput
    (samples/s) and its batch size; the device, its threads and what ran out of memory."""
    measured = hardware is not None and len(hardware) > 0
    values = {"HwDevice": NA, "HwThreads": NA, "HwMaxTried": NA, "HwOutOfMemory": "not measured"}
    times = analysis.first_dataset(analysis.time_to_target(runs, hardware), runs) if measured else None
    hw = analysis.first_dataset(hardware, runs) if measured else None
    if measured:
        row = hw.iloc[0] if len(hw) else hardware.iloc[0]
        values["HwDevice"] = latex_text(str(row["device_name"]) if row["device"] == "cuda" else f"CPU ({row['device_name']})")
        values["HwThreads"] = str(int(row["threads"]))
        values["HwMaxTried"] = str(int(hw["batch_size"].max())) if len(hw) else NA
    oom, evidence = [], {}
    for arch in models.ARCHITECTURES:
        out = dict.fromkeys(HARDWARE_STEMS, NA)
        t = times[times["arch"] == arch] if measured else None
        h = hw[hw["arch"] == arch] if measured else None
        if t is not None and len(t) and h is not None and len(h):
            out, evidence[arch], ran_out = _hardware_arch(t, h)
            oom += [ran_out] if ran_out else []
        values.update({macro_name(stem, arch): value for stem, value in out.items()})
    values.update(claims.macros("hw_soonest", evidence, absent="not measured on this hardware"))
    if measured:
        values["HwOutOfMemory"] = ("no batch size tried ran out of memory" if not oom
                                   else "out of memory: " + "; ".join(oom))
    return values


def interpolation_numbers(table: pd.DataFrame | None) -> dict[str, str]:
    """Claim 8's second half (Keskar et al.): along the 1-D interpolation between each architecture's small-
    and large-batch solutions (the study's first dataset), the rise of the seed-mean train loss over a step
    ``d`` beyond each solution (alpha 0 to -d, alpha 1 to 1 + d; ``d`` the step nearest 0.5 on the grid) and
    the barrier between them; the rule is claim "eight_interp" of :data:`batchlab.claims.CLAIMS`."""
    table = analysis.first_dataset(table if table is not None else pd.DataFrame(columns=["dataset", "alpha", "seed"]))
    rises = analysis.interpolation_rises(analysis.interpolation_curves(table))
    alphas = sorted(table["alpha"].unique())
    values = {"InterpPoints": str(len(alphas)) if alphas else NA,
              "InterpAlphaMin": num(alphas[0], "g") if alphas else NA,
              "InterpAlphaMax": num(alphas[-1], "g") if alphas else NA,
              "InterpDelta": num(rises["delta"].iloc[0], "g") if len(rises) else NA,
              "InterpSeeds": str(table["seed"].nunique()) if len(table) else NA}
    evidence = {}
    for arch in models.ARCHITECTURES:
        r = rises[rises["arch"] == arch]
        row = r.iloc[0] if len(r) else None
        get = lambda key: float(row[key]) if row is not None else math.nan  # noqa: E731
        values.update({
            macro_name("InterpSmallB", arch): str(int(row["small_batch"])) if row is not None else NA,
            macro_name("InterpLargeB", arch): str(int(row["large_batch"])) if row is not None else NA,
            macro_name("InterpRiseSmall", arch): Quantity(get("rise_small"), three_digits),
            macro_name("InterpRiseLarge", arch): Quantity(get("rise_large"), three_digits),
            macro_name("InterpBarrier", arch): Quantity(get("barrier"), three_digits),
        })
        if row is not None or arch in set(table.get("arch", ())):
            evidence[arch] = {"rise_small": get("rise_small"), "rise_large": get("rise_large")}
    values.update(claims.macros("eight_interp", evidence, absent="the study has no interpolation"))
    return values
