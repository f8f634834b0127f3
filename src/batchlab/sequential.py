"""The sequential engine: one run trained alone, from its spec (see batchlab.training for what both engines
share, batchlab.batched for the engine that trains a pack at once).

:func:`train_run` is the loop; :class:`SequentialRun` holds its state (model, optimizer, data order, the
evaluations so far) and does each phase: evaluate, checkpoint, step, finish.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable

import pandas as pd
import torch

from batchlab import augment, batch_schedule, checkpoint, data, metrics, models
from batchlab.checkpoint import Checkpointer
from batchlab.phases import PhaseClock
from batchlab.schedules import lr_factor
from batchlab.training import (Progress, TrainingSettings, batch_indices, eval_row, eval_steps, final_sharpness,
                               make_optimizer, noise_at, summarize, training_step)


class SequentialRun:
    """The state of one run in training: built from its spec (seeded initialization and data order), or
    from ``resume``, a checkpoint of the run (the state after its ``step`` updates, its evaluations and its
    position in the data). ``clock``, when given, receives the seconds of each phase spent here (the
    pack's clock); the run's own, a resume's included, go to its summary (``seconds_<phase>``)."""

    def __init__(self, spec: dict, tensors: dict[str, torch.Tensor], device: torch.device,
                 eval_batch_size: int = 1000, checkpoints: Checkpointer | None = None, resume: dict | None = None,
                 clock: PhaseClock | None = None):
        self.clock = clock if clock is not None else PhaseClock()
        self.phases = PhaseClock()  # this run's seconds per phase (training steps: train_time)
        self.spec, self.device, self.eval_batch_size, self.checkpoints = spec, device, eval_batch_size, checkpoints
        self.x_train, self.y_train, self.x_test, self.y_test = (
            tensors[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        n_classes = data.num_classes(spec["dataset"], spec["dataset_options"], spec.get("dataset_builder"))
        self.total = spec["steps"]
        self.scaler = torch.amp.GradScaler(device.type) if spec["precision"] == "fp16" else None

        # seeded initialization and data order
        torch.manual_seed(spec["seed"])
        self.model = models.build(spec["arch"], tuple(self.x_train.shape[1:]), n_classes,
                                  spec["model_options"], spec.get("builder")).to(device)
        self.optimizer = make_optimizer(self.model, spec)
        # a batch-size schedule reads the same stream of epoch permutations B_t examples at a time
        self.plan = batch_schedule.Plan(spec, len(self.x_train)) if spec.get("batch_schedule") else None
        self.batches = (batch_indices(len(self.x_train), spec["batch_size"], self.total, spec["seed"] + 1_000_003)
                        .to(device) if self.plan is None else None)  # (steps, B)
        self.augment = augment.for_specs([spec], device)  # None: the batches are used as they are
        self.w0 = metrics.flat_params(self.model)
        # parameters listed once: model.parameters() walks the modules
        self.grad_norm = functools.partial(metrics.grad_norm, [p for p in self.model.parameters() if p.requires_grad])
        self.evals = set(eval_steps(self.total, spec["eval_points"]))

        self.rows: list[dict] = []
        self.norms: list[torch.Tensor] = []  # per step since the last evaluation
        self.initial_loss: float | None = None
        self.diverged_at: int | None = None
        self.train_time, self.step_no, self.wall_before = 0.0, 0, 0.0
        if resume is not None:
            self._load(resume)
        self.resumed_at = self.step_no if resume is not None else None
        self.train_before = self.train_time  # a resumed run's, trained by an earlier job
        self.start = time.perf_counter()

    def _load(self, resume: dict) -> None:
        self.model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        if self.scaler and resume["scaler"]:
            self.scaler.load_state_dict(resume["scaler"])
        checkpoint.set_rng_state(resume["rng"], self.device)
        self.rows, self.norms, self.step_no = list(resume["rows"]), list(resume["norms"]), resume["step"]
        self.initial_loss, self.train_time = resume["initial_loss"], resume["train_time"]
        self.wall_before = resume["wall_time"]
        self.phases = PhaseClock(resume.get("phase_seconds"))  # absent from checkpoints of older code
        if self.plan is not None:
            self.plan.load(resume["batch_schedule"])

    def _spent(self, phase: str, seconds: float) -> None:
        self.phases.add(phase, seconds)
        self.clock.add(phase, seconds)

    def wall_time(self) -> float:
        """Seconds of training so far, before a resume included."""
        return self.wall_before + time.perf_counter() - self.start

    def evaluate_due(self) -> bool:
        """At the scheduled steps and at divergence; a resumed run already has its step's evaluation."""
        return (self.step_no in self.evals and self.step_no != self.resumed_at) or self.diverged_at is not None

    def done(self) -> bool:
        return self.step_no == self.total or self.diverged_at is not None

    def evaluate(self, progress: Progress | None = None) -> None:
        """Record an evaluation row (losses, accuracies, gradient norms since the last one, distance from
        the initialization, the noise scale where due) and report it to ``progress``."""
        t0 = time.perf_counter()
        train_loss, train_acc = metrics.evaluate(self.model, self.x_train, self.y_train, self.eval_batch_size)
        test_loss, test_acc = metrics.evaluate(self.model, self.x_test, self.y_test, self.eval_batch_size)
        t1 = time.perf_counter()
        noise = (noise_at(self.spec, self.model, self.x_train, self.y_train, self.step_no)
                 if self.diverged_at is None else None)
        t2 = time.perf_counter()
        self.rows.append(eval_row(self.spec, self.step_no, len(self.x_train),
                                  (train_loss, train_acc, test_loss, test_acc), [float(n) for n in self.norms],
                                  metrics.distance(self.model, self.w0), self.wall_time(), noise, self.plan))
        self.norms = []
        if progress:
            progress(self.step_no, self.total, train_loss, test_acc)
        self._spent("noise", t2 - t1)
        self._spent("eval", time.perf_counter() - t2 + t1 - t0)

    def checkpoint_due(self) -> bool:
        return self.checkpoints is not None and self.checkpoints.due(self.step_no)

    def checkpoint(self) -> None:
        """Save the run's state (not at its first step, nor the one it resumed from: nothing new), and stop
        here when the job is asked to."""
        if self.step_no not in (0, self.resumed_at):
            t0 = time.perf_counter()
            self.checkpoints.save([self.state()])
            self._spent("checkpoint", time.perf_counter() - t0)
        self.checkpoints.stop_if_requested(f"at step {self.step_no} of {self.spec['run_id']}")

    def state(self) -> dict:
        """The run's checkpoint now (batchlab.checkpoint.run_state)."""
        state = checkpoint.run_state(
            self.spec, "sequential", self.step_no, self.model.state_dict(), self.optimizer.state_dict(),
            self.scaler.state_dict() if self.scaler else None, self.rows, self.norms, self.initial_loss,
            self.train_time, self.wall_time(), self.device)
        if self.plan is not None:  # the position in the data and the plateau state
            state["batch_schedule"] = self.plan.state()
        state["phase_seconds"] = dict(self.phases.seconds, train=self.train_time)
        return state

    def step(self, autocast: Callable[[], object]) -> None:
        """One update: set the learning rate, augment the batch (where the spec says so), forward, backward,
        update; then watch for divergence."""
        t0 = time.perf_counter()
        spec, step, optimizer = self.spec, self.step_no, self.optimizer
        lr = spec["lr"] * lr_factor(step, self.total, spec["warmup"], spec["schedule"])
        if lr != optimizer.param_groups[0]["lr"]:
            for group in optimizer.param_groups:
                group["lr"] = lr
        idx = self.batches[step] if self.plan is None else self.plan.indices(step).to(self.device)
        x = self.x_train[idx]
        if self.augment is not None:  # random crops and flips of this step's draws
            x = self.augment(x, step)
        loss, norm = training_step(self.model, optimizer, x, self.y_train[idx], self.scaler, autocast,
                                   grad_norm=self.grad_norm)
        self.norms.append(norm)
        self.step_no = step + 1
        self.train_time += time.perf_counter() - t0

        # divergence: NaN or exploding loss ends the run, recorded as a result
        loss_value = float(loss.detach())
        self.initial_loss = loss_value if self.initial_loss is None else self.initial_loss
        if metrics.is_diverged(loss_value, self.initial_loss, spec["divergence_loss_factor"]):
            self.diverged_at = step + 1
        if self.plan is not None:  # a plateau may start a drop to the small batch
            self.plan.observe(step, loss_value)

    def finish(self, final_state: dict | None = None) -> tuple[pd.DataFrame, dict]:
        """The run's history and summary (with the final weights' sharpness); ``final_state`` receives the
        model's parameters and buffers, and a kept checkpoint the run's final state."""
        examples = self.step_no * self.spec["batch_size"] if self.plan is None else self.plan.examples
        history, summary = summarize(self.spec, self.rows, self.step_no, len(self.x_train), len(self.x_test),
                                     self.diverged_at, examples / self.train_time if self.train_time > 0 else math.nan,
                                     self.train_time, self.wall_time(), self.device)
        summary["engine"] = "sequential"
        summary.update(self.plan.summary() if self.plan is not None else {})
        t0 = time.perf_counter()
        summary.update(final_sharpness(self.spec, self.model, self.x_train, self.y_train, self.diverged_at is not None))
        self._spent("sharpness", time.perf_counter() - t0)
        self.clock.add("train", self.train_time - self.train_before)
        self.phases.seconds["train"] = self.train_time
        summary.update(self.phases.run_columns())
        if final_state is not None:
            final_state.update({name: t.detach().clone() for name, t in self.model.state_dict().items()})
        if self.checkpoints is not None and self.checkpoints.keep:
            self.checkpoints.final[self.spec["run_id"]] = self.state()
        return history, summary


def train_run(spec: dict, tensors: dict[str, torch.Tensor], device: torch.device, progress: Progress | None = None,
              eval_batch_size: int = 1000, final_state: dict | None = None,
              checkpoints: Checkpointer | None = None, resume: dict | None = None,
              clock: PhaseClock | None = None) -> tuple[pd.DataFrame, dict]:
    """Train one run; return its history (one row per evaluation) and its summary. ``eval_batch_size`` only
    bounds the memory of evaluation; ``progress(step, total, train_loss, test_acc)`` is called at each one;
    ``final_state``, when given, receives the trained model's parameters and buffers. ``checkpoints`` saves
    the run's state on its cadence and stops the run when asked to (batchlab.checkpoint.TrainingInterrupted);
    ``resume``, a checkpoint of this run, continues from it to the numbers of an uninterrupted run;
    ``clock`` receives the seconds of each phase spent here (batchlab.phases)."""
    run = SequentialRun(spec, tensors, device, eval_batch_size, checkpoints, resume, clock)
    with TrainingSettings(device, spec["batch_size"], spec["precision"]) as settings:
        while True:
            # evaluate at the scheduled steps (and at divergence)
            if run.evaluate_due():
                with settings.evaluation():
                    run.evaluate(progress)
            if run.done():
                break
            # checkpoint on the cadence, and stop here when the job is asked to
            if run.checkpoint_due():
                run.checkpoint()
            # set the learning rate; forward, backward, update
            run.step(settings.autocast)
    return run.finish(final_state)
