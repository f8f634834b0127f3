"""Estimates of training time before anything runs: what a pack's job asks the scheduler for, the estimate
its message shows (in ``snakemake -n`` too), and the study's total printed before a run starts.

The cost model has two numbers from ``training`` in the config: ``seconds_per_step``, the fixed cost of one
optimizer step (kernel launches, Python, the optimizer), and ``seconds_per_example``, the cost of one
training example's forward and backward pass (a number, or one per architecture). A run of ``steps`` steps
at batch size ``B`` costs ``steps * (seconds_per_step + B * seconds_per_example)``, plus its evaluations:
each reads the training set and a test set taken as a fifth of it, at a third of a training example's
cost (a forward pass only). A pack trained as one stacked model (the batched engine, which a GPU always
uses for an architecture it can stack) pays the per-step cost once for all its members; one trained run
after another pays it per run.

Both numbers are estimates the user sets for their hardware: ``benchmarks/gpu.py`` and the ``hardware``
measurement give measured values to put there.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from batchlab import data, models

# an evaluation reads the training set and a test set taken as this fraction of it, forward passes only
TEST_FRACTION = 0.2
FORWARD_SHARE = 1 / 3


def seconds_per_example(training: Mapping, arch: str) -> float:
    """The configured cost of one training example for architecture ``arch`` (0 when none is set)."""
    cost = training.get("seconds_per_example", 0.0)
    if isinstance(cost, Mapping):
        return float(cost.get(arch, 0.0))
    return float(cost)


def check_costs(training: Mapping, architectures: Iterable[str]) -> None:
    """Raise ValueError naming the key when ``training.seconds_per_example`` names an architecture the study
    does not train (a typo would otherwise leave that architecture's cost at 0)."""
    cost = training.get("seconds_per_example", 0.0)
    if isinstance(cost, Mapping):
        unknown = sorted(set(cost) - set(architectures))
        if unknown:
            raise ValueError(f"'training.seconds_per_example': {unknown} are not architectures of this study "
                             f"(allowed: {', '.join(sorted(architectures))})")


def _train_size(spec: dict) -> int:
    dataset = data.DATASETS.get(spec["dataset"])
    return dataset.train_size(spec["dataset_options"]) if dataset is not None else 0


def run_seconds(spec: dict, training: Mapping, per_step: bool = True) -> float:
    """The estimated seconds of one run: its steps and evaluations (``per_step``: with its per-step cost)."""
    per_example = seconds_per_example(training, spec["arch"])
    evaluations = (spec.get("eval_points", 0) + 1) * _train_size(spec) * (1 + TEST_FRACTION) * FORWARD_SHARE
    examples = spec["steps"] * spec["batch_size"]
    overhead = spec["steps"] * training["seconds_per_step"] if per_step else 0.0
    return overhead + (examples + evaluations) * per_example


def pack_seconds(members: Iterable[dict], training: Mapping, batched: bool) -> float:
    """The estimated seconds of a pack's job: ``batched`` (and an architecture the batched engine stacks),
    its members share each step's fixed cost."""
    members = list(members)
    if not members:
        return 0.0
    if batched and len(members) > 1 and models.stackable(members[0]["arch"]) and "builder" not in members[0]:
        shared = max(s["steps"] for s in members) * training["seconds_per_step"]
        return shared + sum(run_seconds(s, training, per_step=False) for s in members)
    return sum(run_seconds(s, training) for s in members)


def batched_on(training: Mapping, gpus: int = 0) -> bool:
    """Whether the estimate takes packs as batched: on a GPU (``training.device`` cuda, or auto with
    ``gpus`` found) packs train as one stacked model; on the CPU most of a study's steps are at small
    batches where they would too, but the estimate stays on the safe side (one run after another)."""
    if training.get("engine") == "sequential":
        return False
    return training.get("device") == "cuda" or (training.get("device") == "auto" and gpus > 0)


def runtime_minutes(members: Iterable[dict], training: Mapping, batched: bool, attempt: int = 1) -> int:
    """A pack's runtime request: its estimate doubled, plus 5 minutes; times the attempt, so a job killed
    for time is retried with more."""
    return (int(math.ceil(2 * pack_seconds(members, training, batched) / 60)) + 5) * attempt


def duration(seconds: float) -> str:
    """``seconds`` as a short duration: 45s, 12m, 3.4h."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def total(packs: Iterable, training: Mapping, batched: bool, slots: int = 1) -> str:
    """The line a run prints before it starts: the packs and runs to train, their estimated time in all and,
    on ``slots`` devices working at once (the GPUs of this machine), the wall time if each were kept busy."""
    packs = list(packs)
    if not packs:
        return "training: nothing to train"
    seconds = sum(pack_seconds(p.members, training, batched) for p in packs)
    runs = sum(len(p.members) for p in packs)
    wall = f", about {duration(seconds / slots)} on {slots} GPUs" if slots > 1 else ""
    return (f"training: {len(packs)} packs, {runs} runs, estimated {seconds / 3600:.1f} "
            f"{'GPU' if batched else 'CPU'}-hours{wall} (from training.seconds_per_step and seconds_per_example; "
            "each pack's estimate is in its job's message)")
