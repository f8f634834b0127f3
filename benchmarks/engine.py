"""Training throughput of batchlab's engine against the loop a user would write, measured in the same run.

For each architecture and batch size, K runs (learning rates differing) are trained:
- baseline: one run after another, the textbook loop (a DataLoader over a TensorDataset with a seeded
  shuffle, nn.Module, torch.optim.SGD);
- batchlab: the same K runs as one pack (batchlab.packs.train_pack's choice: batched where faster);
and the ratio of their samples per second is printed. Nothing is asserted: times vary with the machine.

    python benchmarks/engine.py            # MLP and CNN on MNIST-1D, batch sizes 2 to 512, K = 16
    python benchmarks/engine.py --quick    # a few steps of each, as CI runs it
    python benchmarks/engine.py --arch mlp --batch-size 2 --batch-size 8   # a subset
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchlab import config, data, grid, models, packs, training  # noqa: E402

CPU = torch.device("cpu")


def specs_for(arch: str, batch_size: int, k: int, steps: int) -> list[dict]:
    raw = {
        "datasets": ["mnist1d"], "dataset_options": {"mnist1d": {"num_samples": 4000, "seed": 42}},
        "architectures": [arch], "batch_sizes": [batch_size],
        "learning_rates": [0.001 * (i + 1) for i in range(k)], "budget": {"steps": steps},
        "optimizer": {"name": "sgd", "momentum": 0.9}, "seeds": [0], "evaluation": {"points": 1},
    }
    return grid.expand(config.validate(raw))


def baseline(specs: list[dict], tensors: dict) -> float:
    """Seconds for the textbook loop to train every run, one after another (no evaluation)."""
    start = time.perf_counter()
    for spec in specs:
        torch.manual_seed(spec["seed"])
        model = models.build(spec["arch"], tuple(tensors["x_train"].shape[1:]), 10)
        opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9)
        loader = DataLoader(TensorDataset(tensors["x_train"], tensors["y_train"]), batch_size=spec["batch_size"],
                            shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(spec["seed"]))
        step = 0
        while step < spec["steps"]:
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step == spec["steps"]:
                    break
    return time.perf_counter() - start


def batchlab_pack(specs: list[dict], dataset: Path, engine: str) -> float:
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        packs.train_pack(specs, str(dataset), runs, device="cpu", threads=1, engine=engine)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps per setting (CI)")
    parser.add_argument("--members", type=int, default=16, help="runs per pack (K)")
    parser.add_argument("--arch", action="append", choices=["mlp", "cnn1d"], help="only these architectures")
    parser.add_argument("--batch-size", type=int, action="append", help="only these batch sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch_sizes = args.batch_size or ([2, 8, 512] if args.quick else [2, 4, 8, 16, 32, 64, 128, 256, 512])
    archs = args.arch or ["mlp", "cnn1d"]
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "mnist1d.npz"
        data.prepare("mnist1d", data.resolve_options("mnist1d", {"num_samples": 4000, "seed": 42}), tmp, dataset)
        tensors = training.to_tensors(data.load(dataset), CPU)
        # warm up both paths (first calls pay for lazy initialization), then measure
        for arch in archs:
            warm = specs_for(arch, 8, 2, 5)
            baseline(warm, tensors)
            batchlab_pack(warm, dataset, "auto")
        print(f"{'arch':6} {'B':>4} {'K':>3} {'steps':>5} {'baseline s':>10} {'batchlab s':>10} {'engine':>10} {'speedup':>8}")
        for arch in archs:
            for b in batch_sizes:
                steps = 10 if args.quick else max(50, 8000 // b)
                specs = specs_for(arch, b, args.members, steps)
                t_base = baseline(specs, tensors)
                model = models.build(arch, tuple(tensors["x_train"].shape[1:]), 10)
                engine = packs.choose_engine(specs, model, CPU)
                t_ours = batchlab_pack(specs, dataset, "auto")
                print(f"{arch:6} {b:>4} {len(specs):>3} {steps:>5} {t_base:>10.2f} {t_ours:>10.2f} {engine:>10} "
                      f"{t_base / t_ours:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
