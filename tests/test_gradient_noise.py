"""batchlab.gradient_noise with known answers: the debiased moving average (a constant stays itself, a step
change by hand, decay 0 leaves the values), each run smoothed on its own in step order, and the seed means
of the smoothed numerator and denominator divided last."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batchlab import gradient_noise


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.99])
def test_the_moving_average_of_a_constant_is_that_constant(decay):
    assert gradient_noise.ema(np.full(7, 2.5), decay) == pytest.approx(np.full(7, 2.5))


def test_the_moving_average_of_a_step_change_by_hand():
    # decay 0.5 from m_0 = 0: m = 0.5, 0.75, 1.875, 2.4375, divided by 1 - 0.5^t = 0.5, 0.75, 0.875, 0.9375
    assert gradient_noise.ema([1.0, 1.0, 3.0, 3.0], 0.5) == pytest.approx([1.0, 1.0, 15 / 7, 13 / 5])
    assert gradient_noise.ema([4.0, -2.0, 7.0], 0.0) == pytest.approx([4.0, -2.0, 7.0])  # decay 0: the values
    assert gradient_noise.ema([], 0.9).shape == (0,)
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            gradient_noise.ema([1.0], decay)


def test_the_default_decay_is_the_schemas():
    assert gradient_noise.analysis_default("noise_ema") == 0.5
    assert gradient_noise.analysis_default("level") == 0.95


def history(grad_sq: dict[int, list[float]], trace: dict[int, list[float]], steps=(0, 10, 20, 30)) -> pd.DataFrame:
    """Noise-scale rows of one cell (batch size 8), one run per seed, rows in reverse step order."""
    rows = [{"run_id": f"r{seed}", "seed": seed, "dataset": "d", "arch": "mlp", "batch_size": 8, "lr": 0.1,
             "step": step, "train_loss": 1.0, "test_acc": 0.5, "noise_grad_sq": g, "noise_trace": t}
            for seed in grad_sq for step, g, t in zip(steps, grad_sq[seed], trace[seed])]
    return pd.DataFrame(rows[::-1])


def test_each_run_is_smoothed_alone_in_step_order():
    rows = gradient_noise.smooth(history({0: [1, 1, 1, 1], 1: [2, 2, 2, 2]}, {0: [1, 1, 3, 3], 1: [5, 5, 5, 5]}), 0.5)
    r0 = rows[rows["run_id"] == "r0"]
    assert list(r0["step"]) == [0, 10, 20, 30]
    assert r0["noise_trace_ema"].to_numpy() == pytest.approx([1.0, 1.0, 15 / 7, 13 / 5])
    assert r0["b_simple"].to_numpy() == pytest.approx([1.0, 1.0, 15 / 7, 13 / 5])
    assert rows[rows["run_id"] == "r1"]["b_simple"].to_numpy() == pytest.approx([2.5] * 4)  # not mixed with r0


def test_the_curve_divides_the_seed_means_of_the_smoothed_estimates():
    h = history({0: [1.0, 3.0, 2.0, 0.5], 1: [-1.0, 2.0, 4.0, 1.0]}, {0: [10.0, 40.0, 20.0, 30.0], 1: [6.0, 9.0, 50.0, 20.0]})
    curves = gradient_noise.curves(gradient_noise.smooth(h, 0.9))
    assert list(curves.columns) == gradient_noise.CURVE_COLUMNS
    assert list(curves["progress"]) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    ema = {(seed, c): gradient_noise.ema(g.sort_values("step")[c].to_numpy(), 0.9)
           for seed, g in h.groupby("seed") for c in ("noise_trace", "noise_grad_sq")}
    numerator, denominator = (ema[0, c] + ema[1, c] for c in ("noise_trace", "noise_grad_sq"))
    assert curves["b_simple"].iloc[1:].to_numpy() == pytest.approx(numerator[1:] / denominator[1:])
    # at step 0 the mean |G|^2 is 0 (1 and -1): no noise scale, smoothed or raw
    assert denominator[0] == 0 and math.isnan(curves["b_simple"].iloc[0]) and math.isnan(curves["b_simple_raw"].iloc[0])
    # the raw ratio: the seed means of one evaluation alone
    assert curves["b_simple_raw"].iloc[1:].to_numpy() == pytest.approx([49 / 5, 70 / 6, 50 / 1.5])


def test_decay_zero_gives_the_raw_ratio():
    h = history({0: [1.0, 3.0, 2.0, 0.5], 1: [0.5, 2.0, 4.0, 1.0]}, {0: [10.0, 40.0, 20.0, 30.0], 1: [6.0, 9.0, 50.0, 20.0]})
    curves = gradient_noise.curves(gradient_noise.smooth(h, 0.0))
    assert curves["b_simple"].to_numpy() == pytest.approx(curves["b_simple_raw"].to_numpy())
    assert curves["b_simple"].to_numpy() == pytest.approx([16 / 1.5, 49 / 5, 70 / 6, 50 / 1.5])


def test_no_noise_scale_where_the_smoothed_gradient_is_not_positive():
    rows = gradient_noise.smooth(history({0: [-1.0, -1.0, 0.0, 4.0]}, {0: [1.0, 1.0, 1.0, 1.0]}), 0.0)
    assert rows["b_simple"].isna().tolist() == [True, True, True, False]
    assert gradient_noise.curves(rows.iloc[:0]).empty
