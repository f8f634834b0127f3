"""Random small synthetic studies (hypothesis): numbers.tex builds for every one of them, whatever diverged and
however thin the grid (one batch size, seed, learning rate or architecture, several datasets, no hardware or
interpolation measured); every macro the paper quotes is defined, and every verdict is one of the allowed
texts, with the reason beside it where the study cannot test a claim."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings, strategies as st

from batchlab import claims, numbers

PAPER = Path(__file__).resolve().parents[1] / "paper"
LATEX_OWN = {"Sigma"}  # capitalized macros of the paper that LaTeX, not numbers.tex, defines
VERDICT = re.compile(
    r"(holds|does not hold|inconclusive)( for all \d+ architectures| for both architectures| for either architecture"
    r"| for any of the \d+ architectures)?( \(about [\d a-z]+ seeds would decide (it|them)\))?"
    r"|((holds for \d+ of \d+ architectures \([^)]+\)|does not hold for [^;]+|inconclusive for [^;]+)(; )?)+"
    r"|cannot be tested on this study( \(.+\))?")
UNTESTED = re.compile(r"(; n/a for [^;()]+ \([^;]+\))*| \(.+\)")
VERDICT_STEMS = [c.stem for c in claims.CLAIMS.values()]
VERDICT_AND_NOTE = re.compile(f"(?:{VERDICT.pattern})(?:{UNTESTED.pattern})")


def verdict_parts(values: dict, stem: str, n_datasets: int) -> list[str]:
    """A claim's verdict and untested note per dataset: the macros as they are for one dataset; for several,
    the verdict macro's "on <dataset>: ..." parts (and an empty untested macro)."""
    if n_datasets == 1:
        return [values[stem] + values[f"{stem}Untested"]]
    assert values[f"{stem}Untested"] == ""
    parts = re.split(r"(?:^|; )on [A-Za-z0-9-]+: ", values[stem])
    assert parts[0] == "" and len(parts) == n_datasets + 1, values[stem]
    return parts[1:]


def paper_macros() -> set[str]:
    """The macros the paper's LaTeX quotes from numbers.tex."""
    text = "".join(p.read_text() for p in [PAPER / "paper.tex", *sorted((PAPER / "sections").glob("*.tex"))])
    return set(re.findall(r"\\([A-Z][A-Za-z]*)", text)) - LATEX_OWN


def runs_table(rng: np.random.Generator, s: dict) -> pd.DataFrame:
    """One row per run with the runs table's columns (batchlab.tables), metrics drawn at random."""
    rows = []
    for dataset, arch, b, g, seed in itertools.product(s["datasets"], s["archs"], s["batches"], s["lrs"], s["seeds"]):
        if dataset == s["datasets"][0] and arch not in s["archs"][: s["first_dataset_archs"]]:
            continue  # an architecture trained on the other datasets only
        diverged = bool(s["diverged"] == "all" or (s["diverged"] == "some" and rng.random() < 0.4))
        test_acc, train_acc = rng.uniform(0.05, 0.9, 2)
        nan_if = lambda x: math.nan if diverged and s["nan_when_diverged"] else x  # noqa: E731
        lr = g * b if s["scaling"] == "linear" else g
        rows.append({
            "run_id": f"{dataset}-{arch}-b{b}-lr{lr:g}-s{seed}", "dataset": dataset, "arch": arch, "batch_size": b,
            "lr": lr, "lr_grid_value": g, "base_lr": lr / b, "lr_scaling": s["scaling"], "seed": seed,
            "noise_temperature": lr / (b * 0.1), "variant": "", "diverged": diverged,
            "final_test_acc": test_acc, "final_train_acc": train_acc, "gap_acc": train_acc - test_acc,
            "final_test_loss": nan_if(rng.uniform(0.5, 3)), "final_train_loss": nan_if(rng.uniform(0.1, 3)),
            "gap_loss": nan_if(rng.normal()), "best_test_acc": test_acc, "final_dist_init": nan_if(rng.uniform(1, 50)),
            "steps_to_acc_0.2": math.nan if diverged or rng.random() < 0.3 else float(rng.integers(1, 500)),
            "steps_to_acc_0.5": math.nan if diverged or rng.random() < 0.6 else float(rng.integers(1, 500)),
            "final_sharpness_0.001": nan_if(rng.uniform(0, 5)) if s["sharpness"] else math.nan,
            "budget_epochs": 4.0, "budget_steps": math.nan, "optimizer_name": "sgd", "optimizer_momentum": 0.9,
            "optimizer_nesterov": False, "optimizer_weight_decay": 0.0, "schedule_kind": "constant",
            "warmup_fraction": 0.0, "n_train": 4000, "n_test": 1000, "device": "cpu", "device_name": "x86_64",
            "torch": "2.13.0+cpu", "train_seconds": float(rng.uniform(0.1, 5)), "steps": 100 // b + 1,
            "steps_done": 100 // b + 1,
        })
    return pd.DataFrame(rows)


def history_table(rng: np.random.Generator, runs: pd.DataFrame, noise: bool) -> pd.DataFrame:
    """Three evaluations per run, with the history's columns."""
    rows = []
    for run in runs.itertuples():
        for i, step in enumerate((0, run.steps // 2 + 1, run.steps)):
            rows.append({
                "run_id": run.run_id, "step": step, "epoch": step * run.batch_size / 4000,
                "examples": step * run.batch_size, "dataset": run.dataset, "arch": run.arch,
                "batch_size": run.batch_size, "lr": run.lr, "base_lr": run.base_lr, "seed": run.seed,
                "diverged": run.diverged, "variant": "", "train_loss": float(rng.uniform(0.1, 3)),
                "test_acc": float(rng.uniform(0, 1)), "dist_init": float(i * rng.uniform(0, 10)),
                "grad_norm_q50": float(rng.uniform(0.1, 2)),
                "noise_grad_sq": float(rng.uniform(-0.1, 1)) if noise and step else math.nan,
                "noise_trace": float(rng.uniform(0, 5)) if noise and step else math.nan,
            })
    return pd.DataFrame(rows)


def hardware_table(rng: np.random.Generator, runs: pd.DataFrame) -> pd.DataFrame:
    rows = [{"dataset": d, "arch": a, "batch_size": int(b), "fits": bool(rng.random() < 0.8),
             "seconds_per_step": float(rng.uniform(1e-4, 1e-2)), "samples_per_s": float(rng.uniform(1e3, 1e5)),
             "peak_memory_mb": float(rng.uniform(1, 100)), "device": "cpu", "device_name": "x86_64", "threads": 1}
            for (d, a), b in itertools.product(runs[["dataset", "arch"]].drop_duplicates().itertuples(index=False),
                                               sorted(runs["batch_size"].unique()))]
    return pd.DataFrame(rows)


def interpolation_table(rng: np.random.Generator, runs: pd.DataFrame) -> pd.DataFrame:
    small, large = int(runs["batch_size"].min()), int(runs["batch_size"].max())
    rows = [{"dataset": d, "arch": a, "small_batch": small, "large_batch": large, "seed": seed, "split": split,
             "alpha": alpha, "loss": float(rng.uniform(0, 3)), "accuracy": float(rng.uniform(0, 1))}
            for d, a in runs[["dataset", "arch"]].drop_duplicates().itertuples(index=False)
            for seed, split, alpha in itertools.product(runs["seed"].unique(), ("train", "test"), (-0.5, 0, 0.5, 1, 1.5))]
    return pd.DataFrame(rows)


studies = st.fixed_dictionaries({
    "datasets": st.sampled_from([["mnist1d"], ["mnist1d", "fashion_mnist"]]),
    "archs": st.lists(st.sampled_from(["logreg", "mlp", "cnn1d"]), min_size=1, max_size=3, unique=True),
    "batches": st.lists(st.sampled_from([2, 8, 32, 128]), min_size=1, max_size=4, unique=True),
    "lrs": st.lists(st.sampled_from([0.001, 0.004, 0.016]), min_size=1, max_size=3, unique=True),
    "first_dataset_archs": st.integers(1, 3),
    "seeds": st.sampled_from([[0], [0, 1]]),
    "scaling": st.sampled_from(["linear", "none"]),
    "diverged": st.sampled_from(["none", "some", "all"]),
    "nan_when_diverged": st.booleans(),
    "sharpness": st.booleans(),
    "noise": st.booleans(),
    "hardware": st.sampled_from(["none", "empty", "measured"]),
    "interpolation": st.sampled_from(["none", "empty", "measured"]),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(studies)
def test_numbers_build_for_any_small_study(tmp_path_factory, s):
    rng = np.random.default_rng(s["seed"])
    runs = runs_table(rng, s)
    history = history_table(rng, runs, s["noise"])
    side = {"none": lambda make: None, "empty": lambda make: make(rng, runs).iloc[:0],
            "measured": lambda make: make(rng, runs)}
    path = tmp_path_factory.mktemp("paper") / "numbers.tex"
    values = numbers.write(runs, history, path, study="fuzz", hardware=side[s["hardware"]](hardware_table),
                           interpolation=side[s["interpolation"]](interpolation_table))

    defined = dict(re.findall(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}$", path.read_text(), re.M))
    assert defined == values
    assert not paper_macros() - set(defined), "macros the paper quotes but numbers.tex lacks"
    n_datasets = runs["dataset"].nunique()
    for stem in VERDICT_STEMS:
        for part in verdict_parts(values, stem, n_datasets):
            assert VERDICT_AND_NOTE.fullmatch(part), (stem, part)
        assert values[f"{stem}Rule"] == claims.CLAIMS[next(n for n, c in claims.CLAIMS.items() if c.stem == stem)].text()
    first = lambda stem: verdict_parts(values, stem, n_datasets)[0]  # noqa: E731  (the first dataset's)
    if s["diverged"] == "all":  # nothing trained: no claim on the grid's runs can hold or fail
        for name in ("ClaimOneAcc", "ClaimThree", "ClaimFour", "ClaimSix", "ClaimNine"):
            for part in verdict_parts(values, name, n_datasets):
                assert part.startswith("cannot be tested on this study") and "every run diverged" in part
    first_runs = runs[runs["dataset"] == runs["dataset"].iloc[0]]  # each dataset is judged on its own
    if len(s["batches"]) == 1 and not first_runs.groupby("arch")["diverged"].all().any():
        assert first("ClaimOneAcc").startswith("cannot be tested on this study; n/a for")
        assert "one batch size" in first("ClaimOneAcc")
    if len(s["lrs"]) == 1:
        assert first("ClaimSeven").startswith("cannot be tested on this study")
    if s["interpolation"] != "measured":
        assert first("ClaimEightInterp").endswith(" (the study has no interpolation)")
