"""Checkpoints: a run's whole training state, saved on a cadence and when the job is told to stop, so a job
that is killed, preempted or timed out resumes where it was and finishes with bitwise the same numbers.

One file per run, ``results/checkpoints/<run-id>.pt``, written atomically (a temporary file, fsync, then a
rename) and read with ``torch.load(weights_only=True)``: plain tensors, numbers, strings, lists and dicts.
Both engines write the same format, in the layout of the run trained alone:

- ``model``: the model's ``state_dict``; ``optimizer``: the ``torch.optim`` optimizer's ``state_dict``;
  ``scaler``: the float16 loss scaler's ``state_dict`` (or None);
- ``step``: optimizer steps taken, which is also where the run is in its stream of seeded batches;
- ``rows``: the evaluations so far; ``norms``: the per-step gradient norms since the last one;
  ``initial_loss``, ``train_time``, ``wall_time``: the rest of the loop's state;
- ``rng``: torch's random number generator states (CPU, and CUDA on a GPU);
- ``batch_schedule``: for a run whose batch size changes (batchlab.batch_schedule), its position in the
  stream of examples and its plateau state;
- ``run_id`` and ``spec_hash``: whose state this is (a checkpoint never resumes another spec).

A run's checkpoint is deleted when the run is written to the run store, or kept in its folder as
``checkpoint.pt`` (its final state) when ``training.checkpoint.keep`` is set.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

from batchlab import ids, store

log = logging.getLogger("batchlab.checkpoint")

FORMAT = 1


class TrainingInterrupted(Exception):
    """The job was asked to stop (SIGTERM, SIGINT) and saved its runs' checkpoints first."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_files(states: dict[Path, dict]) -> None:
    """``torch.save`` each state to its path atomically: a reader sees the old file or the new one, never a
    part. All are written to temporary files first and renamed into place last, one quick rename after
    another, so the members of a batched pack stopped while saving almost never disagree on their step."""
    tmps = {path: path.with_name(f".{path.name}.tmp-{os.getpid()}") for path in states}
    try:
        for path, state in states.items():
            with store.writing(path.parent, "a checkpoint"):
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmps[path], "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


class Checkpointer:
    """Where and when a training job saves its runs' checkpoints, and whether it has been asked to stop.

    ``every_minutes`` and ``every_steps`` (either may be None) set the cadence: a checkpoint is due when
    that much time has passed since the last one, or at every multiple of that many steps. A stop request
    (:meth:`request_stop`, called from the signal handlers of :meth:`handle_signals`) makes one due at
    the next step, after which the training loop raises :class:`TrainingInterrupted`."""

    def __init__(self, folder: str | Path, every_minutes: float | None = 10.0, every_steps: int | None = None,
                 keep: bool = False):
        self.folder = Path(folder)
        self.every_seconds = None if every_minutes is None else 60.0 * every_minutes
        self.every_steps = every_steps
        self.keep = keep
        self.stop_signal: int | None = None
        self.last_save = time.monotonic()
        # run id -> final state of a finished run, when ``keep``: the job writes it into the run's folder
        self.final: dict[str, dict] = {}

    @classmethod
    def from_config(cls, folder: str | Path, settings: dict) -> Checkpointer | None:
        """From the validated config's ``training.checkpoint``; None when checkpoints are off."""
        if not settings["enabled"]:
            return None
        return cls(folder, settings["every_minutes"], settings["every_steps"], settings["keep"])

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.pt"

    def due(self, step: int) -> bool:
        """Whether to save before taking step ``step + 1``."""
        if self.stop_signal is not None:
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return self.every_seconds is not None and time.monotonic() - self.last_save >= self.every_seconds

    def save(self, states: list[dict]) -> None:
        save_files({self.path(state["run_id"]): state for state in states})
        self.last_save = time.monotonic()
        if states:
            log.info("checkpoint at step %d of %s", states[0]["step"],
                     states[0]["run_id"] if len(states) == 1 else f"{len(states)} runs")

    def stop_if_requested(self, where: str) -> None:
        if self.stop_signal is not None:
            raise TrainingInterrupted(self.stop_signal, where)

    def load(self, spec: dict) -> dict | None:
        """The checkpoint of run ``spec`` to resume from, or None. One that cannot be read or belongs to
        another spec is set aside (renamed ``*.pt.unusable``) with a warning, and the run starts over."""
        path = self.path(spec["run_id"])
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            problem = _problem(state, spec)
        except Exception as error:  # a damaged file: any unpickling or zip error
            problem = f"it cannot be read ({type(error).__name__}: {error})"
        if problem:
            aside = path.with_name(path.name + ".unusable")
            os.replace(path, aside)
            log.warning("checkpoint %s is not used: %s; moved to %s, the run starts over", path, problem, aside)
            return None
        return state

    def discard(self, run_id: str) -> None:
        """Run ``run_id`` is in the run store: delete its checkpoint."""
        self.path(run_id).unlink(missing_ok=True)

    def request_stop(self, signum: int, frame=None) -> None:
        if self.stop_signal is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop_signal = signum
        log.warning("received %s: saving checkpoints at the next step, then stopping", signal.Signals(signum).name)

    @contextmanager
    def handle_signals(self, signums=(signal.SIGTERM, signal.SIGINT)):
        """While inside, SIGTERM (a scheduler's time limit or preemption, ``scancel``) and SIGINT (Ctrl-C)
        make the job save its checkpoints at the next step and stop; a second signal stops it at once."""
        previous = {s: signal.signal(s, self.request_stop) for s in signums}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _problem(state, spec: dict) -> str | None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return f"it is not a batchlab checkpoint of format {FORMAT}"
    if state.get("run_id") != spec["run_id"] or state.get("spec_hash") != ids.spec_hash(ids.without_id(spec)):
        return f"it belongs to run {state.get('run_id')!r}, not to this spec"
    if not 0 < state.get("step", -1) < spec["steps"]:
        return f"its step {state.get('step')} is outside 1..{spec['steps'] - 1}"
    return None


def run_state(spec: dict, engine: str, step: int, model: dict, optimizer: dict, scaler: dict | None, rows: list[dict],
              norms: list[float], initial_loss: float | None, train_time: float, wall_time: float,
              device: torch.device) -> dict:
    """A run's checkpoint (see the module's docstring); tensors are copied to the CPU."""
    return {
        "format": FORMAT,
        "run_id": spec["run_id"],
        "spec_hash": ids.spec_hash(ids.without_id(spec)),
        "engine": engine,
        "step": step,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.items()},
        "optimizer": _to_cpu(optimizer),
        "scaler": scaler,
        "rows": [dict(r) for r in rows],
        "norms": [float(n) for n in norms],
        "initial_loss": initial_loss,
        "train_time": train_time,
        "wall_time": wall_time,
        "rng": rng_state(device),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
