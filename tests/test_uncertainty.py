"""batchlab.uncertainty: the bootstrap over seeds on known answers (exact resamples and their
probabilities, coverage in a seeded simulation), and the three-valued verdict of a margin."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batchlab import analysis, uncertainty
from batchlab.uncertainty import FAILS, HOLDS, INCONCLUSIVE


def test_three_seeds_give_their_ten_distinct_resamples_with_exact_probabilities():
    draws = uncertainty.seed_resamples([7, 3, 5], resamples=1000)
    assert len(draws) == 10 == uncertainty.distinct_resamples(3)
    weight = {d.seeds: d.weight for d in draws}
    assert weight[(3, 3, 3)] == pytest.approx(1 / 27)
    assert weight[(3, 5, 7)] == pytest.approx(6 / 27)
    assert weight[(3, 3, 7)] == pytest.approx(3 / 27)
    assert sum(weight.values()) == pytest.approx(1.0)


def test_more_distinct_resamples_than_asked_are_drawn_at_random_and_reproducibly():
    first = uncertainty.seed_resamples(range(8), resamples=200, seed=1)
    assert len(first) == 200 and all(len(d.seeds) == 8 and d.weight == 1 / 200 for d in first)
    assert first == uncertainty.seed_resamples(range(8), resamples=200, seed=1)
    assert first != uncertainty.seed_resamples(range(8), resamples=200, seed=2)


def test_resample_table_repeats_a_seed_drawn_twice_as_runs_of_their_own():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "seed": [0, 1, 2], "acc": [0.1, 0.2, 0.3]})
    out = uncertainty.resample_table(runs, (0, 0, 2))
    assert list(out["acc"]) == [0.1, 0.1, 0.3]
    assert out["run_id"].is_unique and out["seed"].nunique() == 3


def test_weighted_quantile_and_interval():
    assert uncertainty.weighted_quantile([4, 1, 3, 2], [0.25] * 4, 0.5) == 2
    assert uncertainty.weighted_quantile([1, 2, math.nan], [0.5, 0.25, 0.25], 0.6) == 1  # NaN left out: 2/3, 1/3
    assert uncertainty.weighted_quantile([1, 2, math.nan], [0.5, 0.25, 0.25], 0.7) == 2
    assert uncertainty.interval([1, 2, 3], [0.01, 0.98, 0.01], 0.95) == (2, 2)  # tails lighter than 2.5%
    assert uncertainty.interval([1, 2, 3], [0.03, 0.94, 0.03], 0.95) == (1, 3)


def _coverage(n_seeds: int, trials: int, resamples: int, level: float) -> float:
    """How often the percentile interval of a seed mean covers the true mean, over seeded trials of
    ``n_seeds`` normal seeds."""
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(trials):
        values = rng.normal(0.9, 0.02, size=n_seeds)
        draws = uncertainty.seed_resamples(range(n_seeds), resamples, seed=trial)
        means = [values[list(d.seeds)].mean() for d in draws]
        lo, hi = uncertainty.interval(means, [d.weight for d in draws], level)
        hits += lo <= 0.9 <= hi
    return hits / trials


def test_the_interval_of_a_mean_covers_the_true_mean_at_about_its_level():
    # 10 seeds, 95%: the percentile bootstrap covers a bit less than 95% at so few (about 0.91 here)
    assert 0.87 <= _coverage(10, trials=300, resamples=300, level=0.95) <= 0.98
    # 3 seeds: the interval is the range of the seeds, which misses the mean when all three fall on one side
    # of it: probability 2 / 2^3, coverage 0.75, which the paper's text states
    assert _coverage(3, trials=600, resamples=1000, level=0.95) == pytest.approx(0.75, abs=0.05)


def test_a_verdict_holds_fails_or_is_inconclusive_by_the_interval_of_its_margin():
    weights = [0.25] * 4
    assert uncertainty.judge(0.05, [0.04, 0.05, 0.06, 0.05], weights, 0.95, 3).state == HOLDS
    assert uncertainty.judge(-0.05, [-0.04, -0.05, -0.06, 0.0], weights, 0.95, 3).state == FAILS
    # the same observed effect, within the noise of its resamples: inconclusive
    within = uncertainty.judge(0.05, [-0.10, 0.05, 0.20, 0.05], weights, 0.95, 3)
    assert within.state == INCONCLUSIVE and within.lo < 0 < within.hi
    # more than the tail of the resamples cannot compute the margin: inconclusive
    assert uncertainty.judge(0.05, [0.04, math.nan, 0.06, 0.05], weights, 0.95, 3).state == INCONCLUSIVE


def test_seeds_needed_grow_with_the_noise_and_shrink_with_the_effect():
    weights = [0.5, 0.5]
    se_small = uncertainty.seeds_needed(0.05, [0.04, 0.06], weights, 0.95, 3)
    se_large = uncertainty.seeds_needed(0.05, [0.0, 0.10], weights, 0.95, 3)
    # se 0.01 and 0.05; n (z se / margin)^2 = 3 (1.96 * 0.2)^2 = 0.46 -> at least 2; 3 (1.96)^2 = 11.5 -> 12
    assert se_small == 2 and se_large == 12
    assert uncertainty.seeds_needed(0.0, [0.0, 0.1], weights, 0.95, 3) == math.inf


def _two_lrs(acc: dict[float, list[float]]) -> pd.DataFrame:
    rows = [{"dataset": "d", "arch": "mlp", "batch_size": 8, "lr": lr, "lr_grid_value": lr, "seed": s,
             "base_lr": lr, "final_test_acc": a, "final_train_acc": a, "gap_acc": 0.0, "gap_loss": 0.0,
             "best_test_acc": a, "final_dist_init": 1.0, "final_test_loss": 1.0, "diverged": False,
             "run_id": f"{lr}-{s}"}
            for lr, accs in acc.items() for s, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_the_best_learning_rate_chosen_inside_the_bootstrap_widens_its_interval():
    runs = _two_lrs({0.1: [0.90, 0.80, 0.86], 0.2: [0.84, 0.86, 0.85]})  # means 0.853 and 0.850
    chosen = analysis.best_per_batch(analysis.seed_mean(runs)).iloc[0]
    assert chosen["lr"] == 0.1
    draws = uncertainty.seed_resamples(range(3))
    weights = [d.weight for d in draws]
    inside, outside = [], []
    for d in draws:
        cells = analysis.seed_mean(uncertainty.resample_table(runs, d.seeds))
        inside.append(analysis.best_per_batch(cells).iloc[0]["lr"])  # chosen again on each resample
        outside.append(chosen["lr"])  # chosen once, on the study
    assert uncertainty.interval(outside, weights) == (0.1, 0.1)
    assert uncertainty.interval(inside, weights) == (0.1, 0.2)
