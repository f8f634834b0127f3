"""The run store: ``results/runs/<run-id>/`` holding ``spec.json``, ``history.arrow`` and ``summary.json``.

A run's history is an Arrow IPC (Feather) file: read in a tenth of a millisecond, where a small Parquet file
takes about one, which is what lets the tables of 10,000 runs be made in seconds (``pandas.read_feather``
reads it; runs written before as ``history.parquet`` are read too).

A run folder is written once and atomically: everything goes to a hidden temporary folder beside it, which
is then renamed into place. A run is complete when its ``summary.json`` exists, so a half-written run is
never mistaken for a finished one; a complete run is never overwritten.

A run folder damaged afterwards (a file truncated, altered or missing, a spec that does not hash to its
folder's name) is found by :func:`check_run`: the summary records the SHA-256 of the spec and the history.
Such a run counts as not complete, so it is trained again; its folder is moved to ``results/corrupt/``
rather than deleted, and the tables never read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from batchlab import ids
from batchlab.files import StoreError, check_writable, sha256, writing  # noqa: F401  (the store's errors)

if TYPE_CHECKING:  # pandas is imported where histories are read or written, not on every workflow parse
    import pandas as pd

SPEC, HISTORY, SUMMARY = "spec.json", "history.arrow", "summary.json"
LEGACY_HISTORY = "history.parquet"
CHECKPOINT = "checkpoint.pt"  # a finished run's final state, kept only when training.checkpoint.keep is set
WEIGHTS = "weights.pt"  # a finished run's final parameters and buffers, for runs whose spec keeps them
CORRUPT = "corrupt"  # beside the run store: damaged run folders, moved out of the way, never deleted
SUPERSEDED = "superseded"  # beside the run store: complete runs replaced by a copy with their final weights


class DamagedRunError(ValueError):
    """A run folder whose files do not match its summary's checksums or its name."""


def run_dir(root: str | Path, run_id: str) -> Path:
    return Path(root) / run_id


def summary_path(root: str | Path, run_id: str) -> Path:
    return run_dir(root, run_id) / SUMMARY


def is_complete(root: str | Path, run_id: str) -> bool:
    return summary_path(root, run_id).exists()


def finished(root: str | Path) -> list[Path]:
    """The summary files of the runs in ``root``, sorted: the folders :func:`write_run` has renamed into
    place, never the hidden ones it writes a run in first (``.<run>.tmp-<pid>``, ``.<run>.replaced-<pid>``),
    whose summary can exist before the run is there."""
    return sorted(p for p in Path(root).glob(f"*/{SUMMARY}") if not p.parent.name.startswith("."))


def write_run(root: str | Path, spec: dict, history: pd.DataFrame, summary: dict, checkpoint: dict | None = None,
              weights: dict | None = None) -> Path:
    """Write a finished run atomically; refuse to overwrite a complete one. A damaged one (see
    :func:`check_run`) is moved to ``<root>/../corrupt/`` first. ``checkpoint``, when given, is kept in the
    folder as ``checkpoint.pt``; ``weights`` (the final ``state_dict``), as ``weights.pt`` on the CPU, covered
    by the summary's checksums like the spec and the history (see :func:`read_weights`). A complete run that
    lacks the weights its spec keeps (:func:`lacks_weights`) is replaced when they are given; the copy it
    replaces is kept in ``<root>/../superseded/``, never deleted. A full disk or a folder that cannot be written
    raises :class:`StoreError` naming the path; nothing is left half-written."""
    final = run_dir(root, spec["run_id"])
    replaced = None
    if (final / SUMMARY).exists():
        problem = check_run(root, spec["run_id"])
        if problem is None and not (weights is not None and lacks_weights(root, spec)):
            raise FileExistsError(f"run {spec['run_id']} is already complete in {final}; it is never overwritten")
        if problem is None:  # the same run, complete but without the final weights it is now asked to keep
            replaced = final.parent / f".{final.name}.replaced-{os.getpid()}"
        else:
            set_aside(root, spec["run_id"])
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
        write_history(tmp / HISTORY, history)
        if checkpoint is not None:
            import torch

            torch.save(checkpoint, tmp / CHECKPOINT)
        if weights is not None:
            import torch

            torch.save({name: t.detach().cpu() for name, t in weights.items()}, tmp / WEIGHTS)
        summary = dict(summary, checksums={name: sha256(tmp / name) for name in (SPEC, HISTORY, WEIGHTS)
                                           if (tmp / name).exists()})
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=float))
        for f in tmp.iterdir():  # data on disk before the rename makes the run visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if replaced is not None:  # swapped for this copy, which has the weights; then kept aside
            shutil.rmtree(replaced, ignore_errors=True)
            os.rename(final, replaced)
        elif final.exists():  # the empty folder a scheduler made for the outputs, or a leftover without summary
            if any(final.iterdir()):
                set_aside(root, spec["run_id"])
            else:
                final.rmdir()
        os.rename(tmp, final)
        if replaced is not None:
            kept = Path(root).parent / SUPERSEDED / f"{spec['run_id']}.{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.rename(replaced, kept)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError.of(error, f"cannot write run {spec['run_id']} to {final.parent}") from error
    return final


def check_run(root: str | Path, run_id: str) -> str | None:
    """What is wrong with run ``run_id``'s folder, or None when it is complete and intact: its summary and
    spec parse and name this run, the spec hashes to the run's id, and the files match the checksums the
    summary recorded (runs written before checksums: the history can be read)."""
    return _inspect(run_dir(root, run_id), run_id)[0]


def read_run(folder: str | Path) -> tuple[dict, dict, object]:
    """A run folder's spec, summary and history (a ``pyarrow.Table``), each file read once and checked as
    :func:`check_run` does; a damaged run raises :class:`DamagedRunError` naming the run and the fault."""
    folder = Path(folder)
    problem, spec, summary, history = _inspect(folder, folder.name, keep_history=True)
    if problem:
        raise DamagedRunError(f"run {folder.name} in {folder.parent} is damaged: {problem}. It counted as complete "
                              "when this invocation started; run snakemake again to set it aside and train it again")
    return spec, summary, history


def _inspect(folder: Path, run_id: str, keep_history: bool = False) -> tuple[str | None, dict, dict, object]:
    """(problem or None, spec, summary, history table) of a run folder; the spec and the history are parsed
    only with ``keep_history`` (the tables) or where the checksums cannot vouch for them. A spec that
    matches the checksum recorded at writing is the spec that was hashed into the run's id, so a parse of
    the workflow checks 10,000 runs by hashing their files, not by hashing their specs again."""
    try:
        summary = json.loads((folder / SUMMARY).read_text())
        blobs = {SPEC: (folder / SPEC).read_bytes()}
    except FileNotFoundError as error:
        return f"{Path(error.filename).name} is missing", {}, {}, None
    except (ValueError, UnicodeDecodeError) as error:
        return f"summary.json cannot be read ({error})", {}, {}, None
    if not isinstance(summary, dict) or summary.get("run_id") != run_id:
        return "summary.json belongs to another run", {}, summary, None
    checksums = summary.get("checksums") or {}
    spec_vouched = checksums.get(SPEC) == hashlib.sha256(blobs[SPEC]).hexdigest()
    spec = {}
    if keep_history or not spec_vouched:
        try:
            spec = json.loads(blobs[SPEC])
        except (ValueError, UnicodeDecodeError) as error:
            return f"spec.json cannot be read ({error})", {}, summary, None
        if not isinstance(spec, dict) or spec.get("run_id") != run_id or _hashed_id(spec) != run_id:
            return "spec.json does not hash to the folder's name (edited, or another run's)", spec, summary, None
        if checksums and not spec_vouched:
            return "spec.json does not match its checksum (altered)", spec, summary, None
    for name, digest in checksums.items():
        if name == SPEC:
            continue
        try:
            blobs[name] = (folder / name).read_bytes()
        except FileNotFoundError:
            return f"{name} is missing", spec, summary, None
        if hashlib.sha256(blobs[name]).hexdigest() != digest:
            return f"{name} does not match its checksum (truncated or altered)", spec, summary, None
    if checksums and not keep_history:
        return None, spec, summary, None
    try:
        if HISTORY in blobs:
            import pyarrow as pa

            history = pa.ipc.open_file(pa.BufferReader(blobs[HISTORY])).read_all()
        else:  # written before checksums were recorded: readable is what can be checked
            history = read_history_table(folder)
    except Exception as error:
        return f"the history cannot be read ({type(error).__name__})", spec, summary, None
    return None, spec, summary, history


def _hashed_id(spec: dict) -> str | None:
    """The id the grid gives ``spec``'s content, or None when it is not a spec."""

    try:
        return ids.run_id(ids.without_id(spec))
    except (KeyError, TypeError, ValueError):
        return None


def set_aside(root: str | Path, run_id: str) -> Path:
    """Move a damaged run folder to ``<root>/../corrupt/<run-id>.<time>``, out of the way of its retraining
    and of the tables, and keep it there for inspection."""
    folder = run_dir(root, run_id)
    target = Path(root).parent / CORRUPT / f"{run_id}.{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, target)
    return target


def damaged_runs(root: str | Path, run_ids) -> dict[str, str]:
    """Of the given runs, those whose folder exists but is not complete and intact: run id -> what is
    wrong. Runs without a folder are simply not trained yet."""
    root = Path(root)
    damaged = {}
    for run_id in run_ids:
        folder = root / run_id
        if (folder / SUMMARY).exists() or (folder.is_dir() and any(folder.iterdir())):
            problem = check_run(root, run_id)
            if problem:
                damaged[run_id] = problem
    return damaged


def code_digests(root: str | Path, run_ids) -> dict[str, str | None]:
    """Of the given runs, those complete: run id -> the training-code digest its summary records (None for
    a run trained before batchlab recorded it, or an unreadable summary, which check_run reports)."""
    out = {}
    for run_id in run_ids:
        try:
            out[run_id] = read_summary(root, run_id).get("code_digest")
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            out[run_id] = None
    return out


def lacks_weights(root: str | Path, spec: dict) -> bool:
    """Whether ``spec``'s run is complete but without the final weights its spec asks it to keep (it was
    trained before it became an end of the interpolation): such a run is trained again to keep them."""
    if not spec.get("keep_weights") or not is_complete(root, spec["run_id"]):
        return False
    try:
        return WEIGHTS not in (read_summary(root, spec["run_id"]).get("checksums") or {})
    except (OSError, ValueError):  # unreadable: check_run reports it as damaged
        return False


def read_weights(root: str | Path, run_id: str) -> dict:
    """A run's final parameters and buffers (``weights.pt``, on the CPU), after :func:`check_run`: a run
    without kept weights, or a damaged one, raises :class:`DamagedRunError` naming the run and the fault."""
    import torch

    folder = run_dir(root, run_id)
    problem = check_run(root, run_id)
    if problem is None and WEIGHTS not in (read_summary(root, run_id).get("checksums") or {}):
        problem = ("it kept no final weights (weights.pt): its spec has no keep_weights; the config's "
                   "evaluation.interpolation marks the runs that keep them")
    if problem:
        raise DamagedRunError(f"run {run_id} in {root}: {problem}")
    return torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)


def read_summary(root: str | Path, run_id: str) -> dict:
    return json.loads(summary_path(root, run_id).read_text())


def read_spec(root: str | Path, run_id: str) -> dict:
    return json.loads((run_dir(root, run_id) / SPEC).read_text())


def write_history(path: str | Path, history: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    feather.write_feather(pa.Table.from_pandas(history, preserve_index=False), str(path), compression="uncompressed")


def read_history_table(folder: str | Path):
    """A run folder's history as a ``pyarrow.Table`` (the fast path of the tables)."""
    import pyarrow as pa

    path = Path(folder) / HISTORY
    if path.exists():
        with pa.OSFile(str(path)) as f:  # pyarrow.feather.read_table is 4x slower on files this small
            return pa.ipc.open_file(f).read_all()
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(Path(folder) / LEGACY_HISTORY)).read(use_threads=False)


def read_history(root: str | Path, run_id: str) -> pd.DataFrame:
    return read_history_table(run_dir(root, run_id)).to_pandas()


def write_receipt(path: str | Path, specs: list[dict], root: str | Path) -> None:
    """Record that a pack's runs are all complete (the output of its training job): their ids and the
    summary of each. Raises if one is not complete."""
    missing = [s["run_id"] for s in specs if not is_complete(root, s["run_id"])]
    if missing:
        raise RuntimeError(f"the pack finished but {len(missing)} of its runs are not complete: {', '.join(missing)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    receipt = {"runs": {s["run_id"]: read_summary(root, s["run_id"]) for s in specs}}
    Path(path).write_text(json.dumps(receipt, indent=2, sort_keys=True, default=float))
