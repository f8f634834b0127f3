"""What a run's measurements cost against its training, measured in the same run.

One run of the default study's settings (MNIST-1D, 4,000 training and 1,000 test examples, 8 epochs, SGD with
momentum, 20 evaluation points plus step 0, the noise scale at every other one, the sharpness at two box
sizes) is trained alone by the sequential engine for each architecture and batch size, and its time is split
into the training steps, the evaluations on the full training and test sets, the noise scale's gradient
pairs and the final sharpness; each is printed in seconds and as a multiple of the training steps' time.
Nothing is asserted: times vary with the machine.

    python benchmarks/measurements.py           # mlp and cnn1d at batch sizes 128 and 512
    python benchmarks/measurements.py --quick   # a small dataset and budget, as CI runs it
    python benchmarks/measurements.py --arch cnn1d --batch-size 512
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchlab import config, data, grid, metrics, sequential, training  # noqa: E402

CPU = torch.device("cpu")
PARTS = {"evaluate": "evaluations", "measure_noise_scale": "noise scale", "sharpness": "sharpness"}


def spec_for(arch: str, batch_size: int, samples: int, epochs: int, points: int) -> dict:
    raw = {"datasets": ["mnist1d"], "dataset_options": {"mnist1d": {"num_samples": samples, "seed": 42}},
           "architectures": [arch], "batch_sizes": [batch_size], "learning_rates": [0.0005 * batch_size],
           "budget": {"epochs": epochs}, "optimizer": {"name": "sgd", "momentum": 0.9}, "seeds": [0],
           "evaluation": {"points": points}}
    return grid.expand(config.validate(raw))[0]


def split(spec: dict, tensors: dict) -> dict[str, float]:
    """Seconds of the run's parts: metrics' functions timed where the engine calls them."""
    seconds = dict.fromkeys(PARTS, 0.0)
    originals = {name: getattr(metrics, name) for name in PARTS}

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
        return wrapper

    for name, fn in originals.items():
        setattr(metrics, name, timed(name, fn))
    try:
        start = time.perf_counter()
        _, summary = sequential.train_run(spec, tensors, CPU)
        total = time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(metrics, name, fn)
    return {"total": total, "training": summary["train_seconds"], **{PARTS[k]: v for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 examples, 1 epoch, 4 evaluation points (CI)")
    parser.add_argument("--arch", action="append", choices=["logreg", "mlp", "cnn1d"], help="only these")
    parser.add_argument("--batch-size", type=int, action="append", help="only these batch sizes")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest counts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples, epochs, points = (1000, 1, 4) if args.quick else (5000, 8, 20)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mnist1d.npz"
        data.prepare("mnist1d", data.resolve_options("mnist1d", {"num_samples": samples, "seed": 42}), tmp, path)
        tensors = training.to_tensors(data.load(path), CPU)
    split(spec_for("cnn1d", 128, samples, 1, 2), tensors)  # warm-up: kernels set up once per process
    print(f"one run alone, {samples * 4 // 5} training examples, {epochs} epoch(s), 1 thread; "
          "each part in seconds and as a multiple of the training steps' time")
    for arch in args.arch or ["cnn1d", "mlp"]:
        for batch_size in args.batch_size or [128, 512]:
            spec = spec_for(arch, batch_size, samples, epochs, points)
            runs = [split(spec, tensors) for _ in range(args.repeats)]
            best = {k: min(r[k] for r in runs) for k in runs[0]}
            parts = "  ".join(f"{name} {best[name]:.2f} s ({best[name] / best['training']:.2f}x)"
                              for name in PARTS.values())
            print(f"{arch:6s} B={batch_size:<5d} steps {spec['steps']:5d}  run {best['total']:.2f} s  "
                  f"training {best['training']:.2f} s  {parts}", flush=True)


if __name__ == "__main__":
    main()
