"""The pack driver: train the runs of one pack (one job) not yet complete, resuming from their checkpoints,
each group of compatible runs with the engine that is faster for it (batchlab.batched, or
batchlab.sequential one run after another), logging progress with an ETA, and writing each run to the run
store as soon as it finishes. The job's log ends with the seconds it spent in each phase (batchlab.phases).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from contextlib import nullcontext

import pandas as pd
import torch

from batchlab import data, files, models, phases, stacked, store
from batchlab.batched import train_batched
from batchlab.checkpoint import Checkpointer
from batchlab.sequential import train_run
from batchlab.training import pick_device, to_tensors

log = logging.getLogger("batchlab.packs")

# On the CPU the batched engine wins up to these batch sizes (1 thread, packs of 8 to 16): stacked dense
# layers up to 512 (benchmarks/engine.py); 1-D convolutions up to 512 (benchmarks/stacking.py: a training
# step of the stacked forms against the runs one after another; from batch 32 they stack as a channels_last
# grouped Conv2d, batchlab.batched.conv1d_form), where their step is 1.4x faster or more, while at 1024 its
# gain (1.1x to 1.4x) is within the noise of a shared machine; 2-D convolutions (grouped) up to 64. Above,
# one run after another.
CPU_BATCHED_MAX_BATCH = {"dense": 512, "conv1d": 512, "conv": 64}


def choose_engine(specs: list[dict], model: torch.nn.Module, device: torch.device, requested: str = "auto") -> str:
    """"batched" or "sequential" for a group of compatible runs (see :func:`compatible_groups`)."""
    # runs with a batch schedule change shapes from step to step: one after another
    stackable = len(specs) > 1 and stacked.can_stack(model) and not any(s.get("batch_schedule") for s in specs)
    if requested == "sequential" or not stackable:
        return "sequential"
    if requested == "batched" or device.type == "cuda":
        return "batched"
    layers = list(model.modules())
    kind = ("conv" if any(isinstance(m, torch.nn.Conv2d) for m in layers) else
            "conv1d" if any(isinstance(m, torch.nn.Conv1d) for m in layers) else "dense")
    return "batched" if specs[0]["batch_size"] <= CPU_BATCHED_MAX_BATCH[kind] else "sequential"


def compatible_groups(specs: list[dict], resume: dict[str, dict] | None = None) -> list[list[dict]]:
    """Runs of a pack that can train as one stacked model: same optimizer kind, Nesterov flag and betas,
    precision and evaluation points (a pack already shares dataset, architecture, batch size and steps), and
    the same step to resume from (``resume``: run id -> checkpoint)."""
    resume = resume or {}
    groups: dict[tuple, list[dict]] = {}
    for spec in specs:
        opt = spec["optimizer"]
        key = (opt["name"], opt.get("nesterov", False), tuple(opt.get("betas", ())), spec["precision"], spec["eval_points"],
               _start_step(spec, resume))
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _start_step(spec: dict, resume: dict[str, dict]) -> int:
    state = resume.get(spec["run_id"])
    return state["step"] if state is not None else 0


def _member_limit(specs: list[dict], model: torch.nn.Module, tensors: dict, device: torch.device) -> int:
    """On CUDA, how many members fit in half the free device memory; elsewhere no limit."""
    if device.type != "cuda":
        return len(specs)
    free, _ = torch.cuda.mem_get_info(device)
    per_member = stacked.estimate_bytes(model, specs[0]["batch_size"], tensors["x_train"][0].numel())
    return stacked.max_members(free, per_member)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def runs_to_train(specs: list[dict], runs_root: str,
                  checkpoints: Checkpointer | None) -> tuple[list[dict], dict[str, dict]]:
    """The runs of a pack to train (not complete, damaged, or complete without the final weights they must
    keep) and run id -> the checkpoint each resumes from, with a log line for each decision."""
    todo, resume = [], {}
    for k, spec in enumerate(specs, 1):
        problem = store.check_run(runs_root, spec["run_id"])
        if problem is None and store.lacks_weights(runs_root, spec):
            log.info("run %d/%d %s is complete but kept no final weights, which the interpolation needs; "
                     "trained again to keep them", k, len(specs), spec["run_id"])
        elif problem is None:
            log.info("run %d/%d %s is already complete; skipped", k, len(specs), spec["run_id"])
            continue
        elif store.run_dir(runs_root, spec["run_id"]).exists():
            log.warning("run %d/%d %s in %s is damaged: %s; trained again", k, len(specs), spec["run_id"], runs_root, problem)
        todo.append(spec)
        state = checkpoints.load(spec) if checkpoints is not None else None
        if state is not None:
            resume[spec["run_id"]] = state
            log.info("run %d/%d %s resumes from its checkpoint at step %d/%d (saved %s)", k, len(specs),
                     spec["run_id"], state["step"], spec["steps"], state["saved_at"])
    return todo, resume


class PackDriver:
    """Trains the runs ``todo`` of a pack (resuming those in ``resume``) and keeps the count of runs and
    steps done, for the progress lines and their ETA."""

    def __init__(self, todo: list[dict], resume: dict[str, dict], tensors: dict[str, torch.Tensor],
                 device: torch.device, runs_root: str, eval_batch_size: int, checkpoints: Checkpointer | None,
                 data_sha256: str | None = None):
        self.todo, self.resume, self.tensors, self.device = todo, resume, tensors, device
        self.data_sha256 = data_sha256  # of the prepared dataset file: each run's summary records it
        self.runs_root, self.eval_batch_size, self.checkpoints = runs_root, eval_batch_size, checkpoints
        self.total_steps = sum(s["steps"] - _start_step(s, resume) for s in todo)
        self.done, self.done_steps, self.t_start = 0, 0, time.perf_counter()
        self.clock = phases.PhaseClock()  # this job's seconds per phase, for its last log line

    def report(self, label: str, members: list[dict], start_step: int, step: int, total: int, loss: float,
               test_acc: float) -> None:
        """One progress line of an engine training ``members`` from ``start_step`` (the engines' ``progress``
        callback, with the first three arguments bound), with the pack's ETA."""
        elapsed = time.perf_counter() - self.t_start
        frac = (self.done_steps + (step - start_step) * len(members)) / max(self.total_steps, 1)
        eta = elapsed / frac * (1 - frac) if frac > 0 else math.nan
        log.info(
            "%s | step %d/%d epoch %.2f | train loss %.4f test acc %.4f | ETA %s",
            label, step, total, step * members[0]["batch_size"] / len(self.tensors["x_train"]),
            loss, test_acc, _fmt_seconds(eta) if math.isfinite(eta) else "?", extra={"progress": True},
        )

    def finished(self, spec: dict, history: pd.DataFrame, summary: dict, weights: dict | None = None) -> None:
        """Write a finished run to the store (with its kept checkpoint and final weights) and log it."""
        kept = self.checkpoints.final.pop(spec["run_id"], None) if self.checkpoints is not None else None
        summary["data_sha256"] = self.data_sha256
        t0 = time.perf_counter()
        store.write_run(self.runs_root, spec, history, summary, checkpoint=kept, weights=weights)
        t1 = time.perf_counter()
        if self.checkpoints is not None:  # only now: a run that could not be written resumes from it
            self.checkpoints.discard(spec["run_id"])
        self.clock.add("write", t1 - t0)
        self.clock.add("checkpoint", time.perf_counter() - t1)
        self.done += 1
        state = (f"DIVERGED at step {summary['diverged_at_step']}" if summary["diverged"]
                 else f"test acc {summary['final_test_acc']:.4f}")
        log.info("run %d/%d %s finished (%s): %s, %.0f samples/s", self.done, len(self.todo), spec["run_id"],
                 summary["engine"], state, summary["samples_per_s"])

    def train_group(self, group: list[dict], engine: str) -> None:
        """Train a group of compatible runs: batched (in chunks that fit the device) or one after another."""
        first = group[0]
        n_classes = data.num_classes(first["dataset"], first["dataset_options"], first.get("dataset_builder"))
        model = models.build(first["arch"], tuple(self.tensors["x_train"].shape[1:]), n_classes,
                             first["model_options"], first.get("builder"))
        chosen = choose_engine(group, model, self.device, engine)
        size = _member_limit(group, model, self.tensors, self.device) if chosen == "batched" else 1
        for first in range(0, len(group), size):
            members = group[first : first + size]
            states = [self.resume.get(s["run_id"]) for s in members]
            n, done = len(self.todo), self.done
            label = (f"runs {done + 1}-{done + len(members)}/{n} (batched)" if chosen == "batched"
                     else f"run {done + 1}/{n} {members[0]['run_id']}")
            start_step = _start_step(members[0], self.resume)
            progress = functools.partial(self.report, label, members, start_step)
            # the runs whose spec keeps its final weights (evaluation.interpolation) write them too
            if chosen == "batched":
                kept: dict[str, dict] = {}
                train_batched(members, self.tensors, self.device, progress, self.eval_batch_size,
                              checkpoints=self.checkpoints, resume=states if states[0] is not None else None,
                              kept_weights=kept, clock=self.clock,
                              on_finish=lambda i, h, s, members=members, kept=kept: self.finished(
                                  members[i], h, s, kept.pop(members[i]["run_id"], None)))
            else:
                weights = {} if members[0].get("keep_weights") else None
                history, summary = train_run(members[0], self.tensors, self.device, progress, self.eval_batch_size,
                                             final_state=weights, checkpoints=self.checkpoints, resume=states[0],
                                             clock=self.clock)
                self.finished(members[0], history, summary, weights)
            self.done_steps += sum(s["steps"] - start_step for s in members)


def train_pack(specs: list[dict], dataset_path: str, runs_root: str, device: str = "auto", threads: int = 1,
               eval_batch_size: int = 1000, engine: str = "auto", checkpoints: Checkpointer | None = None,
               job_start: float | None = None) -> None:
    """Train the runs of one pack not yet complete, batched (as one stacked model) where that is faster, else
    one after another; each run is written to the run store as soon as it finishes. With ``checkpoints``,
    runs resume from their checkpoints, save new ones on the cadence, and SIGTERM or SIGINT makes the job
    save them and raise batchlab.checkpoint.TrainingInterrupted. ``job_start``, a ``time.perf_counter()``
    reading of when the job began (its process's start: batchlab.phases.seconds_since_process_start), starts
    the clock of the last log line's start-up and total; by default, this call."""
    job_start = time.perf_counter() if job_start is None else job_start
    torch.set_num_threads(threads)
    # deterministic kernels (warn where none exists); torch.use_deterministic_algorithms also sets the flag of
    # its compiler (torch._inductor), which batchlab never uses, and importing that is 0.9 s of start-up
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    # subnormal numbers (a momentum buffer decaying towards 0) make CPU arithmetic many times slower; as
    # zeros they change no result a float32 run can express
    torch.set_flush_denormal(True)
    dev = pick_device(device)
    tensors = to_tensors(data.load(dataset_path), dev)
    todo, resume = runs_to_train(specs, runs_root, checkpoints)
    driver = PackDriver(todo, resume, tensors, dev, runs_root, eval_batch_size, checkpoints,
                        files.sha256(dataset_path))
    log.info("pack of %d runs, %d steps in all, on %s (%d thread%s)", len(todo), driver.total_steps, dev, threads,
             "s"[: threads > 1])
    # start-up: from the process's start (interpreter, imports, data, the runs' checks) to training
    driver.clock.add("startup", time.perf_counter() - job_start)
    driver.t_start = time.perf_counter()
    with checkpoints.handle_signals() if checkpoints is not None else nullcontext():
        for group in compatible_groups(todo, resume):
            if checkpoints is not None:
                checkpoints.stop_if_requested(f"before run {driver.done + 1}/{len(todo)}")
            driver.train_group(group, engine)
    log.info("pack finished in %s", _fmt_seconds(time.perf_counter() - driver.t_start))
    log.info("%s", phases.pack_line(driver.clock.seconds, time.perf_counter() - job_start))
