"""The batched engine: the K runs of a pack trained at once, as one stacked model (batchlab.stacked), each
member to the numbers of its run alone (batchlab.sequential).

Each member keeps its own data order, learning rate and schedule, warm-up, momentum, weight decay
(batchlab.stacked_optim's optimizer is SGD or Adam with a per-member vector of each) and divergence: a member
whose loss diverges stops updating and is recorded at that step, the others go on. The loss is the sum of
the members' mean losses, so each member's gradient is exactly its own.

:func:`train_batched` is the loop; :class:`BatchedPack` holds its state and does each phase: evaluate,
checkpoint, step, finish.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from batchlab import augment, checkpoint, data, metrics, models, stacked_optim
from batchlab.checkpoint import Checkpointer
from batchlab.phases import PhaseClock, share
from batchlab.schedules import lr_factor
from batchlab.stacked import StackedModel, member_norms
from batchlab.training import (Progress, TrainingSettings, batch_indices, eval_row, eval_steps, final_sharpness,
                               make_optimizer, noise_at, summarize, training_step, use_onednn)

OnFinish = Callable[[int, pd.DataFrame, dict], None]


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy (K,) of its logits (K, B, classes) against its labels (K, B)."""
    k, b = y.shape
    return F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)


def conv1d_form(device: torch.device, batch_size: int) -> str:
    """How the stacked model runs 1-D convolutions (batchlab.stacked.StackedModel's ``conv1d``): where
    training runs oneDNN on the CPU (batchlab.training.use_onednn: from batch 32), as a grouped 2-D
    convolution of height 1, channels_last, which oneDNN runs fastest (benchmarks/stacking.py); elsewhere
    unfolded. A function of the spec only, so a run's numbers depend on nothing else."""
    return "channels_last" if device.type == "cpu" and use_onednn(device, batch_size) else "unfold"


def evaluate_members(model: StackedModel, members: list[torch.nn.Module], which: list[int],
                     sets: list[tuple[torch.Tensor, torch.Tensor]],
                     batch_size: int) -> dict[int, list[tuple[float, float]]]:
    """Mean cross-entropy and accuracy on each of ``sets`` (``(x, y)`` pairs) of the members ``which``: each
    member's current state is loaded once into its own module (``members``) and evaluated as a run alone
    is. The stacked forward pass is no cheaper here: on the CPU it was about 2x slower for the 1-D CNN at
    chunks of 64 to 1000 examples per member, and no faster for the MLP at the chunk of ``batch_size / K``
    examples per member that keeps its memory within ``batch_size``'s bound."""
    out = {}
    for i in which:
        members[i].load_state_dict(model.member_state(i))
        out[i] = [metrics.evaluate(members[i], x, y, batch_size) for x, y in sets]
    return out


class BatchedPack:
    """The state of a pack in training as one stacked model: built from the members' specs (each member
    initialized exactly as its run alone), or from ``resume``, a checkpoint per member, all at one step.
    ``on_finish``, ``kept_weights`` and ``clock`` as for :func:`train_batched`; each member's own seconds per
    phase (:attr:`phases`) are the pack's divided evenly among the members that were training for it (the
    noise scale and the sharpness, measured member by member, each member's own)."""

    def __init__(self, specs: list[dict], tensors: dict[str, torch.Tensor], device: torch.device,
                 eval_batch_size: int = 1000, checkpoints: Checkpointer | None = None,
                 resume: list[dict] | None = None, on_finish: OnFinish | None = None,
                 kept_weights: dict | None = None, keep_final: bool = False, clock: PhaseClock | None = None):
        self.clock = clock if clock is not None else PhaseClock()
        self.phases = [PhaseClock() for _ in specs]  # each member's share, a resume's included
        self.specs, self.k, self.device = specs, len(specs), device
        self.eval_batch_size, self.checkpoints, self.on_finish, self.kept_weights = (
            eval_batch_size, checkpoints, on_finish, kept_weights)
        self.keep_frozen = keep_final or kept_weights is not None
        self.x_train, self.y_train, self.x_test, self.y_test = (
            tensors[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        first, k = specs[0], self.k
        self.total, self.batch_size = first["steps"], first["batch_size"]
        self.scaler = stacked_optim.StackedGradScaler(k, device) if first["precision"] == "fp16" else None
        self._build(specs, device)
        self.batches = torch.stack(
            [batch_indices(len(self.x_train), self.batch_size, self.total, s["seed"] + 1_000_003) for s in specs], 1
        ).to(device)  # (steps, K, B)
        self.augment = augment.for_specs(specs, device)  # each member's own draws; None: no augmentation
        # (steps, K), float64: cast to each parameter's dtype
        self.lrs = stacked_optim.lr_table(specs, lr_factor).to(device)
        self.w0 = [p.detach().clone() for p, _ in self.params]
        self.evals = set(eval_steps(self.total, first["eval_points"]))
        self.factors = [s["divergence_loss_factor"] for s in specs]
        # the scaler measures the members' gradient norms anyway, to find overflows
        self.grad_norm = ((lambda: self.scaler.norms) if self.scaler else
                          (lambda: member_norms([p.grad for p, _ in self.params], k)))

        self.rows: list[list[dict]] = [[] for _ in specs]
        self.norms: list[torch.Tensor] = []  # per step, every member's gradient norm (K,)
        self.since = [0] * k  # per member, where in ``norms`` its next evaluation row starts
        self.carried: list[list[float]] = [[] for _ in specs]  # a resumed member's norms from before its checkpoint
        self.alive = [True] * k
        self.frozen: dict[int, dict] = {}  # a diverged member's weights as it diverged
        self.initial_loss: list[float | None] = [None] * k
        self.diverged_at: list[int | None] = [None] * k
        self.just_diverged: list[int] = []  # to be recorded at the next evaluation, then finished
        self.results: list[tuple[pd.DataFrame, dict] | None] = [None] * k
        self.train_time, self.step_no, self.wall_before = 0.0, 0, 0.0
        if resume is not None:
            self._load(resume)
        self.resumed_at = self.step_no if resume is not None else None
        self.train_shared = self.train_time  # the pack's training time already in the members' shares
        self.start = time.perf_counter()

    def _build(self, specs: list[dict], device: torch.device) -> None:
        """The members' own modules (seeded as each run alone), the stacked model and its optimizer."""
        n_classes = data.num_classes(specs[0]["dataset"], specs[0]["dataset_options"], specs[0].get("dataset_builder"))
        members = []
        for spec in specs:
            torch.manual_seed(spec["seed"])
            members.append(models.build(spec["arch"], tuple(self.x_train.shape[1:]), n_classes, spec["model_options"],
                                        spec.get("builder")))
        self._groups: list | None = None  # each member's torch.optim param groups (:meth:`param_groups`)
        self.model = StackedModel(members, conv1d_form(device, specs[0]["batch_size"])).to(device)
        self.members = [m.to(device) for m in members]  # evaluated one by one (evaluate_members)
        self.params = self.model.stacked_parameters()
        opt = specs[0]["optimizer"]

        def per_member(key: str) -> torch.Tensor:
            return torch.tensor([s["optimizer"].get(key, 0.0) for s in specs], dtype=torch.float64, device=device)

        self.optimizer = stacked_optim.StackedOptimizer(
            self.params, self.k, opt["name"], momentum=per_member("momentum"), weight_decay=per_member("weight_decay"),
            nesterov=opt.get("nesterov", False), betas=tuple(opt.get("betas", (0.9, 0.999))))

    def _load(self, resume: list[dict]) -> None:
        """Every member's state after ``step`` updates (see batchlab.checkpoint)."""
        self.step_no = resume[0]["step"]
        if any(r["step"] != self.step_no for r in resume):
            raise ValueError("the members of a batched pack resume from one step")
        for i, r in enumerate(resume):
            self.model.load_member_state(i, r["model"])
            self.optimizer.load_member_state(i, r["optimizer"]["state"], self.model)
            if self.scaler and r["scaler"]:
                self.scaler.load_member_state(i, r["scaler"])
            self.rows[i], self.carried[i], self.initial_loss[i] = list(r["rows"]), list(r["norms"]), r["initial_loss"]
            # absent from checkpoints of older code: the training time shared evenly
            self.phases[i] = PhaseClock(r.get("phase_seconds") or {"train": r["train_time"] / self.k})
        checkpoint.set_rng_state(resume[0]["rng"], self.device)
        self.train_time = max(r["train_time"] for r in resume)
        self.wall_before = max(r["wall_time"] for r in resume)

    def _share(self, phase: str, seconds: float, which: list[int]) -> None:
        """The pack's ``seconds`` in ``phase``, divided evenly among the members ``which``."""
        share([self.phases[i] for i in which], phase, seconds)
        self.clock.add(phase, seconds)

    def _share_training(self) -> None:
        """The training time since the last call, divided among the members training during it (called
        before a member stops or is saved or finished)."""
        alive = [i for i in range(self.k) if self.alive[i]]
        if alive and self.train_time > self.train_shared:
            self._share("train", self.train_time - self.train_shared, alive)
        self.train_shared = self.train_time

    def wall_time(self) -> float:
        """Seconds of training so far, before a resume included."""
        return self.wall_before + time.perf_counter() - self.start

    def evaluate_due(self) -> list[int]:
        """The members to evaluate now: those training, at the scheduled steps (a resumed pack already has
        its step's evaluation), and those that just diverged."""
        due = self.step_no in self.evals and self.step_no != self.resumed_at
        if not due:  # most steps: no list built on the hot path
            return sorted(self.just_diverged)
        return sorted({i for i in range(self.k) if self.alive[i]} | set(self.just_diverged))

    def done(self) -> bool:
        return self.step_no == self.total or not any(self.alive)

    def _pending(self, i: int, step_norms: list[list[float]]) -> list[float]:
        """Member i's gradient norms not yet in an evaluation row (``step_norms``: :attr:`norms` as lists)."""
        return self.carried[i] + [n[i] for n in step_norms[self.since[i]:]]

    def evaluate(self, which: list[int], progress: Progress | None = None) -> None:
        """Record an evaluation row of the members ``which``, finish those that diverged, and report the
        members still training (or, when none is, those evaluated) to ``progress``."""
        t0, noise_seconds = time.perf_counter(), 0.0
        evaluated = evaluate_members(self.model, self.members, which,
                                     [(self.x_train, self.y_train), (self.x_test, self.y_test)], self.eval_batch_size)
        on_train, on_test = ({i: e[s] for i, e in evaluated.items()} for s in (0, 1))
        dist = member_norms([p.detach() - p0 for (p, _), p0 in zip(self.params, self.w0)], self.k).tolist()
        step_norms = torch.stack(self.norms).cpu().tolist() if self.norms else []
        wall = self.wall_time()
        for i in which:  # members[i] holds member i's weights since evaluate_members
            spec = self.specs[i]
            t1 = time.perf_counter()
            noise = noise_at(spec, self.members[i], self.x_train, self.y_train, self.step_no) if self.alive[i] else None
            spent = time.perf_counter() - t1
            self._share("noise", spent, [i])
            noise_seconds += spent
            self.rows[i].append(eval_row(spec, self.step_no, len(self.x_train), (*on_train[i], *on_test[i]),
                                         self._pending(i, step_norms), dist[i], wall, noise))
            self.since[i], self.carried[i] = len(step_norms), []
        # drop the norms every member still training has been recorded with
        keep_from = min([self.since[i] for i in range(self.k) if self.alive[i]] or [len(self.norms)])
        self.norms = self.norms[keep_from:]
        self.since = [max(0, v - keep_from) for v in self.since]
        self._share("eval", time.perf_counter() - t0 - noise_seconds, which)
        for i in self.just_diverged:  # done: written now, then silenced while the others go on
            self.finish(i)
            self.model.silence_member(i)
            self.optimizer.silence_member(i)
        self.just_diverged = []
        if progress:
            live = [i for i in which if self.alive[i]] or which
            progress(self.step_no, self.total, sum(on_train[i][0] for i in live) / len(live),
                     max(on_test[i][1] for i in live))

    def checkpoint_due(self) -> bool:
        return self.checkpoints is not None and self.checkpoints.due(self.step_no)

    def checkpoint(self) -> None:
        """Save the members still training (not at the first step, nor the one resumed from: nothing new),
        and stop here when the job is asked to."""
        if self.step_no not in (0, self.resumed_at):
            t0 = time.perf_counter()
            self._share_training()
            step_norms = torch.stack(self.norms).cpu().tolist() if self.norms else []
            self.checkpoints.save([self.member_checkpoint(i, self._pending(i, step_norms))
                                   for i in range(self.k) if self.alive[i]])
            self._share("checkpoint", time.perf_counter() - t0, [i for i in range(self.k) if self.alive[i]])
        self.checkpoints.stop_if_requested(f"at step {self.step_no} of {sum(self.alive)} batched runs")

    def member_checkpoint(self, i: int, pending: list[float]) -> dict:
        """Member i's checkpoint now, in the format of its run alone; ``pending``: its unrecorded norms."""
        group = [dict(g, lr=float(self.lrs[max(self.step_no - 1, 0), i])) for g in self.param_groups(i)]
        optimizer = {"state": self.optimizer.member_state(i, self.model), "param_groups": group}
        state = checkpoint.run_state(
            self.specs[i], "batched", self.step_no, self.model.member_state(i), optimizer,
            self.scaler.member_state(i) if self.scaler else None, self.rows[i], pending, self.initial_loss[i],
            self.train_time, self.wall_time(), self.device)
        state["phase_seconds"] = dict(self.phases[i].seconds)
        return state

    def param_groups(self, i: int) -> list[dict]:
        """Member i's ``torch.optim`` param groups, as its checkpoint holds them: made on the first checkpoint,
        not before, since a ``torch.optim`` optimizer's first construction imports torch's compiler stack
        (about 0.9 s of a job's start-up), which a pack that is never checkpointed does not need."""
        if self._groups is None:
            self._groups = [make_optimizer(m, s).state_dict()["param_groups"] for m, s in zip(self.members, self.specs)]
        return self._groups[i]

    def step(self, autocast: Callable[[], object]) -> None:
        """One update of every member at its own learning rate; then watch each for divergence."""
        t0 = time.perf_counter()
        idx = self.batches[self.step_no]  # (K, B)
        self.optimizer.lr = self.lrs[self.step_no]  # (K,)
        x = self.x_train[idx]  # (K, B, ...)
        if self.augment is not None:  # K members' draws, applied to the K * B images at once
            x = self.augment(x.flatten(0, 1), self.step_no).view(x.shape)
        losses, norms = training_step(self.model, self.optimizer, x, self.y_train[idx], self.scaler,
                                      autocast, member_losses, self.grad_norm)
        self.norms.append(norms)
        self.step_no += 1
        self.train_time += time.perf_counter() - t0
        for i, value in enumerate(losses.detach().tolist()):
            if self.alive[i]:
                self._watch(i, value)

    def _watch(self, i: int, loss: float) -> None:
        """Stop member i if its loss diverged: it is recorded at the next evaluation (before any other step),
        its learning rate set to 0 and its state silenced (it still computes, which is cheaper than masking
        every update; its numbers are not used)."""
        self.initial_loss[i] = loss if self.initial_loss[i] is None else self.initial_loss[i]
        if metrics.is_diverged(loss, self.initial_loss[i], self.factors[i]):
            self._share_training()  # its steps so far, this one included
            self.diverged_at[i], self.alive[i] = self.step_no, False
            self.lrs[self.step_no:, i] = 0.0
            self.just_diverged.append(i)
            if self.keep_frozen:
                self.frozen[i] = {n: t.detach().clone() for n, t in self.model.member_state(i).items()}

    def final_weights(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s final parameters and buffers (a diverged member's as it diverged), named as in its
        own model."""
        return self.frozen.get(i) or {n: t.detach().clone() for n, t in self.model.member_state(i).items()}

    def finish(self, i: int) -> None:
        """Member i's history and summary (with its final weights' sharpness), handed to ``on_finish``."""
        spec, k = self.specs[i], self.k
        self._share_training()
        steps_done = self.diverged_at[i] or self.step_no
        # the pack's training time, shared evenly among its members
        samples_per_s = steps_done * self.batch_size * k / self.train_time if self.train_time > 0 else math.nan
        history, summary = summarize(spec, self.rows[i], steps_done, len(self.x_train), len(self.x_test),
                                     self.diverged_at[i], samples_per_s, self.train_time / k, self.wall_time(),
                                     self.device)
        summary.update(engine="batched", pack_members=k)
        if spec.get("sharpness", {"epsilons": []})["epsilons"]:  # measured on the member's own module
            t0 = time.perf_counter()
            self.members[i].load_state_dict(self.model.member_state(i))
            summary.update(final_sharpness(spec, self.members[i], self.x_train, self.y_train,
                                           self.diverged_at[i] is not None))
            self._share("sharpness", time.perf_counter() - t0, [i])
        summary.update(self.phases[i].run_columns())
        if self.checkpoints is not None and self.checkpoints.keep:
            self.checkpoints.final[spec["run_id"]] = self.member_checkpoint(i, [])
        if self.kept_weights is not None and spec.get("keep_weights"):
            self.kept_weights[spec["run_id"]] = self.final_weights(i)
        self.results[i] = (history, summary)
        if self.on_finish:
            self.on_finish(i, history, summary)


def train_batched(specs: list[dict], tensors: dict[str, torch.Tensor], device: torch.device,
                  progress: Progress | None = None, eval_batch_size: int = 1000, final_states: list | None = None,
                  checkpoints: Checkpointer | None = None, resume: list[dict] | None = None,
                  on_finish: OnFinish | None = None,
                  kept_weights: dict | None = None, clock: PhaseClock | None = None) -> list[tuple[pd.DataFrame, dict]]:
    """Train the runs of a pack at once as one stacked model; return each run's history and summary, as
    batchlab.sequential.train_run would for the run alone. The runs share dataset, architecture, batch size,
    step count, optimizer kind and evaluation points; everything else is their own. ``final_states``, when
    given, receives each member's parameters and buffers, named as in its own model. ``checkpoints`` and
    ``resume`` (a checkpoint per member, all at the same step) as for ``train_run``, in the same format;
    ``on_finish(i, history, summary)`` is called as soon as member ``i`` is done (a diverged member before
    the others); ``kept_weights``, when given, receives before it run id -> final parameters and buffers of
    each member whose spec has ``keep_weights`` (a diverged member's as it diverged); ``clock`` receives the
    seconds of each phase spent here (batchlab.phases)."""
    pack = BatchedPack(specs, tensors, device, eval_batch_size, checkpoints, resume, on_finish, kept_weights,
                       keep_final=final_states is not None, clock=clock)
    with TrainingSettings(device, pack.batch_size, specs[0]["precision"]) as settings:
        while True:
            # evaluate the members due (all at the scheduled steps; one that diverged at once), finish the diverged
            which = pack.evaluate_due()
            if which:
                with settings.evaluation():
                    pack.evaluate(which, progress)
            if pack.done():
                break
            # checkpoint the members still training on the cadence, and stop here when the job is asked to
            if pack.checkpoint_due():
                pack.checkpoint()
            # forward, backward, update: every member at its own learning rate
            pack.step(settings.autocast)
    if final_states is not None:
        final_states.extend(pack.final_weights(i) for i in range(pack.k))
    for i in range(pack.k):
        if pack.results[i] is None:
            pack.finish(i)
    return pack.results
