"""The study's 16 figures, in one paper-ready style. Each figure function takes the tables (never run folders)
and returns a matplotlib Figure, mostly with one panel per (dataset, architecture); :func:`style` sets the
style before drawing and :func:`save` writes ``<figure>.pdf`` and ``<figure>.png``.

The figures live by topic, one module per analysis notebook; this module gathers them under one name, so a
notebook or a test reads ``plots.<figure>`` whichever topic draws it. Their shared building blocks (the grid
of panels, a table's rows of one panel, the legend, the axes) are in :mod:`batchlab.panels`."""

from __future__ import annotations

from batchlab.panels import save, style
from batchlab.plots_batch_size import (
    critical_batch, distance, generalization_gap, grad_norms, learning_curves, noise_scale, steps_to_target,
)
from batchlab.plots_hardware import time_to_target
from batchlab.plots_learning_rate import accuracy_vs_base_lr, best_lr, heatmap, noise_temperature
from batchlab.plots_sharpness import interpolation, sharpness
from batchlab.plots_variants import batch_schedules, budgets

__all__ = [
    "style", "save",
    # notebook learning_rate
    "accuracy_vs_base_lr", "heatmap", "best_lr", "noise_temperature",
    # notebook batch_size
    "learning_curves", "generalization_gap", "steps_to_target", "noise_scale", "distance", "grad_norms",
    "critical_batch",
    # notebook interpolation
    "interpolation", "sharpness",
    # notebook variants
    "batch_schedules", "budgets",
    # notebook hardware
    "time_to_target",
]
