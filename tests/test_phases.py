"""Where a training job's time goes (batchlab.phases): the clocks, the log's last line, and the seconds per
phase that both engines record in each run's summary and the runs table."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
import torch

from batchlab import batched, packs, phases, sequential, tables, training

from studies import tiny_specs

CPU = torch.device("cpu")


def test_a_batched_packs_seconds_are_shared_evenly_among_the_members_they_served():
    clocks = [phases.PhaseClock() for _ in range(4)]
    phases.share(clocks[:3], "eval", 3.0)
    phases.share(clocks[2:], "noise", 1.0)
    assert [c.seconds["eval"] for c in clocks] == [1.0, 1.0, 1.0, 0.0]
    assert [c.seconds["noise"] for c in clocks] == [0.0, 0.0, 0.5, 0.5]
    assert clocks[2].run_columns() == {"seconds_train": 0.0, "seconds_eval": 1.0, "seconds_noise": 0.5,
                                       "seconds_sharpness": 0.0, "seconds_checkpoint": 0.0}
    assert tuple(clocks[2].run_columns()) == phases.SUMMARY_COLUMNS


def test_the_pack_line_gives_each_phase_its_seconds_and_share_and_the_rest_as_other():
    seconds = {"startup": 1.4, "train": 20.1, "eval": 12.0, "noise": 6.2, "sharpness": 3.0, "checkpoint": 0.1,
               "write": 0.5}
    line = phases.pack_line(seconds, 44.6)
    assert line == ("pack time: startup 1.4 s (3%), train 20.1 s (45%), eval 12.0 s (27%), noise 6.2 s (14%), "
                    "sharpness 3.0 s (7%), checkpoint 0.1 s (<1%), write 0.5 s (1%), other 1.3 s (3%); total 44.6 s")
    # phases that sum past the total (clocks read at other moments) leave no negative rest
    assert "other 0.0 s (<1%); total 1.0 s" in phases.pack_line({"train": 2.0}, 1.0)


def test_the_process_age_is_read_from_proc_and_covers_this_test():
    before = time.perf_counter()
    age = phases.seconds_since_process_start()
    # at least as old as batchlab.phases' import (to the 10 ms of the kernel's clock ticks), at most a day
    assert before - phases.IMPORTED_AT - 0.02 <= age < 86400


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_a_trained_pack_records_seconds_per_phase_in_each_summary_and_ends_its_log_with_them(
        engine, mnist1d_npz, tmp_path, caplog):
    specs = tiny_specs(batch_sizes=[8], seeds=[0, 1], budget={"steps": 20})  # noise scale and sharpness on
    assert specs[0]["noise_scale"]["pairs"] and specs[0]["sharpness"]["epsilons"]
    caplog.set_level(logging.INFO, logger="batchlab.packs")
    packs.train_pack(specs, str(mnist1d_npz), str(tmp_path), engine=engine)
    summaries = [json.loads((tmp_path / s["run_id"] / "summary.json").read_text()) for s in specs]
    assert {s["engine"] for s in summaries} == {engine}
    for summary in summaries:
        assert all(summary[c] >= 0 for c in phases.SUMMARY_COLUMNS), summary
        for phase in ("train", "eval", "noise", "sharpness"):
            assert summary[f"seconds_{phase}"] > 0, phase
        assert summary["seconds_checkpoint"] == 0  # no checkpoints asked for
        # the training steps' time is the run's train_seconds (a batched pack's shared evenly by its two members)
        assert summary["seconds_train"] == pytest.approx(summary["train_seconds"], rel=1e-9)
    last = caplog.records[-1].getMessage()
    assert last.startswith("pack time: startup ")
    named = re.findall(r"(\w+) [\d.]+ s \((?:\d+|<1)%\)", last)
    assert named == [*phases.PHASES, "other"]
    assert re.search(r"; total [\d.]+ s$", last)
    # the runs table has the seconds as columns
    _, runs = tables.aggregate([tmp_path / s["run_id"] / "summary.json" for s in specs])
    assert (runs[list(phases.SUMMARY_COLUMNS)] >= 0).all().all()


def test_a_diverged_member_gets_no_share_of_the_steps_after_it_stopped(mnist1d_tensors):
    specs = tiny_specs(batch_sizes=[8], learning_rates=[0.05, 1e4], budget={"steps": 30})
    results = batched.train_batched(specs, mnist1d_tensors, CPU)
    (_, ok), (_, diverged) = results
    assert not ok["diverged"] and diverged["diverged"] and diverged["diverged_at_step"] < 30
    # the pack's training time, all of it shared: train_seconds is the pack's divided by its two members
    assert ok["seconds_train"] + diverged["seconds_train"] == pytest.approx(2 * ok["train_seconds"], rel=1e-9)
    assert diverged["seconds_train"] < ok["seconds_train"]
    assert diverged["seconds_noise"] < ok["seconds_noise"]  # measured at its one evaluation after step 0


def test_a_resumed_run_keeps_the_seconds_of_the_job_before_and_the_clock_only_its_own(mnist1d_tensors):
    spec = tiny_specs(batch_sizes=[8], budget={"steps": 12})[0]
    run = sequential.SequentialRun(spec, mnist1d_tensors, CPU)
    with training.TrainingSettings(CPU, 8) as settings:
        run.evaluate()
        for _ in range(4):
            run.step(settings.autocast)
    before = run.state()["phase_seconds"]
    assert before["eval"] > 0 and before["train"] == run.train_time > 0
    clock = phases.PhaseClock()
    _, summary = sequential.train_run(spec, mnist1d_tensors, CPU, resume=run.state(), clock=clock)
    assert clock.seconds["eval"] > 0 and clock.seconds["startup"] == 0
    for phase in ("train", "eval", "noise"):
        assert summary[f"seconds_{phase}"] == pytest.approx(before[phase] + clock.seconds[phase], rel=1e-9), phase


def test_a_batched_members_checkpoint_holds_its_share_of_the_seconds(mnist1d_tensors):
    specs = tiny_specs(batch_sizes=[8], seeds=[0, 1], budget={"steps": 12})
    pack = batched.BatchedPack(specs, mnist1d_tensors, CPU)
    with training.TrainingSettings(CPU, 8) as settings:
        pack.evaluate([0, 1])
        for _ in range(3):
            pack.step(settings.autocast)
    pack._share_training()
    states = [pack.member_checkpoint(i, []) for i in range(2)]
    assert [s["phase_seconds"]["train"] for s in states] == pytest.approx([pack.train_time / 2] * 2, rel=1e-9)
    assert states[0]["phase_seconds"]["eval"] == states[1]["phase_seconds"]["eval"] > 0  # shared evenly
    resumed = batched.BatchedPack(specs, mnist1d_tensors, CPU, resume=states)
    assert [c.seconds for c in resumed.phases] == [s["phase_seconds"] for s in states]
