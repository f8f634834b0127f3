"""batchlab.spread: the interval around a seed mean (min-max below 3 seeds, else the percentile bootstrap,
exact where the distinct resamples are few), on answers known by hand and a coverage simulation; the words a
legend uses for it; the span the heatmap marks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batchlab import config, spread


def cells(*groups) -> pd.DataFrame:
    """One row per value: cell ``i`` holds the values of ``groups[i]``."""
    return pd.DataFrame([{"cell": i, "seed": s, "v": v} for i, g in enumerate(groups) for s, v in enumerate(g)])


def test_fewer_than_three_seeds_give_their_min_and_max():
    band = spread.seed_band(cells([0.2, 0.5], [0.7]), ["cell"], "v").set_index("cell")
    assert band.loc[0, ["mean", "lo", "hi"]].tolist() == pytest.approx([0.35, 0.2, 0.5])
    assert band.loc[1, ["mean", "lo", "hi"]].tolist() == pytest.approx([0.7, 0.7, 0.7])
    assert band["n_seeds"].tolist() == [2, 1] and set(band["kind"]) == {"min-max"}


def test_a_missing_value_is_left_out_and_a_cell_without_any_has_no_row():
    band = spread.seed_band(cells([1.0, math.nan, 3.0], [math.nan]), ["cell"], "v")
    assert band["cell"].tolist() == [0]
    assert band[["mean", "lo", "hi", "n_seeds"]].iloc[0].tolist() == [2.0, 1.0, 3.0, 2]
    assert band["kind"].tolist() == ["min-max"]


def test_the_exact_bootstrap_of_three_seeds_by_hand():
    # the sum of 3 draws from {0, 1, 2} is 0..6 with probabilities 1, 3, 6, 7, 6, 3, 1 (/27): at 90% the 5%
    # and 95% points are the means 1/3 and 5/3; at 95%, 1/27 > 2.5% puts them at the extremes
    data = cells([0.0, 1.0, 2.0])
    at_90 = spread.seed_band(data, ["cell"], "v", level=0.9).iloc[0]
    assert (at_90["lo"], at_90["hi"], at_90["kind"]) == (pytest.approx(1 / 3), pytest.approx(5 / 3), "bootstrap")
    at_95 = spread.seed_band(data, ["cell"], "v", level=0.95).iloc[0]
    assert (at_95["lo"], at_95["hi"]) == (pytest.approx(0.0), pytest.approx(2.0))


def test_the_exact_draws_are_every_multiset_with_its_probability_and_many_seeds_draw_at_random():
    counts, p = spread.draws(3, 1000, 0)
    assert len(counts) == 10 and (counts.sum(axis=1) == 3).all() and p.sum() == pytest.approx(1)
    assert p[(counts == [1, 1, 1]).all(axis=1)] == pytest.approx(6 / 27)
    counts, p = spread.draws(10, 500, 0)  # C(19, 10) = 92,378 distinct draws: 500 random ones
    assert counts.shape == (500, 10) and (p == 1 / 500).all()


def test_the_bootstrap_interval_of_identical_values_is_a_point():
    for n in (3, 10):  # exact and random draws
        band = spread.seed_band(cells([0.42] * n), ["cell"], "v").iloc[0]
        assert band["lo"] == pytest.approx(0.42) and band["hi"] == pytest.approx(0.42)


def test_the_interval_covers_the_true_mean_of_ten_normal_seeds_at_about_its_level():
    rng = np.random.default_rng(7)
    trials = rng.normal(0.0, 1.0, size=(1000, 10))
    data = pd.DataFrame({"cell": np.repeat(np.arange(1000), 10), "v": trials.ravel()})
    band = spread.seed_band(data, ["cell"], "v", level=0.95, resamples=1000, seed=3)
    covered = ((band["lo"] <= 0) & (band["hi"] >= 0)).mean()
    assert 0.85 <= covered <= 0.99  # the percentile bootstrap of 10 seeds covers a little under its level
    assert ((band["lo"] <= band["mean"]) & (band["mean"] <= band["hi"])).all()
    narrower = spread.seed_band(data, ["cell"], "v", level=0.5, resamples=1000, seed=3)
    assert ((narrower["lo"] <= 0) & (narrower["hi"] >= 0)).mean() < covered - 0.2


def test_a_cells_interval_depends_on_its_values_and_the_seed_only():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"cell": np.repeat(np.arange(30), 8), "v": rng.normal(size=240)})
    full = spread.seed_band(data, ["cell"], "v", seed=5).set_index("cell")
    alone = spread.seed_band(data[data["cell"] == 17], ["cell"], "v", seed=5).set_index("cell")
    # the same draws, so the same interval to rounding (numpy's vectorized means of 30 cells and of one sum
    # in another order on some CPUs: 1 ulp); other draws would move it by a tenth
    assert alone.loc[17, ["lo", "hi"]].tolist() == pytest.approx(full.loc[17, ["lo", "hi"]].tolist(), rel=1e-12)
    assert spread.seed_band(data, ["cell"], "v", seed=5).equals(full.reset_index())
    other = spread.seed_band(data, ["cell"], "v", seed=6).set_index("cell")
    assert not np.allclose(other["lo"], full["lo"])


def test_keys_group_cells_whatever_the_row_order():
    data = pd.DataFrame({"a": ["x", "y", "x", "y", "x", "y"], "b": [2, 1, 2, 1, 2, 1], "v": [1, 10, 2, 20, 3, 30.0]})
    band = spread.seed_band(data.iloc[::-1], ["a", "b"], "v", level=0.9)
    assert band[["a", "b"]].values.tolist() == [["x", 2], ["y", 1]]
    assert band[["lo", "hi"]].to_numpy().ravel() == pytest.approx([4 / 3, 8 / 3, 40 / 3, 80 / 3])


def test_the_words_say_which_interval_the_bands_are():
    assert spread.describe(spread.seed_band(cells([1, 2, 3]), ["cell"], "v")) == "band: 95% bootstrap interval over seeds"
    assert spread.describe(spread.seed_band(cells([1, 2]), ["cell"], "v")) == "band: min-max of 2 seeds"
    mixed = spread.seed_band(cells([1, 2, 3], [1, 2]), ["cell"], "v")
    assert spread.describe(mixed, 0.9, "bars") == "bars: 90% bootstrap interval over seeds (min-max where fewer than 3 seeds)"
    assert spread.describe(spread.seed_band(cells([1], [1, 2]), ["cell"], "v")) == "band: min-max of 1–2 seeds"
    assert spread.describe(spread.seed_band(cells([math.nan]), ["cell"], "v")) == ""


def test_the_span_of_a_cells_seeds():
    span = spread.seed_span(cells([0.5, 0.53, 0.51], [0.7], [0.2, math.nan]), ["cell"], "v")
    assert span["span"].tolist() == pytest.approx([0.03, 0.0, 0.0]) and span["n_seeds"].tolist() == [3, 1, 1]


def test_the_defaults_are_the_schemas(tiny_raw):
    analysis = config.validate(tiny_raw)["analysis"]
    assert {k: analysis[k] for k in spread.DEFAULTS} == spread.DEFAULTS
    assert spread.settings({"level": 0.9}) == {**spread.DEFAULTS, "level": 0.9}
    assert spread.interval({"disagreement": 0.1, "seed": 4}) == {"level": 0.95, "resamples": 1000, "seed": 4}
