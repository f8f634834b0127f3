"""Pipeline scale: how long Snakemake takes to plan, aggregate and confirm a large study, measured in the
same run against Snakemake's own floor (a one-rule workflow's dry run).

A study of N runs (10,000 by default: 2 architectures x 10 batch sizes x 25 learning rates x 20 seeds) is
laid out in a temporary folder, and these are timed:

- plan:       ``snakemake -n`` on the fresh grid (every run still to train);
- aggregate:  ``snakemake results/tables/runs.parquet`` once every run is complete (the runs are written
              straight to the run store with made-up histories: training 10,000 runs is not the point);
- no-op:      ``snakemake --cores 2`` and ``snakemake -n`` once everything, paper included, is up to date.

Each is printed with its ratio to the floor and to the goal (15 s). Nothing is asserted: times vary with
the machine.

    python benchmarks/pipeline.py             # 10,000 runs
    python benchmarks/pipeline.py --quick     # 400 runs, as CI runs it
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from batchlab import config, grid, store, training  # noqa: E402

GOAL_SECONDS = 15.0


def study(n_lrs: int, n_seeds: int) -> dict:
    return {
        "study": "scale",
        "datasets": ["mnist1d"],
        "dataset_options": {"mnist1d": {"num_samples": 1000, "seed": 42}},
        "architectures": ["logreg", "mlp"],
        "batch_sizes": [2, 4, 8, 16, 32, 64, 128, 256, 512, 800],
        "learning_rates": [round(0.001 * 1.25**i, 8) for i in range(n_lrs)],
        "budget": {"steps": 100},
        "seeds": list(range(n_seeds)),
        # no interpolation: its end runs would keep weights, which made-up runs lack, so they would train
        "evaluation": {"points": 10, "interpolation": {"points": 0}},
        "targets": [0.3, 0.5],
    }


def snakemake(workdir: Path, *args: str, check: bool = True) -> tuple[float, str]:
    """Seconds one snakemake command took, and its output."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args],
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and result.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def floor_seconds(tmp: Path) -> float:
    """Snakemake's own cost: a dry run of a one-rule workflow."""
    (tmp / "floor").mkdir()
    (tmp / "floor" / "Snakefile").write_text('rule all:\n    output: "done"\n    shell: "touch {output}"\n')
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp / "floor"),
                    "--snakefile", str(tmp / "floor" / "Snakefile")], check=True, capture_output=True)
    return time.perf_counter() - start


def fake_history(spec: dict, rng: np.random.Generator) -> pd.DataFrame:
    """A plausible history with every column a real run records."""
    steps = np.unique(np.linspace(0, spec["steps"], spec["eval_points"] + 1).round().astype(int))
    acc = np.clip(0.1 + 0.8 * (1 - np.exp(-steps / 30)) + rng.normal(0, 0.02, len(steps)), 0, 1)
    loss = 2.3 * np.exp(-steps / 40) + 0.2
    return pd.DataFrame({
        "step": steps, "epoch": steps * spec["batch_size"] / 800, "examples": steps * spec["batch_size"],
        "current_lr": spec["lr"], "train_loss": loss, "train_acc": acc + 0.02, "test_loss": loss + 0.1,
        "test_acc": acc, "grad_norm_mean": 1.0, "grad_norm_std": 0.1, "grad_norm_q10": 0.8, "grad_norm_q50": 1.0,
        "grad_norm_q90": 1.2, "grad_norm_max": 1.5, "dist_init": steps / 50.0,
        "noise_grad_sq": 1.0, "noise_trace": 50.0, "b_simple": 50.0, "wall_time": steps / 1000.0,
    })


def report(name: str, seconds: float, floor: float) -> None:
    print(f"{name:34} {seconds:8.2f} s {seconds / floor:8.1f}x floor {seconds / GOAL_SECONDS:6.2f} of goal", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 runs instead of 10,000 (CI)")
    args = parser.parse_args()
    n_lrs, n_seeds = (5, 4) if args.quick else (25, 20)
    raw = study(n_lrs, n_seeds)
    specs = grid.expand(config.validate(raw))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work = tmp / "study"
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(raw))
        floor = floor_seconds(tmp)
        print(f"{len(specs)} runs; Snakemake's floor (one-rule dry run): {floor:.2f} s; goal {GOAL_SECONDS:.0f} s each")
        print(f"{'step':34} {'time':>10} {'vs floor':>14} {'vs goal':>13}")

        seconds, out = snakemake(work, "-n", "--quiet", "rules")
        report(f"plan: snakemake -n ({len(specs)} to train)", seconds, floor)

        snakemake(work, "--cores", "2", "results/data/mnist1d.npz")
        rng = np.random.default_rng(0)
        for spec in specs:
            history, summary = training.summarize(spec, fake_history(spec, rng).to_dict("records"), spec["steps"], 800,
                                               200, None, 1e5, 1.0, 1.0, torch.device("cpu"))
            store.write_run(work / "results" / "runs", spec, history, summary)

        seconds, _ = snakemake(work, "--cores", "2", "results/tables/runs.parquet")
        report(f"aggregate: {len(specs)} runs to tables", seconds, floor)
        runs = pd.read_parquet(work / "results" / "tables" / "runs.parquet")
        assert len(runs) == len(specs), (len(runs), len(specs))

        start = time.perf_counter()
        snakemake(work, "--cores", "2")  # notebooks, numbers, paper: built once, not timed as a goal
        print(f"{'(notebooks and paper, once)':34} {time.perf_counter() - start:8.2f} s")

        seconds, out = snakemake(work, "--cores", "2")
        if "Nothing to be done" not in out:
            sys.exit(f"the no-op rerun did something:\n{out[-3000:]}")
        report("no-op: snakemake --cores 2", seconds, floor)
        seconds, out = snakemake(work, "-n")
        report("no-op: snakemake -n", seconds, floor)


if __name__ == "__main__":
    main()
