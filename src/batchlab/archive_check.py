"""Reading an archive of a study (see batchlab.archive) that may come from a stranger, writing nothing: its
layout (one folder named after the study, and in it the files batchlab restores, each at its place), the
checks of each member (a regular file or folder whose path stays inside the destination: no absolute path,
no ``..``, no symbolic or hard link, device or fifo) and its manifest, ``MANIFEST.sha256``, which lists
every other file with its SHA-256, as ``sha256sum -c`` reads it (:func:`verify`). Standard library and yaml
only; tarfile's own extraction filters are not relied on.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from batchlab import store

MANIFEST, CONFIG, REVISION, LOCK, NUMBERS = "MANIFEST.sha256", "config.yaml", "revision.json", "requirements.lock", \
    "numbers.tex"
ABOUT = (MANIFEST, CONFIG, REVISION, LOCK, NUMBERS)  # about the study: restored to results/archive/<study>/
RUNS = "results/runs"
RUN_FILES = (store.SPEC, store.HISTORY, store.LEGACY_HISTORY, store.SUMMARY, store.WEIGHTS)  # no checkpoint.pt
OUTPUTS = ("results/tables", "results/hardware", "results/interpolation")  # the rules' tables and measurements
STUDY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the config schema's pattern for `study`
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_READ = 64 << 20  # the manifest, config and revision are read into memory: no bigger than this
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot be made, or is refused: one line naming the file and the fault."""


@dataclass(frozen=True)
class Entry:
    """One file of an archive: its SHA-256, modification time and, for the manifest, config and revision, its
    bytes."""

    digest: str
    mtime: float
    data: bytes | None = None


@dataclass(frozen=True)
class Archive:
    """A verified archive: its study's name and config, and its files by path inside the study's folder."""

    path: Path
    study: str
    config: dict
    entries: dict[str, Entry]

    def runs(self) -> dict[str, dict[str, str]]:
        """Run id -> {file name: SHA-256} of the archive's runs."""
        runs: dict[str, dict[str, str]] = {}
        for rel, entry in self.entries.items():
            if kind_of_place(rel) == "run":
                run_id, name = rel.split("/")[2:]
                runs.setdefault(run_id, {})[name] = entry.digest
        return runs


def kind_of_place(rel: str) -> str | None:
    """What a path inside the study's folder is: "about" (the manifest, config, revision, lock, numbers),
    "run" (a file of a run folder), "output" (a table or a measurement), or None (nothing batchlab restores)."""
    parts = rel.split("/")
    if len(parts) == 1 and rel in ABOUT:
        return "about"
    if len(parts) == 4 and "/".join(parts[:2]) == RUNS and FILE_NAME.fullmatch(parts[2]) and parts[3] in RUN_FILES:
        return "run"
    if len(parts) == 3 and "/".join(parts[:2]) in OUTPUTS and FILE_NAME.fullmatch(parts[2]) \
            and parts[2].endswith(".parquet"):
        return "output"
    return None


def destination(study: str, rel: str) -> str:
    """Where a file of the archive is restored, relative to the work folder."""
    return f"results/archive/{study}/{rel}" if kind_of_place(rel) == "about" else rel


def verify(path: str | Path) -> Archive:
    """Read every member of the archive ``path`` and check it, writing nothing: regular files only, each at a
    place batchlab restores, inside one folder named after the study; the manifest lists each of them, with
    its SHA-256, and nothing else; the config names the study. Raises :class:`ArchiveError` naming the first
    fault."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            study, entries = _read_members(path, tar)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ArchiveError(f"{path} cannot be read as a tar.gz archive ({error}); nothing restored") from None
    if MANIFEST not in entries:
        raise ArchiveError(f"{path} has no {study}/{MANIFEST}: not an archive of batchlab; nothing restored")
    listed = _parse_manifest(path, study, entries[MANIFEST].data)
    for rel in sorted(entries):
        if rel != MANIFEST and rel not in listed:
            raise ArchiveError(f"{path}: {study}/{rel} is not listed in {MANIFEST} (added); nothing restored")
        if rel != MANIFEST and listed[rel] != entries[rel].digest:
            raise ArchiveError(f"{path}: {study}/{rel} does not match its SHA-256 in {MANIFEST} (damaged or "
                               "altered); nothing restored")
    missing = sorted(set(listed) - set(entries))
    if missing:
        raise ArchiveError(f"{path}: {study}/{missing[0]} is listed in {MANIFEST} but missing from the archive; "
                           "nothing restored")
    if CONFIG not in entries:
        raise ArchiveError(f"{path} has no {study}/{CONFIG}, the study's config; nothing restored")
    try:
        config = yaml.safe_load(entries[CONFIG].data)
    except yaml.YAMLError as error:
        raise ArchiveError(f"{path}: {study}/{CONFIG} cannot be read ({' '.join(str(error).split())})") from None
    if not isinstance(config, dict) or config.get("study") != study:
        raise ArchiveError(f"{path}: {study}/{CONFIG} is not the config of study {study!r}; nothing restored")
    return Archive(path, study, config, entries)


def _read_members(path: Path, tar: tarfile.TarFile) -> tuple[str, dict[str, Entry]]:
    """The study's name (the one top folder) and the archive's files, each checked and hashed in one pass."""
    study, entries = None, {}
    for member in tar:
        parts = safe_parts(path, member)
        study = study or parts[0]
        if parts[0] != study or not STUDY_NAME.fullmatch(study):
            raise ArchiveError(f"{path}: member {member.name!r} is not in the archive's one folder, named after "
                               "its study; nothing restored")
        if member.isdir():
            continue
        rel = "/".join(parts[1:])
        if kind_of_place(rel) is None:
            raise ArchiveError(f"{path}: member {member.name!r} is no file batchlab restores (allowed: "
                               f"{', '.join(ABOUT)}, {RUNS}/<run-id>/<run file>, "
                               f"{', '.join(f'{o}/<name>.parquet' for o in OUTPUTS)}); nothing restored")
        if rel in entries:
            raise ArchiveError(f"{path}: member {member.name!r} appears twice; nothing restored")
        keep = rel in (MANIFEST, CONFIG, REVISION)
        if keep and member.size > MAX_READ:
            raise ArchiveError(f"{path}: member {member.name!r} is too large ({member.size} bytes); nothing restored")
        digest, data = hashlib.sha256(), bytearray()
        with tar.extractfile(member) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                if keep:
                    data += chunk
        entries[rel] = Entry(digest.hexdigest(), float(member.mtime), bytes(data) if keep else None)
    if study is None:
        raise ArchiveError(f"{path} is empty; nothing restored")
    return study, entries


def safe_parts(path: Path, member: tarfile.TarInfo) -> list[str]:
    """The parts of a member's path, refused when it is not a regular file or folder or its path is absolute
    or climbs out of the destination."""
    if not (member.isreg() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else "a device"
                if member.ischr() or member.isblk() else "a fifo" if member.isfifo() else "not a regular file")
        raise ArchiveError(f"{path}: member {member.name!r} is {kind}; an archive of batchlab holds regular "
                           "files only; nothing restored")
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(f"{path}: member {name!r} has an absolute path; nothing restored")
    parts = list(PurePosixPath(name).parts)
    if ".." in parts or ".." in name.split("\\") or not parts:
        raise ArchiveError(f"{path}: member {name!r} leaves the destination folder; nothing restored")
    return parts


def _parse_manifest(path: Path, study: str, data: bytes) -> dict[str, str]:
    """``sha256sum`` lines (the digest, two spaces or a space and ``*``, the path) as path -> digest."""
    listed = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if line.strip() and (not match or match.group(2) in listed):
            raise ArchiveError(f"{path}: line {number} of {study}/{MANIFEST} is not one SHA-256 and one path "
                               "listed once; nothing restored")
        if match:
            listed[match.group(2)] = match.group(1)
    return listed

