"""batchlab on a real SLURM cluster: the smoke study through ``snakemake --profile profiles/slurm`` on a
single-node cluster started for these tests (tests/slurm_cluster.py), a cancelled job, and a wrong
partition or account. The cluster lives as long as this module's tests; where SLURM cannot be installed
they are skipped, with the reason."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
import yte

import slurm_cluster
from batchlab import config as study_config, grid, phases, store
from batchlab.packs import train_pack

ROOT = Path(__file__).resolve().parents[1]
SMOKE_STUDY = ROOT / "configs" / "smoke.yaml"


def write_smoke(path: Path) -> Path:
    """The smoke study on MNIST-1D alone: what a cluster does with a job does not depend on the dataset, and
    its second one would double the cluster's work."""
    cfg = yaml.safe_load(SMOKE_STUDY.read_text())
    cfg["datasets"], cfg["dataset_options"] = ["mnist1d"], {"mnist1d": cfg["dataset_options"]["mnist1d"]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
PROFILE = ROOT / "profiles" / "slurm"
pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

# what a user exports on the login node (README, "Running on SLURM"); packs go three to a job
CLUSTER_SETTINGS = {
    "BATCHLAB_SLURM_ACCOUNT": slurm_cluster.ACCOUNT,
    "BATCHLAB_SLURM_PARTITION": slurm_cluster.PARTITION,
    "BATCHLAB_GPU_MODEL": slurm_cluster.GPU_TYPE,
    "BATCHLAB_CPUS_PER_GPU": "1",
    "BATCHLAB_PACKS_PER_JOB": "3",
}
# one pack of four runs of a few seconds each: long enough to cancel its job halfway
SLOW = {
    "study": "slow",
    "datasets": ["mnist1d"],
    "dataset_options": {"mnist1d": {"num_samples": 1000, "seed": 42}},
    "architectures": ["mlp"],
    "batch_sizes": [8],
    "learning_rates": [0.01, 0.02, 0.03, 0.04],
    "budget": {"steps": 4000},
    "seeds": [0],
    "evaluation": {"points": 4},
    # one run after another, so the job can be cancelled between two of them
    "training": {"pack_size": 4, "engine": "sequential"},
}


def profile_settings(env: dict) -> dict:
    """profiles/slurm/config.yaml as Snakemake reads it, under the environment ``env``."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with open(PROFILE / "config.yaml") as f:
            return yte.process_yaml(f, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class TestProfile:
    """The profile alone (no cluster needed)."""

    def test_defaults_ask_for_one_gpu_and_set_no_account(self):
        settings = profile_settings({})
        assert settings["executor"] == "slurm"
        assert settings["default-resources"] == {"gpu": 1}
        assert settings["resources"] == {"gpu": 1}
        assert settings["set-resource-scopes"] == {"gpu": "local"}
        assert settings["group-components"] == {"train": 1}
        assert settings["retries"] >= 1 and settings["slurm-logdir"] == "logs/slurm"

    def test_cluster_settings_come_from_the_environment(self):
        settings = profile_settings(
            {**CLUSTER_SETTINGS, "BATCHLAB_GPUS": "2", "BATCHLAB_SLURM_EXTRA": "--qos=long", "BATCHLAB_SLURM_JOBS": "7"}
        )
        # strings are quoted for Snakemake's resource parser, which evaluates each value
        assert settings["default-resources"] == {
            "gpu": 2,
            "gpu_model": "'fake'",
            "cpus_per_gpu": 1,
            "slurm_account": "'batchlab'",
            "slurm_partition": "'gpu'",
            "slurm_extra": "'--qos=long'",
        }
        assert settings["resources"] == {"gpu": 2}
        assert settings["group-components"] == {"train": 3}
        assert settings["jobs"] == 7

    def test_cpu_only_cluster(self):
        settings = profile_settings({"BATCHLAB_GPUS": "0"})
        assert settings["default-resources"] == {"gpu": 0}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.ensure_installed() or slurm_cluster.conflict()
    if reason:
        pytest.skip(f"no SLURM cluster for these tests: {reason}")
    if not _plugin_installed():
        pytest.skip('the SLURM executor plugin is not installed (pip install -e ".[slurm]")')
    local = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
    except Exception:
        local.stop()
        raise
    yield local
    local.stop()


def _plugin_installed() -> bool:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return False
    return True


def snakemake_on(cluster, workdir: Path, *args: str, configfile: Path, env: dict | None = None,
                 timeout: int = 600, background: bool = False):
    """``snakemake --profile profiles/slurm`` in ``workdir`` as a user on the login node would run it; a
    hang fails the test (the timeout) instead of CI."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(configfile),
        "--profile", str(PROFILE),
        # the first status check after 2 s instead of 40 s, so the tests don't wait
        "--slurm-init-seconds-before-status-checks", "2",
        *args,
    ]
    full_env = {**cluster.env, **CLUSTER_SETTINGS, **(env or {})}
    if background:
        return subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)


def local_snakemake(workdir: Path, *args: str, configfile: Path, timeout: int = 600):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(configfile),
           "--cores", "2", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BATCHLAB_"))}
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def output_of(result) -> str:
    return (result.stdout or "") + (result.stderr or "")


@pytest.fixture(scope="module")
def slurm_smoke(cluster, tmp_path_factory):
    """The smoke study trained on the cluster (the light rules run locally, as on a login node)."""
    work = tmp_path_factory.mktemp("slurm_smoke")
    result = snakemake_on(cluster, work, "--until", "aggregate_runs", configfile=write_smoke(work / "smoke.yaml"))
    assert result.returncode == 0, output_of(result)[-8000:]
    return work, result


def pack_names(workdir: Path) -> set[str]:
    return {p.stem for p in (workdir / "logs" / "train_pack").glob("*.log")}


class TestSmokeStudyOnSlurm:
    def test_training_jobs_went_through_sbatch_with_a_gpu(self, cluster, slurm_smoke):
        work, _ = slurm_smoke
        jobs = cluster.history("JobID", "State", "ReqTRES", "AllocTRES", "Account", "Partition", "SubmitLine")
        training = [j for j in jobs if "train_pack_" in j["SubmitLine"]]
        packs = pack_names(work)
        cfg = study_config.load(work / "smoke.yaml")
        specs = grid.expand(cfg)
        expected = {p.name for p in grid.packs(specs, {s["run_id"] for s in specs}, cfg["training"]["pack_size"])}
        assert packs == expected and len(packs) == 22  # the grid's 18 (3 architectures x 3 batch sizes x 2 chunks
        # of 4 runs) and the variants' 4 more
        # three packs to a job (BATCHLAB_PACKS_PER_JOB=3), every pack in exactly one job
        submitted = [re.findall(r"train_pack_(mnist1d_\w+?_p\d)", j["SubmitLine"].split("--comment")[1].split()[0])
                     for j in training]
        assert sorted(p for job in submitted for p in job) == sorted(packs)
        assert len(training) == math.ceil(len(packs) / 3)
        for job in training:
            assert job["State"] == "COMPLETED"
            assert job["Account"] == slurm_cluster.ACCOUNT and job["Partition"] == slurm_cluster.PARTITION
            # the GPU request reached sbatch, one GPU per job however many packs it holds, and was granted
            assert f"--gpus={slurm_cluster.GPU_TYPE}:1" in job["SubmitLine"]
            assert "--cpus-per-gpu=1" in job["SubmitLine"]
            assert "gres/gpu=1" in job["ReqTRES"] and "gres/gpu=1" in job["AllocTRES"]
            # memory and runtime come from the packs, not one constant
            assert re.search(r"--mem \d+", job["SubmitLine"]) and re.search(r" -t \d+", job["SubmitLine"])
        # only training was submitted: data, tables, notebooks and the paper run on the login node
        assert not [j for j in jobs if "train_pack_" not in j["SubmitLine"]]

    def test_results_equal_a_local_run(self, slurm_smoke, tmp_path):
        work, _ = slurm_smoke
        local = local_snakemake(tmp_path, "--until", "aggregate_runs", configfile=write_smoke(tmp_path / "smoke.yaml"))
        assert local.returncode == 0, output_of(local)[-5000:]
        expected = {spec["run_id"] for spec in grid.expand(study_config.load(tmp_path / "smoke.yaml"))}
        for table, keys in (("history", ["run_id", "step"]), ("runs", ["run_id"])):
            on_slurm = pd.read_parquet(work / f"results/tables/{table}.parquet")
            here = pd.read_parquet(tmp_path / f"results/tables/{table}.parquet")
            # when and where: times, memory, and the GPUs SLURM gave the job (its fake gres) against none here
            timing = [c for c in on_slurm.columns if c in ("wall_time", "wall_seconds", "train_seconds", "samples_per_s",
                                                           "peak_memory_mb", "cuda_visible_devices",
                                                           *phases.SUMMARY_COLUMNS)]
            assert set(on_slurm.run_id) == set(here.run_id) == expected
            pd.testing.assert_frame_equal(
                on_slurm.drop(columns=timing).sort_values(keys).reset_index(drop=True),
                here.drop(columns=timing).sort_values(keys).reset_index(drop=True),
                check_exact=True,
            )

    def test_nothing_left_to_do_afterwards(self, cluster, slurm_smoke):
        work, _ = slurm_smoke
        result = snakemake_on(cluster, work, "-n", "--until", "aggregate_runs", configfile=work / "smoke.yaml")
        assert result.returncode == 0, output_of(result)[-3000:]
        assert re.search(r"^total\s+0$", result.stdout, re.M), output_of(result)[-3000:]


def test_light_rules_are_submitted_without_a_gpu_when_configured(cluster, tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({**SLOW, "cluster": {"local_light_rules": False}}))
    result = snakemake_on(cluster, tmp_path, "--until", "prepare_dataset", configfile=config, timeout=300)
    assert result.returncode == 0, output_of(result)[-5000:]
    jobs = [j for j in cluster.history("JobID", "ReqTRES", "SubmitLine") if f"-D {tmp_path}" in j["SubmitLine"]]
    assert len(jobs) == 1 and "--comment rule_prepare_dataset_wildcards_mnist1d" in jobs[0]["SubmitLine"]
    assert "gres/gpu" not in jobs[0]["ReqTRES"]
    assert (tmp_path / "results/data/mnist1d.npz").exists()


def write_slow_config(workdir: Path) -> Path:
    path = workdir / "slow.yaml"
    path.write_text(yaml.safe_dump(SLOW))
    return path


def run_and_cancel_after_first_run(cluster, work: Path, *args: str) -> tuple[str, int, list[Path]]:
    """Start the slow study, wait until the first run of its pack is complete, scancel the job, and let
    snakemake go on; return its output, exit code and the runs complete at the time of the cancel."""
    config = write_slow_config(work)
    proc = snakemake_on(cluster, work, "--until", "aggregate_runs", *args, configfile=config, background=True,
                        env={"BATCHLAB_PACKS_PER_JOB": "1"})
    try:
        deadline = time.monotonic() + 300
        while not (done := store.finished(work / "results" / "runs")):
            assert proc.poll() is None, proc.stdout.read()[-5000:]
            assert time.monotonic() < deadline, "no run finished within 300 s"
            time.sleep(0.2)
        running = cluster._run("squeue", "-h", "-t", "R", "-o", "%i").stdout.split()
        assert len(running) == 1
        cluster._run("scancel", running[0])
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, proc.returncode, done


def checkpoint_steps(work: Path) -> dict[str, int]:
    """The runs with a checkpoint in the run store's checkpoint folder, and its step."""
    return {p.stem: torch.load(p, weights_only=True)["step"] for p in (work / "results" / "checkpoints").glob("*.pt")}


def history_mtimes(work: Path) -> dict[str, float]:
    return {p.parent.name: (p.parent / store.HISTORY).stat().st_mtime for p in store.finished(work / "results" / "runs")}


class TestFailureOnTheCluster:
    def test_cancelled_job_is_reported_and_a_rerun_trains_only_unfinished_runs(self, cluster, tmp_path):
        out, code, done = run_and_cancel_after_first_run(cluster, tmp_path, "--retries", "0")
        assert code != 0
        assert "SLURM status is: 'CANCELLED'" in out
        assert len(done) == 1
        # SLURM's SIGTERM made the job save the run it was training before it stopped (the cadence, 10
        # minutes, made none)
        saved = checkpoint_steps(tmp_path)
        assert len(saved) == 1 and 0 < next(iter(saved.values())) < 4000, saved
        first = history_mtimes(tmp_path)
        # the next run asks for the three unfinished runs only, and trains them
        config = tmp_path / "slow.yaml"
        dry = snakemake_on(cluster, tmp_path, "-n", "--until", "aggregate_runs", configfile=config)
        packs = re.findall(r"pack \w+: (\d+) run\(s\) to train into \S+ \([^)]*\): (.*)\n", output_of(dry))
        assert len(packs) == 1 and packs[0][0] == "3" and done[0].parent.name not in packs[0][1]
        rerun = snakemake_on(cluster, tmp_path, "--until", "aggregate_runs", configfile=config)
        assert rerun.returncode == 0, output_of(rerun)[-5000:]
        log = (tmp_path / "logs/train_pack/mnist1d_mlp_b8_n4000_p0.log").read_text()
        assert "pack of 3 runs" in log
        ((resumed, step),) = saved.items()
        assert f"{resumed} resumes from its checkpoint at step {step}/4000" in log
        assert not checkpoint_steps(tmp_path)
        # and it finished as if never stopped: the same run trained here, in one go, is bitwise equal
        spec = next(s for s in grid.expand(study_config.load(config)) if s["run_id"] == resumed)
        train_pack([spec], str(tmp_path / "results/data/mnist1d.npz"), str(tmp_path / "again"), engine="sequential")
        stored, alone = (store.read_history(root, resumed) for root in (tmp_path / "results/runs", tmp_path / "again"))
        columns = [c for c in alone.columns if c != "wall_time"]
        pd.testing.assert_frame_equal(stored[columns], alone[columns], check_exact=True)
        assert history_mtimes(tmp_path)[done[0].parent.name] == first[done[0].parent.name]
        assert all(store.is_complete(tmp_path / "results/runs", run) for run in history_mtimes(tmp_path))
        assert len(pd.read_parquet(tmp_path / "results/tables/runs.parquet")) == 4

    def test_retry_after_a_cancel_keeps_the_finished_runs(self, cluster, tmp_path):
        """The profile's retry resubmits the cancelled job, which trains only what the first try left."""
        out, code, done = run_and_cancel_after_first_run(cluster, tmp_path)
        first = done[0].parent.name
        assert code == 0, out[-5000:]
        assert "CANCELLED" in out and "Trying to restart job" in out
        mtimes = history_mtimes(tmp_path)
        assert len(mtimes) == 4 and mtimes[first] < min(t for run, t in mtimes.items() if run != first)
        assert "pack of 3 runs" in (tmp_path / "logs/train_pack/mnist1d_mlp_b8_n4000_p0.log").read_text()

    @pytest.mark.parametrize(
        "setting, message",
        [
            ("BATCHLAB_SLURM_PARTITION", "Invalid partition name specified"),
            ("BATCHLAB_SLURM_ACCOUNT", "appears to be invalid. Available accounts:"),
        ],
    )
    def test_wrong_partition_or_account_fails_with_slurms_message(self, cluster, tmp_path, setting, message):
        result = snakemake_on(cluster, tmp_path, "--until", "aggregate_runs", configfile=write_slow_config(tmp_path),
                              # ungrouped: Snakemake drops the executor's message of a failed group
                              env={setting: "nosuch", "BATCHLAB_PACKS_PER_JOB": "1"}, timeout=300)
        assert result.returncode != 0
        assert message in output_of(result)
        assert not store.finished(tmp_path / "results" / "runs")
