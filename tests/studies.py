"""The studies the tests share: the tiny study (a few hundred MNIST-1D examples, tens of steps) as a raw
config and as resolved specs, the small study of the numbers and figure tests, made-up variant rows, and a
small file system to mount. Imported by the tests (``from studies import ...``); the fixtures built on them
are in conftest.py."""

from __future__ import annotations

import copy
import math
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from batchlab import analysis, config, grid

ROOT = Path(__file__).resolve().parents[1]

# A valid study small enough to validate, expand and train in well under a second per run.
TINY = {
    "study": "tiny",
    "datasets": ["mnist1d"],
    "dataset_options": {"mnist1d": {"num_samples": 300, "seed": 42}},
    "architectures": ["mlp"],
    "batch_sizes": [8, 32],
    "learning_rates": [0.05],
    "budget": {"steps": 12},
    "seeds": [0],
    "evaluation": {"points": 3},
    "targets": [0.15, 0.5],
}

def tiny_specs(**changes) -> list[dict]:
    """The resolved specs of the tiny study with top-level ``changes`` applied."""
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return grid.expand(config.validate(raw))


# The small study of the numbers and figure tests: 2 architectures x 3 batch sizes x 2 lrs x 2 seeds (24 runs),
# the tiny study's data and steps.
SMALL_STUDY = dict(
    architectures=["logreg", "mlp"], batch_sizes=[8, 32, 128], seeds=[0, 1], budget={"steps": 15},
    learning_rates={"base": [0.002, 0.02], "scaling": "linear"}, optimizer={"momentum": 0.9},
    schedule={"kind": "cosine"}, targets=[0.12, 0.2], evaluation={"points": 3},
)


def with_variants(runs: pd.DataFrame, growth_acc: float, steps_gap_shrinks: bool) -> pd.DataFrame:
    """The tiny study's runs plus made-up variant rows of the mlp (no history needed): lr decay at 51%
    (mean of 50% and 52%) in 100 updates, growth at ``growth_acc`` in 60, constant at 40% (at B=128: 30%),
    drops at B=128 to 35% (1 and 2 drops); and a fixed-step
    budget at batch sizes 8 and 128 whose accuracies make the gap between them 5 points smaller (or larger)
    than at the main grid's fixed budget."""
    mlp = runs[runs["arch"] == "mlp"]
    best = analysis.best_per_batch(analysis.seed_mean(mlp)).set_index("batch_size")["final_test_acc"]
    base, rows = mlp.iloc[0], []

    def add(variant, seed, acc, steps=15, batch_size=8, budget_steps=math.nan, **columns):
        rows.append(dict(base.to_dict(), variant=variant, run_id=f"{variant}-{batch_size}-{seed}", seed=seed,
                         final_test_acc=acc, steps=steps, steps_done=steps, batch_size=batch_size, diverged=False,
                         budget_steps=budget_steps, **columns))

    for seed, acc in ((0, 0.50), (1, 0.52)):
        add("decay", seed, acc, 100, schedule_kind="step")
        add("grow", seed, growth_acc, 60, schedule_kind="constant", batch_schedule_kind="step", batch_schedule_factor=4.0)
        add("const", seed, 0.40, 100, schedule_kind="constant")
        add("const", seed, 0.30, 100, batch_size=128, schedule_kind="constant")  # the drops' setting
        add("drop", seed, 0.35, 100, batch_size=128, schedule_kind="constant", batch_schedule_kind="drop",
            batch_drops=seed + 1, batch_schedule_small_batch=32)
        shift = -0.05 if steps_gap_shrinks else 0.05
        add("fixed", seed, best[8], 40, budget_steps=40)
        add("fixed", seed, best[128] - shift, 40, batch_size=128, budget_steps=40)
    return pd.concat([runs, pd.DataFrame(rows)], ignore_index=True)


@contextmanager
def tmpfs(path: Path, options: str):
    """A small file system mounted at ``path`` (``options``: ``size=256k`` for a disk that fills up, ``ro`` for
    a read-only one) for the body of the ``with``; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a file system here (root needed): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
