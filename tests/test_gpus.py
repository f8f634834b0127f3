"""GPU slots on one machine (batchlab.gpus): finding the GPUs without torch, what a local or a cluster
invocation asks the scheduler for, slots taken by processes (never more than jobs_per_gpu on a device, spread
over the devices, freed when their holder is killed), stepping aside under SLURM, on the CPU and without
GPUs; and the smoke study on three fake GPUs, two jobs each."""

from __future__ import annotations

import copy
import os
import re
import select
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from batchlab import config, gpus, training
from studies import TINY

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No GPU variable from the machine running the tests; slots in a folder of this test (returned)."""
    for name in (gpus.VISIBLE_ENV, gpus.JOURNAL_ENV, gpus.JOBS_PER_GPU_ENV, "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(gpus.SLOT_DIR_ENV, str(tmp_path / "slots"))
    return tmp_path / "slots"


# -- finding the GPUs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, devices", [
    ("0,1,2", ["0", "1", "2"]),
    (" 3 , 1 ", ["3", "1"]),
    ("GPU-8f2a,GPU-77c1", ["GPU-8f2a", "GPU-77c1"]),
    ("", []),
    ("-1", []),
    ("0,-1,1", ["0"]),  # CUDA reads up to the first invalid entry
    ("0,,1", ["0"]),
])
def test_a_cuda_visible_devices_list_is_read_as_cuda_reads_it(text, devices):
    assert gpus.parse_devices(text) == devices


def test_gpus_are_counted_from_the_drivers_entries(tmp_path):
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (tmp_path / bus).mkdir()
    assert gpus.count_nvidia_gpus(tmp_path) == 2


def test_without_driver_entries_nvidia_smi_counts_them_and_without_it_there_are_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.count_nvidia_gpus(tmp_path / "missing") == 0
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    assert gpus.count_nvidia_gpus(tmp_path / "missing") == 2


def test_the_override_wins_then_cuda_visible_devices_then_detection(tmp_path):
    (tmp_path / "0000:01:00.0").mkdir()
    assert gpus.visible_gpus({}, proc=tmp_path) == ["0"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, proc=tmp_path) == ["2", "3"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, proc=tmp_path) == []
    both = {"CUDA_VISIBLE_DEVICES": "2,3", gpus.VISIBLE_ENV: "0,1,2"}
    assert gpus.visible_gpus(both, proc=tmp_path) == ["0", "1", "2"]


@pytest.mark.parametrize("device, env, devices", [
    ("auto", {gpus.VISIBLE_ENV: "0,1"}, ["0", "1"]),
    ("cuda", {gpus.VISIBLE_ENV: "0,1"}, ["0", "1"]),
    ("cpu", {gpus.VISIBLE_ENV: "0,1"}, []),
    ("auto", {gpus.VISIBLE_ENV: "0,1", "SLURM_JOB_ID": "42"}, []),
    ("auto", {gpus.VISIBLE_ENV: ""}, []),
])
def test_slots_step_aside_on_the_cpu_under_slurm_and_without_gpus(device, env, devices):
    assert gpus.slot_devices(device, env) == devices


# -- what an invocation asks the scheduler for -----------------------------------------------------------------

def settings(**changes) -> dict:
    raw = copy.deepcopy(TINY)
    raw["training"] = changes
    return config.validate(raw)["training"]


def test_a_local_run_with_gpus_gives_each_gpu_job_a_slot_and_caps_them():
    plan = gpus.plan(settings(jobs_per_gpu=2), local=True, limit_given=False, environ={gpus.VISIBLE_ENV: "0,1,2"})
    assert plan == gpus.GpuPlan(("0", "1", "2"), {"gpu": 1}, {"gpu": 1}, 6)
    # the user's --resources gpu=N wins
    assert gpus.plan(settings(jobs_per_gpu=2), True, limit_given=True, environ={gpus.VISIBLE_ENV: "0,1,2"}).limit is None


@pytest.mark.parametrize("local, env, device", [
    (False, {gpus.VISIBLE_ENV: "0,1"}, "auto"),  # a cluster executor: the profile's default applies
    (True, {gpus.VISIBLE_ENV: ""}, "auto"),  # no GPU
    (True, {gpus.VISIBLE_ENV: "0,1"}, "cpu"),
    (True, {gpus.VISIBLE_ENV: "0,1", "SLURM_JOB_ID": "7"}, "auto"),  # a job's own snakemake under SLURM
])
@pytest.mark.parametrize("gpu", [None, 2])
def test_otherwise_jobs_ask_for_the_configured_gpus_and_nothing_is_capped(local, env, device, gpu):
    plan = gpus.plan(settings(device=device, gpu=gpu), local=local, limit_given=False, environ=env)
    assert plan == gpus.GpuPlan((), {} if gpu is None else {"gpu": gpu}, {}, None)


@pytest.mark.parametrize("value", [0, 1.5, "two"])
def test_a_bad_jobs_per_gpu_names_the_key(value):
    raw = copy.deepcopy(TINY)
    raw["training"] = {"jobs_per_gpu": value}
    with pytest.raises(config.ConfigError, match=r"^'training.jobs_per_gpu': value .* is invalid \(allowed: an integer"):
        config.validate(raw)


# -- slots in one process -------------------------------------------------------------------------------------

def test_a_slot_sets_the_device_and_is_given_back_at_the_end_of_the_block(clean_env, monkeypatch):
    monkeypatch.setenv(gpus.VISIBLE_ENV, "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")  # the override wins, and this is restored afterwards
    with gpus.gpu_slot("auto", jobs_per_gpu=1) as slot:
        assert (slot.device, slot.index) == ("7", 0) and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
        assert slot.path == clean_env / "7-0.lock" and "pid" in slot.path.read_text()
        assert gpus.try_take(["7"], 1, clean_env) is None  # held: another open file cannot lock it
        assert gpus.loads(["7"], 1, clean_env) == {"7": 1}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7,8"
    again = gpus.try_take(["7"], 1, clean_env)
    assert again is not None
    gpus.release(again)


@pytest.mark.parametrize("env", [{"SLURM_JOB_ID": "42"}, {gpus.VISIBLE_ENV: ""}, {}])
def test_where_slots_step_aside_nothing_is_locked_and_the_environment_is_left_alone(clean_env, monkeypatch, env):
    monkeypatch.setenv(gpus.VISIBLE_ENV, "0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    device = "auto" if env else "cpu"
    with gpus.gpu_slot(device) as slot:
        assert slot is None and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert not clean_env.exists()


def test_a_uuid_makes_a_safe_lock_file_name(tmp_path):
    assert gpus.slot_path(tmp_path, "MIG-4/1/0", 1).name == "MIG-4_1_0-1.lock"


def test_the_journal_records_taking_and_giving_back(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.VISIBLE_ENV, "0")
    monkeypatch.setenv(gpus.JOURNAL_ENV, str(tmp_path / "journal"))
    with gpus.gpu_slot():
        pass
    lines = [line.split() for line in (tmp_path / "journal").read_text().splitlines()]
    assert [line[1:4] for line in lines] == [["take", "0", "0"], ["release", "0", "0"]]
    assert float(lines[0][0]) <= float(lines[1][0]) and lines[0][4] == str(os.getpid())


def test_the_summary_records_the_cpu_and_the_kernels_torch_runs_on_it():
    """The CPU's model, not the bare architecture platform.processor() gives on Linux, and the kernels (their
    rounding is a run's bits)."""
    env = training.environment(torch.device("cpu"))
    assert env["device_name"] == training.cpu_name() and env["device_name"] not in ("", None)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_the_summary_records_the_device_the_job_was_given(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert training.environment(torch.device("cpu"))["cuda_visible_devices"] == "2"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert training.environment(torch.device("cpu"))["cuda_visible_devices"] is None


# -- slots across processes -----------------------------------------------------------------------------------

# A job that takes a slot for its whole life: it prints its device, slot and CUDA_VISIBLE_DEVICES, logs to
# stderr, and holds the slot until the test closes its stdin (or kills it).
HOLDER = """
import logging, os, sys
from batchlab import gpus
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
slot = gpus.take_slot("auto", poll_seconds=0.05)
print(slot.device, slot.index, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()
"""


def start_holder(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()
    for stream in (holder.stdin, holder.stdout, holder.stderr):
        stream.close()


def read_line(stream, timeout: float = 60) -> str:
    """The next line of a holder's output; a hang fails the test instead of blocking it."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output"
    return stream.readline()


@pytest.fixture
def holder_env(clean_env) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(SRC), gpus.VISIBLE_ENV: "a,b", gpus.JOBS_PER_GPU_ENV: "2"}


def test_processes_spread_over_the_devices_never_exceed_the_slots_and_a_killed_one_frees_its_slot(holder_env):
    holders = []
    try:
        for _ in range(4):  # one after another: each goes to the least loaded device
            holders.append(start_holder(holder_env))
            holders[-1].taken = read_line(holders[-1].stdout).split()
        devices = [h.taken[0] for h in holders]
        assert devices[:2] in (["a", "b"], ["b", "a"]) and Counter(devices) == {"a": 2, "b": 2}
        assert len({tuple(h.taken[:2]) for h in holders}) == 4  # four different slots
        assert all(h.taken[2] == h.taken[0] for h in holders)  # each sees only its device
        # a fifth finds every slot held, says so and waits...
        waiting = start_holder(holder_env)
        while "waiting for one to free up" not in (line := read_line(waiting.stderr)):
            assert "GPU slot" not in line, line
        # ...until a holder is killed (-9: no clean-up of its own), and then takes its slot
        victim = holders[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert read_line(waiting.stdout).split()[:2] == victim.taken[:2]
        holders.append(waiting)
    finally:
        for holder in holders:
            stop(holder)


def test_many_processes_at_once_never_share_a_slot(holder_env, tmp_path):
    """Eight processes starting together on 2 devices x 2 slots: four hold slots, all different, and every
    one ends up with a slot once the others give theirs back."""
    env = {**holder_env, gpus.JOURNAL_ENV: str(tmp_path / "journal")}
    holders = [start_holder(env) for _ in range(8)]
    try:
        while holders:
            ready, _, _ = select.select([h.stdout for h in holders], [], [], 60)
            assert ready, "no holder got a slot"
            holder = next(h for h in holders if h.stdout in ready)
            holder.stdout.readline()
            holder.stdin.close()  # let it end, giving its slot back
            holder.wait()
            holders.remove(holder)
            stop(holder)
    finally:
        for holder in holders:
            stop(holder)
    events = [line.split() for line in (tmp_path / "journal").read_text().splitlines()]
    assert Counter(e[1] for e in events) == {"take": 8, "release": 8}
    assert max_concurrent(events, key=lambda e: (e[2], e[3])) == 1  # a slot: one holder at a time
    assert max_concurrent(events, key=lambda e: e[2]) <= 2  # a device: at most jobs_per_gpu


def max_concurrent(events: list[list[str]], key) -> int:
    """The most holders a key (a slot, a device) had at once, from journal lines (time, event, device, slot,
    pid), in the order of their times."""
    held, most = Counter(), 0
    for event in sorted(events, key=lambda e: (float(e[0]), e[1] == "take")):  # a release first at a tie
        held[key(event)] += 1 if event[1] == "take" else -1
        most = max(most, held[key(event)])
    return most


# -- the workflow on fake GPUs --------------------------------------------------------------------------------

@pytest.mark.workflow
def test_the_smoke_study_on_three_fake_gpus_two_jobs_each(tmp_path):
    """8 training jobs (packs of one run), a hardware and an interpolation job with 8 cores on 3 fake GPUs and
    2 jobs per GPU: every job takes a slot and trains on the CPU (torch sees no CUDA), no GPU ever has more
    than 2 jobs, the jobs spread over the GPUs, and the scheduler is capped at 6 GPU jobs. A dry run before
    takes no slot."""
    study = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    study.update(datasets=["mnist1d"], dataset_options={"mnist1d": study["dataset_options"]["mnist1d"]},
                 architectures=["logreg", "mlp"], batch_sizes=[64, 256], seeds=[0], variants={},
                 learning_rates={"base": [0.004, 0.5], "scaling": "linear", "reference_batch_size": 1},
                 training={"pack_size": 1, "jobs_per_gpu": 2})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    journal, slots = tmp_path / "journal", tmp_path / "slots"
    env = {**os.environ, gpus.VISIBLE_ENV: "0,1,2", gpus.SLOT_DIR_ENV: str(slots), gpus.JOURNAL_ENV: str(journal)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    targets = ["results/tables/runs.parquet", "results/hardware/mnist1d-logreg.parquet",
               "results/interpolation/mnist1d-mlp.parquet"]

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "work"),
               "--configfile", str(tmp_path / "study.yaml"), "--cores", "8", *args, *targets]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-5000:]
        return result

    snakemake("-n")
    assert not slots.exists() and not journal.exists()
    result = snakemake()
    assert re.search(r"Provided resources: .*\bgpu=(Resource\(\"gpu\", )?6\b", result.stdout + result.stderr)

    events = [line.split() for line in journal.read_text().splitlines()]
    takes = [e for e in events if e[1] == "take"]
    assert len(takes) == 8 + 2 and Counter(e[1] for e in events)["release"] == len(takes)
    assert max_concurrent(events, key=lambda e: e[2]) <= 2
    assert max_concurrent(events, key=lambda e: (e[2], e[3])) == 1
    assert len({e[2] for e in takes}) > 1 and {e[2] for e in takes} <= {"0", "1", "2"}
    # each run records the device its job was given, and trained on the CPU
    runs = pd.read_parquet(tmp_path / "work" / "results" / "tables" / "runs.parquet")
    assert len(runs) == 8 and set(runs["cuda_visible_devices"]) <= {"0", "1", "2"} and set(runs["device"]) == {"cpu"}
    for log in ("measure_hardware/mnist1d-logreg.log", "interpolate_solutions/mnist1d-mlp.log"):
        assert re.search(r"GPU slot [012]-[01]: this job uses GPU [012]", (tmp_path / "work" / "logs" / log).read_text())
