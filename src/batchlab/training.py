"""What both training engines (batchlab.sequential, batchlab.batched) and the hardware sweep share: the device,
the data order, the optimizer, the training step with the kernel and precision settings it runs under, and
the records a run leaves (evaluation rows, the summary and the environment it was trained in).

The whole dataset lives on the device as tensors; a seeded stream of epoch permutations feeds exactly
``batch_size`` examples to every step (a batch may straddle two epochs), so ``steps * batch_size`` examples
are seen and shapes never change. Same spec, same machine: same numbers (bitwise on CPU).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import resource
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from batchlab import __version__, batch_schedule, metrics, provenance
from batchlab.schedules import lr_factor

if TYPE_CHECKING:
    from batchlab.stacked_optim import StackedGradScaler, StackedOptimizer

PRECISION = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# an engine's ``progress(step, total, train_loss, test_acc)``, called at each evaluation
Progress = Callable[[int, int, float, float], None]


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A dataset's arrays (batchlab.data.load) as tensors on ``device``, where training reads them."""
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """Indices of every mini-batch of a run, shape (steps, batch_size): consecutive slices of a stream of
    seeded epoch permutations of ``n`` examples (a batch may straddle two epochs). Drawn once up front, so a
    step costs one row lookup."""
    generator = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-need // n))]
    return torch.cat(perms)[:need].view(steps, batch_size)


def make_optimizer(model: torch.nn.Module, spec: dict) -> torch.optim.Optimizer:
    """The run's optimizer (``spec["optimizer"]``: SGD or Adam) over ``model``'s parameters at ``spec["lr"]``."""
    # foreach: one fused call over all parameters instead of a Python loop over them (CPU and CUDA alike)
    opt = spec["optimizer"]
    if opt["name"] == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=spec["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"], foreach=True
        )
    return torch.optim.SGD(
        model.parameters(), lr=spec["lr"], momentum=opt["momentum"], nesterov=opt["nesterov"],
        weight_decay=opt["weight_decay"], foreach=True,
    )


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Step 0 and ``points`` evenly spaced steps ending at ``total_steps``."""
    return sorted({0} | {round(total_steps * i / points) for i in range(1, points + 1)})


def use_onednn(device: torch.device, batch_size: int) -> bool:
    """oneDNN convolutions carry about 1 ms of fixed cost per step on the CPU: below batch 32 the native
    kernels are 2x faster (measured on MNIST-1D's CNN); above it, and for evaluation, oneDNN wins. A function
    of the spec only, so a run's numbers depend on nothing else."""
    return not (device.type == "cpu" and batch_size < 32)


class TrainingSettings:
    """The kernel and precision settings of training at ``batch_size`` and ``precision`` on ``device``.

    Entered, it switches oneDNN (a process-wide flag: see :func:`use_onednn`) to training's choice and
    restores the previous value when the block ends, also on an exception (a stop request raises);
    :meth:`evaluation` switches back to the default for an evaluation inside the block; :attr:`autocast`
    makes the context of a forward pass (autocast to bf16 or fp16, or nothing for fp32).
    """

    def __init__(self, device: torch.device, batch_size: int, precision: str = "fp32"):
        self.onednn_train = use_onednn(device, batch_size)
        self.onednn_default = torch.backends.mkldnn.enabled
        dtype = PRECISION[precision]
        self.autocast: Callable[[], object] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext)

    def __enter__(self) -> TrainingSettings:
        self.onednn_default = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = self.onednn_train
        return self

    def __exit__(self, *exc) -> None:
        torch.backends.mkldnn.enabled = self.onednn_default

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """Evaluation's settings (oneDNN as it was before training) for the ``with`` block, then training's."""
        torch.backends.mkldnn.enabled = self.onednn_default
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = self.onednn_train


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer | StackedOptimizer, x: torch.Tensor,
                  y: torch.Tensor, scaler: torch.amp.GradScaler | StackedGradScaler | None = None,
                  autocast: Callable[[], object] = nullcontext,
                  loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                  grad_norm: Callable[[], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of training on the batch ``(x, y)``: forward (under ``autocast``), backward, with ``scaler``
    (fp16) the loss scaled and the gradients unscaled, ``grad_norm()`` of the unscaled gradients, and the
    update (skipped by the scaler where gradients overflowed). Returns the loss (a scalar, or one per member
    of a stacked model, whose sum is differentiated) and the gradient norm (None without ``grad_norm``).

    Works for a model alone (``torch.optim`` optimizer, ``torch.amp.GradScaler``) and for a stacked one
    (batchlab.stacked_optim's optimizer and scaler, which take the same calls)."""
    with autocast():
        loss = loss_of(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # so the norm, and the update, see the true gradients
    else:
        (loss.sum() if loss.dim() else loss).backward()
    norm = grad_norm() if grad_norm is not None else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss, norm


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows; read once a process."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """The evidence a result needs: versions and hardware (the CPU's model and the kernels torch runs on it,
    whose rounding a float result depends on), the GPUs the job was given (its CUDA_VISIBLE_DEVICES: a GPU
    slot's device on one machine, the scheduler's under SLURM; None when unset), and the code that trained it
    (batchlab.provenance.revision)."""
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the CPU kernels torch dispatches to
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "batchlab": __version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        **provenance.revision(),  # the training code's digest, and the git commit when there is one
    }


def peak_memory_mb(device: torch.device) -> float:
    """The peak memory of training so far: the device's allocations on CUDA, else the whole process's."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summarize(spec: dict, rows: list[dict], steps_done: int, n_train: int, n_test: int, diverged_at: int | None,
              samples_per_s: float, train_seconds: float, wall_seconds: float, device: torch.device) -> tuple[pd.DataFrame, dict]:
    """A run's history table and summary from its evaluation rows."""
    history = pd.DataFrame(rows)
    final = rows[-1]
    summary = {
        "run_id": spec["run_id"],
        "steps_done": steps_done,
        "n_train": n_train,
        "n_test": n_test,
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        **{f"final_{k}": final[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "dist_init")},
        "best_test_acc": float(history["test_acc"].max()),
        "best_test_acc_step": int(history.loc[history["test_acc"].idxmax(), "step"]),
        "min_test_loss": float(history["test_loss"].min()),
        "gap_acc": final["train_acc"] - final["test_acc"],
        "gap_loss": final["test_loss"] - final["train_loss"],
        "samples_per_s": samples_per_s,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "peak_memory_mb": peak_memory_mb(device),
        **environment(device),
    }
    return history, summary


def eval_row(spec: dict, step: int, n_train: int, losses_accs: tuple[float, float, float, float], norms: list[float],
             dist_init: float, wall_time: float, noise: dict[str, float] | None = None,
             plan: batch_schedule.Plan | None = None) -> dict:
    """One evaluation of a run; ``plan``, for a run with a batch schedule, gives the examples seen, the
    batch size of the last step (of the first at step 0) and the drops so far."""
    train_loss, train_acc, test_loss, test_acc = losses_accs
    examples = step * spec["batch_size"] if plan is None else plan.examples
    return {
        "step": step, "epoch": examples / n_train, "examples": examples,
        "current_batch_size": spec["batch_size"] if plan is None else plan.last_batch,
        **(plan.row() if plan is not None else {}),
        "current_lr": spec["lr"] * lr_factor(max(step - 1, 0), spec["steps"], spec["warmup"], spec["schedule"]),
        "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
        **metrics.grad_norm_stats(norms),
        "dist_init": dist_init,
        **(noise or dict.fromkeys(metrics.NOISE_SCALE, math.nan)),
        "wall_time": wall_time,
    }


def final_sharpness(spec: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, diverged: bool) -> dict:
    """``final_sharpness_<epsilon>`` of a run's final weights for each box size its spec asks for (NaN for a run
    that diverged), on the first ``examples`` training examples (see batchlab.metrics.sharpness)."""
    settings = spec.get("sharpness", {"epsilons": []})
    out = {}
    for epsilon in settings["epsilons"]:
        out[f"final_sharpness_{epsilon:g}"] = math.nan if diverged else metrics.sharpness(
            model, x[: settings["examples"]], y[: settings["examples"]], epsilon, settings["steps"], seed=spec["seed"])
    return out


def noise_at(spec: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float] | None:
    """The gradient noise scale of a run at an evaluation (None where the run measures none): the
    gradients are drawn with a generator seeded by the run's seed and the step, so a resumed run and either
    engine draw the same batches."""
    settings = spec.get("noise_scale", {"pairs": 0})
    if not settings["pairs"]:
        return None
    steps = eval_steps(spec["steps"], spec["eval_points"])
    if step != steps[-1] and steps.index(step) % settings["every"]:
        return None
    return metrics.measure_noise_scale(model, x, y, settings["small_batch"], settings["big_batch"], settings["pairs"],
                                       seed=spec["seed"] * 1_000_003 + step)
