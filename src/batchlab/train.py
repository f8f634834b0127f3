"""Training: one run from its spec, and a pack of runs one after another in one process.

The whole dataset lives on the device as tensors; a seeded stream of epoch permutations feeds exactly
``batch_size`` examples to every step (a batch may straddle two epochs), so ``steps * batch_size`` examples
are seen and shapes never change. Same spec, same machine: same numbers (bitwise on CPU).
"""

from __future__ import annotations

import logging
import math
import platform
import resource
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from batchlab import __version__, data, metrics, models, store
from batchlab.schedules import lr_factor

log = logging.getLogger("batchlab.train")

PRECISION = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """Indices of every mini-batch of a run, shape (steps, batch_size): consecutive slices of a stream of
    seeded epoch permutations of ``n`` examples (a batch may straddle two epochs). Drawn once up front, so a
    step costs one row lookup."""
    generator = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-need // n))]
    return torch.cat(perms)[:need].view(steps, batch_size)


def make_optimizer(model: torch.nn.Module, spec: dict) -> torch.optim.Optimizer:
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


def environment(device: torch.device) -> dict:
    """The evidence a result needs: versions and hardware."""
    env = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "batchlab": __version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
    return env


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, KiB on Linux


def _use_onednn(device: torch.device, batch_size: int) -> bool:
    """oneDNN convolutions carry about 1 ms of fixed cost per step on the CPU: below batch 32 the native
    kernels are 2x faster (measured on MNIST-1D's CNN); above it, and for evaluation, oneDNN wins. A function
    of the spec only, so a run's numbers depend on nothing else."""
    return not (device.type == "cpu" and batch_size < 32)


def train_run(spec: dict, tensors: dict[str, torch.Tensor], device: torch.device, progress=None,
              eval_batch_size: int = 1000) -> tuple[pd.DataFrame, dict]:
    """Train one run; return its history (one row per evaluation) and its summary. ``eval_batch_size`` only
    bounds the memory of evaluation; ``progress(step, total, train_loss, test_acc)`` is called at each one."""
    x_train, y_train, x_test, y_test = (tensors[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    n_classes = data.num_classes(spec["dataset"], spec["dataset_options"])
    total, batch_size = spec["steps"], spec["batch_size"]
    autocast_dtype = PRECISION[spec["precision"]]
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if spec["precision"] == "fp16" else None  # fp16 only

    # seeded initialization and data order
    torch.manual_seed(spec["seed"])
    model = models.build(spec["arch"], tuple(x_train.shape[1:]), n_classes, spec["model_options"]).to(device)
    optimizer = make_optimizer(model, spec)
    batches = batch_indices(len(x_train), batch_size, total, spec["seed"] + 1_000_003).to(device)  # (steps, B)
    w0 = metrics.flat_params(model)
    params = [p for p in model.parameters() if p.requires_grad]  # listed once: model.parameters() walks modules
    evals = set(eval_steps(total, spec["eval_points"]))

    rows, norms = [], []
    initial_loss, diverged_at, train_time = None, None, 0.0
    start = time.perf_counter()
    step = 0
    onednn_default, onednn_train = torch.backends.mkldnn.enabled, _use_onednn(device, batch_size)
    while True:
        # evaluate at the scheduled steps (and at divergence)
        if step in evals or diverged_at is not None:
            torch.backends.mkldnn.enabled = onednn_default
            train_loss, train_acc = metrics.evaluate(model, x_train, y_train, eval_batch_size)
            test_loss, test_acc = metrics.evaluate(model, x_test, y_test, eval_batch_size)
            rows.append({
                "step": step, "epoch": step * batch_size / len(x_train), "examples": step * batch_size,
                "current_lr": spec["lr"] * lr_factor(max(step - 1, 0), total, spec["warmup"], spec["schedule"]),
                "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
                **metrics.grad_norm_stats([float(n) for n in norms]),
                "dist_init": metrics.distance(model, w0),
                "wall_time": time.perf_counter() - start,
            })
            norms = []
            if progress:
                progress(step, total, train_loss, test_acc)
            torch.backends.mkldnn.enabled = onednn_train
        if step == total or diverged_at is not None:
            break

        # set the learning rate
        t0 = time.perf_counter()
        lr = spec["lr"] * lr_factor(step, total, spec["warmup"], spec["schedule"])
        if lr != optimizer.param_groups[0]["lr"]:
            for group in optimizer.param_groups:
                group["lr"] = lr

        # forward, backward, update
        idx = batches[step]
        with autocast():
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward() if scaler else loss.backward()
        if scaler:
            scaler.unscale_(optimizer)
        norms.append(metrics.grad_norm(params))
        scaler.step(optimizer) if scaler else optimizer.step()
        if scaler:
            scaler.update()
        step += 1
        train_time += time.perf_counter() - t0

        # divergence: NaN or exploding loss ends the run, recorded as a result
        loss_value = float(loss.detach())
        initial_loss = loss_value if initial_loss is None else initial_loss
        if metrics.is_diverged(loss_value, initial_loss, spec["divergence_loss_factor"]):
            diverged_at = step

    torch.backends.mkldnn.enabled = onednn_default
    history = pd.DataFrame(rows)
    final = rows[-1]
    summary = {
        "run_id": spec["run_id"],
        "steps_done": step,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        **{f"final_{k}": final[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "dist_init")},
        "best_test_acc": float(history["test_acc"].max()),
        "best_test_acc_step": int(history.loc[history["test_acc"].idxmax(), "step"]),
        "min_test_loss": float(history["test_loss"].min()),
        "gap_acc": final["train_acc"] - final["test_acc"],
        "gap_loss": final["test_loss"] - final["train_loss"],
        "samples_per_s": step * batch_size / train_time if train_time > 0 else math.nan,
        "train_seconds": train_time,
        "wall_seconds": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        **environment(device),
    }
    return history, summary


def to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train_pack(specs: list[dict], dataset_path: str, runs_root: str, device: str = "auto", threads: int = 1,
               eval_batch_size: int = 1000) -> None:
    """Train the runs of one pack one after another; each is written to the run store when it finishes."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev = pick_device(device)
    tensors = to_tensors(data.load(dataset_path), dev)
    total_steps = sum(s["steps"] for s in specs)
    done_steps, t_start = 0, time.perf_counter()
    log.info("pack of %d runs, %d steps in all, on %s (%d thread%s)", len(specs), total_steps, dev, threads, "s"[: threads > 1])
    for k, spec in enumerate(specs, 1):
        if store.is_complete(runs_root, spec["run_id"]):
            log.info("run %d/%d %s is already complete; skipped", k, len(specs), spec["run_id"])
            done_steps += spec["steps"]
            continue

        def progress(step, total, loss, test_acc, k=k, spec=spec):
            elapsed = time.perf_counter() - t_start
            frac = (done_steps + step) / total_steps
            eta = elapsed / frac * (1 - frac) if frac > 0 else math.nan
            log.info(
                "run %d/%d %s | step %d/%d epoch %.2f | train loss %.4f test acc %.4f | ETA %s",
                k, len(specs), spec["run_id"], step, total, step * spec["batch_size"] / len(tensors["x_train"]),
                loss, test_acc, _fmt_seconds(eta) if math.isfinite(eta) else "?", extra={"progress": True},
            )

        history, summary = train_run(spec, tensors, dev, progress, eval_batch_size)
        store.write_run(runs_root, spec, history, summary)
        done_steps += spec["steps"]
        state = f"DIVERGED at step {summary['diverged_at_step']}" if summary["diverged"] else f"test acc {summary['final_test_acc']:.4f}"
        log.info("run %d/%d %s finished: %s, %.0f samples/s", k, len(specs), spec["run_id"], state, summary["samples_per_s"])
    log.info("pack finished in %s", _fmt_seconds(time.perf_counter() - t_start))
