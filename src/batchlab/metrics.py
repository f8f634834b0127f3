"""Quantities recorded during training: gradient-norm statistics, distance from initialization,
steps to a target, the generalization gap."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters as one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).clone()


def distance(model: torch.nn.Module, w0: torch.Tensor) -> float:
    """``||w_t - w_0||_2`` over all trainable parameters (Hoffer et al. 2017)."""
    return float(torch.linalg.vector_norm(flat_params(model) - w0))


def grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``||g_B||_2`` of the current mini-batch gradient of ``params``, as a 0-d tensor (no device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


GRAD_STATS = ("grad_norm_mean", "grad_norm_std", "grad_norm_q10", "grad_norm_q50", "grad_norm_q90", "grad_norm_max")


def grad_norm_stats(norms: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, 10/50/90 % quantiles and maximum of per-step gradient norms."""
    if len(norms) == 0:
        return {k: math.nan for k in GRAD_STATS}
    a = np.asarray(norms, dtype=np.float64)
    q10, q50, q90 = np.quantile(a, [0.1, 0.5, 0.9])
    return dict(zip(GRAD_STATS, map(float, (a.mean(), a.std(), q10, q50, q90, a.max()))))


def steps_to_target(steps: Iterable[int], values: Iterable[float], target: float, higher_is_better: bool = True) -> float:
    """The first recorded step at which ``values`` reach ``target`` (NaN when never reached)."""
    for step, value in zip(steps, values):
        if value is not None and not math.isnan(value) and (value >= target if higher_is_better else value <= target):
            return float(step)
    return math.nan


def is_diverged(loss: float, initial_loss: float, loss_factor: float) -> bool:
    """NaN/inf loss, or a loss above ``loss_factor`` times the initial one."""
    return not math.isfinite(loss) or loss > loss_factor * initial_loss


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in chunks of ``batch_size``."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size]).float()
        loss_sum += float(torch.nn.functional.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return loss_sum / len(x), correct / len(x)
