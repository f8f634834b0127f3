"""benchmarks/engine.py compares the same work: its loops, with measurements, measure what batchlab
measures of a run (the same evaluation steps, noise-scale steps and sharpness box sizes, and, from the same
initialization, the same numbers at step 0), and its train-only runs switch off what batchlab can."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from batchlab import data, packs, store, training

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine_benchmark():
    spec = importlib.util.spec_from_file_location("engine_benchmark", ROOT / "benchmarks" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_only_runs_measure_neither_the_noise_scale_nor_the_sharpness(engine_benchmark):
    spec = engine_benchmark.specs_for("mlp", 8, 2, 10, "train")[0]
    assert spec["eval_points"] == 1 and spec["noise_scale"]["pairs"] == 0 and spec["sharpness"]["epsilons"] == []
    measured = engine_benchmark.specs_for("mlp", 8, 2, 10, "measured")[0]
    assert measured["eval_points"] > 1 and measured["noise_scale"]["pairs"] > 0 and measured["sharpness"]["epsilons"]


@pytest.mark.parametrize("loop", ["dataloader", "tight"])
def test_a_loop_with_measurements_measures_what_batchlab_measures(engine_benchmark, loop, mnist1d_npz, tmp_path):
    spec = engine_benchmark.specs_for("mlp", 8, 1, 7, "measured")[0]
    packs.train_pack([spec], str(mnist1d_npz), str(tmp_path), device="cpu")
    history = store.read_history(tmp_path, spec["run_id"])
    summary = store.read_summary(tmp_path, spec["run_id"])
    tensors = training.to_tensors(data.load(mnist1d_npz), torch.device("cpu"))

    m = engine_benchmark.train_one(spec, tensors, loop, measured=True)

    assert [r["step"] for r in m.rows] == history["step"].tolist()
    assert [r["step"] for r in m.rows if "noise" in r] == history.loc[history["noise_trace"].notna(), "step"].tolist()
    assert len(m.losses) == spec["steps"] and sum(len(r["grad_norms"]) for r in m.rows) == spec["steps"]
    assert set(m.sharpness) == {k for k in summary if k.startswith("final_sharpness_")} != set()
    # same seed, same initial weights: step 0's numbers agree with batchlab's
    first, theirs = m.rows[0], history.iloc[0]
    assert first["train"] == pytest.approx((theirs["train_loss"], theirs["train_acc"]), rel=1e-5)
    assert first["test"] == pytest.approx((theirs["test_loss"], theirs["test_acc"]), rel=1e-5)
    assert first["dist_init"] == 0.0 == theirs["dist_init"]
    assert math.isclose(first["noise"]["noise_trace"], theirs["noise_trace"], rel_tol=1e-5)
