"""Quantities recorded during training: gradient-norm statistics, distance from initialization, the
gradient noise scale, the sharpness of the final weights, steps to a target, the generalization gap."""

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


def logits32(out: torch.Tensor) -> torch.Tensor:
    """A model's output for the loss: half precision (autocast's bf16 or fp16) widened to float32; float32
    and float64 as they are."""
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def loss_and_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy and the number of correct predictions of ``logits`` (N, classes) against ``y``
    (N,). The row maxima serve twice, as the stabilizer of the log-sum-exp and as the predictions (the first
    maximal index, as ``argmax``): the same numbers as ``F.cross_entropy(..., reduction="sum")`` (to float
    rounding) and ``(logits.argmax(1) == y).sum()``, in fewer passes: on the CPU, for few classes, a few
    times faster than ``F.cross_entropy``, whose log-softmax runs along rows of 10."""
    top, predicted = logits.max(1)
    lse = top + (logits - top[:, None]).exp_().sum(1).log_()
    return (lse - logits.gather(1, y[:, None]).squeeze(1)).sum(), (predicted == y).sum()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in chunks of ``batch_size``. The chunks' sums
    are added up in float64 on the device and read once (one synchronization, not one per chunk); the
    result does not depend on ``batch_size`` beyond the last bits of float summation."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), batch_size):
        out, target = logits32(model(x[i : i + batch_size])), y[i : i + batch_size]
        loss, right = loss_and_correct(out, target)
        loss_sum += loss
        correct += right
    model.train(was_training)
    return float(loss_sum) / len(x), int(correct) / len(x)


NOISE_SCALE = ("noise_grad_sq", "noise_trace", "b_simple")


def noise_scale(small_sq: Sequence[float], big_sq: Sequence[float], b_small: int, b_big: int) -> dict[str, float]:
    """The gradient noise scale of McCandlish et al. (2018, appendix A.1) from squared norms of gradients
    averaged over ``b_small`` and over ``b_big`` examples at the same weights. With ``S`` and ``L`` the means of
    the small and the big squared norms (numerator and denominator averaged separately, the ratio taken last):

    - ``|G|^2 = (b_big * L - b_small * S) / (b_big - b_small)`` (``noise_grad_sq``), unbiased;
    - ``tr(Sigma) = (S - L) / (1 / b_small - 1 / b_big)`` (``noise_trace``), unbiased;
    - ``B_simple = tr(Sigma) / |G|^2`` (``b_simple``; NaN where the estimate of ``|G|^2`` is not positive).
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small} and {b_big}")
    small, big = float(np.mean(small_sq)), float(np.mean(big_sq))
    g2 = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return {"noise_grad_sq": g2, "noise_trace": trace, "b_simple": trace / g2 if g2 > 0 else math.nan}


# layers whose training-mode output for an example depends on that example alone (no batch statistics, no
# random masks): a model built of these alone gives a batch's gradient from each distinct example once
PER_EXAMPLE_LAYERS = (torch.nn.Sequential, torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ReLU,
                      torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.Flatten, torch.nn.Identity)


def is_per_example(model: torch.nn.Module) -> bool:
    """Whether ``model`` (in training mode) maps each example of a batch independently of the others."""
    return all(type(m) in PER_EXAMPLE_LAYERS for m in model.modules())


# distinct examples are forwarded in a multiple of this many (the rest weighted 0): a new batch shape costs
# kernel set-up (oneDNN's primitives on the CPU), so the shapes a measurement uses stay few
DISTINCT_ROUNDING = 64


def batch_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
               distinct: bool = False) -> torch.Tensor:
    """``model``'s mean cross-entropy over the examples ``idx`` of ``(x, y)`` (repeats counted). With
    ``distinct`` (for a model that :func:`is_per_example`) each distinct example is forwarded once and its
    loss weighted by how often it was drawn: the same loss and gradient, for fewer examples' work (a draw of
    2048 of 4000 with replacement holds about 1600 distinct ones). The distinct examples are padded with
    weight-0 repeats to a multiple of :data:`DISTINCT_ROUNDING`; where that saves nothing, the batch is
    forwarded as drawn."""
    if distinct:
        unique, counts = torch.unique(idx, return_counts=True)
        size = -(-len(unique) // DISTINCT_ROUNDING) * DISTINCT_ROUNDING
        distinct = size < len(idx)
    if not distinct:
        return torch.nn.functional.cross_entropy(logits32(model(x[idx])), y[idx])
    pad = size - len(unique)
    unique = torch.cat([unique, unique[:1].expand(pad)])
    weights = torch.cat([counts, counts.new_zeros(pad)])
    losses = torch.nn.functional.cross_entropy(logits32(model(x[unique])), y[unique], reduction="none")
    return (losses * weights.to(losses.dtype)).sum() / len(idx)


def measure_noise_scale(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, b_small: int, b_big: int,
                        pairs: int, seed: int, distinct: bool | None = None) -> dict[str, float]:
    """:func:`noise_scale` of ``model``'s mean cross-entropy on ``(x, y)`` at its current weights, from
    ``pairs`` gradients over ``b_small`` and ``pairs`` over ``b_big`` examples drawn with replacement (the
    estimator's i.i.d. batches) by a generator seeded with ``seed``. In training mode, as the gradients of
    training are; the model comes back as it was (buffers such as batch-norm statistics restored, no
    ``.grad`` touched), so training goes on unperturbed. ``distinct`` (default: where the model
    :func:`is_per_example`, on the CPU) forwards each distinct example of a draw once (:func:`batch_loss`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    # on a GPU these batches are bound by kernel launches, not arithmetic, and a draw's count of distinct
    # examples would cost a synchronization: the batches go as drawn there
    distinct = is_per_example(model) and x.device.type == "cpu" if distinct is None else distinct
    generator = torch.Generator().manual_seed(seed)
    squared: dict[int, list[torch.Tensor]] = {b_small: [], b_big: []}
    model.train()
    try:
        for _ in range(pairs):
            for b in (b_small, b_big):
                idx = torch.randint(len(x), (b,), generator=generator).to(x.device)
                grads = torch.autograd.grad(batch_loss(model, x, y, idx, distinct), params)
                squared[b].append(torch.stack(torch._foreach_norm(grads)).square().sum())
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    return noise_scale(*(torch.stack(squared[b]).tolist() for b in (b_small, b_big)), b_small, b_big)


def sharpness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int = 10,
              seed: int = 0, batch_size: int = 1000) -> float:
    """The epsilon-sharpness of Keskar et al. (2017) of ``model``'s mean cross-entropy ``f`` on ``(x, y)`` at its
    current weights ``w``: ``100 * (max_{z in C} f(w + z) - f(w)) / (1 + f(w))`` over the box
    ``C = {z : |z_i| <= epsilon * (|w_i| + 1)}``. The maximum is approached by projected sign ascent: from a
    seeded random point of the box (at a minimum the gradient vanishes), ``steps`` steps of a quarter of
    each coordinate's half-width, clipped to the box; the largest loss seen counts. In evaluation mode; the
    model comes back as it was."""
    return _box_sharpness(lambda: _mean_loss(model, x, y, batch_size), [p for p in model.parameters() if p.requires_grad],
                          epsilon, steps, seed, model)


def _mean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    total = 0.0
    for i in range(0, len(x), batch_size):
        total = total + torch.nn.functional.cross_entropy(logits32(model(x[i : i + batch_size])), y[i : i + batch_size],
                                                          reduction="sum")
    return total / len(x)


def _box_sharpness(loss_fn, params: list[torch.Tensor], epsilon: float, steps: int, seed: int,
                   model: torch.nn.Module | None = None) -> float:
    """:func:`sharpness` of any differentiable ``loss_fn()`` of ``params`` (restored afterwards)."""
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    originals = [p.detach().clone() for p in params]
    bounds = [epsilon * (w.abs() + 1) for w in originals]
    # the box's faces and the step (a quarter of each half-width), once: each step is then five fused calls
    lows, highs = torch._foreach_sub(originals, bounds), torch._foreach_add(originals, bounds)
    quarters = torch._foreach_mul(bounds, 0.25)
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            base = float(loss_fn())
            for p, w, b in zip(params, originals, bounds):
                start = (torch.rand(w.shape, generator=generator, dtype=w.dtype) * 2 - 1).to(w.device)
                p.copy_(w + start * b)
        best = base
        for _ in range(steps):
            loss = loss_fn()
            best = max(best, float(loss.detach()))
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # p <- clip(p + b / 4 * sign(g), w - b, w + b)
                moved = torch._foreach_add([p.detach() for p in params],
                                           torch._foreach_mul(quarters, torch._foreach_sign(grads)))
                torch._foreach_maximum_(moved, lows)
                torch._foreach_minimum_(moved, highs)
                torch._foreach_copy_([p.detach() for p in params], moved)
        with torch.no_grad():  # the last point's loss: no step follows it, so no gradient
            best = max(best, float(loss_fn()))
    finally:
        with torch.no_grad():
            for p, w in zip(params, originals):
                p.copy_(w)
        if model is not None:
            model.train(was_training)
    return 100.0 * (best - base) / (1.0 + base)
