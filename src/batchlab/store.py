"""The run store: ``results/runs/<run-id>/`` holding ``spec.json``, ``history.parquet`` and ``summary.json``.

A run folder is written once and atomically: everything goes to a hidden temporary folder beside it, which
is then renamed into place. A run is complete when its ``summary.json`` exists, so a half-written run is
never mistaken for a finished one; a complete run is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where histories are read or written, not on every workflow parse
    import pandas as pd

SPEC, HISTORY, SUMMARY = "spec.json", "history.parquet", "summary.json"


def run_dir(root: str | Path, run_id: str) -> Path:
    return Path(root) / run_id


def summary_path(root: str | Path, run_id: str) -> Path:
    return run_dir(root, run_id) / SUMMARY


def is_complete(root: str | Path, run_id: str) -> bool:
    return summary_path(root, run_id).exists()


def write_run(root: str | Path, spec: dict, history: pd.DataFrame, summary: dict) -> Path:
    """Write a finished run atomically; refuse to overwrite a complete one."""
    final = run_dir(root, spec["run_id"])
    if (final / SUMMARY).exists():
        raise FileExistsError(f"run {spec['run_id']} is already complete in {final}; it is never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
    history.to_parquet(tmp / HISTORY, index=False)
    (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=float))
    for f in tmp.iterdir():  # data on disk before the rename makes the run visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # an incomplete leftover, or the empty folder the scheduler made for the outputs
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def read_summary(root: str | Path, run_id: str) -> dict:
    return json.loads(summary_path(root, run_id).read_text())


def read_spec(root: str | Path, run_id: str) -> dict:
    return json.loads((run_dir(root, run_id) / SPEC).read_text())


def read_history(root: str | Path, run_id: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(run_dir(root, run_id) / HISTORY)


def write_receipt(path: str | Path, specs: list[dict], root: str | Path) -> None:
    """Record that a pack's runs are all complete (the output of its training job): their ids and the
    summary of each. Raises if one is not complete."""
    missing = [s["run_id"] for s in specs if not is_complete(root, s["run_id"])]
    if missing:
        raise RuntimeError(f"the pack finished but {len(missing)} of its runs are not complete: {', '.join(missing)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    receipt = {"runs": {s["run_id"]: read_summary(root, s["run_id"]) for s in specs}}
    Path(path).write_text(json.dumps(receipt, indent=2, sort_keys=True, default=float))
