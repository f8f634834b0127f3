"""The 1-D interpolation between the small-batch and the large-batch solution of an architecture (Keskar et
al. 2017): ``theta(alpha) = alpha * theta_large + (1 - alpha) * theta_small``, evaluated on the full training
and test sets along alpha (0 is the small-batch solution, 1 the large-batch one; below 0 and above 1 the line
goes on beyond them).

Each end is the run at its batch size's best learning rate (seed-mean final test accuracy among learning
rates where no seed diverged, :func:`batchlab.analysis.best_per_batch`), and the two ends are paired seed by
seed. Their final weights are the ``weights.pt`` the run store keeps for runs whose spec has
``keep_weights`` (see :func:`batchlab.grid.interpolation_ends`). Every floating tensor of the state dict is
interpolated, parameters and buffers (batch-norm statistics) alike; integer buffers (batch-norm step
counters) are taken from the small-batch end, whose value the model does not use in evaluation.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch

from batchlab import analysis, data, metrics, models, store

log = logging.getLogger("batchlab.interpolation")

COLUMNS = ["dataset", "arch", "small_batch", "large_batch", "small_lr", "large_lr", "seed", "small_run_id",
           "large_run_id", "alpha", "split", "loss", "accuracy"]


def alphas(points: int, alpha_min: float, alpha_max: float) -> list[float]:
    """``points`` evenly spaced values from ``alpha_min`` to ``alpha_max``, with 0 and 1 (the two solutions)
    always among them; none when ``points`` is 0."""
    if points <= 0:
        return []
    grid = np.linspace(alpha_min, alpha_max, points)
    return sorted({float(round(a, 12)) + 0.0 for a in grid} | {0.0, 1.0})


def interpolate(small: dict[str, torch.Tensor], large: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``alpha * large + (1 - alpha) * small`` of every floating tensor of two state dicts of one model (exactly
    ``small`` at 0 and ``large`` at 1); other tensors (integer counters) are the small one's."""
    if small.keys() != large.keys():
        raise ValueError(f"the two state dicts name different tensors: {sorted(small.keys() ^ large.keys())}")
    out = {}
    for name, a in small.items():
        b = large[name]
        if a.shape != b.shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(a.shape)} in one state dict and {tuple(b.shape)} in the other")
        out[name] = alpha * b + (1 - alpha) * a if a.is_floating_point() else a.clone()
    return out


def pairs(runs: pd.DataFrame, dataset: str, arch: str, small_batch: int, large_batch: int) -> pd.DataFrame:
    """The runs to interpolate between: per seed that did not diverge at either end, the run at the best
    learning rate of ``small_batch`` and of ``large_batch`` in the main grid. Columns: seed, small_run_id, large_run_id,
    small_lr, large_lr (no rows where an end is missing)."""
    columns = ["seed", "small_run_id", "large_run_id", "small_lr", "large_lr"]
    runs = analysis.main_grid(runs)  # the main grid's solutions, not a variant's
    sub = runs[(runs["dataset"] == dataset) & (runs["arch"] == arch) & runs["batch_size"].isin([small_batch, large_batch])]
    if sub.empty:
        return pd.DataFrame(columns=columns)
    best = analysis.best_per_batch(analysis.seed_mean(sub)).set_index("batch_size")["lr"]
    ends = {}
    for side, batch in (("small", small_batch), ("large", large_batch)):
        if batch not in best.index:
            return pd.DataFrame(columns=columns)
        at = sub[(sub["batch_size"] == batch) & np.isclose(sub["lr"], best[batch]) & ~sub["diverged"].astype(bool)]
        ends[side] = at.set_index("seed")[["run_id", "lr"]].rename(columns=lambda c: f"{side}_{c}")
    joined = ends["small"].join(ends["large"], how="inner").reset_index().sort_values("seed")
    return joined[columns].reset_index(drop=True)


def evaluate_line(model: torch.nn.Module, small: dict, large: dict, alpha_values: list[float],
                  splits: dict[str, tuple[torch.Tensor, torch.Tensor]], eval_batch_size: int = 1000) -> list[dict]:
    """Loss and accuracy of ``model`` with the weights ``theta(alpha)`` on each split, per alpha: rows of
    alpha, split, loss, accuracy. ``model`` is left holding the last alpha's weights."""
    device = next(iter(model.state_dict().values())).device
    rows = []
    for alpha in alpha_values:
        model.load_state_dict({n: t.to(device) for n, t in interpolate(small, large, alpha).items()})
        for split, (x, y) in splits.items():
            loss, acc = metrics.evaluate(model, x, y, eval_batch_size)
            rows.append({"alpha": alpha, "split": split, "loss": loss if math.isfinite(loss) else math.nan,
                         "accuracy": acc})
    return rows


def interpolate_solutions(runs: pd.DataFrame, dataset: str, arch: str, small_batch: int, large_batch: int,
                          alpha_values: list[float], runs_root: str, tensors: dict[str, torch.Tensor],
                          eval_batch_size: int = 1000) -> pd.DataFrame:
    """The interpolation table of one dataset and architecture (columns :data:`COLUMNS`, one row per seed,
    alpha and split): see the module's docstring. ``tensors`` is the dataset (:func:`batchlab.training.to_tensors`)."""
    chosen = pairs(runs, dataset, arch, small_batch, large_batch)
    if chosen.empty:
        log.warning("%s %s: no seed has a non-diverged run at the best learning rate of both batch sizes %d "
                    "and %d; nothing to interpolate", dataset, arch, small_batch, large_batch)
        return pd.DataFrame(columns=COLUMNS)
    splits = {"train": (tensors["x_train"], tensors["y_train"]), "test": (tensors["x_test"], tensors["y_test"])}
    device = tensors["x_train"].device
    rows = []
    for pair in chosen.itertuples(index=False):
        spec = store.read_spec(runs_root, pair.small_run_id)
        n_classes = data.num_classes(spec["dataset"], spec["dataset_options"], spec.get("dataset_builder"))
        model = models.build(arch, tuple(tensors["x_train"].shape[1:]), n_classes, spec["model_options"],
                             spec.get("builder")).to(device)
        small, large = (store.read_weights(runs_root, run) for run in (pair.small_run_id, pair.large_run_id))
        for row in evaluate_line(model, small, large, alpha_values, splits, eval_batch_size):
            rows.append({"dataset": dataset, "arch": arch, "small_batch": small_batch, "large_batch": large_batch,
                         "small_lr": pair.small_lr, "large_lr": pair.large_lr, "seed": int(pair.seed),
                         "small_run_id": pair.small_run_id, "large_run_id": pair.large_run_id, **row})
        log.info("%s %s seed %d: %d alphas between %s and %s", dataset, arch, pair.seed, len(alpha_values),
                 pair.small_run_id, pair.large_run_id)
    return pd.DataFrame(rows, columns=COLUMNS)


def combine(paths) -> pd.DataFrame:
    """The study's interpolation table: the per-dataset-and-architecture tables one after another."""
    parts = [pd.read_parquet(p) for p in paths]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
