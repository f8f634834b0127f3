"""Every number the paper quotes, computed from the tables and written as LaTeX ``\\newcommand`` macros.

Per-architecture macros exist for every registered architecture (``n/a`` where the study has none), so the
paper builds for any study. Each claim of the paper gets a verdict macro computed by a stated rule, so the
text says what the data say: "holds for 3 of 3 architectures", "does not hold", ...
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab import analysis, models

NA = "n/a"


def macro_name(*parts: str) -> str:
    """A LaTeX-safe macro name: letters only, digits spelled out, CamelCase ("cnn1d" -> "CnnOneD")."""
    digits = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]
    out = ""
    for part in parts:
        for run in re.findall(r"[A-Za-z]+|[0-9]", str(part)):
            out += digits[int(run)] if run.isdigit() else run[:1].upper() + run[1:]
    return out


def pct(x: float, digits: int = 1) -> str:
    return NA if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def num(x: float, fmt: str = ".2f") -> str:
    """A number for the text; negative ones in math mode, so the sign is a minus, not a hyphen."""
    if x is None or not math.isfinite(float(x)):
        return NA
    text = format(float(x), fmt)
    return f"\\ensuremath{{{text}}}" if text.startswith("-") else text


def sci(x: float) -> str:
    """A learning rate for the text: 3 significant digits, LaTeX-friendly exponent."""
    if x is None or not math.isfinite(x):
        return NA
    mantissa, exponent = f"{x:.2e}".split("e")
    exponent = int(exponent)
    return f"{float(mantissa):g}" if exponent == 0 else f"\\ensuremath{{{float(mantissa):g}\\times 10^{{{exponent}}}}}"


def verdict(results: dict[str, bool | None]) -> str:
    """'holds for all 3 architectures', 'holds for 2 of 3 architectures (not for MLP)', 'does not hold', ..."""
    known = {a: r for a, r in results.items() if r is not None}
    if not known:
        return "cannot be tested on this study"
    yes = [a for a, r in known.items() if r]
    no = [models.label(a) for a, r in known.items() if not r]
    n = len(known)
    if len(yes) == n:
        return "holds" if n == 1 else "holds for both architectures" if n == 2 else f"holds for all {n} architectures"
    if not yes:
        return ("does not hold" if n == 1 else "does not hold for either architecture" if n == 2
                else f"does not hold for any of the {n} architectures")
    return f"holds for {len(yes)} of {n} architectures (not for {', '.join(no)})"


def _describe_budget(runs: pd.DataFrame) -> str:
    """The training budget in words: '10 epochs', or '10 epochs (4 for logistic regression)' when an
    architecture has its own."""
    cols = [c for c in runs.columns if c.startswith("budget_")]

    def words(row) -> str:
        return " and ".join(f"{row[c]:g} {c.removeprefix('budget_')}" for c in cols if pd.notna(row[c]))

    per_arch = {arch: words(group.iloc[0]) for arch, group in runs.groupby("arch", sort=False)}
    common = pd.Series(list(per_arch.values())).mode().iloc[0]
    others = [f"{b} for {models.label(a)}" for a, b in per_arch.items() if b != common]
    return common + (f" ({'; '.join(others)})" if others else "")


def _describe_optimizer(runs: pd.DataFrame) -> str:
    row = runs.iloc[0]
    if row["optimizer_name"] == "adam":
        return "Adam"
    m = row.get("optimizer_momentum", 0.0)
    text = "SGD" if not m else f"SGD with {'Nesterov ' if row.get('optimizer_nesterov') else ''}momentum {m:g}"
    wd = row.get("optimizer_weight_decay", 0.0)
    return text + (f" and weight decay {wd:g}" if wd else "")


def _describe_schedule(runs: pd.DataFrame) -> str:
    row = runs.iloc[0]
    kind = row["schedule_kind"]
    text = {"constant": "a constant learning rate", "cosine": "cosine decay of the learning rate",
            "step": "step decay of the learning rate"}[kind]
    if row.get("warmup_fraction", 0):
        text += f" after a linear warm-up over the first {100 * row['warmup_fraction']:g}\\% of training"
    return text


def arch_numbers(runs: pd.DataFrame, arch: str) -> tuple[dict[str, str], dict[str, bool | None]]:
    """Macros and claim checks of one architecture (on the study's first dataset)."""
    sub = runs[(runs["arch"] == arch) & (runs["dataset"] == runs["dataset"].iloc[0])]
    cells = analysis.seed_mean(sub)
    best = analysis.best_per_batch(cells).sort_values("batch_size")
    small, large = best.iloc[0], best.iloc[-1]
    top = best.sort_values("final_test_acc", ascending=False).iloc[0]
    stable = analysis.stable_range(cells).sort_values("batch_size")
    lr_small_slope, lr_large_slope = analysis.split_slopes(best["batch_size"], best["lr"])

    # steps to target: the highest target reached at at least half of the batch sizes
    target, steps = analysis.main_target(cells)
    st_small, st_large = analysis.split_slopes(steps["batch_size"], steps["steps"]) if steps is not None else (math.nan, math.nan)

    # re-tuning at the largest batch size vs keeping the grid value that was best at the smallest
    fixed = cells[(cells["batch_size"] == large["batch_size"]) & np.isclose(cells["lr_grid_value"], small["lr_grid_value"])]
    fixed_acc = float(fixed["final_test_acc"].iloc[0]) if len(fixed) else math.nan

    a = lambda name: macro_name(name, arch)  # noqa: E731
    values = {
        a("BestAcc"): pct(top["final_test_acc"]),
        a("BestAccBatch"): str(int(top["batch_size"])),
        a("BestAccLR"): sci(top["lr"]),
        a("AccSmallB"): pct(small["final_test_acc"]),
        a("AccLargeB"): pct(large["final_test_acc"]),
        a("TrainAccSmallB"): pct(small["final_train_acc"]),
        a("TrainAccLargeB"): pct(large["final_train_acc"]),
        a("GapSmallB"): pct(small["gap_acc"]),
        a("GapLargeB"): pct(large["gap_acc"]),
        a("BestLRSmallB"): sci(small["lr"]),
        a("BestLRLargeB"): sci(large["lr"]),
        a("LRSlopeSmall"): num(lr_small_slope),
        a("LRSlopeLarge"): num(lr_large_slope),
        a("StableSmallB"): str(int(stable.iloc[0]["n_stable"])),
        a("StableLargeB"): str(int(stable.iloc[-1]["n_stable"])),
        a("NumGridLRs"): str(int(stable.iloc[0]["n_lrs"])),
        a("StepsTarget"): pct(float(target.rsplit("_", 1)[1]), 0) if target else NA,
        a("StepsSlopeSmall"): num(st_small),
        a("StepsSlopeLarge"): num(st_large),
        a("DistSmallB"): num(small["final_dist_init"], ".1f"),
        a("DistLargeB"): num(large["final_dist_init"], ".1f"),
        a("FixedAccLargeB"): pct(fixed_acc),
        a("AccCorr"): num(analysis.spearman(best["batch_size"], best["final_test_acc"])),
    }
    finite = lambda *xs: all(x is not None and math.isfinite(x) for x in xs)  # noqa: E731
    checks = {
        "one_acc": bool(large["final_test_acc"] < small["final_test_acc"]),
        "one_gap": bool(large["gap_acc"] > small["gap_acc"]),
        "two_narrows": bool(stable.iloc[-1]["n_stable"] < stable.iloc[0]["n_stable"]),
        "two_small_best": bool(top["batch_size"] <= 32),
        "three": (0.5 <= lr_small_slope <= 1.5 and lr_large_slope < lr_small_slope) if finite(lr_small_slope, lr_large_slope) else None,
        "six": (-1.5 <= st_small <= -0.5 and st_large > st_small) if finite(st_small, st_large) else None,
        "seven": bool(large["final_test_acc"] > fixed_acc + 0.005) if finite(fixed_acc) else None,
        "nine": bool(large["final_dist_init"] < small["final_dist_init"]),
        "best_acc": float(top["final_test_acc"]),
    }
    return values, checks


def sharpness_numbers(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 8 (Keskar et al.): per architecture on the study's first dataset, the epsilon-sharpness of the
    final weights (the 1e-3 box where measured) at the best learning rate of the smallest and of the largest
    batch size, averaged over seeds (:func:`batchlab.analysis.sharpness_at_best`); the claim holds for an architecture where the largest batch size's is the larger."""
    columns = sorted((c for c in runs.columns if c.startswith("final_sharpness_")), key=lambda c: -float(c.rsplit("_", 1)[1]))
    column = "final_sharpness_0.001" if "final_sharpness_0.001" in columns else (columns[0] if columns else None)
    values = {"SharpEps": sci(float(column.rsplit("_", 1)[1])) if column else NA}
    holds = {}
    runs = runs[runs["dataset"] == runs["dataset"].iloc[0]]  # the study's first dataset, as every number
    phi = analysis.sharpness_at_best(runs)
    phi = phi[phi["epsilon"] == float(column.rsplit("_", 1)[1])] if column else phi
    for arch in models.ARCHITECTURES:
        sizes = runs.loc[runs["arch"] == arch, "batch_size"]
        at = phi[phi["arch"] == arch].set_index("batch_size")["sharpness"]
        small, large = (float(at.get(b, math.nan)) for b in (sizes.min(), sizes.max())) if len(sizes) else (math.nan,) * 2
        values[macro_name("SharpSmallB", arch)] = num(small, ".3g")
        values[macro_name("SharpLargeB", arch)] = num(large, ".3g")
        if not (math.isnan(small) or math.isnan(large)):
            holds[arch] = large > small
    values["ClaimEight"] = verdict(holds)
    return values


def noise_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Claim 10 (McCandlish et al.): per architecture, the median over batch sizes (each at its best learning
    rate) of B_simple at the first and at the last measured step, and the Spearman correlation between train
    loss and B_simple over all measured points; the claim holds for an architecture where that correlation
    is negative (the noise scale grows as the loss falls)."""
    curves = analysis.noise_scale_curves(runs, history)
    values, holds = {}, {}
    for arch in models.ARCHITECTURES:
        c = curves[(curves["arch"] == arch) & curves["b_simple"].notna()]
        if c.empty:
            values.update({macro_name(stem, arch): NA for stem in ("NoiseStart", "NoiseEnd", "NoiseRho")})
            continue
        start, end = (float(c[c["progress"] == at]["b_simple"].median()) for at in (c["progress"].min(), 1.0))
        rho = analysis.spearman(c["train_loss"], c["b_simple"])
        scale = lambda x: num(x, ".0f" if abs(x) >= 10 else ".2g")  # noqa: E731  (examples per batch)
        values.update({macro_name("NoiseStart", arch): scale(start), macro_name("NoiseEnd", arch): scale(end),
                       macro_name("NoiseRho", arch): num(rho, ".2f")})
        holds[arch] = None if math.isnan(rho) else rho < 0
    values["ClaimTen"] = verdict(holds)
    return values


def temperature_numbers(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 4 (Smith & Le; Jastrzebski et al.): per architecture, over the stable settings with batch sizes up
    to the median one, the spread (standard deviation, points) of test accuracy across batch sizes at equal
    noise temperature against its spread across temperatures at equal batch size; the claim holds for an
    architecture where the first is less than half the second. The limit: at the best temperature, the
    largest batch size up to which test accuracy stays within 2 points of the best so far."""
    values, holds = {}, {}
    for arch in models.ARCHITECTURES:
        sub = runs[(runs["arch"] == arch) & (runs["dataset"] == runs["dataset"].iloc[0])]
        within = across = best_t = limit = math.nan
        if len(sub):
            cells = analysis.temperature_cells(sub)
            within, across = analysis.temperature_spreads(cells, float(np.median(cells["batch_size"].unique())))
            best_t, limit = analysis.alike_limit(cells)
        values[macro_name("TempWithin", arch)] = pct(within)
        values[macro_name("TempAcross", arch)] = pct(across)
        values[macro_name("TempBest", arch)] = sci(best_t) if math.isfinite(best_t) else NA
        values[macro_name("TempLimit", arch)] = str(int(limit)) if math.isfinite(limit) else NA
        if math.isfinite(within) and math.isfinite(across):
            holds[arch] = within < across / 2
    values["ClaimFour"] = verdict(holds)
    return values


def critical_batch_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Claim 10, second part (McCandlish et al.): per architecture, the critical batch size E_min / S_min of the
    trade-off fitted to the fewest steps to the target (the highest reached at half the batch sizes), against
    the median noise scale B_simple where runs reach that target; the claim holds for an architecture where
    they agree within a factor of 10 ('of the order of')."""
    values, holds = {}, {}
    fits = analysis.critical_batches(runs[runs["dataset"] == runs["dataset"].iloc[0]]).set_index("arch")
    for arch in models.ARCHITECTURES:
        sub = runs[(runs["arch"] == arch) & (runs["dataset"] == runs["dataset"].iloc[0])]
        target = fits.loc[arch, "target"] if arch in fits.index else math.nan
        b_crit = fits.loc[arch, "b_crit"] if arch in fits.index else math.nan
        b_simple = (analysis.noise_scale_at_target(sub, history[history["arch"] == arch], target)
                    if math.isfinite(target) else math.nan)
        big = sub["batch_size"].max() if len(sub) else math.nan
        values[macro_name("BCrit", arch)] = (num(b_crit, ".0f") if math.isfinite(b_crit)
                                             else f"above {int(big)}" if b_crit == math.inf else NA)
        values[macro_name("BSimpleTarget", arch)] = num(b_simple, ".0f")
        values[macro_name("CritTarget", arch)] = pct(target, 0) if math.isfinite(target) else NA
        if math.isfinite(b_crit) and math.isfinite(b_simple) and b_simple > 0:
            holds[arch] = 0.1 <= b_crit / b_simple <= 10
        elif b_crit == math.inf and math.isfinite(b_simple):  # B_crit beyond the grid: at least its largest B
            holds[arch] = None if 10 * b_simple >= big else False
    values["ClaimTenCrit"] = verdict(holds)
    return values


def dynamics_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Distance and gradient norms (Hoffer et al.; Shen): per architecture, how well log(updates) explains the
    distance from initialization (the median over batch sizes, at their best learning rates, of the R^2 of
    ||w_t - w_0|| = a + b log t), and the median minibatch gradient norm over training at the smallest and
    the largest batch size."""
    values = {}
    curves = analysis.best_lr_curves(runs, history, ["dist_init", "grad_norm_q50"])
    for arch in models.ARCHITECTURES:
        c = curves[(curves["arch"] == arch) & (curves["dataset"] == runs["dataset"].iloc[0])]
        rsq = small = large = math.nan
        if len(c):
            fits = [analysis.log_fit(g["step"], g["dist_init"])[1] for _, g in c.groupby("batch_size")]
            rsq = float(np.nanmedian(fits)) if np.isfinite(fits).any() else math.nan
            small, large = (float(c[c["batch_size"] == b]["grad_norm_q50"].median())
                            for b in (c["batch_size"].min(), c["batch_size"].max()))
        values[macro_name("DistLogRsq", arch)] = num(rsq)
        values[macro_name("GradNormSmallB", arch)] = num(small, ".3g")
        values[macro_name("GradNormLargeB", arch)] = num(large, ".3g")
    return values


def interpolation_numbers(table: pd.DataFrame | None) -> dict[str, str]:
    """Claim 8's second half (Keskar et al.): along the 1-D interpolation between each architecture's small-
    and large-batch solutions (the study's first dataset), the rise of the seed-mean train loss over a step
    ``d`` beyond each solution (alpha 0 to -d, alpha 1 to 1 + d; ``d`` the step nearest 0.5 on the grid) and
    the barrier between them; the curve is steeper on the large-batch side for an architecture where the
    rise beyond alpha 1 is the larger."""
    table = table if table is not None else pd.DataFrame(columns=["dataset", "alpha"])
    if len(table):
        table = table[table["dataset"] == table["dataset"].iloc[0]]
    rises = analysis.interpolation_rises(analysis.interpolation_curves(table))
    alphas = sorted(table["alpha"].unique())
    values = {"InterpPoints": str(len(alphas)) if alphas else NA,
              "InterpAlphaMin": num(alphas[0], "g") if alphas else NA,
              "InterpAlphaMax": num(alphas[-1], "g") if alphas else NA,
              "InterpDelta": num(rises["delta"].iloc[0], "g") if len(rises) else NA,
              "InterpSeeds": str(table["seed"].nunique()) if len(table) else NA}
    holds = {}
    for arch in models.ARCHITECTURES:
        r = rises[rises["arch"] == arch]
        row = r.iloc[0] if len(r) else None
        get = lambda key: float(row[key]) if row is not None else math.nan  # noqa: E731
        values.update({
            macro_name("InterpSmallB", arch): str(int(row["small_batch"])) if row is not None else NA,
            macro_name("InterpLargeB", arch): str(int(row["large_batch"])) if row is not None else NA,
            macro_name("InterpRiseSmall", arch): num(get("rise_small"), ".3g"),
            macro_name("InterpRiseLarge", arch): num(get("rise_large"), ".3g"),
            macro_name("InterpBarrier", arch): num(get("barrier"), ".3g"),
        })
        if math.isfinite(get("rise_small")) and math.isfinite(get("rise_large")):
            holds[arch] = get("rise_large") > get("rise_small")
    values["ClaimEightInterp"] = verdict(holds)
    return values


def compute(runs: pd.DataFrame, history: pd.DataFrame, study: str = "study",
            hardware: pd.DataFrame | None = None, interpolation: pd.DataFrame | None = None) -> dict[str, str]:
    """All macros: study facts, per-architecture numbers, and claim verdicts; ``hardware`` is the hardware
    table (batchlab.hardware), when measured, and ``interpolation`` the interpolation table, when the study
    has one. Only the variants' own numbers read the variant runs; every other number is of the main grid."""
    variant_values = variant_numbers(runs, history)
    runs, history = analysis.main_grid(runs, history)
    archs = list(dict.fromkeys(runs["arch"]))
    first = runs.iloc[0]
    values = {
        "StudyName": study.replace("_", "\\_"),
        "DatasetName": "MNIST-1D" if first["dataset"] == "mnist1d" else str(first["dataset"]).replace("_", "-"),
        "NumRuns": str(len(runs)),
        "NumDiverged": str(int(runs["diverged"].sum())),
        "NumArchs": str(len(archs)),
        "NumBatchSizes": str(runs["batch_size"].nunique()),
        "MinBatch": str(int(runs["batch_size"].min())),
        "MaxBatch": str(int(runs["batch_size"].max())),
        "NumLRs": str(int(runs.groupby("arch")["lr_grid_value"].nunique().max())),
        "MinGridLR": sci(runs["lr_grid_value"].min()),
        "MaxGridLR": sci(runs["lr_grid_value"].max()),
        "NumSeeds": str(runs["seed"].nunique()),
        "NumEvals": str(int(history.groupby("run_id").size().max())),
        "Budget": _describe_budget(runs),
        "OptimizerText": _describe_optimizer(runs),
        "ScheduleText": _describe_schedule(runs),
        "TrainSize": str(int(first["n_train"])),
        "TestSize": str(int(first["n_test"])),
        "Device": str(first["device"]).upper() if first["device"] == "cpu" else str(first["device_name"]),
        "TorchVersion": str(first["torch"]).split("+")[0],
        "TrainMinutes": num(runs["train_seconds"].sum() / 60, ".1f"),
        "LRScaling": str(first["lr_scaling"]),
    }
    checks, per_arch = {}, {}
    for arch in archs:
        per_arch[arch], checks[arch] = arch_numbers(runs, arch)
    stems = [name.removesuffix(macro_name(archs[0])) for name in per_arch[archs[0]]]
    for arch in models.ARCHITECTURES:  # every registered architecture, so the paper builds for any study
        values.update(per_arch.get(arch) or {macro_name(stem, arch): NA for stem in stems})

    claim = lambda key: verdict({a: c[key] for a, c in checks.items()})  # noqa: E731
    values.update({
        "ClaimOneAcc": claim("one_acc"), "ClaimOneGap": claim("one_gap"),
        "ClaimTwoNarrows": claim("two_narrows"), "ClaimTwoSmallBest": claim("two_small_best"),
        "ClaimThree": claim("three"), "ClaimSix": claim("six"), "ClaimSeven": claim("seven"),
        "ClaimNine": claim("nine"),
    })
    values.update(noise_numbers(runs, history))
    values.update(sharpness_numbers(runs))
    values.update(temperature_numbers(runs))
    values.update(critical_batch_numbers(runs, history))
    values.update(dynamics_numbers(runs, history))
    values.update(hardware_numbers(runs, hardware))
    values.update(interpolation_numbers(interpolation))
    values.update(variant_values)
    order = [a for a in ("cnn1d", "mlp", "logreg") if a in checks]
    if len(order) == 3:
        accs = [checks[a]["best_acc"] for a in order]
        values["ClaimEleven"] = verdict({"ranking": accs[0] > accs[1] > accs[2]})
    else:
        values["ClaimEleven"] = "cannot be tested on this study (it needs logreg, mlp and cnn1d)"
    return values


# Claim 5's rule: batch-size growth matches lr decay when its final test accuracy is at most this much
# (a fraction) below lr decay's, in fewer optimizer updates.
GROWTH_TOLERANCE = 0.01


def variant_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Claims 5 and 7 from the variant runs (see ``variants`` in the config; roles by
    :func:`batchlab.analysis.variant_roles`), per architecture on the study's first dataset.

    Claim 5 (Smith, Kindermans & Le): each role's best cell (seed-mean final test accuracy); it holds where
    batch-size growth ends within ``GROWTH_TOLERANCE`` of lr decay's accuracy in fewer updates. Drops: the
    mean number of drops per run and the final accuracy of the drop runs' best cell, and of the constant
    runs at its batch size and lr.
    Claim 7 (Hoffer; Shallue): per batch size of the fixed-step variant, the best lr's accuracy at the main
    grid's fixed epochs and at the fixed steps; the gap (smallest minus largest of those batch sizes) at
    fixed steps against the gap at fixed epochs; it holds where the gap at fixed steps is the smaller."""
    runs = runs[runs["dataset"] == runs["dataset"].iloc[0]]
    cells = analysis.schedule_cells(runs)
    table = analysis.budget_comparison(runs)
    values = {"VarTolerance": pct(GROWTH_TOLERANCE, 0)}
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
    five, seven = {}, {}
    for arch in models.ARCHITECTURES:
        c = cells[cells["arch"] == arch].set_index("role")
        get = lambda role, col: float(c.loc[role, col]) if role in c.index else math.nan  # noqa: E731
        decay, growth = get("lr_decay", "final_test_acc"), get("batch_growth", "final_test_acc")
        decay_steps, growth_steps = get("lr_decay", "steps"), get("batch_growth", "steps")
        values.update({
            macro_name("VarConstAcc", arch): pct(get("constant", "final_test_acc")),
            macro_name("VarDecayAcc", arch): pct(decay), macro_name("VarGrowthAcc", arch): pct(growth),
            macro_name("VarDecaySteps", arch): num(decay_steps, ".0f"),
            macro_name("VarGrowthSteps", arch): num(growth_steps, ".0f"),
            macro_name("VarDropAcc", arch): pct(get("batch_drop", "final_test_acc")),
            macro_name("VarDropConstAcc", arch): pct(get("drop_constant", "final_test_acc")),
            macro_name("VarDrops", arch): num(get("batch_drop", "drops"), ".1f"),
        })
        if not any(math.isnan(x) for x in (decay, growth, decay_steps, growth_steps)):
            five[arch] = growth >= decay - GROWTH_TOLERANCE and growth_steps < decay_steps
        t = table[table["arch"] == arch].sort_values("batch_size")
        epochs_gap = steps_gap = math.nan
        if len(t) >= 2:
            epochs_gap = float(t["epochs_acc"].iloc[0] - t["epochs_acc"].iloc[-1])
            steps_gap = float(t["steps_acc"].iloc[0] - t["steps_acc"].iloc[-1])
        values[macro_name("VarEpochGap", arch)] = num(100 * epochs_gap, ".1f")
        values[macro_name("VarStepGap", arch)] = num(100 * steps_gap, ".1f")
        values[macro_name("VarLargeEpochsAcc", arch)] = pct(float(t["epochs_acc"].iloc[-1])) if len(t) else NA
        values[macro_name("VarLargeStepsAcc", arch)] = pct(float(t["steps_acc"].iloc[-1])) if len(t) else NA
        if not (math.isnan(epochs_gap) or math.isnan(steps_gap)):
            seven[arch] = steps_gap < epochs_gap
    values["ClaimFive"] = verdict(five)
    values["ClaimSevenSteps"] = verdict(seven)
    return values


def to_latex(values: dict[str, str]) -> str:
    lines = ["% Generated by batchlab.numbers from results/tables; do not edit."]
    lines += [f"\\newcommand{{\\{name}}}{{{value}}}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write(runs: pd.DataFrame, history: pd.DataFrame, path: str | Path, study: str = "study",
          hardware: pd.DataFrame | None = None, interpolation: pd.DataFrame | None = None) -> dict[str, str]:
    """Compute every macro and write them to ``path``; return them."""
    values = compute(runs, history, study, hardware, interpolation)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_latex(values))
    return values


def _latex_text(text: str) -> str:
    """Plain text (a device's name) safe in LaTeX."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def duration(seconds: float) -> str:
    """A time for the text with its unit: milliseconds below a second, seconds below two minutes, else
    minutes (3 significant digits)."""
    if seconds is None or not math.isfinite(seconds):
        return NA
    if seconds < 0.9995:
        return f"{1000 * seconds:.3g}~ms"
    if seconds < 119.5:
        return f"{seconds:.3g}~s"
    minutes = seconds / 60
    return f"{minutes:.3g}~min" if minutes < 999.5 else f"{minutes:.0f}~min"


HARDWARE_STEMS = ("HwTarget", "FastestBatch", "FastestTime", "FewestStepsBatch", "TimeSmallB", "MaxFitBatch",
                  "MaxFitMemory", "PeakThroughput", "PeakThroughputBatch")


def hardware_numbers(runs: pd.DataFrame, hardware: pd.DataFrame | None) -> dict[str, str]:
    """Time to target on the measured hardware (batchlab.hardware, analysis.time_to_target), per
    architecture on the study's first dataset: the target of analysis.main_target, the batch size that reaches it soonest
    and its time (with its unit), the batch size of fewest steps, the time at the smallest batch size, the
    largest batch size measured to fit and its peak memory (MB), the highest throughput (samples/s) and its
    batch size; the device, its threads and what ran out of memory."""
    measured = hardware is not None and len(hardware) > 0
    values = {"HwDevice": NA, "HwThreads": NA, "HwMaxTried": NA, "HwOutOfMemory": "not measured"}
    times = analysis.time_to_target(runs, hardware) if measured else None
    first = runs["dataset"].iloc[0]
    oom, below_fit = [], {}
    if measured:
        hw = hardware[hardware["dataset"] == first]
        row = hw.iloc[0] if len(hw) else hardware.iloc[0]
        values["HwDevice"] = _latex_text(str(row["device_name"]) if row["device"] == "cuda" else f"CPU ({row['device_name']})")
        values["HwThreads"] = str(int(row["threads"]))
        values["HwMaxTried"] = str(int(hw["batch_size"].max())) if len(hw) else NA
    for arch in models.ARCHITECTURES:
        out = dict.fromkeys(HARDWARE_STEMS, NA)
        t = times[(times["dataset"] == first) & (times["arch"] == arch)] if measured else None
        h = hardware[(hardware["dataset"] == first) & (hardware["arch"] == arch)] if measured else None
        if t is not None and len(t) and h is not None and len(h):
            fits = h[h["fits"].astype(bool)].sort_values("batch_size")
            if len(fits):
                out["MaxFitBatch"] = str(int(fits["batch_size"].iloc[-1]))
                out["MaxFitMemory"] = num(fits["peak_memory_mb"].iloc[-1], ".3g")
                top = fits.loc[fits["samples_per_s"].idxmax()]
                out["PeakThroughput"] = f"{top['samples_per_s']:,.0f}".replace(",", "{,}")
                out["PeakThroughputBatch"] = str(int(top["batch_size"]))
            failed = h[~h["fits"].astype(bool)]
            if len(failed):
                oom.append(f"{models.label(arch)} from $B={int(failed['batch_size'].min())}$")
            if t["target"].notna().any():
                out["HwTarget"] = pct(float(t["target"].iloc[0]), 0)
            reached = t[t["steps"].notna()]
            if len(reached):
                out["FewestStepsBatch"] = str(int(reached.loc[reached["steps"].idxmin(), "batch_size"]))
            timed = t[t["seconds"].notna()].sort_values("batch_size")
            if len(timed):
                fastest = timed[timed["fastest"]].iloc[0]
                out["FastestBatch"] = str(int(fastest["batch_size"]))
                out["FastestTime"] = duration(fastest["seconds"])
                smallest = t.sort_values("batch_size").iloc[0]
                out["TimeSmallB"] = duration(smallest["seconds"])
                if len(fits):
                    below_fit[arch] = bool(fastest["batch_size"] < fits["batch_size"].iloc[-1])
        values.update({macro_name(stem, arch): value for stem, value in out.items()})
    values["HwSoonestBelowFit"] = verdict(below_fit)
    if measured:
        values["HwOutOfMemory"] = ("no batch size tried ran out of memory" if not oom
                                   else "out of memory: " + "; ".join(oom))
    return values

