"""Tidy tables of a study: ``history`` (one row per run per evaluation) and ``runs`` (one row per run, every
spec field a column, plus the run's summary). Figures and numbers are made from these tables only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from batchlab import store


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
    row["keep_weights"] = bool(spec.get("keep_weights", False))  # a boolean column (absent from most specs)
    row["base_lr"] = spec["lr"] / spec["batch_size"]
    momentum = spec["optimizer"].get("momentum", 0.0)
    row["noise_temperature"] = spec["lr"] / (spec["batch_size"] * (1.0 - momentum))
    row.update({k: v for k, v in summary.items() if k not in ("run_id", "checksums")})
    return row


def _first_steps_reaching(history: pd.DataFrame, target: float) -> pd.Series:
    """Per run, the first evaluated step with test accuracy at least ``target`` (runs that never get there
    are missing); ``history`` is sorted by run and step. :func:`batchlab.metrics.steps_to_target` for
    every run at once."""
    reached = history.loc[history["test_acc"] >= target, ["run_id", "step"]]
    return reached.groupby("run_id", sort=False)["step"].first().astype(float)


def aggregate(summary_paths: Iterable[str | Path], targets: dict[str, list[float]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the runs whose ``summary.json`` paths are given; return ``(history, runs)``. ``targets`` maps an
    architecture to its target test accuracies: steps to each are read off the run's history. Histories
    are read as Arrow tables and joined once, so 10,000 runs take seconds."""
    import pyarrow as pa

    targets = targets or {}
    all_targets = sorted({t for ts in targets.values() for t in ts})
    histories, rows, ids, lengths = [], [], [], []
    for path in summary_paths:
        spec, summary, history = store.read_run(Path(path).parent)  # checked: a damaged run is never tabled
        histories.append(history)
        ids.append(spec["run_id"])
        lengths.append(history.num_rows)
        rows.append(run_row(spec, summary))
    if not rows:
        raise ValueError("no runs to aggregate")
    history = pa.concat_tables(histories, promote_options="default").to_pandas()
    history.insert(0, "run_id", np.repeat(np.array(ids, dtype=object), lengths))
    history = history.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    runs = pd.DataFrame(rows)
    # the variant a run belongs to ("" for the main grid, whose specs name none)
    runs["variant"] = runs["variant"].fillna("").astype(str) if "variant" in runs else ""
    for t in all_targets:  # NaN where never reached, and for architectures without this target
        first = _first_steps_reaching(history, t)
        applies = runs["arch"].map(lambda arch, t=t: t in targets.get(arch, ()))
        runs[f"steps_to_acc_{t:g}"] = runs["run_id"].map(first).where(applies).astype(float)
    runs = runs.sort_values("run_id", kind="stable").reset_index(drop=True)
    keys = ["dataset", "arch", "batch_size", "lr", "base_lr", "seed", "diverged", "variant"]
    history = history.merge(runs[["run_id", *keys]], on="run_id", how="left")
    return history, runs


def write(summary_paths: Iterable[str | Path], history_path: str | Path, runs_path: str | Path,
          targets: dict[str, list[float]] | None = None) -> None:
    history, runs = aggregate(summary_paths, targets)
    for df, path in ((history, history_path), (runs, runs_path)):
        with store.writing(path, "a table"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(path, index=False)
