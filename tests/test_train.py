"""Training: mini-batch indices and evaluation steps (batchlab.training), train_run (batchlab.sequential:
determinism, divergence, seeds) and train_pack with the run store (batchlab.packs)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from batchlab import grid, metrics, models, packs, phases, sequential, store, training
from batchlab.schedules import lr_factor

from studies import tiny_specs

CPU = torch.device("cpu")
TIMING = {"wall_seconds", "train_seconds", "samples_per_s", "peak_memory_mb", *phases.SUMMARY_COLUMNS}


# -- batch indices ---------------------------------------------------------------------------------------


def test_batch_indices_shape_and_dtype():
    idx = training.batch_indices(10, 4, 7, seed=0)
    assert idx.shape == (7, 4)
    assert idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 10


def test_each_epoch_is_a_permutation():
    n, b, steps = 10, 4, 12  # 48 indices: 4 full epochs and 8 of the fifth
    flat = training.batch_indices(n, b, steps, seed=3).reshape(-1)
    for e in range(4):
        assert sorted(flat[e * n : (e + 1) * n].tolist()) == list(range(n))
    rest = flat[4 * n :].tolist()
    assert len(rest) == 8 and len(set(rest)) == 8  # a partial epoch never repeats an example


def test_batches_straddle_epochs():
    n, b = 10, 4
    idx = training.batch_indices(n, b, 5, seed=1)
    flat = idx.reshape(-1)
    # batch 2 holds examples 8, 9 of the first epoch's permutation and 0, 1 of the second's
    assert idx[2].tolist() == flat[8:12].tolist()
    first, second = set(flat[:10].tolist()), flat[10:20].tolist()
    assert set(second) == first == set(range(n))
    assert idx[2, 2:].tolist() == second[:2]


def test_batch_larger_than_dataset():
    idx = training.batch_indices(5, 12, 2, seed=0)
    assert idx.shape == (2, 12)
    flat = idx.reshape(-1)
    for e in range(4):
        assert sorted(flat[e * 5 : (e + 1) * 5].tolist()) == list(range(5))


def test_batch_indices_are_seeded():
    a, b = training.batch_indices(50, 8, 20, seed=7), training.batch_indices(50, 8, 20, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, training.batch_indices(50, 8, 20, seed=8))


def test_batch_indices_do_not_touch_the_global_generator():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    training.batch_indices(100, 10, 30, seed=1)
    assert torch.equal(torch.rand(3), expected)


# -- evaluation steps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("total, points, expected", [
    (100, 4, [0, 25, 50, 75, 100]),
    (10, 3, [0, 3, 7, 10]),
    (12, 3, [0, 4, 8, 12]),
    (3, 5, [0, 1, 2, 3]),  # more points than steps: each step once
    (1, 20, [0, 1]),
    (7, 1, [0, 7]),
])
def test_eval_steps(total, points, expected):
    assert training.eval_steps(total, points) == expected


# -- train_run -------------------------------------------------------------------------------------------


def run_capturing_model(spec, tensors, monkeypatch):
    """train_run, also returning the trained model (captured from models.build)."""
    built = []
    real_build = models.build

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(models, "build", build)
    history, summary = sequential.train_run(spec, tensors, CPU)
    return history, summary, built[-1]


DETERMINISM_CASES = {
    "mlp-sgd-momentum-cosine-warmup": dict(
        optimizer={"momentum": 0.9, "nesterov": True}, schedule={"kind": "cosine"},
        warmup={"fraction": 0.25, "start_factor": 0.1},
    ),
    "cnn1d-adam-step": dict(
        architectures=["cnn1d"], learning_rates=[0.003], batch_sizes=[32], optimizer={"name": "adam", "weight_decay": 1e-4},
        schedule={"kind": "step", "milestones": [0.5]},
    ),
    "cnn1d-small-batch": dict(architectures=["cnn1d"], batch_sizes=[8]),
}


@pytest.mark.parametrize("changes", DETERMINISM_CASES.values(), ids=DETERMINISM_CASES.keys())
def test_train_run_is_bitwise_deterministic(mnist1d_tensors, monkeypatch, changes):
    spec = tiny_specs(**changes)[0]
    h1, s1, m1 = run_capturing_model(spec, mnist1d_tensors, monkeypatch)
    h2, s2, m2 = run_capturing_model(spec, mnist1d_tensors, monkeypatch)
    pd.testing.assert_frame_equal(h1.drop(columns="wall_time"), h2.drop(columns="wall_time"), check_exact=True)
    strip = lambda s: {k: v for k, v in s.items() if k not in TIMING}  # noqa: E731
    assert json.dumps(strip(s1), sort_keys=True) == json.dumps(strip(s2), sort_keys=True)
    p1, p2 = list(m1.parameters()), list(m2.parameters())
    assert len(p1) == len(p2) > 0
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert m1 is not m2
    torch.manual_seed(spec["seed"])
    initial = list(models.build(spec["arch"], (1, 40), 10, spec["model_options"]).parameters())
    assert not any(torch.equal(a, b) for a, b in zip(p1, initial))  # every tensor trained


def test_train_run_history_and_summary(mnist1d_tensors):
    (spec,) = tiny_specs(batch_sizes=[8], schedule={"kind": "cosine", "final_factor": 0.1},
                         warmup={"fraction": 0.25, "start_factor": 0.5})
    history, summary = sequential.train_run(spec, mnist1d_tensors, CPU)
    assert history["step"].tolist() == [0, 4, 8, 12]
    assert history["examples"].tolist() == [0, 32, 64, 96]
    assert history["epoch"].tolist() == pytest.approx([0, 32 / 240, 64 / 240, 96 / 240])
    expected_lr = [spec["lr"] * lr_factor(max(s - 1, 0), 12, spec["warmup"], spec["schedule"]) for s in history["step"]]
    assert history["current_lr"].tolist() == pytest.approx(expected_lr)
    assert history.loc[0, "dist_init"] == 0.0 and (history["dist_init"].iloc[1:] > 0).all()
    assert history.loc[0, ["grad_norm_mean"]].isna().all()  # no step before the first evaluation
    assert (history["grad_norm_mean"].iloc[1:] > 0).all()
    assert history[["train_acc", "test_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    for column in ("train_loss", "train_acc", "test_loss", "test_acc", "dist_init"):
        assert summary[f"final_{column}"] == history[column].iloc[-1]
    assert summary["run_id"] == spec["run_id"]
    assert summary["steps_done"] == 12 and summary["diverged"] is False and summary["diverged_at_step"] is None
    assert (summary["n_train"], summary["n_test"]) == (240, 60)
    assert summary["best_test_acc"] == history["test_acc"].max()
    assert summary["gap_acc"] == pytest.approx(summary["final_train_acc"] - summary["final_test_acc"])
    assert set(summary) >= {"device", "torch", "samples_per_s", "peak_memory_mb", "final_dist_init"}
    assert summary["device"] == "cpu"


def test_huge_lr_diverges_without_exception(mnist1d_tensors):
    (spec,) = tiny_specs(learning_rates=[1e4], batch_sizes=[8], budget={"steps": 50}, evaluation={"points": 5})
    history, summary = sequential.train_run(spec, mnist1d_tensors, CPU)
    assert summary["diverged"] is True
    assert summary["steps_done"] < spec["steps"]
    assert summary["diverged_at_step"] == summary["steps_done"]
    assert history["step"].iloc[-1] == summary["steps_done"]  # evaluated where it stopped
    assert history["step"].is_monotonic_increasing and history["step"].is_unique
    json.dumps(summary)  # NaN losses still serialize


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # quantiles of infinite gradient norms
def test_loss_factor_decides_divergence(mnist1d_tensors):
    def diverged_at(factor):
        (spec,) = tiny_specs(learning_rates=[1e4], batch_sizes=[8], budget={"steps": 50}, divergence={"loss_factor": factor})
        history, summary = sequential.train_run(spec, mnist1d_tensors, CPU)
        assert summary["diverged"] is True
        return summary["diverged_at_step"], history

    step, _ = diverged_at(10.0)  # the loss explodes at the second step
    assert step == 2
    late, history = diverged_at(1e40)  # a finite loss never counts at this factor: only NaN/inf stops the run
    assert late > step
    assert not math.isfinite(history["train_loss"].iloc[-1])


def test_different_seeds_differ(mnist1d_tensors, monkeypatch):
    a, b = tiny_specs(seeds=[0, 1], batch_sizes=[8])
    assert (a["seed"], b["seed"]) == (0, 1)
    ha, _, ma = run_capturing_model(a, mnist1d_tensors, monkeypatch)
    hb, _, mb = run_capturing_model(b, mnist1d_tensors, monkeypatch)
    assert ha.loc[0, "train_loss"] != hb.loc[0, "train_loss"]  # different initialization
    assert not ha["train_loss"].equals(hb["train_loss"])
    assert not torch.equal(next(ma.parameters()), next(mb.parameters()))


def test_same_seed_other_batch_size_uses_other_batches_same_init(mnist1d_tensors):
    a, b = tiny_specs(batch_sizes=[8, 32])
    ha, _ = sequential.train_run(a, mnist1d_tensors, CPU)
    hb, _ = sequential.train_run(b, mnist1d_tensors, CPU)
    assert ha.loc[0, "train_loss"] == hb.loc[0, "train_loss"]  # the seed sets the initialization
    assert ha.loc[1, "train_loss"] != hb.loc[1, "train_loss"]


# -- train_pack ------------------------------------------------------------------------------------------


def test_train_pack_writes_complete_runs_and_skips_complete_ones(mnist1d_npz, tmp_path, monkeypatch):
    specs = tiny_specs(learning_rates=[0.05, 0.1], batch_sizes=[8])
    root = tmp_path / "runs"
    done = specs[0]
    marker = {"run_id": done["run_id"], "marker": "written before the pack"}
    store.write_run(root, done, pd.DataFrame({"step": [0]}), marker)

    trained = []
    real = sequential.train_run
    monkeypatch.setattr(packs, "train_run", lambda spec, *a, **k: trained.append(spec["run_id"]) or real(spec, *a, **k))
    packs.train_pack(specs, str(mnist1d_npz), str(root), device="cpu", threads=1)

    assert trained == [specs[1]["run_id"]]
    untouched = store.read_summary(root, done["run_id"])
    assert untouched.pop("checksums") and untouched == marker
    for spec in specs:
        assert store.is_complete(root, spec["run_id"])
    new = specs[1]
    assert store.read_spec(root, new["run_id"]) == new
    summary = store.read_summary(root, new["run_id"])
    assert summary["run_id"] == new["run_id"] and summary["steps_done"] == new["steps"]
    assert store.read_history(root, new["run_id"])["step"].tolist() == training.eval_steps(new["steps"], new["eval_points"])
    assert sorted(p.name for p in root.iterdir()) == sorted(s["run_id"] for s in specs)  # no temporary folders

    # a second pass trains nothing
    trained.clear()
    packs.train_pack(specs, str(mnist1d_npz), str(root), device="cpu", threads=1)
    assert trained == []


def test_train_pack_results_equal_train_run(mnist1d_npz, mnist1d_tensors, tmp_path):
    (spec,) = tiny_specs(batch_sizes=[32])
    packs.train_pack([spec], str(mnist1d_npz), str(tmp_path), device="cpu")
    history, _ = sequential.train_run(spec, mnist1d_tensors, CPU)
    stored = store.read_history(tmp_path, spec["run_id"])
    pd.testing.assert_frame_equal(stored.drop(columns="wall_time"), history.drop(columns="wall_time"), check_exact=True)


def test_pick_device_cpu():
    assert training.pick_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert training.pick_device("auto") == CPU
        with pytest.raises(RuntimeError, match="no CUDA device"):
            training.pick_device("cuda")


def test_spec_run_id_matches_grid(mnist1d_tensors):
    (spec,) = tiny_specs(batch_sizes=[8])
    assert spec["run_id"] == grid.run_id(grid.without_id(spec))


def test_evaluation_batch_size_bounds_memory_not_results(mnist1d_tensors):
    spec = tiny_specs()[0]
    a, _ = sequential.train_run(spec, mnist1d_tensors, torch.device("cpu"), eval_batch_size=1000)
    b, _ = sequential.train_run(spec, mnist1d_tensors, torch.device("cpu"), eval_batch_size=7)
    assert a["test_acc"].tolist() == b["test_acc"].tolist() and a["train_acc"].tolist() == b["train_acc"].tolist()
    assert b["test_loss"].tolist() == pytest.approx(a["test_loss"].tolist(), rel=1e-5)


def test_the_noise_scale_is_recorded_without_perturbing_training(mnist1d_tensors):
    spec = tiny_specs(batch_sizes=[8], budget={"steps": 30})[0]
    measured, _ = sequential.train_run(spec, mnist1d_tensors, CPU)
    off = dict(spec, noise_scale={"pairs": 0})
    unmeasured, _ = sequential.train_run(off, mnist1d_tensors, CPU)
    assert spec["noise_scale"] == {"pairs": 4, "small_batch": 8, "big_batch": 64, "every": 2}
    # at every other evaluation (of steps 0, 10, 20, 30) and the last
    assert measured.loc[measured["noise_trace"].notna(), "step"].tolist() == [0, 20, 30]
    assert unmeasured[["noise_grad_sq", "noise_trace", "b_simple"]].isna().all().all()
    # numerator and denominator are kept apart, to be averaged before their ratio is taken: with 4 pairs a
    # single evaluation's estimate of |G|^2 can come out negative, and its B_simple is then NaN
    positive = measured["noise_grad_sq"] > 0
    assert (measured.loc[positive, "b_simple"] == measured.loc[positive, "noise_trace"] / measured.loc[positive, "noise_grad_sq"]).all()
    columns = [c for c in measured.columns if c not in ("wall_time", "noise_grad_sq", "noise_trace", "b_simple")]
    pd.testing.assert_frame_equal(measured[columns], unmeasured[columns], check_exact=True)


def test_the_final_weights_sharpness_is_in_the_summary(mnist1d_tensors):
    spec = tiny_specs(batch_sizes=[8], budget={"steps": 30})[0]
    _, summary = sequential.train_run(spec, mnist1d_tensors, CPU)
    assert 0 < summary["final_sharpness_0.0005"] < summary["final_sharpness_0.001"]  # a larger box reaches higher
    model_state: dict = {}
    sequential.train_run(spec, mnist1d_tensors, CPU, final_state=model_state)
    model = models.build(spec["arch"], (1, 40), 10)
    model.load_state_dict(model_state)
    x, y = mnist1d_tensors["x_train"], mnist1d_tensors["y_train"]
    assert summary["final_sharpness_0.001"] == metrics.sharpness(model, x, y, 0.001, 10, seed=spec["seed"])
    _, unmeasured = sequential.train_run(dict(spec, sharpness={"epsilons": []}), mnist1d_tensors, CPU)
    assert not any(k.startswith("final_sharpness_") for k in unmeasured)
    _, diverged = sequential.train_run(dict(spec, lr=1e4), mnist1d_tensors, CPU)
    assert diverged["diverged"] and math.isnan(diverged["final_sharpness_0.001"])
