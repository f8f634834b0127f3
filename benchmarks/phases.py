"""Where a study's training time goes: seconds and shares per phase (start-up, training steps, evaluations,
the gradient noise scale, the sharpness, checkpoints, writing runs), over all its training jobs, per
architecture and per batch size.

Two sources, both written by the training jobs (batchlab.phases): the last line of each ``train_pack`` log
(the job's own seconds per phase, start-up and writing included, and its total since its process started)
and the runs table's ``seconds_<phase>`` columns (each run's share, which the per-architecture and
per-batch-size tables sum; start-up and writing are the job's, not a run's, and are not in them).
Nothing is asserted: times vary with the machine.

    python benchmarks/phases.py                   # trains the default study (snakemake --cores all) in a
                                                  # temp folder, up to its runs table, then reads it
    python benchmarks/phases.py --folder DIR      # a study already run in DIR (the fast path)
    python benchmarks/phases.py --quick           # the smoke study (CI)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from batchlab.phases import PHASES, RUN_PHASES  # noqa: E402
from report import Report  # noqa: E402  (benchmarks/report.py)

PART = re.compile(r"(\w+) ([\d.]+) s \((?:\d+|<1)%\)")


def pack_lines(folder: Path) -> tuple[int, list[dict[str, float]]]:
    """The number of ``train_pack`` logs in ``folder`` and the phases' seconds of those whose last line is a
    ``pack time:`` line (a job of older code, or one that stopped, has none), ``total`` included."""
    logs = sorted((folder / "logs" / "train_pack").glob("*.log"))
    found = []
    for log in logs:
        lines = log.read_text().strip().splitlines()
        if not lines or "pack time: " not in lines[-1]:
            continue
        last = lines[-1].split("pack time: ", 1)[1]
        seconds = {name: float(value) for name, value in PART.findall(last)}
        seconds["total"] = float(re.search(r"; total ([\d.]+) s$", last).group(1))
        found.append(seconds)
    return len(logs), found


def run_study(configfile: Path, work: Path) -> None:
    """Train ``configfile``'s study in ``work`` up to its runs table (no notebooks, no paper)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(configfile.resolve()), "--cores", "all", "results/tables/runs.parquet"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the study failed:\n{result.stderr[-5000:]}")


def share_table(report: Report, runs, key: str) -> None:
    """One line per value of ``key``: runs, then each phase's seconds and share of the line's total."""
    columns = [f"seconds_{p}" for p in RUN_PHASES]
    report.line(f"{key:>10} {'runs':>5} " + " ".join(f"{p:>16}" for p in RUN_PHASES) + f" {'total':>9}")
    for value, group in runs.groupby(key, sort=True):
        sums = group[columns].sum()
        total = float(sums.sum())
        cells = " ".join(f"{s:8.1f} s {100 * s / total if total else 0:4.0f}%" for s in sums)
        report.line(f"{value!s:>10} {len(group):>5} {cells} {total:7.1f} s")


def describe(folder: Path, report: Report) -> None:
    import pandas as pd

    jobs, lines = pack_lines(folder)
    runs = pd.read_parquet(folder / "results" / "tables" / "runs.parquet")
    report.say(f"study in {folder}: {len(runs)} runs, {jobs} train_pack jobs ({len(lines)} with a phase line)")
    report.section("all training jobs (the last line of each train_pack log)")
    total = sum(line["total"] for line in lines)
    for phase in (*PHASES, "other"):
        seconds = sum(line.get(phase, 0.0) for line in lines)
        report.line(f"{phase:12} {seconds:9.1f} s {100 * seconds / total if total else 0:5.1f}%")
    report.line(f"{'total':12} {total:9.1f} s")
    startup = sum(line.get("startup", 0.0) for line in lines)
    report.line(f"start-up: {startup:.1f} s in all, {startup / max(len(lines), 1):.2f} s per job")
    missing = [c for c in (f"seconds_{p}" for p in RUN_PHASES) if c not in runs]
    if missing:
        report.say(f"the runs table has no {', '.join(missing)}: runs trained by older code")
        return
    report.section("per architecture (the runs' seconds_<phase>)")
    share_table(report, runs, "arch")
    report.section("per batch size (the runs' seconds_<phase>)")
    share_table(report, runs, "batch_size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a study already run there (logs/, results/tables/)")
    parser.add_argument("--quick", action="store_true", help="the smoke study (CI)")
    parser.add_argument("--configfile", type=Path, help="a study other than the default")
    args = parser.parse_args()
    report = Report()
    if args.folder:
        describe(args.folder, report)
        return
    configfile = args.configfile or (ROOT / "configs" / "smoke.yaml" if args.quick else ROOT / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        run_study(configfile, Path(tmp))
        describe(Path(tmp), report)


if __name__ == "__main__":
    main()
