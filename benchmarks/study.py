"""A study end to end: ``snakemake --cores all`` in a fresh working folder, from nothing to paper/paper.pdf,
against the goal (5 minutes for the default study on a 2-core machine) and against the sum of its jobs'
own times measured in the same run (Snakemake's benchmark files): how well the cores were kept busy; then
where the training jobs' time went, by phase (benchmarks/phases.py). Nothing is asserted: times vary with
the machine.

    python benchmarks/study.py                             # the default study (config.yaml)
    python benchmarks/study.py --quick                     # the smoke study, as CI runs it
    python benchmarks/study.py --configfile configs/x.yaml # another study
    python benchmarks/study.py --keep DIR                  # run it in DIR (new or empty) and keep it there
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import phases  # noqa: E402  (benchmarks/phases.py)
from report import Report  # noqa: E402
GOAL_SECONDS = 300.0


def job_seconds(workdir: Path) -> dict[str, float]:
    """Seconds per rule kind, summed over the jobs' benchmark files (training packs, tables)."""
    totals: dict[str, float] = {}
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        kind = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        with tsv.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                totals[kind] = totals.get(kind, 0.0) + float(row["s"])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smoke study (CI)")
    parser.add_argument("--configfile", type=Path, help="a study other than the default")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", type=Path, help="run the study in this folder (new or empty) and keep it")
    args = parser.parse_args()
    configfile = args.configfile or (ROOT / "configs" / "smoke.yaml" if args.quick else ROOT / "config.yaml")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        sys.exit(f"--keep {args.keep}: not empty; the study runs from nothing")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep.resolve() if args.keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        measure(configfile, work, args.cores)


def measure(configfile: Path, work: Path, cores_given: str) -> None:
    """Run the study in ``work`` and print its times: end to end, the jobs summed, the phases of training."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(configfile.resolve()), "--cores", cores_given]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0 or not (work / "paper" / "paper.pdf").exists():
        sys.exit(f"the study failed:\n{result.stderr[-5000:]}")
    jobs = job_seconds(work)
    cores = os.cpu_count() if cores_given == "all" else int(cores_given)
    print(f"study {configfile.name}: {len(list((work / 'results' / 'runs').iterdir()))} runs, {cores} cores")
    print(f"{'end to end (snakemake --cores ' + cores_given + ')':40} {wall:8.1f} s {wall / GOAL_SECONDS:6.2f} of goal")
    busy = sum(jobs.values())
    print(f"{'training and table jobs, summed':40} {busy:8.1f} s {busy / wall:6.2f}x the wall time")
    for kind, seconds in sorted(jobs.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:38} {seconds:8.1f} s")
    print()
    phases.describe(work, Report())

if __name__ == "__main__":
    main()
