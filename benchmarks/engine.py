"""Training throughput of batchlab's engine against the loops a user would write, on the same work, measured
in the same run.

For each architecture and batch size, K runs (learning rates differing) are trained three ways:
- dataloader: one run after another, the textbook loop (a DataLoader over a TensorDataset with a seeded
  shuffle, nn.Module, torch.optim.SGD);
- tight: one run after another, the loop a careful user writes (tensors preloaded, a seeded torch.randperm
  per epoch sliced into batches, torch.optim.SGD with foreach=True, zero_grad(set_to_none=True));
- batchlab: the same K runs as one pack (batchlab.packs.train_pack's choice: batched where faster);
in two modes, each the same work on every side:
- train only: batchlab with the measurements its spec can switch off switched off (noise scale pairs 0,
  sharpness epsilons []; evaluation points 1, the least: it still evaluates at step 0 and at the end, and
  still records each step's loss and gradient norm); the loops measure nothing;
- with measurements: the default study's evaluation settings (batchlab.config's defaults), and the loops
  measure what batchlab measures of each run, with their own plain torch code: each step's loss and
  gradient norm, an evaluation on the full training and test sets at batchlab.training.eval_steps (eval
  mode, no_grad, chunks of the evaluation batch size) with the distance from the initialization, the
  gradient noise scale where batchlab.training.noise_at measures it (batchlab.metrics.measure_noise_scale,
  the spec's settings), and the final weights' sharpness (batchlab.metrics.sharpness, the spec's settings).
Printed: seconds of each, and batchlab's speed-up over each loop (loop seconds / batchlab seconds; above 1,
batchlab is faster). batchlab's time also covers what only it does: loading the dataset file and writing each
run to the store. Nothing is asserted: times vary with the machine.

    python benchmarks/engine.py            # MLP and CNN on MNIST-1D, batch sizes 2 to 512, K = 16
    python benchmarks/engine.py --quick    # a few steps of each, as CI runs it
    python benchmarks/engine.py --arch mlp --batch-size 2 --batch-size 8 --mode train   # a subset
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchlab import config, data, grid, metrics, models, packs, store, training  # noqa: E402

CPU = torch.device("cpu")
MODES = {"train": "train only", "measured": "with measurements"}
# what turns each of batchlab's measurements off (evaluation points cannot go below 1: step 0 and the end)
TRAIN_ONLY = {"points": 1, "noise_scale": {"pairs": 0}, "sharpness": {"epsilons": []}}
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def study(arch: str, batch_size: int, k: int, steps: int, mode: str) -> dict:
    """The validated config of K runs of ``arch`` at ``batch_size`` (learning rates 0.001 to 0.001 K),
    measuring per ``mode``."""
    return config.validate({
        "datasets": ["mnist1d"], "dataset_options": {"mnist1d": {"num_samples": 4000, "seed": 42}},
        "architectures": [arch], "batch_sizes": [batch_size],
        "learning_rates": [0.001 * (i + 1) for i in range(k)], "budget": {"steps": steps},
        "optimizer": {"name": "sgd", "momentum": 0.9}, "seeds": [0],
        "evaluation": dict(TRAIN_ONLY) if mode == "train" else {},
    })


def specs_for(arch: str, batch_size: int, k: int, steps: int, mode: str) -> list[dict]:
    """The runs of :func:`study`."""
    return grid.expand(study(arch, batch_size, k, steps, mode))


@functools.cache
def eval_batch_size() -> int:
    """The default study's examples per forward pass of evaluation, which both sides use."""
    return int(study("mlp", 8, 1, 10, "measured")["evaluation"]["batch_size"])


class Measurements:
    """What batchlab measures of one run, done by plain torch code around a loop (see the module's doc)."""

    def __init__(self, spec: dict, model: torch.nn.Module, tensors: dict, batch_size: int):
        self.spec, self.model, self.tensors, self.batch_size = spec, model, tensors, batch_size
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.w0 = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()
        self.steps = training.eval_steps(spec["steps"], spec["eval_points"])
        self.losses: list[float] = []
        self.norms: list[torch.Tensor] = []
        self.rows: list[dict] = []
        self.sharpness: dict[str, float] = {}

    def after_backward(self, loss: torch.Tensor) -> None:
        """Each step: the loss (read, as a divergence check reads it) and the gradient norm."""
        self.losses.append(float(loss.detach()))
        self.norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in self.params]))))

    @torch.no_grad()
    def _loss_acc(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), self.batch_size):
            out = self.model(x[i : i + self.batch_size])
            loss_sum += float(F.cross_entropy(out, y[i : i + self.batch_size], reduction="sum"))
            correct += int((out.argmax(1) == y[i : i + self.batch_size]).sum())
        return loss_sum / len(x), correct / len(x)

    def _noise_due(self, step: int) -> bool:
        settings = self.spec["noise_scale"]
        return bool(settings["pairs"]) and (step == self.steps[-1] or self.steps.index(step) % settings["every"] == 0)

    def evaluate(self, step: int) -> None:
        """At the evaluation steps: losses and accuracies on the full sets, the distance from the
        initialization, the gradient norms since the last one, the noise scale where due."""
        if step not in self.steps:
            return
        t = self.tensors
        self.model.eval()
        row = {"step": step, "train": self._loss_acc(t["x_train"], t["y_train"]),
               "test": self._loss_acc(t["x_test"], t["y_test"])}
        self.model.train()
        w = torch.cat([p.detach().reshape(-1) for p in self.params])
        row["dist_init"] = float(torch.linalg.vector_norm(w - self.w0))
        row["grad_norms"] = [float(n) for n in self.norms]
        self.norms = []
        if self._noise_due(step):
            s, seed = self.spec["noise_scale"], self.spec["seed"] * 1_000_003 + step  # noise_at's seed
            row["noise"] = metrics.measure_noise_scale(self.model, t["x_train"], t["y_train"], s["small_batch"],
                                                       s["big_batch"], s["pairs"], seed=seed)
        self.rows.append(row)

    def finish(self) -> None:
        """The final weights' sharpness for each box size the spec asks for."""
        s = self.spec["sharpness"]
        x, y = self.tensors["x_train"][: s["examples"]], self.tensors["y_train"][: s["examples"]]
        self.sharpness = {f"final_sharpness_{e:g}": metrics.sharpness(self.model, x, y, e, s["steps"], seed=self.spec["seed"])
                          for e in s["epsilons"]}


def dataloader_batches(spec: dict, tensors: dict) -> Batches:
    """The textbook data order: a DataLoader's seeded shuffle, epoch after epoch."""
    loader = DataLoader(TensorDataset(tensors["x_train"], tensors["y_train"]), batch_size=spec["batch_size"],
                        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(spec["seed"]))
    while True:
        yield from loader


def tight_batches(spec: dict, tensors: dict) -> Batches:
    """A careful user's data order: a seeded permutation per epoch, sliced into batches of the tensors."""
    x, y, b = tensors["x_train"], tensors["y_train"], spec["batch_size"]
    generator = torch.Generator().manual_seed(spec["seed"])
    while True:
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - b + 1, b):
            idx = perm[i : i + b]
            yield x[idx], y[idx]


LOOPS: dict[str, tuple[Callable[[dict, dict], Batches], dict, dict]] = {
    # name: (data order, torch.optim.SGD's extra arguments, zero_grad's arguments)
    "dataloader": (dataloader_batches, {}, {}),
    "tight": (tight_batches, {"foreach": True}, {"set_to_none": True}),
}


def train_one(spec: dict, tensors: dict, loop: str, measured: bool = False) -> Measurements | None:
    """One run by ``loop`` (a key of LOOPS); with ``measured``, also what batchlab measures of it."""
    batches, sgd_args, zero_grad_args = LOOPS[loop]
    torch.manual_seed(spec["seed"])
    model = models.build(spec["arch"], tuple(tensors["x_train"].shape[1:]), 10)
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9, **sgd_args)
    measure = Measurements(spec, model, tensors, eval_batch_size()) if measured else None
    for step, (x, y) in zip(range(spec["steps"]), batches(spec, tensors)):
        if measure is not None:
            measure.evaluate(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(**zero_grad_args)
        loss.backward()
        if measure is not None:
            measure.after_backward(loss)
        opt.step()
    if measure is not None:
        measure.evaluate(spec["steps"])
        measure.finish()
    return measure


def baseline(specs: list[dict], tensors: dict, loop: str, measured: bool) -> float:
    """Seconds for ``loop`` to train every run, one after another."""
    start = time.perf_counter()
    for spec in specs:
        train_one(spec, tensors, loop, measured=measured)
    return time.perf_counter() - start


def batchlab_pack(specs: list[dict], dataset: Path) -> tuple[float, int]:
    """Seconds for batchlab to train the runs as one pack (the engine chosen automatically), and how many of
    them it stopped early as diverged (the loops train every run to its end)."""
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        packs.train_pack(specs, str(dataset), runs, device="cpu", threads=1, eval_batch_size=eval_batch_size())
        seconds = time.perf_counter() - start
        return seconds, sum(store.read_summary(runs, s["run_id"])["diverged"] for s in specs)


def measure_mode(arch: str, b: int, k: int, steps: int, mode: str, tensors: dict,
                 dataset: Path) -> tuple[list[float], int]:
    """Seconds of each loop and of batchlab on the same K runs, in ``mode``, and the runs batchlab stopped
    early."""
    specs = specs_for(arch, b, k, steps, mode)
    times = [baseline(specs, tensors, loop, mode == "measured") for loop in LOOPS]
    seconds, diverged = batchlab_pack(specs, dataset)
    return times + [seconds], diverged


def header(modes: list[str]) -> str:
    cols = f"{'loader s':>9} {'tight s':>8} {'batchlab s':>10} {'vs loader':>9} {'vs tight':>8}"
    top = " " * 23 + " | ".join(f"{MODES[m]:^{len(cols)}}" for m in modes)
    names = f"{'arch':6} {'B':>4} {'K':>3} {'steps':>5}  " + " | ".join([cols] * len(modes)) + f" {'engine':>10}"
    return top + "\n" + names


def cells(times: list[float]) -> str:
    loader, tight, ours = times
    return f"{loader:>9.2f} {tight:>8.2f} {ours:>10.2f} {loader / ours:>8.2f}x {tight / ours:>7.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps per setting (CI)")
    parser.add_argument("--members", type=int, default=16, help="runs per pack (K)")
    parser.add_argument("--arch", action="append", choices=["mlp", "cnn1d"], help="only these architectures")
    parser.add_argument("--batch-size", type=int, action="append", help="only these batch sizes")
    parser.add_argument("--mode", choices=["train", "measured", "both"], default="both",
                        help="train only, with measurements, or both side by side")
    args = parser.parse_args()
    modes = list(MODES) if args.mode == "both" else [args.mode]
    # the process-wide settings train_pack sets on its first call, set before anything is timed, so every
    # side runs under them
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_flush_denormal(True)
    batch_sizes = args.batch_size or ([2, 8, 512] if args.quick else [2, 4, 8, 16, 32, 64, 128, 256, 512])
    archs = args.arch or ["mlp", "cnn1d"]
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "mnist1d.npz"
        data.prepare("mnist1d", data.resolve_options("mnist1d", {"num_samples": 4000, "seed": 42}), tmp, dataset)
        tensors = training.to_tensors(data.load(dataset), CPU)
        # warm up every path (first calls pay for lazy initialization), then measure
        for arch in archs:
            for mode in modes:
                measure_mode(arch, 8, 2, 5, mode, tensors, dataset)
        print(header(modes), flush=True)
        for arch in archs:
            for b in batch_sizes:
                steps = 10 if args.quick else max(50, 8000 // b)
                specs = specs_for(arch, b, args.members, steps, modes[0])
                engine = packs.choose_engine(specs, models.build(arch, tuple(tensors["x_train"].shape[1:]), 10), CPU)
                results = [measure_mode(arch, b, args.members, steps, mode, tensors, dataset) for mode in modes]
                row = " | ".join(cells(times) for times, _ in results)
                diverged = max(d for _, d in results)
                note = f"  ({diverged} runs diverged: batchlab stopped them early, less work)" if diverged else ""
                print(f"{arch:6} {b:>4} {len(specs):>3} {steps:>5}  {row} {engine:>10}{note}", flush=True)


if __name__ == "__main__":
    main()
