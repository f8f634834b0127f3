"""Tidy tables of a study: ``history`` (one row per run per evaluation) and ``runs`` (one row per run, every
spec field a column, plus the run's summary). Figures and numbers are made from these tables only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from batchlab import metrics, store


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"optimizer": {"momentum": 0.9}}`` -> ``{"optimizer_momentum": 0.9}``; lists become JSON strings."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}_"))
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def run_row(spec: dict, summary: dict) -> dict:
    """One row of the runs table: the flattened spec, derived quantities, and the summary."""
    row = flatten(spec)
    row["base_lr"] = spec["lr"] / spec["batch_size"]
    momentum = spec["optimizer"].get("momentum", 0.0)
    row["noise_temperature"] = spec["lr"] / (spec["batch_size"] * (1.0 - momentum))
    row.update({k: v for k, v in summary.items() if k != "run_id"})
    return row


def steps_to_targets(history: pd.DataFrame, targets: Iterable[float]) -> dict[str, float]:
    """``steps_to_acc_<t>``: the first evaluated step at which test accuracy reached ``t`` (NaN if never)."""
    return {f"steps_to_acc_{t:g}": metrics.steps_to_target(history["step"], history["test_acc"], t) for t in targets}


def aggregate(summary_paths: Iterable[str | Path], targets: dict[str, list[float]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the runs whose ``summary.json`` paths are given; return ``(history, runs)``. ``targets`` maps an
    architecture to its target test accuracies: steps to each are read off the run's history."""
    targets = targets or {}
    all_targets = sorted({t for ts in targets.values() for t in ts})
    histories, rows = [], []
    for path in summary_paths:
        folder = Path(path).parent
        spec = json.loads((folder / store.SPEC).read_text())
        summary = json.loads((folder / store.SUMMARY).read_text())
        history = pd.read_parquet(folder / store.HISTORY)
        history.insert(0, "run_id", spec["run_id"])
        histories.append(history)
        row = run_row(spec, summary)
        row.update({f"steps_to_acc_{t:g}": float("nan") for t in all_targets})  # targets of other architectures
        row.update(steps_to_targets(history, targets.get(spec["arch"], [])))
        rows.append(row)
    if not rows:
        raise ValueError("no runs to aggregate")
    runs = pd.DataFrame(rows).sort_values("run_id", kind="stable").reset_index(drop=True)
    history = pd.concat(histories, ignore_index=True).sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    keys = ["dataset", "arch", "batch_size", "lr", "base_lr", "seed", "diverged"]
    history = history.merge(runs[["run_id", *keys]], on="run_id", how="left")
    return history, runs


def write(summary_paths: Iterable[str | Path], history_path: str | Path, runs_path: str | Path,
          targets: dict[str, list[float]] | None = None) -> None:
    history, runs = aggregate(summary_paths, targets)
    for df, path in ((history, history_path), (runs, runs_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
