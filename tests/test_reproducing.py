"""The paper's section on reproducing it (batchlab.reproducing), from small made-up runs tables: the revisions
of the training code counted, dirty trees and runs without a commit said as such, checksums of the files,
LaTeX escaping, the total training time, the commands."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from batchlab import reproducing

DIGEST_A, DIGEST_B = "aaaa1111aaaa1111", "bbbb2222bbbb2222"
COMMIT_1, COMMIT_2 = "1" * 40, "2" * 40
DATA_SHA = hashlib.sha256(b"made-up arrays").hexdigest()


def run(i: int, **fields) -> dict:
    """One row of a runs table, as batchlab.tables writes it (the columns the section reads)."""
    row = {"run_id": f"r{i}", "dataset": "mnist1d", "variant": "", "n_train": 800, "n_test": 200,
           "code_digest": DIGEST_A, "git_commit": COMMIT_1, "git_dirty": False, "device": "cpu",
           "device_name": "x86_64", "cpu_capability": "AVX2", "platform": "Linux-6.1-x86_64-with-glibc2.36",
           "python": "3.11.2",
           "torch": "2.13.0+cpu", "train_seconds": 10.0, "wall_seconds": 12.0, "engine": "sequential",
           "pack_members": None, "data_sha256": DATA_SHA}
    return {**row, **fields}


@pytest.fixture
def runs() -> pd.DataFrame:
    """Six runs: three by digest A at commit 1 (clean), two by digest B at commit 2 with uncommitted changes,
    one by digest B from a tree without git (no commit, no dirty flag)."""
    rows = [run(i) for i in range(3)]
    rows += [run(i, code_digest=DIGEST_B, git_commit=COMMIT_2, git_dirty=True) for i in (3, 4)]
    rows += [run(5, code_digest=DIGEST_B, git_commit=None, git_dirty=None, variant="constant")]
    return pd.DataFrame(rows)


@pytest.fixture
def lock(tmp_path) -> Path:
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0 --hash=sha256:0123\n")
    return lock


def test_each_revision_is_a_row_with_its_commit_its_tree_and_its_runs(runs):
    rows = reproducing.code_rows(runs)
    assert rows == [
        rf"\texttt{{{DIGEST_A}}} & \texttt{{{COMMIT_1}}} & clean & 3",
        rf"\texttt{{{DIGEST_B}}} & \texttt{{{COMMIT_2}}} & uncommitted changes & 2",
        rf"\texttt{{{DIGEST_B}}} & none & not a git clone & 1",
    ]


def test_the_summary_counts_revisions_and_distinct_digests_and_names_dirty_trees_and_missing_commits(runs, lock):
    text = reproducing.summary(runs, lock, "smoke")
    assert ("Study \\texttt{smoke} trained 6 runs, 1 of them in variants, on \\texttt{mnist1d} (800 training and 200 "
            "test examples).") in text
    assert "They were trained by 3 revisions of the training code (2 distinct digests)" in text
    assert "Of the 6 runs, 2 were trained from a tree with uncommitted changes, so the commit alone" in text
    assert "Of the 6 runs, one was trained from a source tree without git (an unpacked archive, say)" in text
    one = reproducing.summary(runs.iloc[:3], lock, "smoke")
    assert "All were trained by one revision of the training code" in one
    assert "uncommitted" not in one and "without git" not in one
    everything = reproducing.summary(runs.assign(git_dirty=True, git_commit=COMMIT_1), lock, "smoke")
    assert "They were trained from a tree with uncommitted changes" in everything


def test_the_versions_and_machines_the_runs_recorded(runs, lock):
    text = reproducing.summary(runs, lock, "smoke")
    assert "with Python 3.11.2 and PyTorch 2.13.0+cpu, on one machine" in text
    runs.loc[4:, ["torch", "device", "device_name"]] = ["2.12.1", "cuda", "NVIDIA H200"]
    text = reproducing.summary(runs, lock, "smoke")
    assert "PyTorch 2.13.0+cpu (4 runs), 2.12.1 (2 runs), on 2 machines" in text
    assert reproducing.machine_rows(runs) == [r"CPU & x86\_64 & AVX2 & Linux-6.1-x86\_64-with-glibc2.36 & 4",
                                              r"CUDA & NVIDIA H200 & AVX2 & Linux-6.1-x86\_64-with-glibc2.36 & 2"]


def test_the_same_cpu_with_other_kernels_is_another_machine_and_runs_from_before_say_not_recorded(runs, lock):
    """Rounding, and so a retrain's bits, follows the kernels torch dispatches to: AVX2 and AVX512 runs of
    the same CPU model are two machines; a runs table from before the column reads as not recorded."""
    runs.loc[:1, "cpu_capability"] = "AVX512"
    assert "on 2 machines" in reproducing.summary(runs, lock, "smoke")
    assert [row.split(" & ")[2] for row in reproducing.machine_rows(runs)] == ["AVX2", "AVX512"]
    older = runs.drop(columns=["cpu_capability"])
    assert reproducing.machine_rows(older) == [r"CPU & x86\_64 & not recorded & Linux-6.1-x86\_64-with-glibc2.36 & 6"]
    text = reproducing.section(runs, lock, "smoke", [])
    assert "bitwise the same runs" in text and "intervals over seeds, not digit by digit" in text


def test_the_total_training_time_sums_the_runs_and_shares_a_batched_packs_wall_time():
    runs = pd.DataFrame([run(0, train_seconds=30.0, wall_seconds=40.0),
                         run(1, train_seconds=90.0, wall_seconds=3000.0, engine="batched", pack_members=2),
                         run(2, train_seconds=3600.0, wall_seconds=3000.0, engine="batched", pack_members=2)])
    assert reproducing.training_time(runs) == (3720.0, 3040.0)
    text = reproducing.summary(runs, None, "smoke")
    assert "1~h 02~min in training steps in all (the sum of the runs' \\texttt{train\\_seconds})" in text
    assert "50~min 40~s with their evaluations (\\texttt{wall\\_seconds})" in text
    # a table without the wall time says only the training steps'
    assert reproducing.training_time(runs.drop(columns="wall_seconds")) == (3720.0, None)
    assert "evaluations" not in reproducing.summary(runs.drop(columns="wall_seconds"), None, "smoke")


@pytest.mark.parametrize("seconds, text", [(0.4, "0~s"), (42.2, "42~s"), (59.6, "1~min 00~s"), (750, "12~min 30~s"),
                                           (3599, "59~min 59~s"), (3600, "1~h 00~min"), (7529, "2~h 05~min"),
                                           (90_000, "25~h 00~min")])
def test_hours_minutes(seconds, text):
    assert reproducing.hours_minutes(seconds) == text


def test_the_files_rows_give_the_sha256_of_the_lock_and_of_each_dataset_its_runs_trained_on(runs, lock):
    lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
    rows = reproducing.file_rows(runs, lock)
    assert rows == [rf"\texttt{{requirements.lock}} & \texttt{{{lock_sha}}}",
                    rf"\texttt{{results/data/mnist1d.npz}} & \texttt{{{DATA_SHA}}}"]
    assert reproducing.file_rows(runs, None) == rows[1:]  # no lock: no row for it
    # runs trained on two different files of one dataset: both are named; runs from before they were recorded
    other = runs.assign(data_sha256=[DATA_SHA] * 5 + ["f" * 64])
    assert reproducing.file_rows(other, None) == [rf"\texttt{{results/data/mnist1d.npz}} & \texttt{{{DATA_SHA}}}",
                                                  rf"\texttt{{results/data/mnist1d.npz}} & \texttt{{{'f' * 64}}}"]
    assert reproducing.file_rows(runs.drop(columns="data_sha256"), None) == [
        r"\texttt{results/data/mnist1d.npz} & not recorded"]


def test_the_datasets_examples_come_from_the_runs(runs):
    big = pd.concat([runs, pd.DataFrame([run(9, dataset="cifar10", n_train=50_000, n_test=10_000)])])
    assert reproducing.data_text(big) == (r"\texttt{cifar10} (50{,}000 training and 10{,}000 test examples), "
                                          r"\texttt{mnist1d} (800 training and 200 test examples)")
    assert reproducing.data_text(runs.drop(columns="n_train")) == r"\texttt{mnist1d} (examples not recorded)"


def test_without_a_lock_file_the_section_says_so(runs, lock):
    text = reproducing.section(runs, None, "smoke", [])
    assert "has no \\texttt{requirements.lock}" in text and "locked environment" not in text
    assert "Every dependency is locked" in reproducing.section(runs, lock, "smoke", [])


def test_special_characters_are_escaped(lock, tmp_path):
    runs = pd.DataFrame([run(0, dataset="my_data", device="cuda", device_name="GPU #1 & 100% R&D",
                             platform="Linux_6 ~ {x}")])
    text = reproducing.section(runs, lock, "my_study", ["configs/my_study.yaml"])
    assert r"GPU \#1 \& 100\% R\&D" in text and r"Linux\_6 \textasciitilde{} \{x\}" in text
    assert r"\texttt{results/data/my\_data.npz} & \texttt{" in text and r"on \texttt{my\_data} (800 training" in text
    assert r"Study \texttt{my\_study}" in text and r"results/archive/my\_study.tar.gz" in text
    assert r"snakemake -{}-cores all -{}-configfile configs/my\_study.yaml" in text
    for line in text.splitlines():  # every other special character escaped: none left bare
        assert "#" not in line.replace(r"\#", "") and "&" not in line.replace(r"\&", "").replace(" & ", "")


def test_the_commands_to_train_again_and_to_rebuild_from_the_archive(runs, lock):
    text = reproducing.section(runs, lock, "smoke", ["configs/smoke.yaml"])
    # two hyphens stay two in typewriter type (T1 fonts join "--" into a dash)
    assert "snakemake -{}-cores all -{}-configfile configs/smoke.yaml" in text and "--" not in text.split("\n", 1)[1]
    assert r"\texttt{snakemake -{}-cores 1 archive}} writes, \texttt{results/archive/smoke.tar.gz}" in text
    assert r"python -m batchlab.archive restore results/archive/smoke.tar.gz\\" in text
    assert "in a clone at the commit above" in text
    default = reproducing.section(runs, lock, "default", [])
    assert "snakemake -{}-cores all\n" in default and "configfile" not in default
    tarball = runs.assign(git_commit=None, git_dirty=None)
    assert "a revision whose training code has the digest above" in reproducing.section(tarball, lock, "s", [])


def test_a_runs_table_from_before_runs_recorded_their_code(lock):
    runs = pd.DataFrame([run(0)]).drop(columns=["code_digest", "git_commit", "git_dirty", "wall_seconds"])
    assert reproducing.code_rows(runs) == ["not recorded & none & not a git clone & 1"]
    assert "one revision" in reproducing.section(runs, lock, "smoke", [])


def test_missing_values_read_as_not_recorded_whatever_the_columns_dtype(runs):
    """A column read as pandas' nullable booleans holds NA, not None, where a run recorded nothing."""
    nullable = runs.astype({"git_dirty": "boolean"})
    assert nullable["git_dirty"].isna().sum() == 1
    assert reproducing.code_rows(nullable) == reproducing.code_rows(runs)


def test_study_file_is_relative_to_the_source_tree_or_the_working_directory(tmp_path):
    tree, work = tmp_path / "tree", tmp_path / "work"
    given = [tree / "configs" / "smoke.yaml", work / "mine.yaml", Path("/elsewhere/study.yaml")]
    assert reproducing.study_file(given, tree, work) == ["configs/smoke.yaml", "mine.yaml", "/elsewhere/study.yaml"]
    assert reproducing.study_file([], tree, work) == []


def test_the_parse_imports_the_module_without_pandas():
    """paper.smk imports it for study_file at every parse, which stays fast: pandas only where a table is read."""
    code = "import sys, batchlab.reproducing; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(reproducing.__file__).parents[1])}).stdout
    assert out.strip() == "False"


def test_write_reads_the_runs_table_and_writes_the_section(runs, lock, tmp_path):
    table = tmp_path / "runs.parquet"
    runs.to_parquet(table, index=False)
    out = tmp_path / "paper" / "reproducing.tex"
    text = reproducing.write(table, lock, out, study="smoke", configfiles=["configs/smoke.yaml"])
    assert out.read_text() == text and text.startswith("% Generated by batchlab.reproducing")
    assert "\\section{Reproducing this paper}" in text and "\\label{tab:reproducing}" in text


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="LaTeX is not installed")
def test_the_section_compiles_with_special_characters(lock, tmp_path):
    runs = pd.DataFrame([run(0, dataset="my_data", device_name="GPU #1 & 100% R&D ~^ " + "Xeon(R) Platinum " * 6,
                             platform="a_b {c} \\d"),
                         run(1, git_commit=None, git_dirty=None)])
    section = reproducing.section(runs, lock, "my_study", ["configs/my_study.yaml"])
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage{booktabs,graphicx}\n"
                   "\\begin{document}\n"
                   + section + "\\end{document}\n")
    result = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
