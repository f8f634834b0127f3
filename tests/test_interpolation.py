"""batchlab.interpolation: the 1-D interpolation between the small- and the large-batch solutions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from batchlab import interpolation, packs, sequential, store, tables
from studies import tiny_specs

CPU = torch.device("cpu")


def test_alphas_are_evenly_spaced_and_hold_both_solutions():
    values = interpolation.alphas(25, -1.0, 2.0)
    assert len(values) == 25 and values[0] == -1.0 and values[-1] == 2.0
    assert values == pytest.approx([-1 + i / 8 for i in range(25)], abs=0)  # steps of 1/8 are exact
    assert 0.0 in values and 1.0 in values
    assert interpolation.alphas(4, -1.0, 2.0) == [-1.0, 0.0, 1.0, 2.0]  # 0 and 1 are on this grid
    assert interpolation.alphas(3, -0.5, 1.5) == [-0.5, 0.0, 0.5, 1.0, 1.5]  # ... and added to this one
    assert interpolation.alphas(0, -1.0, 2.0) == []


def test_interpolation_is_linear_in_every_floating_tensor():
    small = {"w": torch.tensor([[1.0, -2.0]]), "bn.running_var": torch.tensor([1.0]), "bn.num_batches_tracked": torch.tensor(3)}
    large = {"w": torch.tensor([[3.0, 2.0]]), "bn.running_var": torch.tensor([5.0]), "bn.num_batches_tracked": torch.tensor(9)}
    at = interpolation.interpolate(small, large, 0.25)
    assert torch.equal(at["w"], torch.tensor([[1.5, -1.0]]))  # 0.25 * large + 0.75 * small
    assert torch.equal(at["bn.running_var"], torch.tensor([2.0]))
    assert at["bn.num_batches_tracked"].item() == 3  # integer buffers: the small-batch end's
    assert torch.equal(interpolation.interpolate(small, large, -1.0)["w"], torch.tensor([[-1.0, -6.0]]))  # beyond small
    assert torch.equal(interpolation.interpolate(small, large, 2.0)["w"], torch.tensor([[5.0, 6.0]]))  # beyond large
    for alpha, end in ((0.0, small), (1.0, large)):  # exactly the two solutions
        assert all(torch.equal(interpolation.interpolate(small, large, alpha)[k], end[k]) for k in ("w", "bn.running_var"))
    with pytest.raises(ValueError, match="name different tensors"):
        interpolation.interpolate(small, {"w": large["w"]}, 0.5)


def test_pairs_take_the_best_learning_rate_at_each_end_seed_by_seed():
    rows = []
    for batch, lr, acc, diverged in ((8, 0.1, 0.6, False), (8, 0.2, 0.7, False), (8, 0.4, 0.9, True),
                                     (64, 0.1, 0.5, False), (64, 0.2, 0.4, False), (16, 0.1, 0.99, False)):
        for seed in (0, 1):
            rows.append({"dataset": "d", "arch": "a", "batch_size": batch, "lr_grid_value": lr, "lr": lr,
                         "base_lr": lr / batch, "seed": seed, "run_id": f"b{batch}-lr{lr}-s{seed}",
                         "final_test_acc": acc, "diverged": diverged and seed == 1,
                         **{m: 0.0 for m in ("final_train_acc", "gap_acc", "gap_loss", "best_test_acc",
                                             "final_dist_init", "final_test_loss")}})
    runs = pd.DataFrame(rows)
    chosen = interpolation.pairs(runs, "d", "a", 8, 64)
    # lr 0.4 is best at batch 8 but diverged in one seed: 0.2 is taken; at batch 64, 0.1
    assert chosen.to_dict("records") == [
        {"seed": 0, "small_run_id": "b8-lr0.2-s0", "large_run_id": "b64-lr0.1-s0", "small_lr": 0.2, "large_lr": 0.1},
        {"seed": 1, "small_run_id": "b8-lr0.2-s1", "large_run_id": "b64-lr0.1-s1", "small_lr": 0.2, "large_lr": 0.1}]
    assert interpolation.pairs(runs, "d", "a", 8, 128).empty  # an end without runs


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_the_two_ends_reproduce_their_runs_and_the_weights_are_the_trained_ones(engine, mnist1d_npz, mnist1d_tensors, tmp_path):
    specs = tiny_specs(seeds=[0, 1])  # batch sizes 8 and 32: both ends keep their weights
    assert all(s.get("keep_weights") for s in specs)
    root = tmp_path / "runs"
    packs.train_pack([s for s in specs if s["batch_size"] == 8], str(mnist1d_npz), str(root), device="cpu", engine=engine)
    packs.train_pack([s for s in specs if s["batch_size"] == 32], str(mnist1d_npz), str(root), device="cpu", engine=engine)
    final_state = {}
    sequential.train_run(specs[0], mnist1d_tensors, CPU, final_state=final_state)
    kept = store.read_weights(root, specs[0]["run_id"])
    assert kept.keys() == final_state.keys()
    for name in kept:  # float32 rounding of the stacked model aside, the trained weights
        torch.testing.assert_close(kept[name], final_state[name], rtol=0 if engine == "sequential" else 1e-5,
                                   atol=0 if engine == "sequential" else 1e-6)

    _, runs = tables.aggregate([store.summary_path(root, s["run_id"]) for s in specs])
    table = interpolation.interpolate_solutions(runs, "mnist1d", "mlp", 8, 32, [-1.0, 0.0, 0.5, 1.0, 2.0], str(root),
                                                mnist1d_tensors)
    assert list(table.columns) == interpolation.COLUMNS
    assert len(table) == 2 * 5 * 2  # seeds x alphas x splits
    for (seed, alpha, split), row in table.set_index(["seed", "alpha", "split"]).iterrows():
        if alpha in (0.0, 1.0):
            run = runs[runs["run_id"] == row["small_run_id" if alpha == 0 else "large_run_id"]].iloc[0]
            assert row["loss"] == pytest.approx(run[f"final_{split}_loss"], rel=1e-6)
            assert row["accuracy"] == run[f"final_{split}_acc"]
    curve = table[(table["seed"] == 0) & (table["split"] == "train")].set_index("alpha")["loss"]
    assert curve[0.5] != curve[0.0] and math.isfinite(curve[-1.0])  # a point between is its own model


def test_the_figures_have_a_panel_per_architecture_and_say_when_there_is_nothing_to_draw():
    from batchlab import plots

    table = pd.DataFrame([{"dataset": "d", "arch": arch, "small_batch": 8, "large_batch": 64, "small_lr": 0.1,
                           "large_lr": 0.2, "seed": seed, "small_run_id": "a", "large_run_id": "b", "alpha": alpha,
                           "split": split, "loss": 1 + alpha ** 2, "accuracy": 0.5}
                          for arch in ("mlp", "logreg") for seed in (0, 1) for alpha in (-1.0, 0.0, 1.0, 2.0)
                          for split in ("train", "test")])
    fig = plots.interpolation(table)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert sorted(ax.get_title() for ax in panels) == ["MLP", "logistic regression"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["−1", "0", "1", "2"]
    assert [t.get_text().strip() for t in panels[0].texts] == ["B=8", "B=64"]  # the two solutions, named
    train_loss = panels[0].get_lines()[0]  # the seed mean of the train loss
    assert list(train_loss.get_ydata()) == [2.0, 1.0, 2.0, 5.0]
    empty = plots.interpolation(table.iloc[:0])
    assert "no interpolation" in empty.axes[0].texts[0].get_text()
    runs = pd.DataFrame({"dataset": "d", "arch": "mlp", "batch_size": [8, 8, 64, 64], "lr_grid_value": 0.1, "lr": 0.1,
                         "base_lr": 0.1, "seed": [0, 1, 0, 1], "diverged": False, "final_test_acc": 0.5,
                         "final_sharpness_0.001": [1.0, 3.0, 5.0, 5.0],
                         **{m: 0.0 for m in ("final_train_acc", "gap_acc", "gap_loss", "best_test_acc",
                                             "final_dist_init", "final_test_loss")}})
    (ax,) = [a for a in plots.sharpness(runs).axes if a.get_title()]
    assert list(ax.get_lines()[0].get_ydata()) == [2.0, 5.0]  # seed means at each batch size
    assert "no sharpness" in plots.sharpness(runs.drop(columns="final_sharpness_0.001")).axes[0].texts[0].get_text()


def test_train_pack_trains_again_a_complete_run_that_kept_no_weights(mnist1d_npz, tmp_path):
    (spec,) = tiny_specs(batch_sizes=[8, 32], seeds=[0])[:1]
    before = {k: v for k, v in spec.items() if k != "keep_weights"}  # the same run, not yet an end
    assert before["run_id"] == spec["run_id"]
    packs.train_pack([before], str(mnist1d_npz), str(tmp_path), device="cpu")
    history = store.read_history(tmp_path, spec["run_id"])
    assert store.lacks_weights(tmp_path, spec)
    packs.train_pack([spec], str(mnist1d_npz), str(tmp_path), device="cpu")
    assert not store.lacks_weights(tmp_path, spec) and store.read_weights(tmp_path, spec["run_id"])
    again = store.read_history(tmp_path, spec["run_id"])  # deterministic: the same numbers
    pd.testing.assert_frame_equal(again.drop(columns="wall_time"), history.drop(columns="wall_time"))


def test_the_interpolation_figure_bands_the_spread_of_the_seeds():
    from matplotlib.collections import PolyCollection

    from batchlab import plots

    table = pd.DataFrame([{"dataset": "d", "arch": "mlp", "small_batch": 8, "large_batch": 64, "seed": seed,
                           "alpha": alpha, "split": split, "loss": 1 + alpha ** 2 + seed / 2, "accuracy": 0.5}
                          for seed in (0, 1) for alpha in (-1.0, 0.0, 1.0, 2.0) for split in ("train", "test")])
    fig = plots.interpolation(table)
    (ax,) = [a for a in fig.axes if a.get_title()]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # train and test loss
    heights = bands[0].get_paths()[0].vertices[:, 1]
    assert all(np.isclose(heights, 1 + a ** 2).any() and np.isclose(heights, 1.5 + a ** 2).any() for a in (-1, 0, 1, 2))
    assert "band: min-max of 2 seeds" in [t.get_text() for t in fig.legends[0].get_texts()]
