"""batchlab.plots: the figures draw what the tables hold (one curve per batch size at its best learning rate,
one line per noise temperature, the fitted critical-batch trade-off, the variants' bars), on the tiny study of
tests/test_numbers.py."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer

from batchlab import analysis, fits, plots
from batchlab.plots_batch_size import _seed_band

from studies import with_variants


@pytest.fixture(scope="session")
def aggregated(small_tables):
    """The small study (studies.SMALL_STUDY) aggregated: (history, runs)."""
    return small_tables


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("name", ["distance", "grad_norms"])
def test_dynamics_figures_draw_one_curve_per_batch_size_at_its_best_lr(aggregated, name):
    history, runs = aggregated
    fig = getattr(plots, name)(runs, history)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["logistic regression", "MLP"]
    column = "dist_init" if name == "distance" else "grad_norm_q50"
    curves = analysis.best_lr_curves(runs, history, [column])
    for ax, arch in zip(axes, ("logreg", "mlp")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"B=8", "B=32", "B=128"}
        c = curves[(curves["arch"] == arch) & (curves["batch_size"] == 32) & (curves["step"] > 0)]
        assert list(lines["B=32"].get_ydata()) == pytest.approx(list(c[column]))
    assert axes[0].get_xscale() == ("log" if name == "distance" else "linear")


def a_third_seed(runs, history):
    """The small study with a made-up third seed: seed 0's runs again, their noise trace 1.5 times larger."""
    def third(table):
        extra = table[table["seed"] == 0].assign(seed=2, run_id=lambda t: t["run_id"] + "-third")
        return pd.concat([table, extra], ignore_index=True)
    history = third(history.merge(runs[["run_id", "seed"]], on="run_id", suffixes=("_h", "")))
    history = history.assign(noise_trace=history["noise_trace"].where(history["seed"] != 2, 1.5 * history["noise_trace"]))
    return third(runs), history


@pytest.mark.parametrize("seeds", [2, 3])
def test_noise_scale_figure_draws_the_smoothed_line_a_band_over_seeds_and_the_raw_points(aggregated, seeds):
    history, runs = aggregated
    if seeds == 3:
        runs, history = a_third_seed(runs, history)
    fig = plots.noise_scale(runs, history, resamples=200)
    curves = analysis.noise_scale_curves(runs, history)
    per_run = analysis.noise_scale_runs(runs, history)
    mlp = visible_axes(fig)[1]
    c = curves[(curves["arch"] == "mlp") & (curves["batch_size"] == 32) & (curves["b_simple"] > 0)]
    line = next(line for line in mlp.get_lines() if line.get_label() == "B=32")
    assert list(line.get_ydata()) == pytest.approx(list(c["b_simple"]))  # smoothed, not one evaluation alone
    assert any(list(p.get_ydata()) == pytest.approx(list(curves[(curves["arch"] == "mlp") & (curves["batch_size"] == 32)
               & (curves["b_simple_raw"] > 0)]["b_simple_raw"])) for p in mlp.get_lines() if p.get_alpha())
    bands = mlp.collections
    assert len(bands) == 3  # one band per batch size
    own = per_run[(per_run["arch"] == "mlp") & (per_run["batch_size"] == 32)].groupby("step")["b_simple"]
    y = bands[1].get_paths()[0].vertices[:, 1]
    kind = "min–max over seeds" if seeds == 2 else "95% bootstrap interval of the seed mean"
    assert kind in [t.get_text() for t in fig.legends[0].get_texts()]
    if seeds == 2:  # the band spans the seeds' own smoothed noise scales
        assert y.min() == pytest.approx(own.min()[own.min() > 0].min()) and y.max() == pytest.approx(own.max().max())
    else:  # within them: a resampled mean of seeds lies between the smallest and the largest seed
        assert own.min().min() * (1 - 1e-9) <= y.min() and y.max() <= own.max().max() * (1 + 1e-9)


def test_the_band_over_seeds_by_hand():
    rng = np.random.default_rng(0)
    assert _seed_band([2.0, 6.0], [1.0, 2.0], 0.95, 100, rng) == (2.0, 3.0, "min–max over seeds")
    same = _seed_band([4.0, 4.0, 4.0], [2.0, 2.0, 2.0], 0.95, 100, rng)
    assert same == (pytest.approx(2.0), pytest.approx(2.0), "95% bootstrap interval of the seed mean")
    lo, hi, _ = _seed_band([1.0, 2.0, 8.0, 3.0], [1.0, 1.0, 1.0, 1.0], 0.9, 2000, rng)
    assert 1.0 <= lo < 3.5 < hi <= 8.0  # around the mean 3.5, inside the seeds' range
    wide, _, _ = _seed_band([1.0, 2.0, 8.0, 3.0], [1.0, 1.0, 1.0, 1.0], 0.99, 2000, np.random.default_rng(0))
    assert wide <= lo


def test_noise_temperature_figure_draws_one_line_per_temperature(aggregated):
    _, runs = aggregated
    fig = plots.noise_temperature(runs)
    mlp = visible_axes(fig)[1]
    cells = analysis.temperature_cells(runs[runs["arch"] == "mlp"])
    labelled = [line for line in mlp.get_lines() if line.get_label().startswith("T=")]
    assert len(labelled) == cells["temperature_bin"].nunique() == 2
    for line in labelled:  # each line: one temperature across the batch sizes
        assert list(line.get_xdata()) == [8, 32, 128]


def test_critical_batch_figure_draws_the_fitted_trade_off(aggregated):
    _, runs = aggregated
    fig = plots.critical_batch(runs)
    table = analysis.critical_batches(runs)
    assert (table["fit_good"] == (table["fit_r2"] >= fits.GOOD_FIT_R2)).all()
    assert table["extrapolated"].dtype == bool
    fitted = table.set_index("arch")
    for ax, arch in zip(visible_axes(fig), ("logreg", "mlp")):
        if math.isnan(fitted.loc[arch, "target"]):
            assert "no target reached" in [t.get_text() for t in ax.texts]
            continue
        fit = [line for line in ax.get_lines() if line.get_label().startswith("fit")]
        if math.isfinite(fitted.loc[arch, "e_min"]):
            examples, steps = fit[0].get_xdata(), fit[0].get_ydata()
            b = examples / steps  # every point of the curve lies on S = S_min + E_min / B
            assert steps == pytest.approx(fitted.loc[arch, "s_min"] + fitted.loc[arch, "e_min"] / b)



def test_the_variants_figures_without_and_with_variant_runs(aggregated):
    history, runs = aggregated
    for fig in (plots.budgets(runs), plots.batch_schedules(runs, history)):  # a study without variants
        assert "no " in fig.axes[0].texts[0].get_text()
    fig = plots.budgets(with_variants(runs, 0.505, True))
    bars = [p.get_height() for p in fig.axes[0].patches]  # mlp: fixed epochs at 8, 128, then fixed steps
    best = analysis.best_per_batch(analysis.seed_mean(runs[runs["arch"] == "mlp"])).set_index("batch_size")["final_test_acc"]
    assert bars == pytest.approx([best[8], best[128], best[8], best[128] + 0.05])


# -- the spread between seeds ------------------------------------------------------------------------------

BANDED = {  # figure -> (takes the history, draws bands (True) or error bars (False))
    "accuracy_vs_base_lr": (False, True), "noise_temperature": (False, True), "learning_curves": (True, True),
    "generalization_gap": (False, True), "steps_to_target": (False, True), "distance": (True, True),
    "grad_norms": (True, False), "critical_batch": (False, False), "sharpness": (False, False),
}


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.mark.parametrize("name", BANDED)
def test_figures_of_seed_means_draw_the_spread_between_seeds_and_say_what_it_is(aggregated, name):
    history, runs = aggregated
    with_history, bands = BANDED[name]
    fig = getattr(plots, name)(runs, history, {}) if with_history else getattr(plots, name)(runs, {})
    axes = visible_axes(fig)
    if bands:
        assert any(isinstance(c, PolyCollection) for ax in axes for c in ax.collections)
    else:
        assert any(isinstance(c, ErrorbarContainer) for ax in axes for c in ax.containers)
    noun = "band" if bands else "bars"
    assert f"{noun}: min-max of 2 seeds" in legend_texts(fig)  # the small study has 2 seeds


def test_a_band_spans_the_seeds_of_each_cell_and_three_seeds_give_a_bootstrap_interval(aggregated):
    _, runs = aggregated
    fig = plots.accuracy_vs_base_lr(runs)
    mlp = visible_axes(fig)[1]
    lines = {line.get_label(): line for line in mlp.get_lines()}
    band = next(c for c in mlp.collections if isinstance(c, PolyCollection)
                and np.allclose(c.get_facecolor()[0][:3], lines["B=32"].get_color()[:3]))
    heights = band.get_paths()[0].vertices[:, 1]
    seeds = runs[(runs["arch"] == "mlp") & (runs["batch_size"] == 32)].groupby("lr")["final_test_acc"]
    for low, high in zip(seeds.min(), seeds.max()):
        assert np.isclose(heights, 100 * low).any() and np.isclose(heights, 100 * high).any()
    third = runs[runs["seed"] == 0].assign(seed=2, final_test_acc=lambda r: r["final_test_acc"] + 0.01)
    fig = plots.accuracy_vs_base_lr(pd.concat([runs, third], ignore_index=True), {"level": 0.9})
    assert "band: 90% bootstrap interval over seeds" in legend_texts(fig)


def test_the_heatmap_marks_the_cells_whose_seeds_disagree_and_no_others(aggregated):
    _, runs = aggregated
    runs = runs.copy()
    first = runs.sort_values("seed").groupby(analysis.CELL)["final_test_acc"].transform("first")
    runs["final_test_acc"] = first  # every seed agrees...
    odd = (runs["arch"] == "mlp") & (runs["batch_size"] == 32) & (runs["lr_grid_value"] == runs["lr_grid_value"].max())
    runs.loc[odd & (runs["seed"] == 1), "final_test_acc"] += 0.03  # ...but in one cell, by 3 points
    for threshold, marked in ((0.02, 1), (0.05, 0)):
        fig = plots.heatmap(runs, {"disagreement": threshold})
        logreg, mlp = visible_axes(fig)
        dots = {ax: next(line for line in ax.get_lines() if line.get_gid() == "disagree") for ax in (logreg, mlp)}
        assert len(dots[logreg].get_xdata()) == 0 and len(dots[mlp].get_xdata()) == marked
        assert any(f"span more than {100 * threshold:g} points" in t for t in legend_texts(fig))
    fig = plots.heatmap(runs, {"disagreement": 0.02})
    x, y = (v[0] for v in next(line for line in visible_axes(fig)[1].get_lines() if line.get_gid() == "disagree").get_data())
    assert (round(x), round(y)) == (1, 1)  # the largest lr (column 1) at B=32 (row 1)


def test_the_budgets_bars_are_the_spread_of_the_seeds_of_each_bar(aggregated):
    _, runs = aggregated
    fig = plots.budgets(with_variants(runs, 0.505, True))
    (ax,) = visible_axes(fig)
    epochs, steps = (c for c in ax.containers if isinstance(c, ErrorbarContainer))
    main = runs[runs["arch"] == "mlp"]
    best = analysis.best_per_batch(analysis.seed_mean(main)).set_index("batch_size")["lr"]
    for segment, b in zip(epochs.lines[2][0].get_segments(), (8, 128)):  # the main grid's seeds at the best lr
        seeds = main[(main["batch_size"] == b) & (main["lr"] == best[b])]["final_test_acc"]
        assert sorted(segment[:, 1]) == pytest.approx([seeds.min(), seeds.max()])
    assert all(np.ptp(segment[:, 1]) == 0 for segment in steps.lines[2][0].get_segments())  # its seeds agree
    assert "bars: min-max of 2 seeds" in legend_texts(fig)


def test_the_schedule_curves_carry_the_spread_of_their_seeds(aggregated):
    _, runs = aggregated
    runs = with_variants(runs, 0.505, True)
    runs["batch_drop_steps"] = np.where(runs["variant"] == "drop", "[10]", None)
    variants = runs[runs["variant"].fillna("") != ""]
    history = pd.DataFrame([
        {"run_id": r.run_id, "dataset": r.dataset, "arch": r.arch, "batch_size": r.batch_size, "lr": r.lr,
         "seed": r.seed, "step": step, "epoch": step / 10, "examples": step * r.batch_size,
         "test_acc": r.final_test_acc * step / 20, "train_loss": 1.0}
        for r in variants.itertuples() for step in (10, 20)])
    fig = plots.batch_schedules(runs, history)
    per_epoch = visible_axes(fig)[0]
    decay = next(line for line in per_epoch.get_lines() if line.get_label() == "lr decay")
    band = next(c for c in per_epoch.collections if isinstance(c, PolyCollection)
                and np.allclose(c.get_facecolor()[0][:3], to_rgb(decay.get_color())))
    heights = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(heights, 0.50).any() and np.isclose(heights, 0.52).any()  # its two seeds at the end
    assert "band: min-max of 2 seeds" in legend_texts(fig)
