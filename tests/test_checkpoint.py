"""batchlab.checkpoint: a run stopped part-way and resumed from its checkpoint ends bitwise equal to the run
trained without a stop, in either engine and across engines; checkpoints load with weights_only; SIGTERM
saves before the job exits; a job killed with SIGKILL resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from batchlab import batched, config, packs, phases, sequential, store
from batchlab.checkpoint import Checkpointer, TrainingInterrupted
from studies import ROOT, TINY, tiny_specs

CPU = torch.device("cpu")
TIMING = {"wall_seconds", "train_seconds", "samples_per_s", "peak_memory_mb", "checksums", *phases.SUMMARY_COLUMNS}
SGD = {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.001}
ADAM = {"name": "adam", "weight_decay": 0.001}
SETTINGS = config.validate(TINY)["training"]["checkpoint"]  # the defaults


class StopAt(Checkpointer):
    """A checkpointer that receives a stop request (as from SIGTERM) when training reaches ``stop_at``."""

    def __init__(self, folder, stop_at: int, **kwargs):
        super().__init__(folder, every_minutes=None, **kwargs)
        self.stop_at = stop_at

    def due(self, step: int) -> bool:
        if step == self.stop_at:
            self.stop_signal = signal.SIGTERM
        return super().due(step)


def specs_for(arch="mlp", optimizer=SGD, lrs=(0.02, 0.05), steps=60, batch_size=8, points=6, **changes):
    return tiny_specs(architectures=[arch], batch_sizes=[batch_size], learning_rates=list(lrs), seeds=[0],
                      budget={"steps": steps}, evaluation={"points": points}, optimizer=optimizer, **changes)


def assert_same_run(a: tuple[pd.DataFrame, dict], b: tuple[pd.DataFrame, dict], ignore=()):
    """Histories and summaries bitwise equal, but for wall-clock time (and the summary keys ``ignore``)."""
    (ha, sa), (hb, sb) = a, b
    columns = [c for c in ha.columns if c != "wall_time"]
    pd.testing.assert_frame_equal(ha[columns], hb[columns], check_exact=True)
    skip = TIMING | set(ignore)
    assert {k: v for k, v in sa.items() if k not in skip} == {k: v for k, v in sb.items() if k not in skip}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_a_run_stopped_and_resumed_equals_the_run_uninterrupted(arch, optimizer, mnist1d_tensors, tmp_path):
    spec = specs_for(arch, optimizer)[0]
    whole_state: dict = {}
    whole = sequential.train_run(spec, mnist1d_tensors, CPU, final_state=whole_state)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 23"):
        sequential.train_run(spec, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, 23, every_steps=10))
    state = Checkpointer(tmp_path).load(spec)
    assert state["step"] == 23 and state["engine"] == "sequential"
    assert [row["step"] for row in state["rows"]] == [0, 10, 20]
    resumed_state: dict = {}
    resumed = sequential.train_run(spec, mnist1d_tensors, CPU, final_state=resumed_state,
                              checkpoints=Checkpointer(tmp_path, every_steps=10), resume=state)
    assert_same_run(resumed, whole)
    assert_same_state(resumed_state, whole_state)


def test_float16_loss_scale_is_restored(mnist1d_tensors, tmp_path):
    spec = specs_for("mlp", ADAM, lrs=[0.003], precision="fp16")[0]
    whole = sequential.train_run(spec, mnist1d_tensors, CPU)
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(spec, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, 31))
    state = Checkpointer(tmp_path).load(spec)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] == 31  # no overflow so far
    assert_same_run(sequential.train_run(spec, mnist1d_tensors, CPU, resume=state), whole)


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_a_batched_pack_stopped_and_resumed_equals_the_pack_uninterrupted(arch, optimizer, mnist1d_tensors, tmp_path):
    # the third learning rate diverges before the stop: that run is finished (and written) on the spot, and
    # the other two resume
    lrs = (0.02, 0.05, 50.0) if optimizer["name"] == "sgd" else (0.001, 0.003, 20.0)
    specs = specs_for(arch, optimizer, lrs)
    whole_states: list = []
    whole = batched.train_batched(specs, mnist1d_tensors, CPU, final_states=whole_states)
    assert [s["diverged"] for _, s in whole] == [False, False, True]

    finished = {}
    with pytest.raises(TrainingInterrupted):
        batched.train_batched(specs, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, 33, every_steps=20),
                            on_finish=lambda i, h, s: finished.setdefault(i, (h, s)))
    assert list(finished) == [2]  # the diverged member, done before the stop
    assert_same_run(finished[2], whole[2])
    loader = Checkpointer(tmp_path)
    states = [loader.load(s) for s in specs[:2]]
    assert [s["step"] for s in states] == [33, 33] and loader.load(specs[2]) is None
    resumed_states: list = []
    resumed = batched.train_batched(specs[:2], mnist1d_tensors, CPU, final_states=resumed_states, resume=states)
    for i in range(2):  # resumed as a pack of two: the diverged member is done
        assert_same_run(resumed[i], whole[i], ignore={"pack_members"})
        assert_same_state(resumed_states[i], whole_states[i])


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.parametrize("stopped_in, resumed_in", [("sequential", "batched"), ("batched", "sequential")])
def test_one_checkpoint_format_for_both_engines(stopped_in, resumed_in, optimizer, mnist1d_tensors, tmp_path):
    """Checkpoints hold the state in the layout of the run alone, so either engine resumes the other's; in
    float64 the result equals the uninterrupted run to 1e-10 (float32 engines sum in other orders)."""
    torch.set_default_dtype(torch.float64)
    try:
        tensors = {k: v.double() if v.is_floating_point() else v for k, v in mnist1d_tensors.items()}
        specs = specs_for("cnn1d", optimizer)
        whole = [sequential.train_run(s, tensors, CPU) for s in specs]
        with pytest.raises(TrainingInterrupted):
            if stopped_in == "batched":
                batched.train_batched(specs, tensors, CPU, checkpoints=StopAt(tmp_path, 27))
            else:
                for s in specs:
                    sequential.train_run(s, tensors, CPU, checkpoints=StopAt(tmp_path, 27))
        loader = Checkpointer(tmp_path)
        states = [loader.load(s) for s in specs]
        if stopped_in == "sequential":  # the first run stopped; the second has not started
            assert states[1] is None
            specs, whole, states = specs[:1], whole[:1], states[:1]
        if resumed_in == "batched":
            resumed = batched.train_batched(specs, tensors, CPU, resume=states)
        else:
            resumed = [sequential.train_run(s, tensors, CPU, resume=st) for s, st in zip(specs, states)]
        for (h, _), (h0, _) in zip(resumed, whole):
            for column in ("train_loss", "test_loss", "dist_init", "grad_norm_mean", "current_lr"):
                assert (h[column] - h0[column]).abs().max() <= 1e-10, column
    finally:
        torch.set_default_dtype(torch.float32)


def test_checkpoints_are_plain_tensors_and_numbers(mnist1d_tensors, tmp_path):
    spec = specs_for()[0]
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(spec, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, 12))
    state = torch.load(tmp_path / f"{spec['run_id']}.pt", weights_only=True)
    assert state["run_id"] == spec["run_id"] and state["step"] == 12
    assert set(state["model"]) == {"1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"}
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == state["model"]["1.weight"].shape
    assert state["rng"]["cpu"].dtype == torch.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_an_unusable_checkpoint_is_set_aside_and_the_run_starts_over(mnist1d_tensors, tmp_path):
    spec, other = specs_for()
    loader = Checkpointer(tmp_path)
    loader.path(spec["run_id"]).write_bytes(b"not a checkpoint")
    assert loader.load(spec) is None
    assert (tmp_path / f"{spec['run_id']}.pt.unusable").exists() and not loader.path(spec["run_id"]).exists()
    # another spec's checkpoint under this run's name is never resumed
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(other, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, 12))
    os.replace(loader.path(other["run_id"]), loader.path(spec["run_id"]))
    assert loader.load(spec) is None


@pytest.mark.parametrize("keep", [False, True])
def test_finished_runs_keep_a_checkpoint_only_when_configured(mnist1d_npz, mnist1d_tensors, tmp_path, keep):
    specs = specs_for(steps=30)
    checkpoints = Checkpointer.from_config(tmp_path / "checkpoints", dict(SETTINGS, every_steps=10, keep=keep))
    packs.train_pack(specs, str(mnist1d_npz), str(tmp_path / "runs"), engine="sequential", checkpoints=checkpoints)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # written on the way, removed at the end
    for spec in specs:
        kept = tmp_path / "runs" / spec["run_id"] / store.CHECKPOINT
        assert kept.exists() == keep
        assert store.check_run(tmp_path / "runs", spec["run_id"]) is None
        if keep:
            state = torch.load(kept, weights_only=True)
            assert state["step"] == spec["steps"]
            alone: dict = {}
            sequential.train_run(spec, mnist1d_tensors, CPU, final_state=alone)
            assert_same_state(state["model"], alone)


def test_checkpoint_settings_from_the_config(tmp_path):
    assert Checkpointer.from_config(tmp_path, dict(SETTINGS, enabled=False)) is None
    checkpoints = Checkpointer.from_config(tmp_path, SETTINGS)
    assert (checkpoints.every_seconds, checkpoints.every_steps, checkpoints.keep) == (600.0, None, False)
    assert checkpoints.due(0) is False and checkpoints.due(1000) is False
    checkpoints.last_save -= 601
    assert checkpoints.due(1)


# -- a real job, stopped by a signal ------------------------------------------------------------------------

JOB = """
import json, logging, sys
from batchlab.checkpoint import Checkpointer, TrainingInterrupted
from batchlab.logs import setup_logging
from batchlab.packs import train_pack
args = json.load(open(sys.argv[1]))
setup_logging(args["log"])
try:
    train_pack(args["specs"], args["dataset"], args["runs"], engine=args["engine"],
               checkpoints=Checkpointer(args["checkpoints"], every_minutes=None, every_steps=args["every_steps"]))
except TrainingInterrupted as stop:  # as workflow/scripts/train_pack.py
    logging.getLogger("batchlab.packs").warning("%s", stop)
    sys.exit(128 + stop.signum)
"""


def start_job(tmp_path: Path, name: str, specs, dataset: Path, engine: str, every_steps: int) -> subprocess.Popen:
    args = {"specs": specs, "dataset": str(dataset), "runs": str(tmp_path / "runs"), "engine": engine,
            "checkpoints": str(tmp_path / "checkpoints"), "every_steps": every_steps,
            "log": str(tmp_path / f"{name}.log")}
    (tmp_path / f"{name}.json").write_text(json.dumps(args))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / f"{name}.json")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def long_pack():
    """Two runs long enough (a few seconds) to be stopped part-way."""
    return specs_for("cnn1d", SGD, steps=4000, batch_size=8, points=8)


@pytest.fixture(scope="module")
def uninterrupted(mnist1d_npz, tmp_path_factory):
    """The long pack trained by a job that nobody stops, in each engine."""
    out = {}
    for engine in ("batched", "sequential"):
        work = tmp_path_factory.mktemp(f"whole_{engine}")
        job = start_job(work, "whole", long_pack(), mnist1d_npz, engine, every_steps=0)
        assert job.wait(timeout=300) == 0, job.stdout.read()
        out[engine] = work / "runs"
    return out


def assert_runs_equal(runs: Path, reference: Path, specs):
    for spec in specs:
        assert store.check_run(runs, spec["run_id"]) is None
        a, b = store.read_history(runs, spec["run_id"]), store.read_history(reference, spec["run_id"])
        columns = [c for c in a.columns if c != "wall_time"]
        pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)
        sa, sb = store.read_summary(runs, spec["run_id"]), store.read_summary(reference, spec["run_id"])
        assert {k: v for k, v in sa.items() if k not in TIMING} == {k: v for k, v in sb.items() if k not in TIMING}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_a_job_killed_with_sigkill_resumes_from_its_last_checkpoint(engine, uninterrupted, mnist1d_npz, tmp_path, capsys):
    specs = long_pack()
    job = start_job(tmp_path, "killed", specs, mnist1d_npz, engine, every_steps=500)
    # batched: both runs' checkpoints (saved together); one after another: the first run's
    wait_for(lambda: len(list((tmp_path / "checkpoints").glob("*.pt"))) == (2 if engine == "batched" else 1)
             or job.poll() is not None)
    job.send_signal(signal.SIGKILL)
    assert job.wait(timeout=60) == -signal.SIGKILL
    assert not store.finished(tmp_path / "runs")  # killed before a run finished
    saved = {p.stem: torch.load(p, weights_only=True)["step"] for p in (tmp_path / "checkpoints").glob("*.pt")}
    assert saved and all(step % 500 == 0 for step in saved.values())

    rerun = start_job(tmp_path, "rerun", specs, mnist1d_npz, engine, every_steps=500)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
    log = (tmp_path / "rerun.log").read_text()
    for run_id, step in saved.items():
        assert f"{run_id} resumes from its checkpoint at step {step}/" in log
    assert_runs_equal(tmp_path / "runs", uninterrupted[engine], specs)
    assert not any((tmp_path / "checkpoints").glob("*.pt"))
    with capsys.disabled():
        print(f"\n  [{engine}] killed with SIGKILL, resumed from step "
              + ", ".join(f"{step} of {run_id}" for run_id, step in saved.items())
              + "; the finished runs equal the uninterrupted job's bitwise")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_the_job_exits(uninterrupted, mnist1d_npz, tmp_path):
    specs = long_pack()
    # no cadence: the only checkpoint is the one SIGTERM makes
    job = start_job(tmp_path, "terminated", specs, mnist1d_npz, "batched", every_steps=0)
    wait_for(lambda: "step 500/4000" in (tmp_path / "terminated.log").read_text()
             if (tmp_path / "terminated.log").exists() else job.poll() is not None)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=60) == 128 + signal.SIGTERM
    log = (tmp_path / "terminated.log").read_text()
    assert "received SIGTERM" in log and "stopped by SIGTERM at step" in log
    steps = {torch.load(p, weights_only=True)["step"] for p in (tmp_path / "checkpoints").glob("*.pt")}
    assert len(steps) == 1 and 500 <= steps.pop() < 4000
    rerun = start_job(tmp_path, "rerun", specs, mnist1d_npz, "batched", every_steps=0)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
    assert_runs_equal(tmp_path / "runs", uninterrupted["batched"], specs)



@pytest.mark.parametrize("schedule", [
    {"kind": "step", "milestones": [0.3, 0.6], "factor": 2},
    {"kind": "drop", "small_batch": 4, "steps": 4, "patience": 3, "min_delta": 0.05, "ema": 0.5, "max_drops": 4},
], ids=["step", "drop"])
def test_a_run_with_a_batch_schedule_stopped_and_resumed_equals_the_run_uninterrupted(schedule, mnist1d_tensors, tmp_path):
    # stopped in the middle of a drop (or after the first growth): the stream position and the plateau
    # state come back with the checkpoint
    spec = [s for s in specs_for("mlp", lrs=[0.05], variants={"v": {"budget": {"epochs": 2}, "batch_schedule": schedule}})
            if "variant" in s][0]
    whole_state: dict = {}
    whole = sequential.train_run(spec, mnist1d_tensors, CPU, final_state=whole_state)
    if schedule["kind"] == "drop":
        starts = json.loads(whole[1]["batch_drop_steps"])
        assert len(starts) >= 2
        stop = starts[1] + 2  # two steps into the second drop
    else:
        stop = spec["steps"] - 5
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(spec, mnist1d_tensors, CPU, checkpoints=StopAt(tmp_path, stop))
    state = Checkpointer(tmp_path).load(spec)
    assert state["step"] == stop and state["batch_schedule"]["position"] > 0
    if schedule["kind"] == "drop":
        assert state["batch_schedule"]["left"] == 2
    resumed_state: dict = {}
    resumed = sequential.train_run(spec, mnist1d_tensors, CPU, final_state=resumed_state, resume=state)
    assert_same_run(resumed, whole)
    assert_same_state(resumed_state, whole_state)
