"""The optimizer and the loss scaler of a stacked model (batchlab.stacked): K runs' updates at once, each member
with its own learning rate, momentum and weight decay, following ``torch.optim.SGD``, ``torch.optim.Adam`` and
``torch.amp.GradScaler`` step for step, so each member's numbers are those of its run alone. Both take the
calls of their ``torch`` counterparts that batchlab.training.training_step makes.
"""

from __future__ import annotations

import math

import torch

from batchlab.stacked import StackedModel, member_norms

class StackedOptimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam with a learning rate, momentum and weight decay per
    member, following ``torch.optim.SGD`` and ``torch.optim.Adam`` step for step. :attr:`lr` holds the
    members' learning rates (K,) of the next step; a member that must stop gets learning rate 0 (and
    :meth:`silence_member`).
    Per-member hyperparameters equal across members become plain numbers (cheaper steps)."""

    def __init__(self, params: list[tuple[torch.Tensor, int]], k: int, name: str, momentum: torch.Tensor,
                 weight_decay: torch.Tensor, nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.k, self.name, self.nesterov = params, k, name, nesterov
        self.betas, self.eps = betas, eps
        self.momentum = [self._constant(momentum, p, rows) for p, rows in params]
        self.weight_decay = [self._constant(weight_decay, p, rows) for p, rows in params]
        self.state: list[dict] = [{} for _ in params]
        self.lr: torch.Tensor | None = None  # (K,), set before each step
        self.member_steps = [0] * k  # updates each member has taken (Adam's bias corrections)

    @staticmethod
    def _per_row(v: torch.Tensor, p: torch.Tensor, rows: int) -> torch.Tensor:
        """A per-member vector (K,) broadcastable against a parameter whose member slices are ``rows`` long."""
        v = v.repeat_interleave(rows) if rows > 1 else v
        return v.view(-1, *([1] * (p.dim() - 1)))

    def _constant(self, v: torch.Tensor, p: torch.Tensor, rows: int) -> float | torch.Tensor:
        if bool((v == v[0]).all()):
            return float(v[0])
        return self._per_row(v.to(p.dtype), p, rows)

    @torch.no_grad()
    def silence_member(self, i: int):
        """Zero member i's optimizer state (see :meth:`StackedModel.silence_member`)."""
        for (_, name), t in self._member_tensors(i).items():
            if name != "param":
                t.zero_()

    def member_state(self, i: int, model: StackedModel) -> dict[int, dict[str, torch.Tensor]]:
        """Member i's optimizer state as ``torch.optim``'s ``state_dict()["state"]`` of its run alone would
        hold it: per parameter index, the momentum buffer (SGD) or step and moment estimates (Adam), each a
        copy in the layout of the member's own module."""
        state = {}
        for index, ((kind, mod, name), own) in enumerate(zip(model.parameter_layouts(), self.state)):
            entry = {key: model.own_layout(kind, mod, name, model.member_slice(kind, t, i)).clone()
                     for key, t in own.items() if isinstance(t, torch.Tensor)}
            if entry and self.name == "adam":
                entry["step"] = torch.tensor(float(self.member_steps[i]))
            if entry:
                state[index] = entry
        return state

    @torch.no_grad()
    def load_member_state(self, i: int, state: dict, model: StackedModel):
        """Set member i's optimizer state from :meth:`member_state`'s layout (a checkpoint of either engine)."""
        for index, ((p, _), (kind, _, name), own) in enumerate(zip(self.params, model.parameter_layouts(), self.state)):
            for key, value in state.get(index, {}).items():
                if key == "step":
                    self.member_steps[i] = int(value)
                elif value is not None:
                    if key not in own:
                        own[key] = torch.zeros_like(p)
                    model.member_slice(kind, own[key], i).copy_(model.stacked_layout(kind, name, value))

    @torch.no_grad()
    def zero_grad(self, set_to_none: bool = True):
        """Drop the gradients (``set_to_none`` is there for ``torch.optim``'s signature: they are always dropped)."""
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, skip: list[int] | None = None):
        """One update with the members' learning rates :attr:`lr` (K,). Members in ``skip`` (a mixed-precision
        step whose gradients overflowed) keep their parameters and optimizer state, as
        ``torch.amp.GradScaler`` skips the step of a run alone."""
        if skip:
            kept = {i: {key: t.clone() for key, t in self._member_tensors(i).items()} for i in skip}
        self._step(self.lr)
        if skip:
            for i, saved in kept.items():
                for key, t in self._member_tensors(i).items():
                    # state the step created (a first momentum buffer) starts from zero, as if not yet made
                    t.copy_(saved[key]) if key in saved else t.zero_()
            for i in skip:
                self.member_steps[i] -= 1

    def _member_tensors(self, i: int) -> dict[tuple[int, str], torch.Tensor]:
        """Views of member i's slices of every parameter and optimizer state tensor."""
        out = {}
        for index, ((p, rows), state) in enumerate(zip(self.params, self.state)):
            out[index, "param"] = p[i * rows : (i + 1) * rows]
            for name, t in state.items():
                if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == p.shape[0]:
                    out[index, name] = t[i * rows : (i + 1) * rows]
        return out

    def _bias_corrections(self, device: torch.device) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """Adam's bias corrections 1 - b1^t and sqrt(1 - b2^t), computed in double precision as torch.optim
        does: numbers, or (K,) vectors where members have taken different numbers of steps."""
        b1, b2 = self.betas
        if len(set(self.member_steps)) == 1:
            t = self.member_steps[0]
            return 1 - b1**t, math.sqrt(1 - b2**t)
        t = torch.tensor(self.member_steps, dtype=torch.float64, device=device)
        return 1 - b1**t, torch.sqrt(1 - b2**t)

    def _step(self, lr: torch.Tensor):
        self.member_steps = [t + 1 for t in self.member_steps]
        if self.name == "adam":
            bias_corrections = self._bias_corrections(lr.device)
        lr_rows: dict[tuple[int, torch.dtype], torch.Tensor] = {}  # the lr vector once per slice length
        for (p, rows), m, wd, state in zip(self.params, self.momentum, self.weight_decay, self.state):
            if p.grad is None:
                continue
            key = (rows, p.dtype)
            if key not in lr_rows:
                lr_rows[key] = self._per_row(lr.to(p.dtype), p, rows).reshape(-1)
            lr_p = lr_rows[key].view(-1, *([1] * (p.dim() - 1)))
            g = p.grad
            # the same operations as torch.optim's (add with alpha rounds once), where hyperparameters agree
            if isinstance(wd, float):
                g = g if wd == 0.0 else torch.add(g, p, alpha=wd)  # L2, as torch.optim applies weight_decay
            else:
                g = g + wd * p
            if self.name == "sgd":
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(m).add_(g)
                if self.nesterov:
                    d = torch.add(g, buf, alpha=m) if isinstance(m, float) else g + m * buf
                else:
                    d = buf
                p.addcmul_(lr_p, d, value=-1.0)
            else:
                b1, b2 = self.betas
                if "exp_avg" not in state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                state["exp_avg"].lerp_(g, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2_sqrt = (v if isinstance(v, float) else self._per_row(v.to(p.dtype), p, rows)
                                 for v in bias_corrections)
                denom = (state["exp_avg_sq"].sqrt() / bc2_sqrt).add_(self.eps)
                p.copy_(p - (lr_p / bc1) * state["exp_avg"] / denom)


class StackedGradScaler:
    """Dynamic loss scaling for float16 training, one scale per member, following ``torch.amp.GradScaler``:
    each member's loss is multiplied by its scale before the backward pass and its gradients divided by
    it after; a member whose gradients overflowed skips the step and halves its scale, and a scale doubles
    after ``growth_interval`` steps without overflow."""

    def __init__(self, k: int, device: torch.device, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        self.scale_factors = torch.full((k,), init_scale, dtype=torch.float32, device=device)
        self.good_steps = torch.zeros(k, dtype=torch.int64, device=device)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval

    def member_state(self, i: int) -> dict:
        """Member i's scale in the layout of ``torch.amp.GradScaler.state_dict()``."""
        return {"scale": float(self.scale_factors[i]), "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": int(self.good_steps[i])}

    def load_member_state(self, i: int, state: dict):
        self.scale_factors[i], self.good_steps[i] = state["scale"], state["_growth_tracker"]

    def scale(self, losses: torch.Tensor) -> torch.Tensor:
        """The members' losses (K,) times their scales, summed: what to call ``backward()`` on."""
        return (losses * self.scale_factors).sum()

    @torch.no_grad()
    def unscale_(self, optimizer: StackedOptimizer):
        """Divide each member's gradients by its scale, and find the members whose gradients overflowed."""
        inv = self.scale_factors.double().reciprocal().float()  # in double, as GradScaler computes it
        for p, rows in optimizer.params:
            if p.grad is not None:
                p.grad.mul_(StackedOptimizer._per_row(inv, p.grad, rows))
        # one norm per member, reused as the gradient norms training records (see :attr:`norms`)
        self.norms = member_norms([p.grad for p, _ in optimizer.params], optimizer.k)
        self.overflowed = ~torch.isfinite(self.norms)

    def step(self, optimizer: StackedOptimizer):
        """The update, but for the members whose gradients overflowed (they skip it, as a run alone does)."""
        optimizer.step(skip=self.overflowed.nonzero().flatten().tolist())

    @torch.no_grad()
    def update(self, overflowed: torch.Tensor | None = None):
        """After a step: back off the scales of the members that overflowed (``overflowed`` (K,), by default
        those :meth:`unscale_` found), grow those due to grow."""
        overflowed = self.overflowed if overflowed is None else overflowed
        grown = (self.good_steps + 1 == self.growth_interval) & ~overflowed
        scale = self.scale_factors
        self.scale_factors = torch.where(overflowed, scale * self.backoff_factor,
                                         torch.where(grown, scale * self.growth_factor, scale))
        self.good_steps = torch.where(overflowed | grown, 0, self.good_steps + 1)


def lr_table(specs: list[dict], lr_factor) -> torch.Tensor:
    """Every member's learning rate at every step, shape (steps, K): looked up, not recomputed, per step."""
    steps = specs[0]["steps"]
    return torch.tensor(
        [[s["lr"] * lr_factor(t, steps, s["warmup"], s["schedule"]) for s in specs] for t in range(steps)],
        dtype=torch.float64,
    )
