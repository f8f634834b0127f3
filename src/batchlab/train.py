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

from batchlab import __version__, batch_schedule, batched, checkpoint, data, metrics, models, store
from batchlab.checkpoint import Checkpointer, TrainingInterrupted
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
              eval_batch_size: int = 1000, final_state: dict | None = None,
              checkpoints: Checkpointer | None = None, resume: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Train one run; return its history (one row per evaluation) and its summary. ``eval_batch_size`` only
    bounds the memory of evaluation; ``progress(step, total, train_loss, test_acc)`` is called at each one;
    ``final_state``, when given, receives the trained model's parameters and buffers. ``checkpoints`` saves
    the run's state on its cadence and stops the run when asked to (:class:`TrainingInterrupted`);
    ``resume``, a checkpoint of this run, continues from it to the numbers of an uninterrupted run."""
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
    # a batch-size schedule reads the same stream of epoch permutations B_t examples at a time
    plan = batch_schedule.Plan(spec, len(x_train)) if spec.get("batch_schedule") else None
    batches = batch_indices(len(x_train), batch_size, total, spec["seed"] + 1_000_003).to(device) if plan is None else None  # (steps, B)
    w0 = metrics.flat_params(model)
    params = [p for p in model.parameters() if p.requires_grad]  # listed once: model.parameters() walks modules
    evals = set(eval_steps(total, spec["eval_points"]))

    rows, norms = [], []
    initial_loss, diverged_at, train_time, step, wall_before = None, None, 0.0, 0, 0.0
    if resume is not None:  # the state after ``step`` updates, its evaluations and the position in the data
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scaler and resume["scaler"]:
            scaler.load_state_dict(resume["scaler"])
        checkpoint.set_rng_state(resume["rng"], device)
        rows, norms, step = list(resume["rows"]), list(resume["norms"]), resume["step"]
        initial_loss, train_time, wall_before = resume["initial_loss"], resume["train_time"], resume["wall_time"]
        if plan is not None:
            plan.load(resume["batch_schedule"])
    resumed_at = step if resume is not None else None

    def state_now() -> dict:
        state = checkpoint.run_state(spec, "sequential", step, model.state_dict(), optimizer.state_dict(),
                                     scaler.state_dict() if scaler else None, rows, norms, initial_loss,
                                     train_time, wall_before + time.perf_counter() - start, device)
        if plan is not None:  # the position in the data and the plateau state
            state["batch_schedule"] = plan.state()
        return state

    start = time.perf_counter()
    onednn_default, onednn_train = torch.backends.mkldnn.enabled, _use_onednn(device, batch_size)
    torch.backends.mkldnn.enabled = onednn_train  # evaluations switch to the default and back
    try:  # the global switch is restored however the loop ends (a stop request raises)
        while True:
            # evaluate at the scheduled steps (and at divergence); a resumed run has its step's evaluation
            if (step in evals and step != resumed_at) or diverged_at is not None:
                torch.backends.mkldnn.enabled = onednn_default
                train_loss, train_acc = metrics.evaluate(model, x_train, y_train, eval_batch_size)
                test_loss, test_acc = metrics.evaluate(model, x_test, y_test, eval_batch_size)
                noise = noise_at(spec, model, x_train, y_train, step) if diverged_at is None else None
                rows.append(eval_row(spec, step, len(x_train), (train_loss, train_acc, test_loss, test_acc),
                                     [float(n) for n in norms], metrics.distance(model, w0),
                                     wall_before + time.perf_counter() - start, noise, plan))
                norms = []
                if progress:
                    progress(step, total, train_loss, test_acc)
                torch.backends.mkldnn.enabled = onednn_train
            if step == total or diverged_at is not None:
                break

            # checkpoint on the cadence, and stop here when the job is asked to
            if checkpoints is not None and checkpoints.due(step):
                if step not in (0, resumed_at):
                    checkpoints.save([state_now()])
                checkpoints.stop_if_requested(f"at step {step} of {spec['run_id']}")

            # set the learning rate
            t0 = time.perf_counter()
            lr = spec["lr"] * lr_factor(step, total, spec["warmup"], spec["schedule"])
            if lr != optimizer.param_groups[0]["lr"]:
                for group in optimizer.param_groups:
                    group["lr"] = lr

            # forward, backward, update
            idx = batches[step] if plan is None else plan.indices(step).to(device)
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
            if plan is not None:  # a plateau may start a drop to the small batch
                plan.observe(step - 1, loss_value)

    finally:
        torch.backends.mkldnn.enabled = onednn_default
    examples = step * batch_size if plan is None else plan.examples
    history, summary = summarize(spec, rows, step, len(x_train), len(x_test), diverged_at,
                                 examples / train_time if train_time > 0 else math.nan,
                                 train_time, wall_before + time.perf_counter() - start, device)
    summary["engine"] = "sequential"
    summary.update(plan.summary() if plan is not None else {})
    summary.update(final_sharpness(spec, model, x_train, y_train, diverged_at is not None))
    if final_state is not None:
        final_state.update({name: t.detach().clone() for name, t in model.state_dict().items()})
    if checkpoints is not None and checkpoints.keep:
        checkpoints.final[spec["run_id"]] = state_now()
    return history, summary


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


@torch.no_grad()
def evaluate_members(model: batched.StackedModel, members: list[torch.nn.Module], which: list[int],
                     x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[int, tuple[float, float]]:
    """Mean cross-entropy and accuracy on ``(x, y)`` of the members ``which``: each member's current state is
    loaded into its own module (``members``) and evaluated as a run alone is. On evaluation batches of
    hundreds of examples the stacked forward pass is memory-bound and slower than K plain ones."""
    out = {}
    for i in which:
        members[i].load_state_dict(model.member_state(i))
        out[i] = metrics.evaluate(members[i], x, y, batch_size)
    return out


def train_batched(specs: list[dict], tensors: dict[str, torch.Tensor], device: torch.device, progress=None,
                  eval_batch_size: int = 1000, final_states: list | None = None,
                  checkpoints: Checkpointer | None = None, resume: list[dict] | None = None,
                  on_finish=None, kept_weights: dict | None = None) -> list[tuple[pd.DataFrame, dict]]:
    """Train the runs of a pack at once as one stacked model (batchlab.batched); return each run's history and
    summary, as :func:`train_run` would for the run alone. The runs share dataset, architecture, batch size,
    step count, optimizer kind and evaluation points; everything else is their own. ``final_states``, when
    given, receives each member's parameters and buffers, named as in its own model. ``checkpoints`` and
    ``resume`` (a checkpoint per member, all at the same step) as for :func:`train_run`, in the same format;
    ``on_finish(i, history, summary)`` is called as soon as member ``i`` is done (a diverged member before
    the others); ``kept_weights``, when given, receives before it run id -> final parameters and buffers of
    each member whose spec has ``keep_weights`` (a diverged member's as it diverged)."""
    x_train, y_train, x_test, y_test = (tensors[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    first, k = specs[0], len(specs)
    n_classes = data.num_classes(first["dataset"], first["dataset_options"])
    total, batch_size, opt = first["steps"], first["batch_size"], first["optimizer"]
    autocast_dtype = PRECISION[first["precision"]]
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    scaler = batched.StackedGradScaler(k, device) if first["precision"] == "fp16" else None

    members = []
    for spec in specs:  # each member initialized exactly as its run alone
        torch.manual_seed(spec["seed"])
        members.append(models.build(spec["arch"], tuple(x_train.shape[1:]), n_classes, spec["model_options"]))
    groups = [make_optimizer(m, s).state_dict()["param_groups"] for m, s in zip(members, specs)]  # for checkpoints
    model = batched.StackedModel(members).to(device)
    members = [m.to(device) for m in members]  # evaluated one by one (evaluate_members)
    params = model.stacked_parameters()
    optimizer = batched.StackedOptimizer(
        params, k, opt["name"],
        momentum=torch.tensor([s["optimizer"].get("momentum", 0.0) for s in specs], dtype=torch.float64, device=device),
        weight_decay=torch.tensor([s["optimizer"].get("weight_decay", 0.0) for s in specs], dtype=torch.float64, device=device),
        nesterov=opt.get("nesterov", False), betas=tuple(opt.get("betas", (0.9, 0.999))),
    )
    batches = torch.stack(
        [batch_indices(len(x_train), batch_size, total, s["seed"] + 1_000_003) for s in specs], 1
    ).to(device)  # (steps, K, B)
    lrs = batched.lr_table(specs, lr_factor).to(device)  # (steps, K), float64: cast to each parameter's dtype
    w0 = [p.detach().clone() for p, _ in params]
    evals = set(eval_steps(total, first["eval_points"]))
    factors = [s["divergence_loss_factor"] for s in specs]

    rows: list[list[dict]] = [[] for _ in specs]
    norms: list[torch.Tensor] = []  # per step, every member's gradient norm (K,)
    since = [0] * k  # per member, where in ``norms`` its next evaluation row starts
    carried: list[list[float]] = [[] for _ in specs]  # a resumed member's norms from before its checkpoint
    alive = [True] * k
    frozen: dict[int, dict] = {}
    initial_loss: list[float | None] = [None] * k
    diverged_at: list[int | None] = [None] * k
    just_diverged: list[int] = []
    diverged_now: list[int] = []
    results: list[tuple[pd.DataFrame, dict] | None] = [None] * k
    train_time, step, wall_before = 0.0, 0, 0.0
    if resume is not None:  # every member's state after ``step`` updates (see batchlab.checkpoint)
        step = resume[0]["step"]
        if any(r["step"] != step for r in resume):
            raise ValueError("the members of a batched pack resume from one step")
        for i, r in enumerate(resume):
            model.load_member_state(i, r["model"])
            optimizer.load_member_state(i, r["optimizer"]["state"], model)
            if scaler and r["scaler"]:
                scaler.load_member_state(i, r["scaler"])
            rows[i], carried[i], initial_loss[i] = list(r["rows"]), list(r["norms"]), r["initial_loss"]
        checkpoint.set_rng_state(resume[0]["rng"], device)
        train_time, wall_before = max(r["train_time"] for r in resume), max(r["wall_time"] for r in resume)
    resumed_at = step if resume is not None else None

    def final_weights(i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s final parameters and buffers (a diverged member's as it diverged), named as in its
        own model."""
        return frozen.get(i) or {n: t.detach().clone() for n, t in model.member_state(i).items()}

    def member_checkpoint(i: int, pending: list[float]) -> dict:
        group = [dict(g, lr=float(lrs[max(step - 1, 0), i])) for g in groups[i]]
        return checkpoint.run_state(
            specs[i], "batched", step, model.member_state(i), {"state": optimizer.member_state(i, model), "param_groups": group},
            scaler.member_state(i) if scaler else None, rows[i], pending, initial_loss[i], train_time,
            wall_before + time.perf_counter() - start, device)

    def finish(i: int) -> None:
        steps_done = diverged_at[i] or step
        # the pack's training time, shared evenly among its members
        samples_per_s = steps_done * batch_size * k / train_time if train_time > 0 else math.nan
        history, summary = summarize(specs[i], rows[i], steps_done, len(x_train), len(x_test), diverged_at[i],
                                     samples_per_s, train_time / k, wall_before + time.perf_counter() - start, device)
        summary.update(engine="batched", pack_members=k)
        if specs[i].get("sharpness", {"epsilons": []})["epsilons"]:  # measured on the member's own module
            members[i].load_state_dict(model.member_state(i))
            summary.update(final_sharpness(specs[i], members[i], x_train, y_train, diverged_at[i] is not None))
        if checkpoints is not None and checkpoints.keep:
            checkpoints.final[specs[i]["run_id"]] = member_checkpoint(i, [])
        if kept_weights is not None and specs[i].get("keep_weights"):
            kept_weights[specs[i]["run_id"]] = final_weights(i)
        results[i] = (history, summary)
        if on_finish:
            on_finish(i, history, summary)

    start = time.perf_counter()
    onednn_default, onednn_train = torch.backends.mkldnn.enabled, _use_onednn(device, batch_size)
    torch.backends.mkldnn.enabled = onednn_train  # evaluations switch to the default and back
    try:  # the global switch is restored however the loop ends (a stop request raises)
        while True:
            record = [i for i in range(k) if alive[i]] if step in evals and step != resumed_at else []
            record += just_diverged
            if record:
                torch.backends.mkldnn.enabled = onednn_default
                which = sorted(set(record))
                on_train = evaluate_members(model, members, which, x_train, y_train, eval_batch_size)
                on_test = evaluate_members(model, members, which, x_test, y_test, eval_batch_size)
                dist = batched.member_norms([p.detach() - p0 for (p, _), p0 in zip(params, w0)], k).tolist()
                step_norms = torch.stack(norms).cpu().tolist() if norms else []
                wall = wall_before + time.perf_counter() - start
                for i in which:  # members[i] holds member i's weights since evaluate_members
                    noise = noise_at(specs[i], members[i], x_train, y_train, step) if alive[i] else None
                    rows[i].append(eval_row(specs[i], step, len(x_train), (*on_train[i], *on_test[i]),
                                            carried[i] + [n[i] for n in step_norms[since[i]:]], dist[i], wall, noise))
                    since[i], carried[i] = len(step_norms), []
                # drop the norms every member still training has been recorded with
                keep_from = min([since[i] for i in range(k) if alive[i]] or [len(norms)])
                norms = norms[keep_from:]
                since = [max(0, v - keep_from) for v in since]
                just_diverged = []
                for i in diverged_now:  # done: written now, then silenced while the others go on
                    finish(i)
                    model.silence_member(i)
                    optimizer.silence_member(i)
                diverged_now = []
                if progress:
                    live = [i for i in which if alive[i]] or which
                    progress(step, total, sum(on_train[i][0] for i in live) / len(live),
                             max(on_test[i][1] for i in live))
                torch.backends.mkldnn.enabled = onednn_train
            if step == total or not any(alive):
                break

            # checkpoint the members still training on the cadence, and stop here when the job is asked to
            if checkpoints is not None and checkpoints.due(step):
                if step not in (0, resumed_at):
                    step_norms = torch.stack(norms).cpu().tolist() if norms else []
                    checkpoints.save([member_checkpoint(i, carried[i] + [n[i] for n in step_norms[since[i]:]])
                                      for i in range(k) if alive[i]])
                checkpoints.stop_if_requested(f"at step {step} of {sum(alive)} batched runs")

            t0 = time.perf_counter()
            idx = batches[step]  # (K, B)
            with autocast():
                logits = model(x_train[idx])  # (K, B, classes)
                losses = F.cross_entropy(logits.reshape(k * batch_size, -1), y_train[idx].reshape(-1),
                                         reduction="none").view(k, batch_size).mean(1)
            optimizer.zero_grad()
            if scaler:
                scaler.scaled(losses).backward()
                scaler.unscale_(params)
            else:
                losses.sum().backward()
            grad_norms = batched.member_norms([p.grad for p, _ in params], k)
            norms.append(grad_norms)
            if scaler:  # members whose float16 gradients overflowed skip this step
                overflowed = ~torch.isfinite(grad_norms)
                optimizer.step(lrs[step], skip=overflowed.nonzero().flatten().tolist())
                scaler.update(overflowed)
            else:
                optimizer.step(lrs[step])
            step += 1
            train_time += time.perf_counter() - t0

            for i, value in enumerate(losses.detach().tolist()):  # divergence, per member
                if not alive[i]:
                    continue
                initial_loss[i] = value if initial_loss[i] is None else initial_loss[i]
                if metrics.is_diverged(value, initial_loss[i], factors[i]):
                    # the member stops here: it is recorded at the next evaluation (before any other step), its
                    # learning rate set to 0 and its state silenced (it still computes, which is cheaper than
                    # masking every update; its numbers are not used)
                    diverged_at[i], alive[i] = step, False
                    lrs[step:, i] = 0.0
                    just_diverged.append(i)
                    if final_states is not None or kept_weights is not None:
                        frozen[i] = {n: t.detach().clone() for n, t in model.member_state(i).items()}
                    diverged_now.append(i)

    finally:
        torch.backends.mkldnn.enabled = onednn_default
    if final_states is not None:
        final_states.extend(final_weights(i) for i in range(k))
    for i in range(k):
        if results[i] is None:
            finish(i)
    return results


def to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# On the CPU the batched engine wins below these batch sizes (benchmarks/engine.py, 1 thread, packs of 8
# to 16): stacked dense layers up to 512, convolutions (grouped) up to 64; above, one run after another.
CPU_BATCHED_MAX_BATCH = {"dense": 512, "conv": 64}


def choose_engine(specs: list[dict], model: torch.nn.Module, device: torch.device, requested: str = "auto") -> str:
    """"batched" or "sequential" for a group of compatible runs (see :func:`compatible_groups`)."""
    # runs with a batch schedule change shapes from step to step: one after another
    stackable = len(specs) > 1 and batched.can_stack(model) and not any(s.get("batch_schedule") for s in specs)
    if requested == "sequential" or not stackable:
        return "sequential"
    if requested == "batched" or device.type == "cuda":
        return "batched"
    kind = "conv" if any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) for m in model.modules()) else "dense"
    return "batched" if specs[0]["batch_size"] <= CPU_BATCHED_MAX_BATCH[kind] else "sequential"


def compatible_groups(specs: list[dict], resume: dict[str, dict] | None = None) -> list[list[dict]]:
    """Runs of a pack that can train as one stacked model: same optimizer kind, Nesterov flag and betas,
    precision and evaluation points (a pack already shares dataset, architecture, batch size and steps), and
    the same step to resume from (``resume``: run id -> checkpoint)."""
    resume = resume or {}
    groups: dict[tuple, list[dict]] = {}
    for spec in specs:
        opt = spec["optimizer"]
        key = (opt["name"], opt.get("nesterov", False), tuple(opt.get("betas", ())), spec["precision"], spec["eval_points"],
               _start_step(spec, resume))
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _member_limit(specs: list[dict], model: torch.nn.Module, tensors: dict, device: torch.device) -> int:
    """On CUDA, how many members fit in half the free device memory; elsewhere no limit."""
    if device.type != "cuda":
        return len(specs)
    free, _ = torch.cuda.mem_get_info(device)
    per_member = batched.estimate_bytes(model, specs[0]["batch_size"], tensors["x_train"][0].numel())
    return batched.max_members(free, per_member)


def train_pack(specs: list[dict], dataset_path: str, runs_root: str, device: str = "auto", threads: int = 1,
               eval_batch_size: int = 1000, engine: str = "auto", checkpoints: Checkpointer | None = None) -> None:
    """Train the runs of one pack not yet complete, batched (as one stacked model) where that is faster, else
    one after another; each run is written to the run store as soon as it finishes. With ``checkpoints``,
    runs resume from their checkpoints, save new ones on the cadence, and SIGTERM or SIGINT makes the job
    save them and raise :class:`TrainingInterrupted`."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # subnormal numbers (a momentum buffer decaying towards 0) make CPU arithmetic many times slower; as
    # zeros they change no result a float32 run can express
    torch.set_flush_denormal(True)
    dev = pick_device(device)
    tensors = to_tensors(data.load(dataset_path), dev)
    todo, resume = [], {}
    for k, spec in enumerate(specs, 1):
        problem = store.check_run(runs_root, spec["run_id"])
        if problem is None and store.lacks_weights(runs_root, spec):
            log.info("run %d/%d %s is complete but kept no final weights, which the interpolation needs; "
                     "trained again to keep them", k, len(specs), spec["run_id"])
        elif problem is None:
            log.info("run %d/%d %s is already complete; skipped", k, len(specs), spec["run_id"])
            continue
        elif store.run_dir(runs_root, spec["run_id"]).exists():
            log.warning("run %d/%d %s in %s is damaged: %s; trained again", k, len(specs), spec["run_id"], runs_root, problem)
        todo.append(spec)
        state = checkpoints.load(spec) if checkpoints is not None else None
        if state is not None:
            resume[spec["run_id"]] = state
            log.info("run %d/%d %s resumes from its checkpoint at step %d/%d (saved %s)", k, len(specs),
                     spec["run_id"], state["step"], spec["steps"], state["saved_at"])
    total_steps = sum(s["steps"] - _start_step(s, resume) for s in todo)
    done_steps, t_start = 0, time.perf_counter()
    log.info("pack of %d runs, %d steps in all, on %s (%d thread%s)", len(todo), total_steps, dev, threads, "s"[: threads > 1])
    n_classes = data.num_classes(specs[0]["dataset"], specs[0]["dataset_options"])
    done = 0

    def finished(spec, history, summary, weights=None):
        nonlocal done
        kept = checkpoints.final.pop(spec["run_id"], None) if checkpoints is not None else None
        store.write_run(runs_root, spec, history, summary, checkpoint=kept, weights=weights)
        if checkpoints is not None:  # only now: a run that could not be written resumes from it
            checkpoints.discard(spec["run_id"])
        done += 1
        state = f"DIVERGED at step {summary['diverged_at_step']}" if summary["diverged"] else f"test acc {summary['final_test_acc']:.4f}"
        log.info("run %d/%d %s finished (%s): %s, %.0f samples/s", done, len(todo), spec["run_id"],
                 summary["engine"], state, summary["samples_per_s"])

    signals = checkpoints.handle_signals() if checkpoints is not None else nullcontext()
    with signals:
        for group in compatible_groups(todo, resume):
            if checkpoints is not None:
                checkpoints.stop_if_requested(f"before run {done + 1}/{len(todo)}")
            model = models.build(group[0]["arch"], tuple(tensors["x_train"].shape[1:]), n_classes, group[0]["model_options"])
            chosen = choose_engine(group, model, dev, engine)
            size = _member_limit(group, model, tensors, dev) if chosen == "batched" else 1
            for first in range(0, len(group), size):
                members = group[first : first + size]
                states = [resume.get(s["run_id"]) for s in members]
                label = (f"runs {done + 1}-{done + len(members)}/{len(todo)} (batched)" if chosen == "batched"
                         else f"run {done + 1}/{len(todo)} {members[0]['run_id']}")
                start_step = _start_step(members[0], resume)

                def progress(step, total, loss, test_acc, label=label, members=members, start_step=start_step):
                    elapsed = time.perf_counter() - t_start
                    frac = (done_steps + (step - start_step) * len(members)) / max(total_steps, 1)
                    eta = elapsed / frac * (1 - frac) if frac > 0 else math.nan
                    log.info(
                        "%s | step %d/%d epoch %.2f | train loss %.4f test acc %.4f | ETA %s",
                        label, step, total, step * members[0]["batch_size"] / len(tensors["x_train"]),
                        loss, test_acc, _fmt_seconds(eta) if math.isfinite(eta) else "?", extra={"progress": True},
                    )

                # the runs whose spec keeps its final weights (evaluation.interpolation) write them too
                if chosen == "batched":
                    kept: dict[str, dict] = {}
                    train_batched(members, tensors, dev, progress, eval_batch_size, checkpoints=checkpoints,
                                  resume=states if states[0] is not None else None, kept_weights=kept,
                                  on_finish=lambda i, h, s, members=members, kept=kept: finished(
                                      members[i], h, s, kept.pop(members[i]["run_id"], None)))
                else:
                    weights = {} if members[0].get("keep_weights") else None
                    history, summary = train_run(members[0], tensors, dev, progress, eval_batch_size,
                                                 final_state=weights, checkpoints=checkpoints, resume=states[0])
                    finished(members[0], history, summary, weights)
                done_steps += sum(s["steps"] - start_step for s in members)
    log.info("pack finished in %s", _fmt_seconds(time.perf_counter() - t_start))


def _start_step(spec: dict, resume: dict[str, dict]) -> int:
    state = resume.get(spec["run_id"])
    return state["step"] if state is not None else 0
