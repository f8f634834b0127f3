"""A study packed for a reader who rebuilds its paper without training, and restored from that archive.

``snakemake --cores 1 archive`` writes ``results/archive/<study>.tar.gz`` (:func:`build`): one folder named
after the study, holding

- ``config.yaml``: the study as validated, every default filled in (the config to rebuild it with);
- ``revision.json``: the code that made it (``batchlab.provenance.revision``: the training code's digest,
  the git commit and whether the tree had uncommitted changes);
- ``requirements.lock``: the locked dependencies;
- ``numbers.tex``: the paper's numbers as the study computed them, to compare a rebuild with;
- ``results/runs/<run-id>/``: the study's runs (spec, history, summary, and the final weights of the runs
  that keep them; never a checkpoint);
- ``results/tables/``, ``results/hardware/``, ``results/interpolation/``: the tables and the measurements;
- ``MANIFEST.sha256``: the SHA-256 of every other file, as ``sha256sum -c`` reads it.

``python -m batchlab.archive restore FILE`` (:func:`restore`) is its inverse, and ``verify FILE``
(:func:`verify`) its check. An archive is input from strangers: every member is checked (a path that
leaves the destination, a link, a device or fifo, a file batchlab does not restore) and every checksum
verified against the manifest before anything is written; a complete run that differs from the archive's
is never overwritten. The restored tables and measurements get new modification times, in the order they
had: newer than the source tree a reader has just cloned, so Snakemake takes them as up to date and
measures nothing again. Standard library and yaml only; the layout and
the checks of a member are in batchlab.archive_check.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from batchlab import store
from batchlab.files import sha256
from batchlab.archive_check import (CONFIG, CHUNK, LOCK, MANIFEST, NUMBERS, OUTPUTS, REVISION, RUN_FILES, RUNS,
                                    STUDY_NAME, Archive, ArchiveError, destination,
                                    kind_of_place, safe_parts, verify)

__all__ = ["ArchiveError", "build", "main", "plan", "restore", "verify"]

TIME_STEP_NS = 1_000_000  # restored tables and measurements: 1 ms apart, in the order they were made


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- building ----------------------------------------------------------------------------------------------


def build(out: str | Path, study: dict, revision: dict, run_ids, outputs, lock: str | Path, numbers: str | Path,
          workdir: str | Path = ".") -> dict:
    """Write the archive of ``study`` (the validated config) to ``out``, atomically: the runs ``run_ids``
    of ``<workdir>/results/runs``, the tables and measurements ``outputs`` (paths relative to ``workdir``),
    the lock file, ``numbers`` (the paper's numbers.tex), ``revision`` and the manifest. A damaged or
    missing run raises :class:`ArchiveError` naming it. Returns the counts of runs and files and the size."""
    name, workdir = study.get("study"), Path(workdir)
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ArchiveError(f"'study': {name!r} cannot name an archive (allowed: 1 to 64 letters, digits, _ or -)")
    members: dict[str, bytes | Path] = {
        CONFIG: yaml.safe_dump(study, sort_keys=False).encode(),
        REVISION: (json.dumps(revision, indent=2, sort_keys=True) + "\n").encode(),
        LOCK: Path(lock), NUMBERS: Path(numbers)}
    run_ids = list(run_ids)
    for run_id in run_ids:
        problem = store.check_run(workdir / RUNS, run_id)
        if problem:
            raise ArchiveError(f"run {run_id} in {workdir / RUNS} is not complete and intact ({problem}); run "
                               "snakemake to train it before archiving")
        folder = store.run_dir(workdir / RUNS, run_id)
        members.update({f"{RUNS}/{run_id}/{f}": folder / f for f in RUN_FILES if (folder / f).is_file()})
    for path in outputs:
        rel = PurePosixPath(Path(path).as_posix()).as_posix()
        if kind_of_place(rel) != "output":
            raise ArchiveError(f"{path} is not a table or measurement of the study (allowed: "
                               f"{', '.join(f'{o}/<name>.parquet' for o in OUTPUTS)})")
        members[rel] = workdir / rel
    digests = {rel: _sha256(src) if isinstance(src, bytes) else sha256(src) for rel, src in members.items()}
    manifest = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(members)).encode()
    with store.writing(out, "the archive"):
        _write_tar(Path(out), name, manifest, members, digests)
    return {"runs": len(run_ids), "files": len(members) + 1, "bytes": Path(out).stat().st_size}


def _write_tar(out: Path, name: str, manifest: bytes, members: dict[str, bytes | Path],
               digests: dict[str, str]) -> None:
    """The tar.gz, written to a temporary file beside ``out`` and renamed into place. Each member keeps its
    file's modification time; owners and the gzip header's time are left out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    now = time.time()
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, f"{name}/{MANIFEST}", manifest, now)
                for rel, src in sorted(members.items()):
                    data = src if isinstance(src, bytes) else src.read_bytes()
                    if _sha256(data) != digests[rel]:
                        raise ArchiveError(f"{src} changed while it was archived; run the archive again")
                    _add(tar, f"{name}/{rel}", data, now if isinstance(src, bytes) else src.stat().st_mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


# -- restoring -----------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a restore writes (runs, and the other files, by their path in the archive), and what it skips,
    being in the work folder already and identical."""

    runs: list[str]
    files: list[str]
    identical_runs: list[str]
    identical_files: list[str]


def plan(archive: Archive, directory: str | Path) -> Plan:
    """What restoring ``archive`` into ``directory`` writes, writing nothing. A complete run there that
    differs from the archive's, or another file that does, raises :class:`ArchiveError` naming it: it is
    never overwritten. A run folder that is not complete (no summary) is replaced, set aside first."""
    directory, todo, conflicts = Path(directory), Plan([], [], [], []), []
    root = directory / RUNS
    for run_id, files in sorted(archive.runs().items()):
        if not store.is_complete(root, run_id):
            todo.runs.append(run_id)
            continue
        differs = [name for name, digest in sorted(files.items()) if not _same(root / run_id / name, digest)]
        if differs:
            conflicts.append(f"run {run_id} in {root} is complete and differs from the archive's ({differs[0]})")
        else:
            todo.identical_runs.append(run_id)
    for rel, entry in sorted(archive.entries.items()):
        target = directory / destination(archive.study, rel)
        if kind_of_place(rel) == "run":
            continue
        if not (target.exists() or target.is_symlink()):
            todo.files.append(rel)
        elif _same(target, entry.digest):
            todo.identical_files.append(rel)
        else:
            conflicts.append(f"{target} differs from the archive's {archive.study}/{rel}")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ArchiveError(f"{archive.path}: {conflicts[0]}{more}; it is never overwritten: move it away to "
                           "restore the archive's; nothing restored")
    return todo


def _same(path: Path, digest: str) -> bool:
    return path.is_file() and sha256(path) == digest


def restore(path: str | Path, directory: str | Path = ".") -> dict:
    """Restore the archive ``path`` into the work folder ``directory``: verified whole first
    (:func:`verify`), then planned (:func:`plan`), both writing nothing; then its runs, tables, measurements
    and the files about the study (to ``results/archive/<study>/``) are written to a hidden folder, the runs
    checked there as the run store checks them, and only then renamed into place. The tables and
    measurements get modification times from now on, in the order they had. Returns what was done."""
    started, directory = time.time_ns(), Path(directory)
    archive = verify(path)
    todo = plan(archive, directory)
    results_existed = (directory / "results").exists()
    staging = directory / "results" / f".restore-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        with store.writing(directory / "results", "the restored files"):
            _stage(archive, todo, staging)
            for run_id in todo.runs:
                problem = store.check_run(staging / RUNS, run_id)
                if problem:
                    raise ArchiveError(f"{archive.path}: run {run_id} in the archive is damaged ({problem}); "
                                       "nothing restored")
            set_aside = _move(archive, todo, staging, directory)
            if any(kind_of_place(rel) == "output" for rel in todo.files):  # else: all there, left as they are
                _set_times(archive, directory, started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not results_existed and (directory / "results").exists() and not any((directory / "results").iterdir()):
            (directory / "results").rmdir()
    return {"study": archive.study, "runs": len(todo.runs), "identical_runs": len(todo.identical_runs),
            "files": len(todo.files), "identical_files": len(todo.identical_files), "set_aside": set_aside,
            "config": directory / destination(archive.study, CONFIG)}


def _stage(archive: Archive, todo: Plan, staging: Path) -> None:
    """Write the files ``todo`` restores under ``staging``, each checked against its SHA-256 again (the
    archive is read a second time)."""
    runs = archive.runs()
    wanted = {f"{RUNS}/{run_id}/{name}" for run_id in todo.runs for name in runs[run_id]} | set(todo.files)
    try:
        with tarfile.open(archive.path, "r:*") as tar:
            for member in tar:
                rel = "/".join(safe_parts(archive.path, member)[1:])
                if member.isdir() or rel not in wanted:
                    continue
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with tar.extractfile(member) as src, open(target, "xb") as dst:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != archive.entries[rel].digest:
                    raise ArchiveError(f"{archive.path}: {archive.study}/{rel} changed while it was restored; "
                                       "nothing restored")
                wanted.discard(rel)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ArchiveError(f"{archive.path} cannot be read as a tar.gz archive ({error}); nothing restored") from None
    if wanted:
        raise ArchiveError(f"{archive.path}: {archive.study}/{sorted(wanted)[0]} vanished from the archive while "
                           "it was restored; nothing restored")


def _move(archive: Archive, todo: Plan, staging: Path, directory: Path) -> int:
    """Rename the staged runs and files into place; returns how many incomplete run folders in the way were
    set aside (``results/corrupt/``, as the run store does), never deleted."""
    root, set_aside = directory / RUNS, 0
    for run_id in todo.runs:
        folder = root / run_id
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
        elif folder.exists() or folder.is_symlink():
            store.set_aside(root, run_id)
            set_aside += 1
        root.mkdir(parents=True, exist_ok=True)
        os.rename(staging / RUNS / run_id, folder)
    for rel in todo.files:
        target = directory / destination(archive.study, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    return set_aside


def _set_times(archive: Archive, directory: Path, started: int) -> None:
    """The tables and measurements (restored or found identical) get times from ``started`` on, 1 ms apart,
    in the order of their times in the archive: later than the source tree, so Snakemake's code trigger
    (a script newer than its rule's output) reruns nothing, and in the order the workflow made them, so an
    input is never newer than what was made from it."""
    outputs = {rel: e.mtime for rel, e in archive.entries.items() if kind_of_place(rel) == "output"}
    rank = {mtime: i for i, mtime in enumerate(sorted(set(outputs.values())))}
    for rel, mtime in outputs.items():
        when = started + rank[mtime] * TIME_STEP_NS
        os.utime(directory / rel, ns=(when, when))


# -- the command line ---------------------------------------------------------------------------------------


def _describe(archive: Archive) -> str:
    """The archive in a few words: its study, runs and the code that made it."""
    try:
        revision = json.loads(archive.entries[REVISION].data) if REVISION in archive.entries else {}
    except ValueError:
        revision = {}
    code = f"code {revision.get('code_digest') or 'not recorded'}"
    if revision.get("git_commit"):
        dirty = " with uncommitted changes" if revision.get("git_dirty") else ""
        code += f", git {revision['git_commit'][:12]}{dirty}"
    return f"study {archive.study}, {len(archive.runs())} runs, {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batchlab.archive",
        description="Verify or restore an archive of a study (snakemake --cores 1 archive writes one to "
                    "results/archive/<study>.tar.gz); see docs/reproducing.md.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check every member and checksum; write nothing")
    check.add_argument("archive")
    back = commands.add_parser("restore", help="verify, then restore the runs, tables and measurements")
    back.add_argument("archive")
    back.add_argument("--directory", default=".", help="the work folder to restore into (default: here)")
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            archive = verify(args.archive)
            print(f"{args.archive}: {len(archive.entries) - 1} files match {MANIFEST} ({_describe(archive)})")
            return 0
        done = restore(args.archive, args.directory)
    except (ArchiveError, OSError) as error:
        print(f"batchlab.archive: {error}", file=sys.stderr)
        return 1
    where = "" if Path(args.directory) == Path(".") else f" --directory {args.directory}"
    print(f"restored {args.archive} into {args.directory}: {done['runs']} runs ({done['identical_runs']} already "
          f"there and identical, skipped), {done['files']} other files ({done['identical_files']} identical, "
          f"skipped); rebuild the paper with: snakemake --cores all{where} --configfile {done['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
