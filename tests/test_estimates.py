"""Estimates of training time: the cost model, a pack's runtime request, and the dry run's messages."""

from __future__ import annotations

import pytest

from batchlab import config, estimates, grid

TRAINING = {"seconds_per_step": 0.01, "seconds_per_example": 0.0, "device": "auto", "engine": "auto"}


def spec(steps=1000, batch_size=32, arch="mlp", eval_points=0, dataset="blobs"):
    return {"steps": steps, "batch_size": batch_size, "arch": arch, "eval_points": eval_points,
            "dataset": dataset, "dataset_options": {"n_train": 2000, "n_test": 500, "dim": 16, "classes": 4,
                                                    "cluster_std": 4.0, "seed": 0}}


def test_a_run_costs_its_steps_and_examples_and_evaluations():
    assert estimates.run_seconds(spec(), TRAINING) == pytest.approx(10.0)
    costly = {**TRAINING, "seconds_per_example": 1e-4}
    # 1000 steps x (0.01 + 32 x 1e-4), no evaluation beyond step 0: 1 x 2000 x 1.2 / 3 examples' worth
    assert estimates.run_seconds(spec(), costly) == pytest.approx(1000 * (0.01 + 32e-4) + 800 * 1e-4)
    more_evals = estimates.run_seconds(spec(eval_points=10), costly)
    assert more_evals == pytest.approx(estimates.run_seconds(spec(), costly) + 10 * 800 * 1e-4)


def test_the_cost_per_example_may_be_one_per_architecture():
    per_arch = {**TRAINING, "seconds_per_example": {"cnn": 1e-3}}
    assert estimates.seconds_per_example(per_arch, "cnn") == 1e-3
    assert estimates.seconds_per_example(per_arch, "mlp") == 0.0
    assert estimates.run_seconds(spec(arch="cnn"), per_arch) > estimates.run_seconds(spec(arch="mlp"), per_arch)


def test_a_batched_pack_pays_each_steps_fixed_cost_once():
    members = [spec(), spec(), spec()]
    costly = {**TRAINING, "seconds_per_example": 1e-4}
    one_after_another = estimates.pack_seconds(members, costly, batched=False)
    batched = estimates.pack_seconds(members, costly, batched=True)
    assert one_after_another == pytest.approx(3 * estimates.run_seconds(spec(), costly))
    assert one_after_another - batched == pytest.approx(2 * 1000 * 0.01)
    assert estimates.pack_seconds([], costly, batched=True) == 0.0


def test_a_pack_the_batched_engine_cannot_stack_pays_each_runs_steps():
    costly = {**TRAINING, "seconds_per_example": 1e-4}
    for members in ([spec(arch="resnet_small")] * 3, [dict(spec(), builder="my_nets:wide")] * 3, [spec()]):
        assert estimates.pack_seconds(members, costly, batched=True) == pytest.approx(
            estimates.pack_seconds(members, costly, batched=False))


def test_packs_count_as_batched_on_a_gpu_only():
    assert estimates.batched_on({"device": "cuda", "engine": "auto"})
    assert estimates.batched_on({"device": "auto", "engine": "auto"}, gpus=2)
    assert not estimates.batched_on({"device": "auto", "engine": "auto"}, gpus=0)
    assert not estimates.batched_on({"device": "cpu", "engine": "batched"})
    assert not estimates.batched_on({"device": "cuda", "engine": "sequential"})


def test_runtime_request_doubles_the_estimate_and_grows_with_each_attempt():
    assert estimates.runtime_minutes([spec(steps=100)], TRAINING, False) == 5 + 1
    assert estimates.runtime_minutes([spec(steps=1_000_000)], {**TRAINING, "seconds_per_step": 0.002}, False) == 5 + 67
    values = [estimates.runtime_minutes([spec(steps=s)], TRAINING, False) for s in (1, 10, 1000, 10_000, 100_000)]
    assert values == sorted(values) and values[-1] > values[0]
    assert estimates.runtime_minutes([spec()], TRAINING, False, attempt=2) == 2 * estimates.runtime_minutes(
        [spec()], TRAINING, False)


def test_costs_naming_an_architecture_the_study_lacks_are_refused():
    estimates.check_costs({"seconds_per_example": {"mlp": 1e-5}}, ["mlp", "cnn"])
    estimates.check_costs({"seconds_per_example": 1e-5}, ["mlp"])
    with pytest.raises(ValueError, match=r"training.seconds_per_example.*\['mpl'\].*allowed: cnn, mlp"):
        estimates.check_costs({"seconds_per_example": {"mpl": 1e-5}}, ["mlp", "cnn"])


def test_schema_takes_a_number_or_a_mapping_and_refuses_negatives():
    base = {"datasets": ["blobs"], "architectures": ["mlp"], "batch_sizes": [8], "learning_rates": [0.1],
            "budget": {"steps": 10}, "seeds": [0]}
    assert config.validate(base)["training"]["seconds_per_example"] == 0
    cfg = config.validate({**base, "training": {"seconds_per_example": {"mlp": 2e-5}}})
    assert cfg["training"]["seconds_per_example"] == {"mlp": 2e-5}
    for bad in (-1, {"mlp": -1e-5}, "fast"):
        with pytest.raises(config.ConfigError, match="seconds_per_example"):
            config.validate({**base, "training": {"seconds_per_example": bad}})


def test_the_total_names_packs_runs_and_hours_and_the_wall_time_on_parallel_slots():
    specs = grid.expand(config.validate({
        "datasets": ["blobs"], "architectures": ["mlp"], "batch_sizes": [8, 16], "learning_rates": [0.1, 0.2],
        "budget": {"steps": 3600}, "seeds": [0]}))
    packs = grid.packs(specs, {s["run_id"] for s in specs}, 16)
    line = estimates.total(packs, {**TRAINING, "seconds_per_step": 0.5}, batched=False)
    assert line.startswith("training: 2 packs, 4 runs, estimated 2.0 CPU-hours")
    assert "about 30m on 4 GPUs" in estimates.total(packs, {**TRAINING, "seconds_per_step": 0.5}, False, 4)
    assert "GPU-hours" in estimates.total(packs, TRAINING, batched=True)
    assert estimates.total([], TRAINING, batched=False) == "training: nothing to train"


@pytest.mark.parametrize("seconds, text", [(12, "12s"), (600, "10m"), (5400, "1.5h")])
def test_durations_read_short(seconds, text):
    assert estimates.duration(seconds) == text
