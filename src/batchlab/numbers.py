"""Every number the paper quotes, computed from the tables and written as LaTeX ``\\newcommand`` macros.

Per-architecture macros exist for every registered architecture (``n/a`` where the study has none), so the
paper builds for any study. Each claim of the paper gets a verdict macro computed by its rule in
:data:`batchlab.claims.CLAIMS`, with the rule in words and the architectures it could not test, so the text
says what the data say: "holds for 3 of 3 architectures", "does not hold", ... Every number but the study
facts is of the study's first dataset.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab import analysis, claims, gradient_noise, models, uncertainty
from batchlab.fits import GOOD_FIT_R2
from batchlab import verdicts as verdicts_mod
from batchlab.claims import verdict  # noqa: F401  (re-exported: the paper's verdict texts)
from batchlab.formatting import (NA, Quantity, batch_or_beyond, duration, examples, finite, integer,  # noqa: F401
                                 macro_name, num, one_decimal, pct, sci, three_digits, to_latex, whole,
                                 with_interval)
from batchlab.side_numbers import (  # noqa: F401  (re-exported)
    HARDWARE_STEMS, hardware_numbers, interpolation_numbers, variant_numbers)


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




def dataset_label(name: str) -> str:
    """A dataset's name in the text: "MNIST-1D", "CIFAR-10", or the registered name with hyphens."""
    return {"mnist1d": "MNIST-1D", "cifar10": "CIFAR-10"}.get(name, str(name).replace("_", "-"))


def grid_facts(runs: pd.DataFrame) -> dict[str, float]:
    """What every claim's rule may need to know of one architecture's grid: how many batch sizes
    (``batch_sizes``) and grid learning rates (``lrs``) it has, and how many runs did not diverge
    (``stable``)."""
    return {"batch_sizes": runs["batch_size"].nunique(), "lrs": runs["lr_grid_value"].nunique(),
            "stable": int((~runs["diverged"].astype(bool)).sum())}


def arch_numbers(runs: pd.DataFrame, arch: str) -> tuple[dict[str, str], dict[str, float]]:
    """Macros of one architecture (on the study's first dataset) and its evidence for the claims."""
    sub = analysis.first_dataset(runs[runs["arch"] == arch], runs)
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
        a("BestAcc"): Quantity(float(top["final_test_acc"]), pct),
        a("BestAccBatch"): Quantity(float(top["batch_size"]), integer),
        a("BestAccLR"): sci(top["lr"]),
        a("AccSmallB"): Quantity(float(small["final_test_acc"]), pct),
        a("AccLargeB"): Quantity(float(large["final_test_acc"]), pct),
        a("TrainAccSmallB"): Quantity(float(small["final_train_acc"]), pct),
        a("TrainAccLargeB"): Quantity(float(large["final_train_acc"]), pct),
        a("GapSmallB"): Quantity(float(small["gap_acc"]), pct),
        a("GapLargeB"): Quantity(float(large["gap_acc"]), pct),
        a("BestLRSmallB"): Quantity(float(small["lr"]), sci),
        a("BestLRLargeB"): Quantity(float(large["lr"]), sci),
        a("LRSlopeSmall"): Quantity(lr_small_slope, num),
        a("LRSlopeLarge"): Quantity(lr_large_slope, num),
        a("StableSmallB"): Quantity(float(stable.iloc[0]["n_stable"]), integer),
        a("StableLargeB"): Quantity(float(stable.iloc[-1]["n_stable"]), integer),
        a("NumGridLRs"): str(int(stable.iloc[0]["n_lrs"])),
        a("StepsTarget"): pct(float(target.rsplit("_", 1)[1]), 0) if target else NA,
        a("StepsSlopeSmall"): Quantity(st_small, num),
        a("StepsSlopeLarge"): Quantity(st_large, num),
        a("DistSmallB"): Quantity(float(small["final_dist_init"]), one_decimal),
        a("DistLargeB"): Quantity(float(large["final_dist_init"]), one_decimal),
        a("FixedAccLargeB"): Quantity(fixed_acc, pct),
        a("AccCorr"): Quantity(analysis.spearman(best["batch_size"], best["final_test_acc"]), num),
    }
    evidence = {
        **grid_facts(sub),
        "acc_small": float(small["final_test_acc"]), "acc_large": float(large["final_test_acc"]),
        "gap_small": float(small["gap_acc"]), "gap_large": float(large["gap_acc"]),
        "stable_small": float(stable.iloc[0]["n_stable"]), "stable_large": float(stable.iloc[-1]["n_stable"]),
        "top_batch": float(top["batch_size"]), "best_acc": float(top["final_test_acc"]),
        "lr_slope_small": lr_small_slope, "lr_slope_large": lr_large_slope,
        "steps_target": float(target.rsplit("_", 1)[1]) if target else math.nan,
        "steps_slope_small": st_small, "steps_slope_large": st_large, "fixed_acc": fixed_acc,
        "dist_small": float(small["final_dist_init"]), "dist_large": float(large["final_dist_init"]),
    }
    return values, evidence


def sharpness_numbers(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 8 (Keskar et al.): per architecture on the study's first dataset, the epsilon-sharpness of the
    final weights (the 1e-3 box where measured) at the best learning rate of the smallest and of the largest
    batch size, averaged over seeds (:func:`batchlab.analysis.sharpness_at_best`); the rule is claim "eight"
    of :data:`batchlab.claims.CLAIMS`."""
    columns = sorted((c for c in runs.columns if c.startswith("final_sharpness_")), key=lambda c: -float(c.rsplit("_", 1)[1]))
    column = "final_sharpness_0.001" if "final_sharpness_0.001" in columns else (columns[0] if columns else None)
    values = {"SharpEps": sci(float(column.rsplit("_", 1)[1])) if column else NA}
    evidence = {}
    runs = analysis.first_dataset(runs)
    phi = analysis.sharpness_at_best(runs)
    phi = phi[phi["epsilon"] == float(column.rsplit("_", 1)[1])] if column else phi
    for arch in models.ARCHITECTURES:
        sub = runs[runs["arch"] == arch]
        at = phi[phi["arch"] == arch].set_index("batch_size")["sharpness"]
        small, large = ((float(at.get(b, math.nan)) for b in (sub["batch_size"].min(), sub["batch_size"].max()))
                        if len(sub) else (math.nan,) * 2)
        values[macro_name("SharpSmallB", arch)] = Quantity(small, three_digits)
        values[macro_name("SharpLargeB", arch)] = Quantity(large, three_digits)
        if len(sub):
            evidence[arch] = {**grid_facts(sub), "sharp_small": small, "sharp_large": large}
    values.update(claims.macros("eight", evidence))
    return values


def noise_numbers(runs: pd.DataFrame, history: pd.DataFrame, decay: float | None = None) -> dict[str, object]:
    """Claim 10 (McCandlish et al.): per architecture, the median over batch sizes (each at its best learning
    rate) of B_simple at the first and at the last measured step, and the Spearman correlation between train
    loss and B_simple over all measured points (the rule: claim "ten" of :data:`batchlab.claims.CLAIMS`)."""
    curves = analysis.first_dataset(analysis.noise_scale_curves(runs, history, decay), runs)
    values, evidence = {}, {}
    for arch in models.ARCHITECTURES:
        c = curves[(curves["arch"] == arch) & curves["b_simple"].notna()]
        if arch in set(runs["arch"]):
            evidence[arch] = {"noise_measured": bool(len(c)), "noise_rho": math.nan}
        if c.empty:
            values.update({macro_name(stem, arch): NA for stem in ("NoiseStart", "NoiseEnd", "NoiseRho")})
            continue
        start, end = (float(c[c["progress"] == at]["b_simple"].median()) for at in (c["progress"].min(), 1.0))
        rho = analysis.spearman(c["train_loss"], c["b_simple"])
        values.update({macro_name("NoiseStart", arch): Quantity(start, examples),
                       macro_name("NoiseEnd", arch): Quantity(end, examples),
                       macro_name("NoiseRho", arch): Quantity(rho, num)})
        evidence[arch]["noise_rho"] = rho
    values.update(claims.macros("ten", evidence))
    return values


def temperature_numbers(runs: pd.DataFrame) -> dict[str, str]:
    """Claim 4 (Smith & Le; Jastrzebski et al.): per architecture, over the stable settings with batch sizes up
    to the median one, the spread (standard deviation, points) of test accuracy across batch sizes at equal
    noise temperature against its spread across temperatures at equal batch size (the rule: claim "four" of
    :data:`batchlab.claims.CLAIMS`). The limit: at the best temperature, the largest batch size up to which
    test accuracy stays within ``TempTolerance`` points of the best so far."""
    values, evidence = {"TempTolerance": pct(analysis.ALIKE_TOLERANCE, 0)}, {}
    for arch in models.ARCHITECTURES:
        sub = analysis.first_dataset(runs[runs["arch"] == arch], runs)
        within = across = best_t = limit = math.nan
        if len(sub):
            cells = analysis.temperature_cells(sub)
            within, across = analysis.temperature_spreads(cells, float(np.median(cells["batch_size"].unique())))
            best_t, limit = analysis.alike_limit(cells)
            evidence[arch] = {**grid_facts(sub), "temp_within": within, "temp_across": across}
        values[macro_name("TempWithin", arch)] = Quantity(within, pct)
        values[macro_name("TempAcross", arch)] = Quantity(across, pct)
        values[macro_name("TempBest", arch)] = sci(best_t) if math.isfinite(best_t) else NA
        values[macro_name("TempLimit", arch)] = str(int(limit)) if math.isfinite(limit) else NA
    values.update(claims.macros("four", evidence))
    return values


def critical_batch_numbers(runs: pd.DataFrame, history: pd.DataFrame, decay: float | None = None) -> dict[str, object]:
    """Claim 10, second part (McCandlish et al.): per architecture, the critical batch size E_min / S_min of the
    trade-off fitted to the fewest steps to the target (the highest reached at half the batch sizes), against
    the median noise scale B_simple where runs reach that target (the rule: claim "ten_crit" of
    :data:`batchlab.claims.CLAIMS`, 'of the order of')."""
    values, evidence = {"CritFitGood": num(GOOD_FIT_R2, "g")}, {}
    runs = analysis.first_dataset(runs)
    fits = analysis.critical_batches(runs).set_index("arch")
    for arch in models.ARCHITECTURES:
        sub = runs[runs["arch"] == arch]
        target = fits.loc[arch, "target"] if arch in fits.index else math.nan
        b_crit = fits.loc[arch, "b_crit"] if arch in fits.index else math.nan
        b_simple = (analysis.noise_scale_at_target(sub, history[history["arch"] == arch], target, decay)
                    if math.isfinite(target) else math.nan)
        big = sub["batch_size"].max() if len(sub) else math.nan
        values[macro_name("BCrit", arch)] = Quantity(b_crit, functools.partial(batch_or_beyond, big))
        values[macro_name("BSimpleTarget", arch)] = Quantity(b_simple, whole)
        values[macro_name("CritTarget", arch)] = pct(target, 0) if math.isfinite(target) else NA
        fit = fits.loc[arch] if arch in fits.index else {}
        values[macro_name("CritFitRsq", arch)] = Quantity(float(fit.get("fit_r2", math.nan)), num)
        if len(sub):
            evidence[arch] = {"crit_target": target, "b_crit": b_crit, "b_simple": b_simple, "batch_max": big,
                              "crit_fit_good": bool(fit.get("fit_good", True)),
                              "crit_extrapolated": bool(fit.get("extrapolated", not math.isfinite(b_crit)))}
    values.update(claims.macros("ten_crit", evidence))
    return values


def dynamics_numbers(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """Distance and gradient norms (Hoffer et al.; Shen): per architecture, how well log(updates) explains the
    distance from initialization (the median over batch sizes, at their best learning rates, of the R^2 of
    ||w_t - w_0|| = a + b log t), and the median minibatch gradient norm over training at the smallest and
    the largest batch size."""
    values = {}
    curves = analysis.first_dataset(analysis.best_lr_curves(runs, history, ["dist_init", "grad_norm_q50"]), runs)
    for arch in models.ARCHITECTURES:
        c = curves[curves["arch"] == arch]
        rsq = small = large = math.nan
        if len(c):
            fits = [analysis.log_fit(g["step"], g["dist_init"])[1] for _, g in c.groupby("batch_size")]
            rsq = float(np.nanmedian(fits)) if np.isfinite(fits).any() else math.nan
            small, large = (float(c[c["batch_size"] == b]["grad_norm_q50"].median())
                            for b in (c["batch_size"].min(), c["batch_size"].max()))
        values[macro_name("DistLogRsq", arch)] = Quantity(rsq, num)
        values[macro_name("GradNormSmallB", arch)] = Quantity(small, three_digits)
        values[macro_name("GradNormLargeB", arch)] = Quantity(large, three_digits)
    return values


def study_facts(runs: pd.DataFrame, history: pd.DataFrame, study: str) -> dict[str, str]:
    """The study's size and setup, over every dataset of the main grid: runs, architectures, batch sizes,
    learning rates, seeds, budget, optimizer, schedule, data, device and training time."""
    first = runs.iloc[0]
    evals = history.groupby("run_id").size().max() if len(history) else 0
    return {
        "StudyName": study.replace("_", "\\_"),
        "DatasetName": dataset_label(first["dataset"]),
        "NumRuns": str(len(runs)),
        "NumDiverged": str(int(runs["diverged"].sum())),
        "NumArchs": str(runs["arch"].nunique()),
        "NumBatchSizes": str(runs["batch_size"].nunique()),
        "MinBatch": str(int(runs["batch_size"].min())),
        "MaxBatch": str(int(runs["batch_size"].max())),
        "NumLRs": str(int(runs.groupby("arch")["lr_grid_value"].nunique().max())),
        "MinGridLR": sci(runs["lr_grid_value"].min()),
        "MaxGridLR": sci(runs["lr_grid_value"].max()),
        "NumSeeds": str(runs["seed"].nunique()),
        "NumEvals": str(int(evals)),
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


# The claims judged on the numbers of :func:`arch_numbers`, in the order numbers.tex lists them.
GRID_CLAIMS = ("one_acc", "one_gap", "two_narrows", "two_small_best", "three", "six", "seven", "nine")


def measure(runs: pd.DataFrame, history: pd.DataFrame, hardware: pd.DataFrame | None = None,
            interpolation: pd.DataFrame | None = None, noise_ema: float | None = None) -> dict[str, object]:
    """Every macro of one dataset's runs (main grid and variants) but the study facts: text, a
    :class:`~batchlab.formatting.Quantity` for each number that aggregates seeds, a
    :class:`~batchlab.claims.Margins` for each verdict. :func:`compute` takes it on the study and on every
    resample of its seeds. ``noise_ema``: the noise scale's moving-average decay (the schema's default
    unless given)."""
    variant_values = variant_numbers(runs, history)
    runs, history = analysis.main_grid(runs, history)
    archs = list(dict.fromkeys(runs["arch"]))
    evidence, per_arch, values = {}, {}, {}
    for arch in archs:
        per_arch[arch], evidence[arch] = arch_numbers(runs, arch)
    stems = [name.removesuffix(macro_name(archs[0])) for name in per_arch[archs[0]]]
    for arch in models.ARCHITECTURES:  # every registered architecture, so the paper builds for any study
        values.update(per_arch.get(arch) or {macro_name(stem, arch): NA for stem in stems})
    for name in GRID_CLAIMS:
        values.update(claims.macros(name, evidence))
    values.update(noise_numbers(runs, history, noise_ema))
    values.update(sharpness_numbers(runs))
    values.update(temperature_numbers(runs))
    values.update(critical_batch_numbers(runs, history, noise_ema))
    values.update(dynamics_numbers(runs, history))
    values.update(hardware_numbers(runs, hardware))
    values.update(interpolation_numbers(interpolation))
    values.update(variant_values)
    values.update(claims.macros("eleven", evidence))
    return values


def _of_dataset(table: pd.DataFrame | None, dataset: str) -> pd.DataFrame | None:
    if table is None or "dataset" not in table:
        return table
    return table[table["dataset"] == dataset].reset_index(drop=True)


def compute(runs: pd.DataFrame, history: pd.DataFrame, study: str = "study",
            hardware: pd.DataFrame | None = None, interpolation: pd.DataFrame | None = None,
            settings: dict | None = None, datasets: list[str] | None = None) -> dict[str, str]:
    """All macros: study facts, per-architecture numbers with their intervals over seeds, claim verdicts;
    ``hardware`` is the hardware table (batchlab.hardware), when measured, ``interpolation`` the
    interpolation table, when the study has one, and ``settings`` the config's ``analysis`` section (level,
    resamples, seed). Every dataset is measured and judged on its own: the text quotes the first dataset's
    numbers, the verdicts and the verdict table cover them all, in the order of ``datasets`` (the config's;
    by default, as the runs table has them). Only the variants' own numbers read the variant runs; every other
    number is of the main grid."""
    # the config's analysis section, its schema's defaults where a caller gives none
    settings = {**{k: gradient_noise.analysis_default(k) for k in ("level", "resamples", "seed", "noise_ema")},
                **(settings or {})}
    order = [d for d in (datasets or []) if d in set(runs["dataset"])]
    order += [d for d in dict.fromkeys(runs["dataset"]) if d not in order]
    runs = pd.concat([runs[runs["dataset"] == d] for d in order], ignore_index=True)  # the first dataset first
    main = analysis.main_grid(runs)
    values = study_facts(main, analysis.main_grid(runs, history)[1], study)
    per_dataset, verdicts = {}, {}
    for dataset in dict.fromkeys(main["dataset"]):
        runs_d, history_d = _of_dataset(runs, dataset), _of_dataset(history, dataset)
        hardware_d, inter_d = _of_dataset(hardware, dataset), _of_dataset(interpolation, dataset)
        seeds = sorted(set(analysis.main_grid(runs_d)["seed"]))
        draws = uncertainty.seed_resamples(seeds, settings["resamples"], settings["seed"])
        point = measure(runs_d, history_d, hardware_d, inter_d, settings["noise_ema"])
        samples = [measure(*_swap(verdicts_mod.resampled(runs_d, history_d, inter_d, d.seeds), hardware_d),
                           settings["noise_ema"]) for d in draws]
        per_dataset[dataset], verdicts[dataset] = verdicts_mod.judged(point, samples, [d.weight for d in draws],
                                                          settings["level"], len(seeds))
    first = next(iter(per_dataset))
    values.update(per_dataset[first])
    labels = {d: dataset_label(d) for d in per_dataset}
    values.update(verdicts_mod.verdict_texts(per_dataset, verdicts, labels))
    archs = {d: list(dict.fromkeys(_of_dataset(main, d)["arch"])) for d in per_dataset}
    values.update(verdicts_mod.verdict_table(verdicts, archs, labels))
    values.update(verdicts_mod.dataset_table(per_dataset, archs, labels))
    values.update(verdicts_mod.uncertainty_facts(main, settings))
    return values


def _swap(tables: tuple, hardware: pd.DataFrame | None) -> tuple:
    runs, history, interpolation = tables
    return runs, history, hardware, interpolation


def write(runs: pd.DataFrame, history: pd.DataFrame, path: str | Path, study: str = "study",
          hardware: pd.DataFrame | None = None, interpolation: pd.DataFrame | None = None,
          settings: dict | None = None, datasets: list[str] | None = None) -> dict[str, str]:
    """Compute every macro and write them to ``path``; return them."""
    values = compute(runs, history, study, hardware, interpolation, settings, datasets)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_latex(values))
    return values


