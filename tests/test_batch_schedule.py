"""batchlab.batch_schedule: the batch sizes and step counts of a step schedule, the data stream (every example
once per epoch, the constant runs' order, resumable anywhere), the plateau criterion of a drop, and runs with
a schedule trained sequentially."""

from __future__ import annotations

import json

import pytest
import torch

from batchlab import batch_schedule, grid, models, packs, sequential, training
from studies import tiny_specs

CPU = torch.device("cpu")
DROP = {"kind": "drop", "small_batch": 4, "steps": 3, "max_drops": 2, "patience": 5, "min_delta": 0.01, "ema": 0.5}


def test_step_schedule_batch_sizes_and_steps():
    # 960 examples: 480 at 8 (60 steps), 240 at 16 (15 steps), then 32 while more than 16 are left (7 steps)
    sizes = batch_schedule.step_batch_sizes(8, 2, [0.5, 0.75], 960)
    assert sizes == [8] * 60 + [16] * 15 + [32] * 7
    assert batch_schedule.resolve_steps({"kind": "step", "factor": 2.0, "milestones": [0.5, 0.75]}, {"epochs": 4}, 8, 240, 120) == 82
    # a factor of 5 at one milestone (Smith et al.): 500 at 10, then 500 at 50
    assert batch_schedule.step_batch_sizes(10, 5, [0.5], 1000) == [10] * 50 + [50] * 10


@pytest.mark.parametrize("examples", [100, 119, 121, 255, 8000])
def test_a_schedule_that_never_grows_takes_the_constant_runs_steps(examples):
    # the only milestone is not passed before the last step: round(examples / B) steps, as without a schedule
    assert len(batch_schedule.step_batch_sizes(20, 2, [0.9999], examples)) == grid.resolve_steps({"examples": examples}, 20, 0)


def test_the_stream_is_the_constant_runs_data_order_and_resumes_anywhere():
    whole = training.batch_indices(50, 7, 40, 3).flatten()
    stream = batch_schedule.Stream(50, 3)
    assert torch.equal(torch.cat([stream.take(7) for _ in range(40)]), whole)
    for position in (0, 49, 50, 123, 200):
        assert torch.equal(batch_schedule.Stream(50, 3, position).take(60), whole[position : position + 60])


def test_a_growing_batch_sees_every_example_once_per_epoch():
    spec = {"batch_size": 8, "seed": 0, "budget": {"epochs": 4},
            "batch_schedule": {"kind": "step", "factor": 2.0, "milestones": [0.3, 0.6]}}
    plan = batch_schedule.Plan(spec, 60)
    seen = torch.cat([plan.indices(step) for step in range(len(plan.sizes))])
    assert plan.sizes[0] == 8 and plan.sizes[-1] == 32 and len(seen) == plan.examples
    for epoch in range(len(seen) // 60):
        assert sorted(seen[60 * epoch : 60 * (epoch + 1)].tolist()) == list(range(60))


def _feed(losses, schedule=DROP, base=32):
    """The batch size of each step when the minibatch losses are ``losses``."""
    plan = batch_schedule.Plan({"batch_size": base, "seed": 0, "steps": len(losses), "budget": {"steps": len(losses)},
                                "batch_schedule": schedule}, 1000)
    sizes = []
    for step, loss in enumerate(losses):
        plan.indices(step)
        sizes.append(plan.last_batch)
        plan.observe(step, loss)
    return sizes, plan


def test_a_drop_fires_on_a_plateau_and_not_while_the_loss_falls():
    # constant loss: the EMA's best is set at step 0, then 5 steps without improvement start a drop at
    # step 6 for 3 steps; the next plateau (5 more steps) starts the second and last one at step 14
    sizes, plan = _feed([1.0] * 30)
    assert plan.drop_starts == [6, 14]
    assert [i for i, b in enumerate(sizes) if b == 4] == [6, 7, 8, 14, 15, 16]
    assert json.loads(plan.summary()["batch_drop_steps"]) == [6, 14] and plan.summary()["batch_drops"] == 2
    # a loss falling by 5% a step improves the EMA by more than 1% every step: no drop
    sizes, plan = _feed([0.95**t for t in range(30)])
    assert plan.drop_starts == [] and set(sizes) == {32}
    # no drop begins after the last step
    assert _feed([1.0] * 14)[1].drop_starts == [6]
    # max_drops 0: a plateau changes nothing
    assert _feed([1.0] * 30, dict(DROP, max_drops=0))[1].drop_starts == []


def test_runs_with_a_schedule_train_one_after_another(mnist1d_tensors):
    specs = tiny_specs(budget={"epochs": 2}, variants={"grow": {"batch_sizes": [8], "batch_schedule": {"kind": "step", "factor": 2}}})
    grown = [s for s in specs if s.get("variant") == "grow"]
    model = models.build("mlp", (40,), 10, {})
    assert packs.choose_engine(grown * 2, model, CPU, requested="batched") == "sequential"
    history, summary = sequential.train_run(grown[0], mnist1d_tensors, CPU)
    # 480 examples: 240 at 8, 120 at 16, 120 at 32 (the last 8 not taken)
    assert grown[0]["steps"] == 30 + 8 + 3 and summary["steps_done"] == 41
    assert summary["examples_seen"] == 240 + 128 + 96
    assert history["current_batch_size"].iloc[-1] == 32 and history["epoch"].iloc[-1] == pytest.approx(464 / 240)
