"""The workflow end to end: lint, dry runs, the smoke study (training, tables, papermill, numbers, PDF,
report), partial reruns after config edits, and errors before any job starts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from batchlab import config as study_config, grid, packs, provenance, store, training
from studies import tmpfs

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, env: dict | None = None, timeout: int = 900):
    """Run snakemake on batchlab's Snakefile in ``workdir``; a hang fails the test instead of CI."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)


def jobs_of(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The job-count table of a dry run: rule name -> count."""
    counts = {}
    for line in result.stdout.splitlines():
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s+(\d+)", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def edited(base: Path, target: Path, **changes) -> Path:
    cfg = yaml.safe_load(base.read_text())
    cfg.update(changes)
    target.write_text(yaml.safe_dump(cfg))
    return target


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The smoke study, run once to paper.pdf."""
    work = tmp_path_factory.mktemp("smoke")
    shutil.copy(SMOKE, work / "smoke.yaml")
    result = snakemake(work, configfile=work / "smoke.yaml")
    assert result.returncode == 0, result.stderr[-5000:]
    return work


def smoke_specs(path: Path = SMOKE) -> list[dict]:
    return grid.expand(study_config.load(path))


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_dry_run_of_default_study_packs_every_run(tmp_path):
    cfg = study_config.load(ROOT / "config.yaml")
    specs = grid.expand(cfg)
    packs = grid.packs(specs, {s["run_id"] for s in specs}, cfg["training"]["pack_size"])
    result = snakemake(tmp_path, "-n")
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result)
    train_jobs = {k: v for k, v in jobs.items() if k.startswith("train_pack_")}
    assert len(train_jobs) == len(packs)
    assert sum(len(p.members) for p in packs) == len(specs)
    assert len([s for s in specs if "variant" not in s]) == 3 * 10 * 6 * 3
    for rule in ("prepare_dataset", "aggregate_runs", "render_figures_learning_rate", "render_figures_batch_size",
                 "render_figures_variants", "write_numbers", "build_paper", "all"):
        assert jobs.get(rule) == 1, rule


def test_smoke_study_builds_everything(smoke):
    specs = smoke_specs()
    pdf = smoke / "paper" / "paper.pdf"
    assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 20_000
    for notebook in ("learning_rate", "batch_size", "interpolation", "variants", "hardware"):
        assert (smoke / "results" / "notebooks" / f"{notebook}.ipynb").exists()
        assert "<html" in (smoke / "results" / "notebooks" / f"{notebook}.html").read_text()[:2000].lower()
    tex = [ROOT / "paper" / "paper.tex", *(ROOT / "paper" / "sections").glob("*.tex")]
    figures = {m for path in tex for m in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\.pdf\}", path.read_text())}
    assert {"accuracy_vs_base_lr", "noise_scale", "distance", "critical_batch", "noise_temperature",
            "interpolation", "sharpness", "time_to_target", "batch_schedules", "budgets"} <= figures
    for figure in figures:  # every figure the paper includes
        assert (smoke / "paper" / "figures" / f"{figure}.pdf").stat().st_size > 1000
        assert (smoke / "paper" / "figures" / f"{figure}.png").stat().st_size > 1000
    runs = pd.read_parquet(smoke / "results" / "tables" / "runs.parquet")
    history = pd.read_parquet(smoke / "results" / "tables" / "history.parquet")
    assert sorted(runs["run_id"]) == sorted(s["run_id"] for s in specs)
    rows = history.groupby("run_id").size()
    diverged = set(runs.loc[runs["diverged"], "run_id"])
    for s in specs:  # one row per evaluation: every scheduled one, or up to the divergence
        expected = len(training.eval_steps(s["steps"], s["eval_points"]))
        assert rows[s["run_id"]] <= expected + 1 if s["run_id"] in diverged else rows[s["run_id"]] == expected
    for column in ("batch_size", "lr", "seed", "optimizer_momentum", "schedule_kind", "final_test_acc", "diverged"):
        assert column in runs.columns
    numbers = (smoke / "paper" / "numbers.tex").read_text()
    # numbers with their intervals over the 2 seeds (or alone, where every resample agrees)
    assert re.search(r"\\newcommand\{\\BestAccCnnOneD\}\{\d+\.\d( \[\d+\.\d, \d+\.\d\])?\}", numbers)
    assert re.search(r"\\newcommand\{\\NumRuns\}\{%d\}" % len([s for s in specs if "variant" not in s]), numbers)
    # both datasets: each claim judged on each (three-valued), the tables over both
    assert set(runs["dataset"]) == {"mnist1d", "blobs"}
    verdict = re.search(r"\\newcommand\{\\ClaimOneAcc\}\{(.*)\}", numbers).group(1)
    assert re.fullmatch(r"on MNIST-1D: .+; on blobs: .+", verdict), verdict
    for table in ("VerdictTable", "DatasetTable"):
        body = re.search(r"\\newcommand\{\\%s\}\{(.*)\}" % table, numbers).group(1)
        assert "MNIST-1D" in body and "blobs" in body, table
    # the variants: their column in the tables, and claims 5 and 7 (fixed steps) with a verdict on each dataset
    assert set(runs["variant"]) == {"", *study_config.load(SMOKE)["variants"]} and "variant" in history
    for claim in ("ClaimFive", "ClaimSevenSteps"):
        assert re.search(r"\\newcommand\{\\%s\}\{on MNIST-1D: (holds|does not hold|inconclusive)" % claim, numbers)
    # the closing section, "Reproducing this paper": the code that trained the runs, the checksums, the command
    section = (smoke / "paper" / "reproducing.tex").read_text()
    assert f"trained {len(specs)} runs" in section and f"{provenance.training_digest()}}} & " in section
    data = smoke / "results" / "data" / "mnist1d.npz"
    assert hashlib.sha256(data.read_bytes()).hexdigest() in section
    assert hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest() in section
    assert "snakemake -{}-cores all -{}-configfile smoke.yaml" in section
    # a training job's log shows progress
    log = next((smoke / "logs" / "train_pack").glob("*cnn1d*.log")).read_text()
    assert re.search(r"runs? 1(-\d+)?/\d+ .* step \d+/\d+ epoch [\d.]+ .* ETA", log)


def test_training_is_deterministic_across_processes(smoke, tmp_path):
    """A pack retrained here gives bitwise the same histories as the pipeline's job did (CPU)."""
    specs = smoke_specs()
    pack_size = yaml.safe_load(SMOKE.read_text())["training"]["pack_size"]
    pack = next(p for p in grid.packs(specs, {s["run_id"] for s in specs}, pack_size)
                if p.members[0]["arch"] == "cnn1d" and p.members[0]["batch_size"] == 8
                and p.members[0]["dataset"] == "mnist1d")
    torch.set_num_threads(1)
    packs.train_pack(list(pack.members), str(smoke / "results" / "data" / "mnist1d.npz"), str(tmp_path))
    for spec in pack.members:
        stored = store.read_history(smoke / "results" / "runs", spec["run_id"])
        history = store.read_history(tmp_path, spec["run_id"])
        columns = [c for c in stored.columns if c != "wall_time"]
        pd.testing.assert_frame_equal(history[columns], stored[columns], check_exact=True)


def test_no_edit_means_nothing_to_do(smoke):
    result = snakemake(smoke, "-n", configfile=smoke / "smoke.yaml")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_adding_a_batch_size_trains_only_its_runs(smoke, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    config = edited(SMOKE, smoke / "more_b.yaml", batch_sizes=cfg["batch_sizes"] + [32])
    result = snakemake(smoke, "-n", configfile=config)
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result)
    trained = [k for k in jobs if k.startswith("train_pack_")]
    assert trained and all("_b32_" in k for k in trained)
    new = [s for s in smoke_specs(config) if s["batch_size"] == 32]
    assert all(s["run_id"] in result.stdout for s in new)  # each pack's message names its runs
    for rule in ("aggregate_runs", "render_figures_learning_rate", "write_numbers", "build_paper"):
        assert rule in jobs


def test_changing_one_architecture_budget_trains_only_its_runs(smoke):
    config = edited(SMOKE, smoke / "mlp_budget.yaml", overrides={"mlp": {"budget": {"epochs": 3}}})
    result = snakemake(smoke, "-n", configfile=config)
    assert result.returncode == 0, result.stderr
    trained = [k for k in jobs_of(result) if k.startswith("train_pack_")]
    assert trained and all("_mlp_" in k for k in trained)
    # the MLP's runs, but for the variant with a budget of its own
    mlp_runs = [s for s in smoke_specs(config) if s["arch"] == "mlp" and s.get("variant") != "fixed_steps"]
    assert all(s["run_id"] in result.stdout for s in mlp_runs)
    fixed = [s for s in smoke_specs(config) if s.get("variant") == "fixed_steps"]
    assert fixed and not any(s["run_id"] in result.stdout for s in fixed)


def test_changing_targets_retabulates_without_training(smoke):
    config = edited(SMOKE, smoke / "targets.yaml", targets=[0.25])
    result = snakemake(smoke, "-n", configfile=config)
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result)
    assert not [k for k in jobs if k.startswith("train_pack_")]
    assert "aggregate_runs" in jobs and "build_paper" in jobs


def test_changing_the_analysis_settings_redraws_the_figures_and_trains_nothing(smoke):
    config = edited(SMOKE, smoke / "analysis.yaml", analysis={"disagreement": 0.05})  # a param of the notebooks
    result = snakemake(smoke, "-n", configfile=config)
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result)
    assert {f"render_figures_{name}" for name in ("learning_rate", "batch_size", "interpolation", "variants")} <= set(jobs)
    assert "aggregate_runs" not in jobs and not [k for k in jobs if k.startswith(("train_pack_", "measure_hardware"))]


def test_removing_a_learning_rate_trains_nothing_and_drops_it_from_the_tables(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    cfg = yaml.safe_load(SMOKE.read_text())
    dropped = cfg["learning_rates"]["base"][-1]
    lrs = dict(cfg["learning_rates"], base=cfg["learning_rates"]["base"][:-1])
    config = edited(SMOKE, work / "fewer_lr.yaml", learning_rates=lrs)
    dry = snakemake(work, "-n", configfile=config)
    assert dry.returncode == 0, dry.stderr
    jobs = jobs_of(dry)
    assert not [k for k in jobs if k.startswith("train_pack_")] and "aggregate_runs" in jobs
    result = snakemake(work, configfile=config)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_parquet(work / "results" / "tables" / "runs.parquet")
    assert len(runs) == len(smoke_specs(config))
    assert not (runs["lr_grid_value"] == dropped).any()


def test_a_deleted_run_is_trained_again_alone_even_with_a_stale_receipt(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    spec = next(s for s in smoke_specs() if s["arch"] == "mlp" and s["batch_size"] == 64)
    shutil.rmtree(work / "results" / "runs" / spec["run_id"])
    pack = grid.packs(smoke_specs(), {spec["run_id"]}, 4)[0]
    receipt = work / grid.receipt_path(pack)  # left over from an interrupted invocation, say
    receipt.parent.mkdir(parents=True, exist_ok=True)
    receipt.write_text("{}")
    result = snakemake(work, "--until", "aggregate_runs", configfile=work / "smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"pack {pack.name}: 1 run(s) to train" in result.stdout + result.stderr
    assert store.is_complete(work / "results" / "runs", spec["run_id"])
    assert not receipt.exists()  # consumed by the tables, then removed
    again = snakemake(work, "-n", "--until", "aggregate_runs", configfile=work / "smoke.yaml")
    assert again.returncode == 0 and jobs_of(again) == {}, again.stdout[-3000:]  # nothing left to do


def copy_source_tree(tree: Path) -> None:
    """What a fresh clone holds that the workflow reads, copied to ``tree``: a tree to edit, or to restore into.
    Files keep their times (copy2), as the smoke study's outputs were made after them: the lock file is an
    input of the paper's reproducing section, and a newer copy would rebuild it."""
    tree.mkdir()
    for part in ("Snakefile", "workflow", "src", "paper", "envs", "profiles", "requirements.lock"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, tree / part)


def files_of(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (sha256 of a file's bytes) but what Snakemake itself writes on
    a dry run too: the log of each invocation (.snakemake/log/) and its cache of file times
    (.snakemake/iocache/, for --trust-io-cache)."""
    own = {(".snakemake", "log"), (".snakemake", "iocache")}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*")) if p.relative_to(folder).parts[:2] not in own}


def test_an_edit_of_the_package_reruns_the_rules_that_use_it_and_never_training(smoke, tmp_path):
    """Snakemake's code trigger sees a rule's script alone; the light rules' code digests (batchlab.provenance)
    carry an edit of the modules they import. An edit of the training code retrains nothing."""
    tree, work = tmp_path / "tree", tmp_path / "work"
    copy_source_tree(tree)
    shutil.copytree(smoke, work, symlinks=True)

    def planned() -> dict[str, int]:
        nonlocal output
        cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "--directory", str(work), "-n",
               "--cores", "2", "--configfile", str(work / "smoke.yaml")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        output = result.stdout + result.stderr
        return jobs_of(result)

    output = ""
    # every run records the training code that trained it, and the runs table has it as a column
    runs = pd.read_parquet(work / "results" / "tables" / "runs.parquet")
    assert set(runs["code_digest"]) == {provenance.training_digest()} and runs["git_dirty"].isin([True, False]).all()
    assert planned() == {}  # the same code: nothing to do
    assert "trained by other training code" not in output
    with open(tree / "src" / "batchlab" / "plots.py", "a") as f:
        f.write("\n# an edit\n")
    jobs = planned()
    assert {f"render_figures_{name}" for name in ("learning_rate", "batch_size", "variants")} <= set(jobs)
    assert "build_paper" in jobs and "aggregate_runs" not in jobs and "write_numbers" not in jobs
    assert not [job for job in jobs if job.startswith(("train_pack", "measure_hardware", "interpolate_solutions"))]
    (tree / "src" / "batchlab" / "plots.py").write_text((ROOT / "src" / "batchlab" / "plots.py").read_text())
    with open(tree / "src" / "batchlab" / "training.py", "a") as f:
        f.write("\n# an edit\n")
    assert not [job for job in planned() if job.startswith(("train_pack", "measure_hardware", "interpolate_solutions"))]
    # ...and the parse says, in one line, which runs another training code trained: all of them, kept
    assert re.search(rf"{len(runs)} complete run\(s\) of this study were trained by other training code than this "
                     rf"tree's \(\w+\): {len(runs)} by {provenance.training_digest()}\.", output), output[-3000:]


def test_a_dry_run_changes_nothing_on_disk(smoke, tmp_path):
    """Even with a run deleted and its pack's receipt left over (stale): the dry run plans to train the pack,
    and leaves every file as it was."""
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    spec = next(s for s in smoke_specs() if s["arch"] == "logreg" and s["batch_size"] == 8)
    shutil.rmtree(work / "results" / "runs" / spec["run_id"])
    pack = grid.packs(smoke_specs(), {spec["run_id"]}, 4)[0]
    receipt = work / grid.receipt_path(pack)
    receipt.parent.mkdir(parents=True, exist_ok=True)
    receipt.write_text("{}")
    before = files_of(work)
    result = snakemake(work, "-n", configfile=work / "smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = jobs_of(result)
    assert jobs.get(f"train_pack_{pack.name}") == 1 and jobs.get("forget_stale_receipts") == 1
    assert files_of(work) == before


def planned_runs(result: subprocess.CompletedProcess) -> set[str]:
    """The run ids a dry run plans to train (each pack's message names its runs)."""
    found = re.findall(r"pack \S+: \d+ run\(s\) to train into results/runs/ \([^)]*\): (.+)", result.stdout)
    return {run_id.strip() for line in found for run_id in line.split(",")}


@pytest.mark.parametrize("overrides, change", [
    (["seeds=[0,1,2]"], {"seeds": [0, 1, 2]}),
    (["batch_sizes=[2,4]"], {"batch_sizes": [2, 4]}),
    (["learning_rates=[0.1,0.2]"], {"learning_rates": [0.1, 0.2]}),
    (["budget={epochs: 4}"], {"budget": {"epochs": 4}}),
    (["datasets=[digits]", "architectures=[mlp]"], {"datasets": ["digits"], "architectures": ["mlp"]}),
    (["datasets=[digits]", "architectures=[mlp]", "augmentation={digits: {crop_padding: 2, flip: true}}"],
     {"datasets": ["digits"], "architectures": ["mlp"], "augmentation": {"digits": {"crop_padding": 2, "flip": True}}}),
])
def test_command_line_overrides_reach_the_planned_runs(tmp_path, overrides, change):
    result = snakemake(tmp_path, "-n", "--config", *overrides, configfile=SMOKE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = grid.expand(study_config.validate(dict(yaml.safe_load(SMOKE.read_text()), **change), warn=[].append))
    assert planned_runs(result) == {s["run_id"] for s in expected}
    # the study's estimated time comes before the plan, with the count of runs to train
    assert re.search(rf"^training: \d+ packs, {len(expected)} runs, estimated [\d.]+ CPU-hours",
                     result.stdout + result.stderr, re.MULTILINE)
    if "datasets" in change:  # the smoke study's options for mnist1d, a dataset it now leaves out: one warning
        output = result.stdout + result.stderr
        assert output.count("'dataset_options.mnist1d'") == 1 and "invalid config" not in output


def test_a_wrong_type_on_the_command_line_names_the_key(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "seeds=[0,x]", configfile=SMOKE)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "invalid config: 'seeds[1]': value 'x' is invalid (allowed: an integer)" in output


@pytest.mark.parametrize(
    "change, words",
    [
        ({"batch_sizes": [8, -4]}, ["batch_sizes[1]", "-4"]),
        ({"architectures": ["mlp", "transformer"]}, ["architectures[1]", "transformer", "cnn1d"]),
        ({"batch_size": [8]}, ["batch_size", "batch_sizes"]),
        ({"batch_sizes": [8, 100000]}, ["batch_sizes[1]", "100000"]),
        ({"datasets": ["mnist"], "dataset_options": {}, "architectures": ["mlp"]}, ["datasets[0]", "train-images-idx3-ubyte"]),
        ({"augmentation": {"mnist1d": {"flip": True}}}, ["'augmentation.mnist1d'", "(1, 40)", "image datasets"]),
    ],
)
def test_invalid_config_stops_before_any_job(tmp_path, change, words):
    config = edited(SMOKE, tmp_path / "bad.yaml", **change)
    result = snakemake(tmp_path, configfile=config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config" in output
    for word in words:
        assert word in output
    assert "Traceback" not in output
    assert not (tmp_path / "results").exists()


def test_report_is_a_browsable_summary(smoke, tmp_path):
    report = tmp_path / "report.html"
    result = snakemake(smoke, "--report", str(report), configfile=smoke / "smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 10_000


def test_without_latexmk_everything_but_the_paper_is_built(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    (work / "paper" / "paper.pdf").unlink()
    (work / "paper" / "numbers.tex").unlink()
    bin_dir = tmp_path / "bin"  # a PATH with the shell and Python but no LaTeX
    bin_dir.mkdir()
    for tool in ("bash", "sh", "env", "which"):  # which: the SLURM plugin looks for sacct with it
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}")
    result = snakemake(work, configfile=work / "smoke.yaml", env=env)
    assert result.returncode != 0
    assert "latexmk not found" in result.stdout + result.stderr
    assert (work / "paper" / "numbers.tex").exists()
    assert not (work / "paper" / "paper.pdf").exists()


# -- when things go wrong ---------------------------------------------------------------------------------


def test_damaged_runs_are_reported_set_aside_and_retrained_alone(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    runs_root = work / "results" / "runs"
    specs = smoke_specs()
    victims = {s["run_id"]: how for s, how in zip(
        [s for s in specs if s["batch_size"] == 64][:3], ["truncated", "no summary", "edited spec"])}
    for run_id, how in victims.items():
        folder = runs_root / run_id
        if how == "truncated":
            data = (folder / store.HISTORY).read_bytes()
            (folder / store.HISTORY).write_bytes(data[:200])
        elif how == "no summary":
            (folder / store.SUMMARY).unlink()
        else:
            spec = json.loads((folder / store.SPEC).read_text())
            (folder / store.SPEC).write_text(json.dumps(dict(spec, seed=99)))

    dry = snakemake(work, "-n", configfile=work / "smoke.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    output = dry.stdout + dry.stderr
    for run_id in victims:
        assert re.search(rf"run {run_id} in results/runs/ is damaged: .+; it will be trained again", output), run_id
    assert "history.arrow does not match its checksum" in output and "summary.json is missing" in output
    assert "spec.json does not hash to the folder's name" in output
    assert sum(len(p.members) for p in grid.packs(specs, set(victims), 4)) == 3
    assert sum(v for k, v in jobs_of(dry).items() if k.startswith("train_pack_")) == len(grid.packs(specs, set(victims), 4))

    result = snakemake(work, "--until", "aggregate_runs", configfile=work / "smoke.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert store.damaged_runs(runs_root, [s["run_id"] for s in specs]) == {}
    aside = sorted(p.name.split(".")[0] for p in (work / "results" / "corrupt").iterdir())
    assert aside == sorted(r.split(".")[0] for r in victims)  # kept, not deleted
    runs = pd.read_parquet(work / "results" / "tables" / "runs.parquet")
    assert sorted(runs["run_id"]) == sorted(s["run_id"] for s in specs)
    # retrained, they equal what the pipeline trained the first time (the damage is gone, nothing else moved)
    for run_id in victims:
        a = store.read_history(runs_root, run_id)
        b = store.read_history(smoke / "results" / "runs", run_id)
        columns = [c for c in a.columns if c != "wall_time"]
        pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)


def test_a_notebook_that_raises_fails_its_rule_and_keeps_the_executed_copy(smoke, tmp_path):
    code = tmp_path / "code"  # batchlab's source with one notebook broken
    code.mkdir()
    for part in ("Snakefile", "workflow", "src", "paper", "profiles", "config.yaml"):
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, code / part)
    notebook = code / "workflow" / "notebooks" / "batch_size.ipynb"
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": ["raise RuntimeError('this figure cannot be drawn')"]})
    notebook.write_text(json.dumps(nb))
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(code / "Snakefile"), "--directory", str(work), "--cores", "2",
           "--configfile", str(work / "smoke.yaml"), "--forcerun", "render_figures_batch_size",
           "--until", "render_figures_batch_size"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule render_figures_batch_size" in output
    assert "failed in cell" in output and "RuntimeError: this figure cannot be drawn" in output
    for kept in (work / "results" / "notebooks" / "batch_size.ipynb", work / "logs" / "render_figures" / "batch_size.ipynb"):
        assert "this figure cannot be drawn" in kept.read_text(), kept


def test_a_dataset_file_with_the_wrong_checksum_stops_before_any_job(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"a truncated download")
    config = edited(SMOKE, tmp_path / "mnist.yaml", datasets=["mnist"], dataset_options={}, architectures=["mlp"])
    result = snakemake(tmp_path, configfile=config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid config: 'datasets[0]': dataset 'mnist': " in output
    assert str(Path("data") / "mnist" / "train-images-idx3-ubyte.gz") in output
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in output
    assert "Traceback" not in output and not (tmp_path / "results").exists()


@pytest.mark.parametrize("options, reason", [("ro,size=1m", "Read-only file system"), ("size=256k", "No space left on device")])
def test_a_results_folder_that_cannot_be_written_stops_before_any_job(tmp_path, options, reason):
    with tmpfs(tmp_path / "results", options) as results:
        dry = snakemake(tmp_path, "-n", configfile=SMOKE)  # writes nothing, so plans all the same
        result = snakemake(tmp_path, configfile=SMOKE)
    assert dry.returncode == 0 and "aggregate_runs" in jobs_of(dry), dry.stderr[-3000:]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot write to the results folder {results}: {reason}" in output
    assert "Traceback" not in output and not (tmp_path / "logs").exists()


def test_ctrl_c_of_snakemake_counts_no_unfinished_run_and_the_rerun_resumes(tmp_path):
    # long enough packs to be interrupted: 2,000 steps per run, a checkpoint every 250
    config = edited(SMOKE, tmp_path / "long.yaml", architectures=["mlp", "cnn1d"], batch_sizes=[8],
                    learning_rates={"base": [0.001, 0.004], "scaling": "linear", "reference_batch_size": 1},
                    seeds=[0], budget={"steps": 2000}, training={"pack_size": 4, "checkpoint": {"every_steps": 250}},
                    variants={})
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "--configfile", str(config), "--until", "aggregate_runs"]
    # a session of its own: Ctrl-C at a terminal signals the whole foreground process group
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    checkpoints = tmp_path / "results" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.exists() and any(checkpoints.glob("*.pt"))) and job.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert job.poll() is None, job.stdout.read()[-3000:]  # still training when interrupted
    os.killpg(job.pid, signal.SIGINT)
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0, output[-3000:]

    specs = grid.expand(study_config.load(config))
    runs_root = tmp_path / "results" / "runs"
    # every folder that counts as complete is complete and intact; no other folder counts
    assert store.damaged_runs(runs_root, [s["run_id"] for s in specs]) == {}
    finished = {s["run_id"] for s in specs if store.is_complete(runs_root, s["run_id"])}
    saved = {p.stem for p in checkpoints.glob("*.pt")}
    assert saved and not saved & finished and len(finished) < len(specs)
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "train_pack").glob("*.log"))
    assert "received SIGINT" in logs and "stopped by SIGINT" in logs

    again = snakemake(tmp_path, "--until", "aggregate_runs", configfile=config)
    assert again.returncode == 0, again.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "train_pack").glob("*.log"))
    for run_id in saved:
        assert re.search(rf"{run_id} resumes from its checkpoint at step \d+/2000", logs), run_id
    assert all(store.check_run(runs_root, s["run_id"]) is None for s in specs)
    assert not any(checkpoints.glob("*.pt"))
    for run_id in finished:  # trained before the interruption: kept as they were
        assert f"{run_id} is already complete; skipped" in logs or run_id not in logs


def test_smoke_study_measures_hardware_and_times_to_target(smoke):
    """One measurement per architecture over the swept batch sizes, the figure, its notebook and numbers; an
    edit of the learning rates measures nothing again."""
    from batchlab import hardware

    cfg = study_config.load(SMOKE)
    table = pd.read_parquet(smoke / "results" / "tables" / "hardware.parquet")
    assert table.columns.tolist() == hardware.COLUMNS
    assert set(table["dataset"]) == set(cfg["datasets"])
    for (dataset, arch), sub in table.groupby(["dataset", "arch"]):  # one sweep per dataset and architecture
        assert arch in cfg["architectures"]
        assert sub["batch_size"].tolist() == hardware.batch_sizes(cfg["batch_sizes"], cfg["hardware"]["max_batch_size"])
        assert sub["fits"].all() and (sub["samples_per_s"] > 0).all() and (sub["peak_memory_mb"] > 0).all()
        assert sorted(sub.loc[sub["in_grid"], "batch_size"]) == sorted(cfg["batch_sizes"])
    for suffix in ("pdf", "png"):
        assert (smoke / "paper" / "figures" / f"time_to_target.{suffix}").stat().st_size > 1000
    assert "<html" in (smoke / "results" / "notebooks" / "hardware.html").read_text()[:2000].lower()
    numbers = (smoke / "paper" / "numbers.tex").read_text()
    assert re.search(r"\\newcommand\{\\MaxFitBatchMlp\}\{512\}", numbers)
    assert re.search(r"\\newcommand\{\\HwDevice\}\{CPU \(.+\)\}", numbers)
    config = edited(SMOKE, smoke / "one_lr_less.yaml", learning_rates={"base": [0.001, 0.004], "scaling": "linear"})
    jobs = jobs_of(snakemake(smoke, "-n", configfile=config))
    assert "measure_hardware" not in jobs and jobs.get("render_figures_hardware") == 1


def test_a_hardware_measurement_holds_every_core_so_it_runs_alone(tmp_path):
    """Its timings are not a shared machine's: on one machine the job asks for every core Snakemake has, so no
    other job runs beside it; the other jobs ask for one."""
    for cores in ("2", "3"):
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                                 str(tmp_path), "--configfile", str(SMOKE), "-n", "--cores", cores],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        blocks = re.findall(r"^rule (\w+):\n((?:    .*\n)+)", result.stdout, re.MULTILINE)
        threads = {}
        for rule, body in blocks:
            m = re.search(r"^    threads: (\d+)$", body, re.MULTILINE)
            threads.setdefault(rule, set()).add(int(m.group(1)) if m else 1)
        assert threads["measure_hardware"] == {int(cores)}, threads
        assert all(found == {1} for rule, found in threads.items() if rule != "measure_hardware"), threads


def test_the_smoke_study_interpolates_each_architecture_between_its_smallest_and_largest_batch(smoke):
    specs = smoke_specs()
    table = pd.read_parquet(smoke / "results" / "tables" / "interpolation.parquet")
    assert sorted(table["arch"].unique()) == ["cnn1d", "logreg", "mlp"]
    assert set(zip(table["small_batch"], table["large_batch"])) == {(8, 256)}
    assert table.groupby(["arch", "seed", "split"])["alpha"].nunique().eq(25).all()
    kept = {s["run_id"] for s in specs if s.get("keep_weights")}
    assert {s["batch_size"] for s in specs if s["run_id"] in kept} == {8, 256}
    for s in specs:  # exactly the runs at the two ends keep their weights
        assert (smoke / "results" / "runs" / s["run_id"] / store.WEIGHTS).exists() == (s["run_id"] in kept)
    assert set(table["small_run_id"]) | set(table["large_run_id"]) <= kept
    numbers = (smoke / "paper" / "numbers.tex").read_text()
    assert re.search(r"\\newcommand\{\\ClaimEightInterp\}\{on MNIST-1D: (holds|does not hold|inconclusive)", numbers)
    # a different alpha grid evaluates again without training
    config = edited(SMOKE, smoke / "alphas.yaml", evaluation={"points": 5, "interpolation": {"points": 7}})
    jobs = jobs_of(snakemake(smoke, "-n", configfile=config))
    assert not any(k.startswith("train_pack_") for k in jobs)
    assert jobs.get("interpolate_solutions") == table.groupby(["dataset", "arch"]).ngroups == 6  # 2 datasets x 3


def test_a_complete_end_run_without_weights_is_trained_again_alone(smoke, tmp_path):
    """A run store from before the interpolation: its end runs are complete but kept no weights."""
    work = tmp_path / "work"
    shutil.copytree(smoke, work, symlinks=True)
    spec = next(s for s in smoke_specs() if s.get("keep_weights"))
    runs = work / "results" / "runs"
    old_spec, summary, history = store.read_run(runs / spec["run_id"])
    shutil.rmtree(runs / spec["run_id"])
    store.write_run(runs, {k: v for k, v in old_spec.items() if k != "keep_weights"}, history.to_pandas(),
                    {k: v for k, v in summary.items() if k != "checksums"})
    assert store.lacks_weights(runs, spec)
    result = snakemake(work, "-n", configfile=work / "smoke.yaml")
    assert result.returncode == 0, result.stderr
    trained = [k for k in jobs_of(result) if k.startswith("train_pack_")]
    assert len(trained) == 1
    assert re.search(rf"1 run\(s\) to train into results/runs/ \([^)]*\): {spec['run_id']}", result.stdout)


# -- the archive ---------------------------------------------------------------------------------------------


def test_an_archive_rebuilds_the_paper_in_a_fresh_clone_without_training_or_measuring(smoke, tmp_path):
    """`snakemake archive` on the smoke study; a copy of the source tree with no results/ (a fresh clone) and
    the archive restored there: the dry run plans no training and no measurement, and the rebuilt paper's
    numbers are byte for byte the archived study's."""
    clone, work = tmp_path / "clone", tmp_path / "work"
    copy_source_tree(clone)
    shutil.copytree(smoke, work, symlinks=True)

    def snakemake_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(clone / "Snakefile"), "--directory", str(folder),
               "--cores", "2", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=clone)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    made = snakemake_in(work, "archive", "--configfile", str(work / "smoke.yaml"))
    # the study is complete: the archive is the one job
    assert re.findall(r"^(?:local)?rule (\w+):", made.stdout + made.stderr, re.MULTILINE) == ["archive"]
    archived = work / "results" / "archive" / "smoke.tar.gz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(clone / "src"), os.environ.get("PYTHONPATH", "")]))
    restored = subprocess.run([sys.executable, "-m", "batchlab.archive", "restore", str(archived)], cwd=clone,
                              env=env, capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert f"{len(smoke_specs())} runs" in restored.stdout
    config = clone / "results" / "archive" / "smoke" / "config.yaml"
    dry = snakemake_in(clone, "-n", "--configfile", str(config))
    jobs = jobs_of(dry)
    assert not [job for job in jobs if job.startswith(("train_pack", "measure_hardware", "interpolate_solutions",
                                                       "prepare_dataset", "aggregate_runs", "combine_"))], jobs
    assert jobs.get("write_numbers") == 1 and jobs.get("build_paper") == 1
    snakemake_in(clone, "--configfile", str(config))
    assert (clone / "paper" / "numbers.tex").read_bytes() == (smoke / "paper" / "numbers.tex").read_bytes()
    assert (clone / "paper" / "paper.pdf").read_bytes()[:4] == b"%PDF"
    assert not (clone / "results" / "data").exists()  # no job needed the prepared data
