"""One training step of K MNIST-1D CNNs (cnn1d) at once, in each form a stacked 1-D convolution can take,
against the K runs one after another, measured in the same run.

On the CPU the batched engine trains a pack of cnn1d runs as one stacked model up to batch size
``batchlab.packs.CPU_BATCHED_MAX_BATCH["conv1d"]``; above, the runs train one after another. This script
measures where stacking pays, by timing one step (forward, backward, the gradient norm the engines record,
SGD-momentum update; no evaluation) of K members, 1 thread, in these forms:

- ``alone``: K plain models one after another, each with torch.optim.SGD (the sequential engine; oneDNN
  as ``batchlab.training.use_onednn`` says: on from batch 32);
- ``unfold``: batchlab's StackedModel with its 1-D convolutions unfolded (unfold + baddbmm, channels
  last), the batched engine's form below batch 32 (and on CUDA);
- ``grouped``, ``grouped-nodnn``: one grouped Conv1d over the members' channels side by side,
  ``(B, K*C, L)``, ``groups=K``, with oneDNN on and off;
- ``channels_last``: StackedModel's other form (its 1-D convolutions as one grouped Conv2d with H=1 in the
  channels_last memory format, which 1-D convolutions lack; oneDNN on), which the batched engine takes from
  batch 32 on the CPU (batchlab.batched.conv1d_form);
- ``vmap``: torch.func.vmap over torch.func.functional_call of one model with the members' parameters
  stacked, ``(K, ...)``;
- ``alone-cl``: for comparison, ``alone`` with each Conv1d run as that channels_last Conv2d (groups=1):
  how much of the gain is the memory format, not the stacking. The sequential engine does not do this.

The stacked forms share batchlab's StackedOptimizer (a learning rate per member). Before timing, each
form's losses, gradients and updated parameters are checked against ``alone`` in float64 (1e-10),
so every form does the same work. Times: the best of a few repeats, the forms taking turns; the ratio is
``alone``'s time over the form's (above 1: faster than one after another).

    python benchmarks/stacking.py                   # K = 16, B = 32 to 1024
    python benchmarks/stacking.py --quick           # K = 4, two batch sizes, one short repeat (CI)
    python benchmarks/stacking.py --batch-size 512 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchlab import batched, metrics, models, packs, stacked, stacked_optim, training  # noqa: E402
from batchlab.batched import member_losses  # noqa: E402

CPU = torch.device("cpu")
INPUT, CLASSES = (1, 40), 10  # MNIST-1D
BASELINES = ("alone", "alone-cl")  # the forms that do not stack
CLEAR_MARGIN = 1.15  # a stacked form must beat one after another by this much to be worth switching to


def members(k: int) -> list[torch.nn.Sequential]:
    """K cnn1d models, member i seeded with i (as K runs of seeds 0..K-1 would be)."""
    out = []
    for i in range(k):
        torch.manual_seed(i)
        out.append(models.build("cnn1d", INPUT, CLASSES))
    return out


def lrs(k: int) -> torch.Tensor:
    return torch.tensor([0.001 * (i + 1) for i in range(k)], dtype=torch.float64)


class Alone:
    """K plain models trained one after another, as the sequential engine does."""

    def __init__(self, nets: list[torch.nn.Sequential], onednn: bool):
        self.nets, self.onednn = copy.deepcopy(nets), onednn
        self.opts = [torch.optim.SGD(m.parameters(), lr=float(lr), momentum=0.9, foreach=True)
                     for m, lr in zip(self.nets, lrs(len(nets)))]
        self.norms = [functools.partial(metrics.grad_norm, list(m.parameters())) for m in self.nets]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = []
        for i, (net, opt) in enumerate(zip(self.nets, self.opts)):
            loss, _ = training.training_step(net, opt, x[i], y[i], grad_norm=self.norms[i])
            losses.append(loss.detach())
        return torch.stack(losses)

    def member(self, i: int, what: str) -> dict[str, torch.Tensor]:
        """Member i's parameters or their gradients (``what``), named as in its own module."""
        return {n: (p.grad if what == "grad" else p).detach() for n, p in self.nets[i].named_parameters()}


class AloneChannelsLast(Alone):
    """``alone`` with each Conv1d run as the channels_last Conv2d of the stacked form (groups=1): how much of
    that form's gain is the memory format rather than the stacking. Not what the sequential engine does."""

    def __init__(self, nets: list[torch.nn.Sequential], onednn: bool):
        super().__init__(nets, onednn)
        for conv in (m for net in self.nets for m in net if isinstance(m, torch.nn.Conv1d)):
            conv._conv_forward = functools.partial(self._channels_last, conv)

    @staticmethod
    def _channels_last(conv: torch.nn.Conv1d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        return stacked._conv1d_channels_last(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)


class Stacked:
    """K members as one StackedModel (its 1-D convolutions in the form ``conv1d``) with StackedOptimizer."""

    def __init__(self, nets: list[torch.nn.Sequential], onednn: bool, conv1d: str = "unfold"):
        form = "unfold" if conv1d == "grouped" else conv1d
        self.onednn, self.model = onednn, stacked.StackedModel(copy.deepcopy(nets), form)
        if conv1d == "grouped":
            as_grouped(self.model)
        self.params = self.model.stacked_parameters()
        k = len(nets)
        self.opt = stacked_optim.StackedOptimizer(self.params, k, "sgd", momentum=torch.full((k,), 0.9),
                                                  weight_decay=torch.zeros(k))
        self.opt.lr = lrs(k)
        self.norm = lambda: stacked.member_norms([p.grad for p, _ in self.params], k)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss, _ = training.training_step(self.model, self.opt, x, y, loss_of=member_losses, grad_norm=self.norm)
        return loss.detach()

    def member(self, i: int, what: str) -> dict[str, torch.Tensor]:
        out = {}
        for key, kind, mod, name, t in self.model._tensors():
            if isinstance(t, torch.nn.Parameter):
                t = t.grad if what == "grad" else t
                out[key] = self.model.own_layout(kind, mod, name, self.model.member_slice(kind, t.detach(), i))
        return out


def as_grouped(model: stacked.StackedModel) -> None:
    """Turn the unfolded 1-D convolutions of ``model`` into grouped Conv1d's, their weights laid out
    (K*C_out, C_in, kernel)."""
    for index, kind in enumerate(model.kinds):
        if kind != "unfold":
            continue
        mod = model.layers[index]
        own = [model.own_layout(kind, mod, "weight", w) for w in mod.weight.detach()]  # K x (C_out, C_in, kernel)
        mod.weight = torch.nn.Parameter(torch.cat(own).contiguous())
        if mod.bias is not None:
            mod.bias = torch.nn.Parameter(mod.bias.detach().reshape(-1).clone())
        mod.conv = F.conv1d
        mod.stride, mod.padding, mod.dilation = (mod.stride,), (mod.padding,), (1,)
        model.kinds[index] = "conv"


class Vmapped:
    """torch.func.vmap over functional_call of one cnn1d with the members' parameters stacked (K, ...)."""

    def __init__(self, nets: list[torch.nn.Sequential], onednn: bool):
        self.onednn, self.base = onednn, copy.deepcopy(nets[0]).to("meta")
        names = [n for n, _ in nets[0].named_parameters()]
        self.params = {n: torch.nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in nets]))
                       for n in names}
        k = len(nets)
        pairs = [(p, 1) for p in self.params.values()]
        self.opt = stacked_optim.StackedOptimizer(pairs, k, "sgd", momentum=torch.full((k,), 0.9),
                                                  weight_decay=torch.zeros(k))
        self.opt.lr = lrs(k)
        self.norm = lambda: stacked.member_norms([p.grad for p, _ in pairs], k)
        call = functools.partial(torch.func.functional_call, self.base)
        self.forward = torch.func.vmap(lambda p, x: call(p, (x,)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(self.params, x)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss, _ = training.training_step(self, self.opt, x, y, loss_of=member_losses, grad_norm=self.norm)
        return loss.detach()

    def member(self, i: int, what: str) -> dict[str, torch.Tensor]:
        return {n: (p.grad if what == "grad" else p).detach()[i] for n, p in self.params.items()}


def forms(batch_size: int) -> dict[str, Callable]:
    """name -> builder of the form from the members; ``alone`` first, the baseline."""
    dnn = training.use_onednn(CPU, batch_size)
    return {
        "alone": functools.partial(Alone, onednn=dnn),
        "alone-cl": functools.partial(AloneChannelsLast, onednn=True),
        "unfold": functools.partial(Stacked, onednn=dnn),
        "grouped": functools.partial(Stacked, onednn=True, conv1d="grouped"),
        "grouped-nodnn": functools.partial(Stacked, onednn=False, conv1d="grouped"),
        "channels_last": functools.partial(Stacked, onednn=True, conv1d="channels_last"),
        "vmap": functools.partial(Vmapped, onednn=dnn),
    }


def batch(k: int, batch_size: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, batch_size, *INPUT, generator=g, dtype=dtype)  # (K, B, 1, 40)
    return x, torch.randint(0, CLASSES, (k, batch_size), generator=g)


def take_step(form, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = form.onednn
    try:
        return form.step(x, y)
    finally:
        torch.backends.mkldnn.enabled = previous


def check_equal_work(k: int, batch_size: int, tol: float = 1e-10) -> None:
    """Every stacked form's losses, gradients and updated parameters after one step equal ``alone``'s in
    float64; raises AssertionError naming the form and tensor that differ."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        nets, (x, y) = members(k), batch(k, batch_size, torch.float64, seed=1)
        built = {name: make(nets) for name, make in forms(batch_size).items()}
        losses = {name: take_step(form, x, y) for name, form in built.items()}
        ref = built.pop("alone")  # alone-cl is checked too
        for name, form in built.items():
            diff = float((losses[name] - losses["alone"]).abs().max())
            assert diff <= tol, f"{name} B={batch_size}: loss differs by {diff:.3g}"
            for i in range(k):
                for what in ("grad", "param"):
                    want, got = ref.member(i, what), form.member(i, what)
                    for (key, a), b in zip(want.items(), got.values()):
                        diff = float((a - b).abs().max())
                        assert a.shape == b.shape and diff <= tol, f"{name} B={batch_size} member {i} {what} {key}: {diff:.3g}"
    finally:
        torch.set_default_dtype(previous)


def time_forms(k: int, batch_size: int, repeats: int, budget_s: float) -> dict[str, float]:
    """Seconds per step of each form (float32): the best of ``repeats`` timings of a few steps each, the
    forms taking turns so that a slow spell of a shared machine hits them all."""
    nets, (x, y) = members(k), batch(k, batch_size, torch.float32)
    built = {name: make(nets) for name, make in forms(batch_size).items()}
    steps = {}
    for name, form in built.items():  # warm up (first-call allocations, oneDNN primitive caches), size the runs
        take_step(form, x, y)
        start = time.perf_counter()
        take_step(form, x, y)
        steps[name] = max(1, round(budget_s / max(time.perf_counter() - start, 1e-6)))
    best = {name: float("inf") for name in built}
    for _ in range(repeats):
        for name, form in built.items():
            start = time.perf_counter()
            for _ in range(steps[name]):
                take_step(form, x, y)
            best[name] = min(best[name], (time.perf_counter() - start) / steps[name])
    return best


def engine_choice(k: int, batch_size: int) -> str:
    """What batchlab trains a pack of K cnn1d runs at ``batch_size`` on the CPU with: "batched, <form>" or
    "sequential" (batchlab.packs.choose_engine, batchlab.batched.conv1d_form)."""
    specs = [{"batch_size": batch_size}] * k
    if packs.choose_engine(specs, models.build("cnn1d", INPUT, CLASSES), CPU) == "sequential":
        return "sequential"
    return batched.conv1d_form(CPU, batch_size)


def summary(k: int, results: dict[int, dict[str, float]]) -> None:
    """Per batch size, the best stacked form and batchlab's choice against one after another, and a verdict."""
    print(f"\nsummary (ratio: alone / form; a stacked form wins with {CLEAR_MARGIN}x or more):")
    wins, wrong = [], []
    for batch_size, times in results.items():
        best = min((n for n in times if n not in BASELINES), key=times.get)
        ratio, choice = times["alone"] / times[best], engine_choice(k, batch_size)
        engine = times["alone"] / times.get(choice, times["alone"])
        print(f"  B = {batch_size:<5} best stacked: {best:<14} {ratio:5.2f}x   "
              f"batchlab: {choice:<14} {engine:5.2f}x")
        wins += [batch_size] if ratio >= CLEAR_MARGIN else []
        if (choice == "sequential") == (ratio >= CLEAR_MARGIN) or engine < 1.0:
            wrong.append(batch_size)
    limit = packs.CPU_BATCHED_MAX_BATCH["conv1d"]
    above = [b for b in wins if b > 64]
    print(f"verdict: a stacked form beats one after another by {CLEAR_MARGIN}x at B = {wins or 'none'}; "
          + (f"above B = 64 at {above}" if above else "above B = 64 none: one run after another is best there"))
    print(f"batchlab stacks 1-D CNNs on the CPU up to B = {limit} (packs.CPU_BATCHED_MAX_BATCH['conv1d']): "
          + (f"its choice disagrees with these timings at B = {wrong}" if wrong else "its choice agrees with "
             "these timings at every batch size measured"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K = 4, B = 32 and 128, one short repeat (CI)")
    parser.add_argument("--members", type=int, help="K, the members of a pack (default 16; 4 with --quick)")
    parser.add_argument("--batch-size", type=int, action="append", help="only these batch sizes")
    parser.add_argument("--repeats", type=int, help="timings per form, the best kept (default 3; 1 with --quick)")
    parser.add_argument("--budget", type=float, help="seconds per timing of a form (default 0.5; 0.05 with --quick)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as training jobs run
    k = args.members or (4 if args.quick else 16)
    sizes = args.batch_size or ([32, 128] if args.quick else [32, 64, 128, 256, 512, 1024])
    repeats, budget = args.repeats or (1 if args.quick else 3), args.budget or (0.05 if args.quick else 0.5)
    print(f"one training step of {k} cnn1d members (MNIST-1D shapes), 1 thread, torch {torch.__version__}; "
          f"time per step, best of {repeats}; ratio = alone / form (above 1: faster than one after another)")
    results = {}
    for batch_size in sizes:
        check_equal_work(k, batch_size)
        results[batch_size] = times = time_forms(k, batch_size, repeats, budget)
        print(f"\nB = {batch_size}  (float64 check passed: every form equals alone to 1e-10)")
        for name, seconds in times.items():
            print(f"  {name:<14} {seconds * 1e3:9.2f} ms/step  {times['alone'] / seconds:5.2f}x")
    summary(k, results)


if __name__ == "__main__":
    main()
