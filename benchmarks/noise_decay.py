"""What the noise scale's moving average (config ``analysis.noise_ema``) does to it, on a study already run.

For each decay, per architecture over its batch sizes (each at its best learning rate): the scatter of the
smoothed B_simple between neighbouring evaluations (the median over batch sizes of the median |log ratio|
of consecutive values: 0.69 is a factor of 2), the median last value (how much of the growth over training
is kept; the raw ratio's own at decay 0) and the rank correlation between train loss and B_simple that
claim 10 reads (batchlab.numbers.noise_numbers). Nothing is asserted.

    python benchmarks/noise_decay.py --folder DIR      # DIR from python benchmarks/study.py --keep DIR
    python benchmarks/noise_decay.py --folder DIR --decay 0 --decay 0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchlab import analysis  # noqa: E402


def scatter(curve: pd.Series) -> float:
    """The median |log ratio| of consecutive positive values of one curve (NaN with fewer than 2)."""
    values = curve.to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(np.abs(np.diff(np.log(values))))) if len(values) > 1 else np.nan


def row(curves: pd.DataFrame) -> tuple[float, float, float]:
    """One architecture's curves: scatter, median last value, rank correlation of train loss and B_simple."""
    per_batch = curves.sort_values("step").groupby("batch_size")
    spread = float(np.nanmedian([scatter(c["b_simple"]) for _, c in per_batch]))
    last = float(np.nanmedian([c["b_simple"].dropna().iloc[-1] for _, c in per_batch if c["b_simple"].notna().any()]))
    measured = curves[curves["b_simple"].notna()]
    return spread, last, analysis.spearman(measured["train_loss"], measured["b_simple"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="a study's folder (with results/tables/)")
    parser.add_argument("--decay", type=float, action="append", help="decays to compare (default 0, 0.5, 0.7, 0.9)")
    args = parser.parse_args()
    tables = args.folder / "results" / "tables"
    runs, history = analysis.main_grid(pd.read_parquet(tables / "runs.parquet"), pd.read_parquet(tables / "history.parquet"))
    runs, history = analysis.first_dataset(runs), analysis.first_dataset(history, runs)
    print(f"{'decay':>6} {'arch':>8} {'scatter':>8} {'last B_simple':>14} {'rho':>6}")
    for decay in args.decay or [0.0, 0.5, 0.7, 0.9]:
        curves = analysis.noise_scale_curves(runs, history, decay)
        for arch, c in curves.groupby("arch", sort=False):
            spread, last, rho = row(c)
            print(f"{decay:>6g} {arch:>8} {spread:>8.2f} {last:>14.0f} {rho:>6.2f}")


if __name__ == "__main__":
    main()
