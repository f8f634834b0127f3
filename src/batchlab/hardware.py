"""The hardware side of batch size: how fast one training step runs and how much memory it needs, against
batch size, on the device training runs on, up to the largest batch that fits.

For one dataset x architecture, :func:`measure` times the training step of a single model (gather the batch,
augment it where the study's runs are augmented (batchlab.augment), then batchlab.training.training_step:
forward, loss, backward, the fp16 loss scaler's unscale, optimizer step: what a practitioner's loop does,
without batchlab's per-step bookkeeping) under training's kernel settings,
with the study's optimizer, precision (autocast) and thread count, at batch sizes doubling from
the smallest grid batch size up to ``max_batch_size``, the grid's own batch sizes always among them. The
sweep ends at the first batch size that runs out of memory; that one and every larger one are recorded as not
fitting. Time per step is the median over ``repeats`` timed steps after ``warmup_steps`` untimed ones (CUDA is
synchronized around each), so a step disturbed by another process on a shared machine does not set it.

Peak memory counts the bytes held by tensors during training at that batch size, apart from the dataset:
parameters, gradients, optimizer state, the batch, activations and temporaries. On CUDA it is
``torch.cuda.max_memory_allocated`` above what was allocated before the model was built (the CUDA context and
the allocator's cached, unused blocks are not counted). On the CPU, which has no allocator statistics, it is
the same quantity taken from the allocation and free events that ``torch.profiler`` records with
``profile_memory=True``: the running sum of bytes allocated minus bytes freed since the model was built, at its
highest: tensors allocated through PyTorch's allocator, not the scratch buffers a library such as oneDNN
allocates for itself, nor the process's resident memory (which also holds the interpreter, libraries and
the allocator's free lists). Either way it is measured over the first two steps (the first allocates the optimizer state),
in a pass of its own, untimed.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterable

import pandas as pd
import torch

from batchlab import augment, data, models, training

log = logging.getLogger("batchlab.hardware")

COLUMNS = ["dataset", "arch", "device", "device_name", "threads", "precision", "batch_size", "in_grid", "fits",
           "seconds_per_step", "samples_per_s", "peak_memory_mb", "repeats"]

# The learning rate of the timed steps: it changes no step's cost, so it is fixed (editing the study's
# learning rates must not measure again), and small, so a few hundred steps cannot diverge.
LR = 1e-3


def batch_sizes(grid_batch_sizes: Iterable[int], max_batch_size: int) -> list[int]:
    """The batch sizes to measure: doubling from the smallest grid batch size up to ``max_batch_size``, and
    every grid batch size (also those above it)."""
    grid = sorted({int(b) for b in grid_batch_sizes})
    sizes, b = set(grid), grid[0]
    while b <= max_batch_size:
        sizes.add(b)
        b *= 2
    return sorted(sizes)


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: CUDA's (or any device's) OutOfMemoryError, or the CPU allocator's
    RuntimeError ("can't allocate memory")."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def sweep(sizes: Iterable[int], measure_one: Callable[[int], dict]) -> list[dict]:
    """``measure_one(batch_size)`` for each batch size, smallest first, until one runs out of memory: that one
    and every larger one get a row with ``fits`` False and no measurement. Any other error propagates."""
    rows, sizes = [], sorted(sizes)
    for i, b in enumerate(sizes):
        try:
            rows.append({"batch_size": b, "fits": True, **measure_one(b)})
            continue
        except Exception as error:  # noqa: BLE001 (only out-of-memory is caught; see below)
            if not is_out_of_memory(error):
                raise
            log.info("batch size %d does not fit: %s", b, str(error).splitlines()[0] if str(error) else type(error).__name__)
        # outside the except block, where the failed step's frames (and the tensors they hold) are released
        free_memory()
        rows += [{"batch_size": s, "fits": False, "seconds_per_step": math.nan, "peak_memory_mb": math.nan}
                 for s in sizes[i:]]
        break
    return rows


def free_memory() -> None:
    """Release what a failed or finished measurement held (and, on CUDA, the allocator's cached blocks)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def peak_memory(device: torch.device):
    """Track the peak bytes held by tensors allocated inside the ``with``; the yielded dict gets ``mb`` when
    the block ends (see the module's docstring for what is counted on CPU and CUDA)."""
    out = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield out
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    out["mb"] = peak / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_batch(build: Callable[[], torch.nn.Module], optimizer_settings: dict, x: torch.Tensor, y: torch.Tensor,
                  batch_size: int, device: torch.device, precision: str = "fp32", warmup_steps: int = 3,
                  repeats: int = 10, seed: int = 0, augmentation: dict | None = None) -> dict:
    """Peak memory and the median time of a training step of a fresh model from ``build()`` at ``batch_size``
    (examples drawn with replacement from ``x``, ``y``, so a batch may exceed the training set), the batch
    augmented as training augments it where ``augmentation`` (a spec's) is given."""
    generator = torch.Generator().manual_seed(seed)
    augmenter = augment.Augmenter(augmentation, [seed], device) if augmentation else None
    steps = 2 + warmup_steps + repeats
    indices = torch.randint(len(x), (steps, batch_size), generator=generator).to(device)  # (steps, B)
    with training.TrainingSettings(device, batch_size, precision) as settings:  # the kernels training picks
        free_memory()
        with peak_memory(device) as memory:  # built inside, so the model, its gradients and state count
            model = build().to(device)
            optimizer = training.make_optimizer(model, {"optimizer": optimizer_settings, "lr": LR})
            scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

            def step(i: int) -> None:
                # training's step without its bookkeeping (gradient norms, divergence checks)
                xb = x[indices[i]] if augmenter is None else augmenter(x[indices[i]], i)
                training.training_step(model, optimizer, xb, y[indices[i]], scaler, settings.autocast)

            step(0)  # allocates the optimizer's state
            step(1)
        for i in range(2, 2 + warmup_steps):
            step(i)
        times = []
        for i in range(2 + warmup_steps, steps):
            _sync(device)
            t0 = time.perf_counter()
            step(i)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return {"seconds_per_step": statistics.median(times), "peak_memory_mb": memory["mb"]}


def measure(dataset_path: str, dataset: str, arch: str, settings: dict, max_batch_size: int = 4096,
            warmup_steps: int = 3, repeats: int = 10, device: str = "auto", threads: int = 1) -> pd.DataFrame:
    """The hardware table of one dataset x architecture (columns :data:`COLUMNS`), one row per batch size of
    :func:`batch_sizes`. ``settings`` comes from batchlab.grid.hardware_settings; ``device`` and ``threads`` as
    in training (batchlab.packs.train_pack)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as in training: subnormal numbers would slow the CPU's arithmetic
    dev = training.pick_device(device)
    arrays = data.load(dataset_path)
    x, y = (torch.from_numpy(arrays[k]).to(dev) for k in ("x_train", "y_train"))
    n_classes = data.num_classes(dataset, settings["dataset_options"], settings.get("dataset_builder"))

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return models.build(arch, tuple(x.shape[1:]), n_classes, settings["model_options"], settings.get("builder"))

    def measure_one(b: int) -> dict:
        out = measure_batch(build, settings["optimizer"], x, y, b, dev, settings["precision"], warmup_steps, repeats,
                            augmentation=settings.get("augmentation"))
        log.info("%s %s batch size %d: %.3g ms per step, %.0f samples/s, peak memory %.1f MB", dataset, arch, b,
                 1000 * out["seconds_per_step"], b / out["seconds_per_step"], out["peak_memory_mb"])
        return out

    sizes = batch_sizes(settings["batch_sizes"], max_batch_size)
    log.info("%s %s on %s (%d thread%s): batch sizes %s", dataset, arch, dev, threads, "s"[: threads > 1], sizes)
    table = pd.DataFrame(sweep(sizes, measure_one))
    table.insert(0, "dataset", dataset)
    table.insert(1, "arch", arch)
    table.insert(2, "device", dev.type)
    table.insert(3, "device_name", torch.cuda.get_device_name(dev) if dev.type == "cuda" else training.cpu_name())
    table.insert(4, "threads", threads)
    table.insert(5, "precision", settings["precision"])
    table["in_grid"] = table["batch_size"].isin(settings["batch_sizes"])
    table["samples_per_s"] = table["batch_size"] / table["seconds_per_step"]
    table["repeats"] = repeats
    return table[COLUMNS]


def combine(paths: Iterable[str]) -> pd.DataFrame:
    """The study's hardware table from the per dataset x architecture ones (an empty table with the columns
    when nothing was measured)."""
    tables = [pd.read_parquet(p) for p in paths]
    if not tables:
        kinds = {"dataset": "str", "arch": "str", "device": "str", "device_name": "str", "precision": "str",
                 "threads": "int64", "batch_size": "int64", "repeats": "int64", "in_grid": "bool", "fits": "bool"}
        return pd.DataFrame({c: pd.Series(dtype=kinds.get(c, "float64")) for c in COLUMNS})
    return pd.concat(tables, ignore_index=True)[COLUMNS]
