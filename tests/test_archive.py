"""batchlab.archive: a study packed with a manifest of checksums, and restored from an archive that may come
from a stranger: unsafe members and damaged archives are refused before anything is written, a complete
run that differs is never overwritten, an identical one is skipped."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from batchlab import archive, store
from studies import TINY, tiny_specs

SPECS = tiny_specs(seeds=[0, 1])  # four real runs: a run's id is the hash of its spec
HISTORY = pd.DataFrame({"step": [0, 6, 12], "test_acc": [0.1, 0.3, 0.4]})
OUTPUTS = {  # a table or measurement -> its modification time, seconds after the first: the order they were made
    "results/tables/runs.parquet": 0, "results/tables/history.parquet": 0, "results/hardware/mnist1d-mlp.parquet": 5,
    "results/interpolation/mnist1d-mlp.parquet": 10, "results/tables/hardware.parquet": 15,
    "results/tables/interpolation.parquet": 20}
REVISION = {"code_digest": "0123456789abcdef", "git_commit": "f" * 40, "git_dirty": False}


def summary(spec: dict, **changes) -> dict:
    return {"run_id": spec["run_id"], "final_test_acc": 0.4, "diverged": False, **changes}


def make_study(work: Path) -> Path:
    """A work folder with the tiny study's runs (the first keeps its weights, the second a checkpoint), made-up
    tables and measurements, numbers and a lock file; its archive, built."""
    runs = work / archive.RUNS
    for i, spec in enumerate(SPECS):
        store.write_run(runs, spec, HISTORY, summary(spec), checkpoint={"step": 12} if i == 1 else None,
                        weights={"w": torch.arange(4.0)} if i == 0 else None)
    origin = time.time() - 3600
    for rel, offset in OUTPUTS.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(f"table {rel}".encode())
        os.utime(work / rel, (origin + offset, origin + offset))
    (work / "numbers.tex").write_text("\\newcommand{\\NumRuns}{4}\n")
    (work / "requirements.lock").write_text("torch==2.13.0 --hash=sha256:00\n")
    out = work / "results" / "archive" / "tiny.tar.gz"
    archive.build(out, dict(TINY), REVISION, [s["run_id"] for s in SPECS], list(OUTPUTS), work / "requirements.lock",
                  work / "numbers.tex", workdir=work)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study"))


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def rewritten(src: Path, dst: Path, change) -> Path:
    """A copy of the archive ``src`` whose (TarInfo, bytes) members ``change`` edits."""
    with tarfile.open(src) as tar:
        members = [(copy.copy(m), tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(dst, "w:gz") as tar:
        for info, data in change(members):
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dst


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_the_archive_holds_the_runs_tables_config_and_a_manifest_of_every_file(built):
    members = members_of(built)
    work = built.parents[2]
    runs = {name.split("/")[3] for name in members if name.startswith("tiny/results/runs/")}
    assert runs == {s["run_id"] for s in SPECS}
    assert f"tiny/results/runs/{SPECS[0]['run_id']}/weights.pt" in members
    assert not any(name.endswith(store.CHECKPOINT) for name in members)  # kept in the store, never archived
    assert (work / archive.RUNS / SPECS[1]["run_id"] / store.CHECKPOINT).exists()
    assert {f"tiny/{rel}" for rel in OUTPUTS} <= set(members)
    assert yaml.safe_load(members["tiny/config.yaml"]) == TINY
    assert json.loads(members["tiny/revision.json"]) == REVISION
    assert members["tiny/requirements.lock"] == (work / "requirements.lock").read_bytes()
    manifest = dict(reversed(line.split("  ", 1)) for line in members["tiny/MANIFEST.sha256"].decode().splitlines())
    assert set(manifest) == {name[len("tiny/"):] for name in members} - {"MANIFEST.sha256"}
    for rel, digest in manifest.items():
        assert hashlib.sha256(members[f"tiny/{rel}"]).hexdigest() == digest, rel
    assert [p.name for p in built.parent.iterdir()] == ["tiny.tar.gz"]  # no temporary file left beside it


def test_building_refuses_a_damaged_run_and_keeps_the_archive_it_had(built, tmp_path):
    work = tmp_path / "work"
    out = make_study(work)
    before = out.read_bytes()
    history = work / archive.RUNS / SPECS[2]["run_id"] / store.HISTORY
    history.write_bytes(history.read_bytes()[:100])
    with pytest.raises(archive.ArchiveError, match=f"run {SPECS[2]['run_id']} .*history.arrow does not match"):
        archive.build(out, dict(TINY), REVISION, [s["run_id"] for s in SPECS], list(OUTPUTS),
                      work / "requirements.lock", work / "numbers.tex", workdir=work)
    assert out.read_bytes() == before and files_under(out.parent) == ["tiny.tar.gz"]


def test_restore_gives_back_the_runs_and_measurements_newer_than_now_in_their_order(built, tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    started = time.time_ns()
    done = archive.restore(built, clone)
    assert (done["runs"], done["identical_runs"], done["set_aside"]) == (len(SPECS), 0, 0)
    work = built.parents[2]
    for spec in SPECS:
        assert store.check_run(clone / archive.RUNS, spec["run_id"]) is None
    assert (clone / archive.RUNS / SPECS[0]["run_id"] / store.WEIGHTS).exists()
    assert not (clone / archive.RUNS / SPECS[1]["run_id"] / store.CHECKPOINT).exists()
    times = {rel: (clone / rel).stat().st_mtime_ns for rel in OUTPUTS}
    for rel in OUTPUTS:
        assert (clone / rel).read_bytes() == (work / rel).read_bytes()
        assert times[rel] >= started  # newer than the source tree, so Snakemake's code trigger reruns nothing
    for a in OUTPUTS:  # and in the order the workflow made them: an input is never newer than its output
        for b in OUTPUTS:
            assert (OUTPUTS[a] < OUTPUTS[b]) == (times[a] < times[b]), (a, b)
    assert yaml.safe_load((clone / "results/archive/tiny/config.yaml").read_text()) == TINY
    assert (clone / "results/archive/tiny/numbers.tex").read_bytes() == (work / "numbers.tex").read_bytes()
    assert not [p for p in (clone / "results").iterdir() if p.name.startswith(".")]  # no staging folder left


def test_verify_reads_without_writing_and_names_the_study(built, capsys):
    assert archive.main(["verify", str(built)]) == 0
    out = capsys.readouterr().out
    assert "files match MANIFEST.sha256" in out and "study tiny, 4 runs, code 0123456789abcdef" in out


def altered(members):
    out = []
    for info, data in members:
        out.append((info, data.replace(b"table", b"tabel") if info.name.endswith("runs.parquet") else data))
    return out


def added(members):
    extra = tarfile.TarInfo("tiny/results/tables/extra.parquet")
    return [*members, (extra, b"not listed")]


def dropped(members):
    return [(info, data) for info, data in members if not info.name.endswith("interpolation/mnist1d-mlp.parquet")]


@pytest.mark.parametrize("change, words", [
    (altered, "tiny/results/tables/runs.parquet does not match its SHA-256 in MANIFEST.sha256"),
    (added, "tiny/results/tables/extra.parquet is not listed in MANIFEST.sha256"),
    (dropped, "tiny/results/interpolation/mnist1d-mlp.parquet is listed in MANIFEST.sha256 but missing"),
], ids=["altered", "added", "dropped"])
def test_a_damaged_or_altered_archive_is_refused_naming_the_file_and_nothing_is_restored(built, tmp_path, change,
                                                                                         words):
    bad = rewritten(built, tmp_path / "bad.tar.gz", change)
    clone = tmp_path / "clone"
    clone.mkdir()
    with pytest.raises(archive.ArchiveError, match=words):
        archive.restore(bad, clone)
    assert files_under(clone) == []


def test_a_truncated_archive_is_refused(built, tmp_path):
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(built.read_bytes()[: built.stat().st_size // 2])
    with pytest.raises(archive.ArchiveError, match="cannot be read as a tar.gz archive"):
        archive.restore(bad, tmp_path)
    assert files_under(tmp_path) == ["cut.tar.gz"]


def link(kind: bytes, name: str, target: str = ""):
    def change(members):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        return [*members, (info, b"")]
    return change


def plain(name: str):
    return lambda members: [*members, (tarfile.TarInfo(name), b"escaped")]


@pytest.mark.parametrize("make, words", [
    (lambda tmp: plain("../escaped.txt"), "leaves the destination folder"),
    (lambda tmp: plain("tiny/../../escaped.txt"), "leaves the destination folder"),
    (lambda tmp: plain(str(tmp / "escaped.txt")), "has an absolute path"),
    (lambda tmp: link(tarfile.SYMTYPE, "tiny/results/tables/link.parquet", str(tmp / "escaped.txt")),
     "is a symbolic link"),
    (lambda tmp: link(tarfile.LNKTYPE, "tiny/results/tables/link.parquet", "tiny/config.yaml"), "is a hard link"),
    (lambda tmp: link(tarfile.CHRTYPE, "tiny/results/tables/null.parquet"), "is a device"),
    (lambda tmp: link(tarfile.FIFOTYPE, "tiny/results/tables/pipe.parquet"), "is a fifo"),
    (lambda tmp: plain("tiny/src/batchlab/__init__.py"), "is no file batchlab restores"),
], ids=["dot-dot", "dot-dot-inside", "absolute", "symlink", "hardlink", "device", "fifo", "source-file"])
def test_an_unsafe_member_is_refused_before_anything_is_written(built, tmp_path, make, words):
    # the bad member comes last, after every good one: still nothing is written
    bad = rewritten(built, tmp_path / "bad.tar.gz", make(tmp_path))
    clone = tmp_path / "clone"
    clone.mkdir()
    with pytest.raises(archive.ArchiveError, match=words):
        archive.restore(bad, clone)
    assert files_under(clone) == [] and not (tmp_path / "escaped.txt").exists()


def test_a_run_whose_files_match_a_rewritten_manifest_but_not_its_id_is_refused(built, tmp_path):
    run = f"tiny/results/runs/{SPECS[3]['run_id']}/"

    def forged(members):  # another learning rate in the spec, and a manifest made to match it
        members = [(i, json.dumps({**SPECS[3], "lr": 9.0}).encode() if i.name == run + store.SPEC else d)
                   for i, d in members]
        digests = {i.name[len("tiny/"):]: hashlib.sha256(d).hexdigest() for i, d in members}
        manifest = "".join(f"{h}  {rel}\n" for rel, h in sorted(digests.items()) if rel != "MANIFEST.sha256")
        return [(i, manifest.encode() if i.name == "tiny/MANIFEST.sha256" else d) for i, d in members]

    bad = rewritten(built, tmp_path / "forged.tar.gz", forged)
    clone = tmp_path / "clone"
    clone.mkdir()
    with pytest.raises(archive.ArchiveError, match=f"run {SPECS[3]['run_id']} in the archive is damaged"):
        archive.restore(bad, clone)
    assert files_under(clone) == []


def test_a_complete_run_that_differs_is_never_overwritten_and_is_named(built, tmp_path, capsys):
    clone = tmp_path / "clone"
    spec = SPECS[2]
    store.write_run(clone / archive.RUNS, spec, HISTORY, summary(spec, final_test_acc=0.9))  # trained elsewhere
    before = {p.name: p.read_bytes() for p in (clone / archive.RUNS / spec["run_id"]).iterdir()}
    assert archive.main(["restore", str(built), "--directory", str(clone)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"run {spec['run_id']} in {clone / archive.RUNS} is complete and differs from the archive's" in err
    assert "it is never overwritten" in err and "nothing restored" in err
    assert {p.name: p.read_bytes() for p in (clone / archive.RUNS / spec["run_id"]).iterdir()} == before
    assert files_under(clone / archive.RUNS) == [spec["run_id"], *(f"{spec['run_id']}/{n}" for n in sorted(before))]
    assert not (clone / "results" / "tables").exists()


def test_an_identical_complete_run_is_skipped_and_an_incomplete_one_set_aside(built, tmp_path):
    clone = tmp_path / "clone"
    first, second = SPECS[0]["run_id"], SPECS[1]["run_id"]
    (clone / archive.RUNS).mkdir(parents=True)
    archive.restore(built, tmp_path / "elsewhere")
    os.rename(tmp_path / "elsewhere" / archive.RUNS / first, clone / archive.RUNS / first)
    identical = (clone / archive.RUNS / first / store.SUMMARY).stat()
    (clone / archive.RUNS / second).mkdir()
    (clone / archive.RUNS / second / store.HISTORY).write_bytes(b"half-written")  # no summary: not complete
    done = archive.restore(built, clone)
    assert (done["runs"], done["identical_runs"], done["set_aside"]) == (len(SPECS) - 1, 1, 1)
    assert (clone / archive.RUNS / first / store.SUMMARY).stat().st_ino == identical.st_ino  # left as it was
    assert all(store.check_run(clone / archive.RUNS, s["run_id"]) is None for s in SPECS)
    (aside,) = (clone / "results" / store.CORRUPT).iterdir()  # kept, never deleted
    assert (aside / store.HISTORY).read_bytes() == b"half-written"
    times = {rel: (clone / rel).stat().st_mtime_ns for rel in OUTPUTS}
    again = archive.restore(built, clone)  # everything there: nothing written, no time changed
    assert (again["runs"], again["identical_runs"], again["files"]) == (0, len(SPECS), 0)
    assert times == {rel: (clone / rel).stat().st_mtime_ns for rel in OUTPUTS}


def test_restoring_needs_the_standard_library_and_yaml_only():
    code = ("import sys, batchlab.archive; "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'pyarrow', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(archive.__file__).parents[1])}).stdout
    assert out.strip() == "[]"
