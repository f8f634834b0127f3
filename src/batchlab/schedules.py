"""Learning-rate schedules: gradual warm-up (Goyal et al. 2017) followed by constant, cosine or step decay."""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup: dict, schedule: dict) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    Warm-up rises linearly from ``warmup['start_factor']`` at step 0 to 1 at the end of the first
    ``warmup['fraction']`` of training; the schedule then runs over the remaining steps.
    """
    warm = int(round(warmup["fraction"] * total_steps))
    if step < warm:
        start = warmup["start_factor"]
        return start + (1.0 - start) * step / warm
    progress = (step - warm) / max(1, total_steps - warm)  # in [0, 1)
    kind = schedule["kind"]
    if kind == "cosine":
        final = schedule["final_factor"]
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "step":
        return schedule["gamma"] ** sum(progress >= m for m in schedule["milestones"])
    return 1.0
