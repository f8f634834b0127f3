"""batchlab.analysis on synthetic tables with known answers: the critical batch size of a known trade-off,
equal-temperature spreads, the limit of 'equal temperature, equal outcome', the log fit, and the noise scale
where a target is reached."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from batchlab import analysis, fits

BATCHES = [2, 4, 8, 16, 32, 64, 128, 256]


@pytest.mark.parametrize("s_min, e_min", [(100.0, 6400.0), (37.0, 50.0), (5.0, 90000.0)])
def test_critical_batch_recovers_a_known_trade_off(s_min, e_min):
    b = np.array(BATCHES, float)
    fit = analysis.critical_batch(b, s_min + e_min / b)
    assert fit["s_min"] == pytest.approx(s_min, rel=1e-9)
    assert fit["e_min"] == pytest.approx(e_min, rel=1e-9)
    assert fit["b_crit"] == pytest.approx(e_min / s_min, rel=1e-9)
    # the fitted curve is (S/S_min - 1)(E/E_min - 1) = 1 with E = B S
    s = fit["s_min"] + fit["e_min"] / b
    assert np.allclose((s / fit["s_min"] - 1) * (b * s / fit["e_min"] - 1), 1.0)


def test_critical_batch_of_perfect_and_of_no_scaling():
    b = np.array(BATCHES, float)
    perfect = analysis.critical_batch(b, 4096 / b)  # steps keep halving: no floor within reach
    assert perfect["s_min"] == 0 and perfect["b_crit"] == math.inf
    assert perfect["e_min"] == pytest.approx(4096)
    flat = analysis.critical_batch(b, np.full_like(b, 70.0))  # no scaling at all
    assert flat["b_crit"] == 0 and flat["s_min"] == pytest.approx(70.0)


def test_critical_batch_skips_unreached_targets_and_needs_two_points():
    fit = analysis.critical_batch([2, 4, 8, 16], [60.0, math.nan, 20.0, 15.0])
    assert fit["points"] == 3 and math.isfinite(fit["b_crit"])
    assert math.isnan(analysis.critical_batch([2, 4], [10.0, math.nan])["b_crit"])


@pytest.mark.parametrize("s_min, e_min, outside", [(100.0, 6400.0, False), (37.0, 50.0, True), (5.0, 90000.0, True)])
def test_a_fit_to_steps_from_the_formula_is_perfect(s_min, e_min, outside):
    b = np.array(BATCHES, float)
    fit = analysis.critical_batch(b, s_min * (1 + (e_min / s_min) / b))
    assert fit["fit_r2"] == pytest.approx(1.0) and fit["fit_rms_log"] == pytest.approx(0.0, abs=1e-9)
    assert fit["fit_good"]
    # B_crit = 64 lies in 2..256; 1.35 below the smallest batch size, 18,000 beyond the largest
    assert fit["extrapolated"] is outside


def test_steps_that_rise_then_fall_fit_badly():
    b = np.array(BATCHES, float)
    steps = np.array([100.0, 150.0, 250.0, 400.0, 300.0, 180.0, 120.0, 90.0])  # no trade-off: up, then down
    fit = analysis.critical_batch(b, steps)
    assert fit["fit_r2"] < fits.GOOD_FIT_R2 and not fit["fit_good"]
    predicted = fit["s_min"] + fit["e_min"] / b
    assert fit["fit_rms_log"] == pytest.approx(np.sqrt(np.mean(np.log(steps / predicted) ** 2)))
    total = np.sum((np.log(steps) - np.log(steps).mean()) ** 2)
    assert fit["fit_r2"] == pytest.approx(1 - np.sum(np.log(steps / predicted) ** 2) / total)


def test_fit_quality_of_the_edge_cases():
    b = np.array(BATCHES, float)
    perfect = analysis.critical_batch(b, 4096 / b)  # B_crit infinite: extrapolated, though the fit is exact
    assert perfect["extrapolated"] and perfect["fit_r2"] == pytest.approx(1.0)
    flat = analysis.critical_batch(b, np.full_like(b, 70.0))  # B_crit 0, below the smallest batch size
    assert flat["extrapolated"] and math.isnan(flat["fit_r2"]) and flat["fit_rms_log"] == pytest.approx(0.0)
    two = analysis.critical_batch([2, 4, 8], [60.0, math.nan, 20.0])  # two points: nothing to judge
    assert math.isnan(two["fit_r2"]) and math.isnan(two["fit_rms_log"]) and not two["fit_good"]
    assert analysis.critical_batch([], [])["extrapolated"]  # no fit, no B_crit within the range


def synthetic_runs(accuracy, momentum=0.0, lrs_per_example=(2.0**-10, 2.0**-9, 2.0**-8), seeds=(0, 1)):
    """A runs table of one architecture over BATCHES with linear scaling; ``accuracy(B, T)`` gives each run's
    final test accuracy from its batch size and noise temperature (None: the run diverged)."""
    rows = []
    for b, base, seed in itertools.product(BATCHES, lrs_per_example, seeds):
        lr = base * b
        temperature = lr / (b * (1 - momentum))
        acc = accuracy(b, temperature)
        rows.append({
            "run_id": f"r-{b}-{base}-{seed}", "dataset": "d", "arch": "mlp", "batch_size": b, "lr": lr,
            "lr_grid_value": base, "base_lr": lr / b, "seed": seed, "noise_temperature": temperature,
            "final_test_acc": 0.1 if acc is None else acc, "diverged": acc is None,
            **dict.fromkeys(["final_train_acc", "gap_acc", "gap_loss", "best_test_acc", "final_dist_init",
                             "final_test_loss"], 0.0),
        })
    return pd.DataFrame(rows)


def test_equal_temperature_equal_outcome_has_no_spread_within():
    # the accuracy depends on the temperature alone: no spread across batch sizes at equal temperature
    runs = synthetic_runs(lambda b, t: 0.5 + 20 * t)
    cells = analysis.temperature_cells(runs)
    assert cells["temperature_bin"].nunique() == 3
    within, across = analysis.temperature_spreads(cells, max_batch=256)
    assert within == pytest.approx(0.0, abs=1e-12)
    assert across == pytest.approx(np.std([0.5 + 20 * 2.0**k for k in (-10, -9, -8)]))


def test_temperature_spreads_when_the_batch_size_matters_alone():
    runs = synthetic_runs(lambda b, t: 0.9 - 0.01 * math.log2(b))
    within, across = analysis.temperature_spreads(analysis.temperature_cells(runs), max_batch=16)
    assert across == pytest.approx(0.0, abs=1e-12)
    assert within == pytest.approx(np.std([0.9 - 0.01 * k for k in (1, 2, 3, 4)]))


def test_temperature_bins_group_momentum_adjusted_temperatures():
    runs = synthetic_runs(lambda b, t: 0.5, momentum=0.9)
    cells = analysis.temperature_cells(runs)
    assert sorted(cells["temperature_bin"].unique()) == pytest.approx([2.0**-10 * 10, 2.0**-9 * 10, 2.0**-8 * 10], rel=0.1)


def test_alike_limit_is_where_accuracy_leaves_the_band():
    # alike up to B=32, then falling; the middle temperature is the best one; a diverged run ends the line
    def accuracy(b, t):
        bonus = 0.05 if t == 2.0**-9 else 0.0
        return 0.8 + bonus - (0.03 * math.log2(b / 32) if b > 32 else 0.001 * math.log2(b))
    t, limit = analysis.alike_limit(analysis.temperature_cells(synthetic_runs(accuracy)), tolerance=0.02)
    assert t == pytest.approx(2.0**-9) and limit == 32
    diverging = lambda b, t: None if b == 8 else accuracy(b, t)  # noqa: E731
    assert analysis.alike_limit(analysis.temperature_cells(synthetic_runs(diverging)))[1] == 4


def test_log_fit_known_line_and_noise():
    x = np.array([1, 10, 100, 1000, 10000], float)
    slope, rsq = analysis.log_fit(x, 2 + 3 * np.log(x))
    assert slope == pytest.approx(3) and rsq == pytest.approx(1)
    slope, rsq = analysis.log_fit(x, np.array([1.0, -1.0, 1.0, -1.0, 1.0]))
    assert rsq < 0.2
    assert math.isnan(analysis.log_fit([0, 1, 2], [1, 2, 3])[0])  # x = 0 is dropped: too few points


def test_noise_scale_at_target_reads_the_first_measurement_past_the_target():
    runs = synthetic_runs(lambda b, t: 0.9, lrs_per_example=(2.0**-9,), seeds=(0,))
    runs = runs[runs["batch_size"].isin([4, 64])]
    rows = []
    for r in runs.itertuples():
        for step, acc in enumerate([0.1, 0.4, 0.6, 0.8]):
            # B_simple = trace / grad_sq = 10 * (step + 1) * B
            rows.append({"run_id": r.run_id, "dataset": "d", "arch": "mlp", "batch_size": r.batch_size, "lr": r.lr,
                         "step": step, "epoch": step, "examples": step * r.batch_size, "test_acc": acc,
                         "train_loss": 1.0 / (step + 1), "noise_grad_sq": 0.1,
                         "noise_trace": (step + 1) * r.batch_size})
    history = pd.DataFrame(rows)
    # 0.5 is first reached at step 2: that evaluation alone (decay 0) has B_simple 30 * B; the median of
    # B = 4 and 64 is 30 * 34
    assert analysis.noise_scale_at_target(runs, history, 0.5, decay=0) == pytest.approx(30 * 34)
    # decay 0.5: the trace's debiased average over B * (1, 2, 3) is B (0.125 + 0.5 + 1.5) / 0.875 = B 17/7
    assert analysis.noise_scale_at_target(runs, history, 0.5, decay=0.5) == pytest.approx(10 * 34 * 17 / 7)
    assert math.isnan(analysis.noise_scale_at_target(runs, history, 0.95))
