"""How far the engines are from this machine's limit: the GFLOP/s that training reaches, per architecture and
batch size of a study, against the single-thread fp32 matrix-multiply speed measured in the same run.

The peak: the best of a few large square fp32 matrix products on one thread (training jobs run on one).
A training step's work per example: 3 forward passes' operations of the model (batchlab.flops: Linear and
convolution layers, counted from their shapes). The speed: examples per second of the training steps
(``samples_per_s`` of a run's summary: a batched pack's examples of all its members; evaluations, the noise
scale and the sharpness are not in it), from a study's runs table (``--folder``), or else from short packs
measured here (4 members, no evaluation between the first and the last step). Nothing is asserted.

    python benchmarks/roofline.py                    # the default study's shapes, short packs measured here
    python benchmarks/roofline.py --folder DIR       # samples/s of a study already run in DIR
    python benchmarks/roofline.py --quick            # 3 batch sizes, a few steps each (CI)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from batchlab import config, data, flops, grid, models, packs  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Single-thread fp32 GFLOP/s of an n x n matrix product (2 n^3 operations), the best of ``repeats``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=generator) for _ in range(2))
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def study_models(study: dict) -> dict[str, tuple[dict, int]]:
    """Per architecture of the study's main grid: one spec (its model options) and the training FLOPs per
    example of its model."""
    out = {}
    for spec in grid.expand(study):
        if spec.get("variant") or spec["arch"] in out:
            continue
        name = spec["dataset"]
        shape = data.dataset(name, spec.get("dataset_builder")).input_shape(spec["dataset_options"])
        n_classes = data.num_classes(name, spec["dataset_options"], spec.get("dataset_builder"))
        model = models.build(spec["arch"], tuple(shape), n_classes, spec["model_options"], spec.get("builder"))
        out[spec["arch"]] = (spec, flops.training_flops(model, tuple(shape)))
    return out


def from_table(folder: Path) -> dict[tuple[str, int], tuple[float, str]]:
    """(arch, batch size) -> (median samples/s of the main grid's runs, their engines) from a study's table."""
    import pandas as pd

    runs = pd.read_parquet(folder / "results" / "tables" / "runs.parquet")
    runs = runs[(runs["variant"] == "") & ~runs["diverged"]] if "variant" in runs else runs[~runs["diverged"]]
    return {(arch, int(b)): (float(g["samples_per_s"].median()), "/".join(sorted(g["engine"].unique())))
            for (arch, b), g in runs.groupby(["arch", "batch_size"])}


def measured(spec: dict, dataset: Path, steps: int, members: int = 4) -> tuple[float, str]:
    """Samples/s of a short pack of ``members`` runs like ``spec`` (learning rates differing), as the
    pipeline trains it (engine chosen automatically, one thread), and the engine."""
    import json

    specs = [dict(spec, lr=spec["lr"] * (1 + i / 10), steps=steps, eval_points=1, noise_scale={"pairs": 0},
                  sharpness={"epsilons": []}, run_id=f"roofline-{i}") for i in range(members)]
    with tempfile.TemporaryDirectory() as runs:
        packs.train_pack(specs, str(dataset), runs, device="cpu", threads=1)
        summaries = [json.loads((Path(runs) / s["run_id"] / "summary.json").read_text()) for s in specs]
    engine = summaries[0]["engine"]
    # batched: each summary holds the pack's rate; sequential: each run's own, trained one after another
    rate = sum(s["samples_per_s"] for s in summaries) / len(summaries)
    return rate, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a study already run there: read its runs table")
    parser.add_argument("--configfile", type=Path, default=ROOT / "config.yaml", help="the study (default: config.yaml)")
    parser.add_argument("--quick", action="store_true", help="3 batch sizes, a few steps each (CI)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    study = config.load(args.configfile)
    peak = matmul_gflops(1024 if args.quick else 2048)
    print(f"matmul peak: {peak:.1f} GFLOP/s (fp32, 1 thread, best of 5 square products)")
    archs = study_models(study)
    sizes = sorted(study["batch_sizes"])
    if args.quick:
        sizes = sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]})
    table = from_table(args.folder) if args.folder else {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, (spec, per_example) in archs.items():
            print(f"{arch}: {per_example / 1e3:.1f} kFLOP per training example (3 x forward)")
            if not args.folder:
                dataset = Path(tmp) / f"{spec['dataset']}.npz"
                if not dataset.exists():
                    data.prepare(spec["dataset"], spec["dataset_options"], tmp, dataset)
            for b in sizes:
                if args.folder:
                    if (arch, b) not in table:
                        continue
                    rate, engine = table[(arch, b)]
                else:
                    steps = 10 if args.quick else max(20, 8000 // b)
                    rate, engine = measured(dict(spec, batch_size=b), dataset, steps)
                achieved = rate * per_example / 1e9
                print(f"{arch} B={b}: {achieved:.2f} GFLOP/s training = {achieved / peak:.2g} of the {peak:.0f} "
                      f"GFLOP/s matmul peak ({engine}, {rate:,.0f} examples/s)", flush=True)


if __name__ == "__main__":
    main()
