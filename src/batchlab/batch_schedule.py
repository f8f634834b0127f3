"""Batch-size schedules: runs whose batch size changes during training.

- ``step`` (Smith, Kindermans & Le 2017): the batch size is multiplied by ``factor`` at each of
  ``milestones``, fractions of the budget *in examples*; the run sees the budget's examples (its epochs stay
  those of the constant run) in fewer optimizer steps.
- ``drop``: when the training loss plateaus, train ``steps`` steps at ``small_batch`` to shake the weights
  out of a sharp minimum, then return to the run's batch size; at most ``max_drops`` times. The plateau:
  an exponential moving average (``ema``) of the minibatch loss has not fallen below ``1 - min_delta``
  times its best value for ``patience`` steps (steps at the small batch neither update nor test it). The
  budget counts optimizer steps: those of the constant run (``round(examples / B)``), drop steps included,
  so a run with drops ends at the same step and sees fewer examples.

The data order is the constant-batch runs' (see :func:`batchlab.training.batch_indices`): a stream of seeded
epoch permutations, here consumed ``B_t`` examples at a time, so every example is seen once per epoch. A
:class:`Plan` holds a run's position in the stream and its plateau state; both go into its checkpoints.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the workflow's parse (grid) reads the schedules without importing torch
    import torch


def step_batch_sizes(base: int, factor: float, milestones: list[float], total_examples: float) -> list[int]:
    """The batch size of every optimizer step of a ``step`` schedule: ``round(base * factor**k)`` with ``k``
    the milestones (fractions of ``total_examples``) passed by the examples seen before the step. Steps are
    taken while more than half a batch of the budget is left, as ``round(examples / B)`` does for a
    constant batch size (at least one step)."""
    sizes, seen = [], 0
    marks = sorted(float(m) * total_examples for m in milestones)
    while True:
        b = int(round(base * factor ** sum(seen >= m for m in marks)))
        if sizes and total_examples - seen <= b / 2:
            return sizes
        sizes.append(b)
        seen += b


def resolve_steps(schedule: dict | None, budget: dict, batch_size: int, n_train: int, constant_steps: int) -> int:
    """Optimizer steps of a run with a batch schedule (``constant_steps`` without one, or for ``drop``)."""
    if not schedule or schedule["kind"] != "step":
        return constant_steps
    examples = budget["examples"] if "examples" in budget else budget["epochs"] * n_train
    return len(step_batch_sizes(batch_size, schedule["factor"], schedule["milestones"], examples))


def settings(schedule: dict) -> dict:
    """A validated ``batch_schedule`` as it goes into a spec: only its kind's keys, floats and ints canonical."""
    if schedule["kind"] == "step":
        return {"kind": "step", "milestones": sorted(float(m) for m in schedule["milestones"]),
                "factor": float(schedule["factor"])}
    return {"kind": "drop", "small_batch": int(schedule["small_batch"]), "steps": int(schedule["steps"]),
            "max_drops": int(schedule["max_drops"]), "patience": int(schedule["patience"]),
            "min_delta": float(schedule["min_delta"]), "ema": float(schedule["ema"])}


def tag(schedule: dict) -> str:
    """A short name of a batch schedule for pack names (``step_1a2b3c``): packs never mix schedules."""
    import hashlib

    digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:6]
    return f"{schedule['kind']}_{digest}"


class Stream:
    """The run's data order: seeded epoch permutations of ``n`` examples, one after another, read from
    ``position`` on. The same stream as :func:`batchlab.training.batch_indices` for the same seed."""

    def __init__(self, n: int, seed: int, position: int = 0):
        import torch

        self.n, self.seed = n, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer, self.start = torch.empty(0, dtype=torch.long), 0  # stream position of buffer[0]
        while self.start + self.n <= position:  # skip the epochs before the position
            torch.randperm(self.n, generator=self.generator)
            self.start += self.n
        if self.start < position:  # and hold the one it is in
            self.buffer = torch.randperm(self.n, generator=self.generator)
        self.position = position

    def take(self, b: int) -> torch.Tensor:
        """The next ``b`` indices of the stream."""
        import torch

        while self.start + len(self.buffer) < self.position + b:
            self.buffer = torch.cat([self.buffer[self.position - self.start:], torch.randperm(self.n, generator=self.generator)])
            self.start = self.position
        out = self.buffer[self.position - self.start : self.position - self.start + b]
        self.position += b
        return out


class Plan:
    """Which examples each step of a run with a batch schedule trains on, and its state for checkpoints.

    Call :meth:`indices` before a step and :meth:`observe` with the step's minibatch loss after it."""

    def __init__(self, spec: dict, n_train: int):
        self.spec, self.schedule = spec, spec["batch_schedule"]
        self.base = int(spec["batch_size"])
        self.stream = Stream(n_train, spec["seed"] + 1_000_003)  # the constant runs' data-order seed
        self.sizes = None
        if self.schedule["kind"] == "step":
            budget = spec["budget"]
            examples = budget["examples"] if "examples" in budget else budget["epochs"] * n_train
            self.sizes = step_batch_sizes(self.base, self.schedule["factor"], self.schedule["milestones"], examples)
        # plateau state (drop): EMA of the loss, its best value, steps since it improved, drop steps left
        self.ema = self.best = None
        self.since_best, self.left, self.drop_starts = 0, 0, []
        self.last_batch = self.base if self.sizes is None else self.sizes[0]

    def batch_size(self, step: int) -> int:
        """The batch size of optimizer step ``step`` (0-based) as the plan stands now."""
        if self.sizes is not None:
            return self.sizes[step]
        return self.schedule["small_batch"] if self.left > 0 else self.base

    def indices(self, step: int) -> torch.Tensor:
        b = self.batch_size(step)
        self.last_batch = b
        return self.stream.take(b)

    def observe(self, step: int, loss: float) -> None:
        """After step ``step`` (0-based) with minibatch loss ``loss``: update the plateau criterion, and
        start a drop at the next step when it fires."""
        if self.sizes is not None:
            return
        s = self.schedule
        if self.left > 0:  # a drop is under way: the loss of a small batch does not count
            self.left -= 1
            if self.left == 0:
                self.best, self.since_best = self.ema, 0
            return
        self.ema = loss if self.ema is None else s["ema"] * self.ema + (1 - s["ema"]) * loss
        if not math.isfinite(self.ema):
            return
        if self.best is None or self.ema < self.best * (1 - s["min_delta"]):
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        if self.since_best >= s["patience"] and len(self.drop_starts) < s["max_drops"] and step + 1 < self.spec["steps"]:
            self.left, self.since_best = s["steps"], 0
            self.drop_starts.append(step + 1)

    @property
    def examples(self) -> int:
        """Examples seen so far."""
        return self.stream.position

    def row(self) -> dict:
        """What an evaluation row records of the plan: drops started so far."""
        return {"batch_drops": len(self.drop_starts)} if self.sizes is None else {}

    def summary(self) -> dict:
        if self.sizes is not None:
            return {"examples_seen": self.examples}
        return {"examples_seen": self.examples, "batch_drops": len(self.drop_starts),
                "batch_drop_steps": json.dumps(self.drop_starts)}

    def state(self) -> dict:
        return {"position": self.stream.position, "ema": self.ema, "best": self.best, "since_best": self.since_best,
                "left": self.left, "drop_starts": list(self.drop_starts), "last_batch": self.last_batch}

    def load(self, state: dict) -> None:
        self.stream = Stream(self.stream.n, self.stream.seed, state["position"])
        self.ema, self.best, self.since_best = state["ema"], state["best"], state["since_best"]
        self.left, self.drop_starts, self.last_batch = state["left"], list(state["drop_starts"]), state["last_batch"]
