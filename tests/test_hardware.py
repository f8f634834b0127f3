"""batchlab.hardware and the time to target built on it (analysis.time_to_target, numbers.hardware_numbers,
plots.time_to_target): the batch sizes swept, the sweep's stop at the first batch that runs out of memory,
the table's columns, the peak-memory measure against known allocations; no timing is asserted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PolyCollection

from batchlab import analysis, data, grid, hardware, models, numbers, plots, verdicts

from studies import TINY, tiny_specs

SGD = {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}


def settings(batch_sizes, **changes) -> dict:
    out = {"model_options": {}, "dataset_options": data.resolve_options("mnist1d", TINY["dataset_options"]["mnist1d"]),
           "optimizer": SGD, "precision": "fp32", "batch_sizes": batch_sizes}
    out.update(changes)
    return out


def test_batch_sizes_double_from_the_smallest_and_keep_every_grid_size():
    assert hardware.batch_sizes([8, 64, 256], 512) == [8, 16, 32, 64, 128, 256, 512]
    assert hardware.batch_sizes([24, 2, 1024], 100) == [2, 4, 8, 16, 24, 32, 64, 1024]
    assert hardware.batch_sizes([5], 4) == [5]


def test_settings_read_only_what_the_measurement_needs():
    specs = tiny_specs(learning_rates=[0.05, 0.1], optimizer={"momentum": 0.5}, overrides={"mlp": {"model_options": {"width": 7}}})
    s = grid.hardware_settings(specs, "mnist1d", "mlp")
    assert s["batch_sizes"] == [8, 32] and s["model_options"] == {"width": 7}
    assert s["optimizer"]["momentum"] == 0.5 and s["precision"] == "fp32"
    # learning rates are not read: editing them leaves the measurement's params as they were
    assert grid.hardware_settings(tiny_specs(learning_rates=[0.3], optimizer={"momentum": 0.5},
                                             overrides={"mlp": {"model_options": {"width": 7}}}), "mnist1d", "mlp") == s
    with pytest.raises(ValueError, match="no run of architecture 'cnn1d'"):
        grid.hardware_settings(specs, "mnist1d", "cnn1d")


def test_sweep_stops_at_the_first_batch_that_runs_out_of_memory():
    tried = []

    def measure_one(b):
        tried.append(b)
        if b > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"seconds_per_step": 0.001 * b, "peak_memory_mb": 0.5 * b}

    rows = pd.DataFrame(hardware.sweep([256, 16, 32, 64, 128], measure_one))
    assert tried == [16, 32, 64, 128]  # smallest first; nothing above the first failure is tried
    assert rows["batch_size"].tolist() == [16, 32, 64, 128, 256]
    assert rows["fits"].tolist() == [True, True, True, False, False]
    assert rows["peak_memory_mb"].iloc[:3].tolist() == [8.0, 16.0, 32.0]
    assert rows["seconds_per_step"].iloc[3:].isna().all()


def test_only_out_of_memory_ends_the_sweep():
    assert hardware.is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert hardware.is_out_of_memory(torch.OutOfMemoryError("out of memory"))
    assert not hardware.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))

    def broken(b):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        hardware.sweep([8, 16], broken)


def test_cpu_peak_memory_counts_the_largest_set_of_live_tensors():
    with hardware.peak_memory(torch.device("cpu")) as peak:
        a = torch.empty(2**18)  # 1 MiB of float32
        del a
        b = torch.empty(2**19)  # 2 MiB
        c = torch.empty(2**18)  # 1 MiB: 3 MiB live at once, the peak
        del b, c
        d = torch.empty(2**18)
    del d
    assert peak["mb"] == pytest.approx(3.0, abs=0.01)


class OutOfMemoryAbove(torch.nn.Module):
    """An MLP whose forward pass fails as a full device would above ``limit`` examples."""

    def __init__(self, input_shape, num_classes, limit: int = 32):
        super().__init__()
        self.net, self.limit = models.mlp(input_shape, num_classes), limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"out of memory at a batch of {len(x)}")
        return self.net(x)


def test_measure_gives_one_row_per_batch_size_up_to_the_largest_that_fits(mnist1d_npz, monkeypatch):
    monkeypatch.setitem(models.ARCHITECTURES, "oom_mlp", models.Architecture(OutOfMemoryAbove, input_ndim=None))
    table = hardware.measure(str(mnist1d_npz), "mnist1d", "oom_mlp", settings([8, 256]), max_batch_size=128,
                             warmup_steps=1, repeats=2)
    assert table.columns.tolist() == hardware.COLUMNS
    assert table["batch_size"].tolist() == [8, 16, 32, 64, 128, 256]
    assert table["fits"].tolist() == [True, True, True, False, False, False]
    assert table["in_grid"].tolist() == [True, False, False, False, False, True]
    assert (table["device"] == "cpu").all() and (table["threads"] == 1).all()
    fit = table[table["fits"]]
    assert (fit["samples_per_s"] > 0).all() and (fit["seconds_per_step"] > 0).all()
    assert fit["samples_per_s"].tolist() == pytest.approx((fit["batch_size"] / fit["seconds_per_step"]).tolist())
    assert table.loc[~table["fits"], ["seconds_per_step", "samples_per_s", "peak_memory_mb"]].isna().all().all()


def test_peak_memory_of_an_mlp_grows_with_batch_size_from_its_known_floor(mnist1d_npz):
    table = hardware.measure(str(mnist1d_npz), "mnist1d", "mlp", settings([16]), max_batch_size=512,
                             warmup_steps=0, repeats=1)
    memory = table["peak_memory_mb"].to_numpy()
    assert table["fits"].all() and (memory[1:] > memory[:-1]).all()
    # parameters, their gradients and SGD's momentum buffers (3 x 15,910 float32 numbers) are always held
    params = sum(p.numel() for p in models.mlp((1, 40), 10).parameters())
    assert memory[0] > 3 * 4 * params / 2**20
    # each batch of 512 holds at least its input (512 x 40 float32) and the hidden activations (2 x 512 x 100)
    assert memory[-1] - memory[0] > 4 * (512 - 16) * (40 + 200) / 2**20


# -- time to target and its numbers, on tables with known answers ------------------------------------------


def synthetic_tables(steps=(400, 200, 150), seconds=(0.001, 0.0015, 0.004), oom_at=64):
    """Runs of one MLP at batch sizes 8, 16, 32 (one lr, one seed) reaching 50% test accuracy in ``steps``,
    and a hardware table timing them at ``seconds`` per step, out of memory from ``oom_at``."""
    sizes = [8, 16, 32]
    runs = pd.DataFrame({
        "dataset": "mnist1d", "arch": "mlp", "batch_size": sizes, "lr_grid_value": 0.01, "lr": 0.1, "base_lr": 0.01,
        "seed": 0, "diverged": False, "run_id": [f"r{b}" for b in sizes], "final_test_acc": 0.6,
        "final_train_acc": 0.7, "gap_acc": 0.1, "gap_loss": 0.1, "best_test_acc": 0.6, "final_dist_init": 1.0,
        "final_test_loss": 1.0, "steps_to_acc_0.5": [float(s) for s in steps], "steps_to_acc_0.9": math.nan,
    })
    hw = pd.DataFrame({
        "dataset": "mnist1d", "arch": "mlp", "device": "cpu", "device_name": "Test CPU_1", "threads": 1,
        "precision": "fp32", "batch_size": sizes + [oom_at], "in_grid": [True, True, True, False],
        "fits": [True, True, True, False], "seconds_per_step": [*seconds, math.nan],
        "peak_memory_mb": [1.0, 2.0, 4.0, math.nan], "repeats": 2,
    })
    hw["samples_per_s"] = hw["batch_size"] / hw["seconds_per_step"]
    return runs, hw[hardware.COLUMNS]


def test_time_to_target_is_steps_times_seconds_per_step_with_the_fastest_marked():
    runs, hw = synthetic_tables()
    t = analysis.time_to_target(runs, hw).set_index("batch_size")
    assert t["seconds"].tolist() == pytest.approx([0.4, 0.3, 0.6])
    assert t["fastest"].tolist() == [False, True, False]
    assert (t["target"] == 0.5).all()  # 90% is reached at no batch size
    # a batch size not measured has no time, and is never the fastest
    t = analysis.time_to_target(runs, hw[hw["batch_size"] != 16]).set_index("batch_size")
    assert math.isnan(t.loc[16, "seconds"]) and t["fastest"].tolist() == [True, False, False]


def test_hardware_numbers_name_the_fastest_batch_and_the_largest_that_fits():
    runs, hw = synthetic_tables()
    v = verdicts.settle(numbers.hardware_numbers(runs, hw))
    assert v["FastestBatchMlp"] == "16" and v["FastestTimeMlp"] == "300~ms" and v["TimeSmallBMlp"] == "400~ms"
    assert v["FewestStepsBatchMlp"] == "32" and v["HwTargetMlp"] == "50"
    assert v["MaxFitBatchMlp"] == "32" and v["MaxFitMemoryMlp"] == "4"
    assert v["PeakThroughputMlp"] == "10{,}667" and v["PeakThroughputBatchMlp"] == "16"
    assert v["HwDevice"] == r"CPU (Test CPU\_1)" and v["HwThreads"] == "1" and v["HwMaxTried"] == "64"
    assert v["HwOutOfMemory"] == "out of memory: MLP from $B=64$"
    assert v["HwSoonestBelowFit"] == "holds"
    assert v["FastestBatchCnnOneD"] == numbers.NA
    # fastest at the largest batch that fits: the rule does not hold
    v = verdicts.settle(numbers.hardware_numbers(*synthetic_tables(seconds=(0.001, 0.0015, 0.0016))))
    assert v["FastestBatchMlp"] == "32" and v["HwSoonestBelowFit"] == "does not hold"


def test_without_a_hardware_table_every_hardware_number_is_not_available():
    runs, _ = synthetic_tables()
    for table in (None, hardware.combine([])):
        v = verdicts.settle(numbers.hardware_numbers(runs, table))
        assert v["FastestBatchMlp"] == numbers.NA and v["HwOutOfMemory"] == "not measured"
        assert v["HwSoonestBelowFit"].startswith("cannot be tested")


def test_durations_carry_their_unit():
    assert [numbers.duration(s) for s in (0.000486, 0.9996, 12.34, 7200, math.nan)] == [
        "0.486~ms", "1~s", "12.3~s", "120~min", numbers.NA]


def test_time_to_target_figure_has_a_time_row_and_a_throughput_row():
    runs, hw = synthetic_tables()
    fig = plots.time_to_target(runs, hw)
    top, bottom = fig.axes[:2]
    assert top.get_yscale() == "log" and bottom.get_ylabel() == "samples / s"
    assert [len(line.get_xdata()) for line in top.lines][:2] == [3, 3]
    plots.time_to_target(runs, hardware.combine([]))  # not measured: the figure still builds


@pytest.mark.parametrize("value, words", [
    ({"max_batch_size": 0}, "'hardware.max_batch_size': value 0 is invalid (allowed: an integer >= 1)"),
    ({"repeat": 3}, "unknown key 'repeat' (did you mean 'repeats'?) in 'hardware'"),
])
def test_a_bad_hardware_setting_names_its_key(tiny_raw, value, words):
    from batchlab import config

    tiny_raw["hardware"] = value
    with pytest.raises(config.ConfigError) as error:
        config.validate(tiny_raw)
    assert words in str(error.value)


def test_hardware_defaults(tiny_raw):
    from batchlab import config

    assert config.validate(tiny_raw)["hardware"] == {"enabled": True, "max_batch_size": 4096, "warmup_steps": 3, "repeats": 10}


def test_the_time_to_target_band_is_the_spread_of_the_steps_times_the_seconds_per_step():
    runs, hw = synthetic_tables()
    seeds = pd.concat([runs.assign(seed=s, **{"steps_to_acc_0.5": runs["steps_to_acc_0.5"] + d})
                       for s, d in enumerate((-100.0, 0.0, 100.0))], ignore_index=True)
    fig = plots.time_to_target(seeds, hw)
    band = next(c for c in fig.axes[0].collections if isinstance(c, PolyCollection))
    heights = band.get_paths()[0].vertices[:, 1]
    # 3 seeds: each of the 10 distinct resamples with its exact probability; the extremes (1/27 each) are the
    # 95% interval's ends: 300-500 steps at 1 ms per step at B=8
    assert np.isclose(heights, 0.3).any() and np.isclose(heights, 0.5).any()
    assert "band: 95% bootstrap interval over seeds" in [t.get_text() for t in fig.legends[0].get_texts()]
