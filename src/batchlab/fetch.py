"""Fetching the datasets that are read from the user's files (MNIST, Fashion-MNIST, CIFAR-10) from their
publishers' mirrors, for the ``download_data`` rule: nothing else in batchlab reads the network.

Each file is downloaded to ``<file>.part`` (resumed with an HTTP ``Range`` request when a ``.part`` is
there), checked against its published MD5 and only then renamed into place; a file that fails its checksum
is deleted and the next mirror tried. MNIST and Fashion-MNIST keep their four IDX files as ``.gz`` under
``data_dir/<dataset>/`` (the loader reads them so); CIFAR-10's archive is unpacked beside its target and
``cifar-10-batches-py/`` renamed into place once every batch is there and verified. Files already present
and verified are not downloaded again. Standard library only.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from batchlab import data, files, schema

log = logging.getLogger("batchlab.fetch")

TIMEOUT = 10.0  # seconds to connect and between received blocks: offline fails at once, a stall soon
RESUMES = 3  # times a transfer cut short is resumed from the same mirror (each time only if it made progress)
CHUNK = 2**16
TARGET = "download_data"  # the rule that calls this module


class FetchError(Exception):
    """A dataset that could not be fetched: one line naming what was tried and what to do instead."""


class _MirrorError(Exception):
    """One mirror failed for one file (the next is tried)."""


class _ChecksumError(_MirrorError):
    """A complete download that is not the published file (deleted)."""


@dataclass(frozen=True)
class Remote:
    """One file on the mirrors: its name there, where its verified copy goes (relative to ``data_dir``, the
    key of its checksum), the files the loader reads that it provides, and for an archive the folder in it
    that is unpacked beside the target."""

    name: str
    target: str
    provides: tuple[str, ...]
    unpack: str | None = None


def _idx_remotes(folder: str) -> tuple[Remote, ...]:
    return tuple(Remote(f"{stem}.gz", f"{folder}/{stem}.gz", (f"{folder}/{stem}",)) for stem in data.IDX_STEMS)


# What to download per dataset; the generated datasets need nothing.
REMOTES = {
    "mnist": _idx_remotes("mnist"),
    "fashion_mnist": _idx_remotes("fashion_mnist"),
    "cifar10": (Remote("cifar-10-python.tar.gz", "cifar10/cifar-10-python.tar.gz",
                       data.DATASETS["cifar10"].user_files, unpack="cifar-10-batches-py"),),
}
# The published MD5 of every file downloaded or unpacked, by its path under data_dir.
CHECKSUMS = {**data.CHECKSUMS, "cifar10/cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}


def default_mirrors() -> dict[str, list[str]]:
    """The mirrors the config schema gives by default (``download.mirrors``), per dataset."""
    props = schema.load_schema()["properties"]["download"]["properties"]["mirrors"]["properties"]
    return {name: list(sub["default"]) for name, sub in props.items()}


def _snakemake_args(argv: list[str]):
    """Snakemake's command line ``argv`` read with its own parser (None when it is not one)."""
    from snakemake.cli import get_argument_parser  # only here: the package does not otherwise need snakemake

    try:
        args, _ = get_argument_parser().parse_known_args(argv[1:])
    except SystemExit:  # not a snakemake command line
        return None
    return args


def requests_only_download(argv: list[str]) -> bool:
    """Whether the command line ``argv`` (snakemake's) asks for the ``download_data`` target alone: the parse
    then lets a study whose data are missing through, since fetching them is what was asked for. Snakemake
    gives the parse no targets, so they are read from its command line with its own parser."""
    if TARGET not in argv[1:]:
        return False
    args = _snakemake_args(argv)
    return args is not None and list(args.targets or []) == [TARGET]


def is_dry_run(argv: list[str]) -> bool:
    """Whether the command line ``argv`` is a dry run (``-n``), which may plan a study whose data are still
    missing: it trains nothing. Snakemake tells the parse no more than it tells it targets."""
    args = _snakemake_args(argv)
    return args is not None and bool(args.dryrun)


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def _present(data_dir: Path, rel: str, checksums: dict, verify: bool) -> bool:
    """Whether the loader's file ``rel`` (or its .gz) is there and, with ``verify``, is the publisher's. A
    file that is not is set aside as ``<file>.damaged`` (kept, but no longer read) to make room."""
    for candidate in (rel, rel + ".gz"):
        path = data_dir / candidate
        if not path.exists():
            continue
        if not verify:
            return True
        if candidate in checksums:
            problem = None if md5(path) == checksums[candidate] else f"its MD5 is not {checksums[candidate]}"
        elif path.name in data.IDX_SIZES:
            size = data.IDX_SIZES[path.name]
            problem = None if path.stat().st_size == size else f"it is not {size} bytes"
        else:
            problem = None
        if problem is None:
            return True
        os.replace(path, path.with_name(path.name + ".damaged"))
        log.warning("%s is not the publisher's file (%s): set aside as %s.damaged", path, problem, path.name)
    return False


class _Progress:
    """Progress lines of one transfer: one every 10 % of the file or every 5 seconds, whichever comes first."""

    def __init__(self, label: str, done: int, total: int | None):
        self.label, self.done, self.total = label, done, total
        self.start_bytes, self.start = done, time.monotonic()
        self.last, self.tenth, self.logged = self.start, self._tenth(), done

    def _tenth(self) -> int:
        return self.done * 10 // self.total if self.total else 0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._tenth() > self.tenth or now - self.last >= 5:
            self.tenth, self.last = self._tenth(), now
            self.log()

    def log(self) -> None:
        """One line: bytes done (of the total, when known) and the rate since the start."""
        now = time.monotonic()
        rate = (self.done - self.start_bytes) / max(now - self.start, 1e-6)
        of = f" of {self.total / 1e6:.1f} MB ({100 * self.done // self.total} %)" if self.total else ""
        log.info("%s: %.1f MB%s, %.1f MB/s", self.label, self.done / 1e6, of, rate / 1e6)
        self.logged = self.done


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, asking only for the rest when ``part`` has a beginning (206: appended;
    200: the server ignored the range, so it starts over). Raises ``ConnectionError`` when the body ends
    short (``part`` keeps what came, to resume); network errors pass through."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "batchlab"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing after what we have: the checksum decides
            return
        raise
    with response:
        if response.status != 206:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        progress = _Progress(url.rsplit("/", 1)[-1], have, total)
        with files.writing(part, "a download"):
            f = open(part, "ab" if have else "wb")
        with f:
            while chunk := response.read1(CHUNK):  # what has come (a stall keeps it); errors: the mirror's
                with files.writing(part, "a download"):
                    f.write(chunk)
                progress.add(len(chunk))
    if total is not None and progress.done < total:
        raise ConnectionError(f"connection closed after {progress.done} of {total} bytes")
    if progress.logged != progress.done:
        progress.log()


def _reason(error: object) -> str:
    """A network error in a few words ('Connection refused', 'HTTP 404 Not Found', 'timed out')."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):  # urlopen's wrapper of the socket's error (or of a message)
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _from_mirror(url: str, part: Path, expected: str | None, timeout: float) -> None:
    """Download ``url`` into ``part`` completely (resuming a transfer cut short while it makes progress) and
    check its MD5; a file that fails it is deleted. Raises :class:`_MirrorError`."""
    for attempt in range(RESUMES + 1):
        before = _size(part)
        try:
            _transfer(url, part, timeout)
            break
        except files.StoreError:
            raise
        except (OSError, http.client.HTTPException) as error:
            if attempt == RESUMES or _size(part) <= before:
                raise _MirrorError(_reason(error)) from None
            log.info("%s: %s; resuming", url, _reason(error))
    actual = md5(part)
    if expected and actual != expected:
        part.unlink()
        raise _ChecksumError(f"MD5 {actual}, expected {expected}: deleted")


def _download(remote: Remote, data_dir: Path, mirrors: list[str], checksums: dict, timeout: float) -> list[str]:
    """Download ``remote`` from the first mirror that gives the published file, renamed into place only once
    verified. Returns the failures ('<url> (<reason>)'), empty on success; raises nothing for a mirror."""
    path = data_dir / remote.target
    part = path.with_name(path.name + ".part")
    with files.writing(path.parent, "a download"):
        path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{remote.name}"
        resumed = part.exists()
        log.info("%s: %s %s", path, f"resuming from byte {_size(part)} of" if resumed else "downloading", url)
        try:
            try:
                _from_mirror(url, part, checksums.get(remote.target), timeout)
            except _ChecksumError:
                if not resumed:
                    raise
                log.warning("%s: the resumed file fails its checksum; downloading it again from the start", url)
                _from_mirror(url, part, checksums.get(remote.target), timeout)
        except _MirrorError as error:
            log.warning("%s: %s; trying the next mirror", url, error)
            failures.append(f"{url} ({error})")
            continue
        os.replace(part, path)
        log.info("%s: verified, saved as %s", remote.name, path)
        return []
    return failures


def _check_members(members: list[tarfile.TarInfo]) -> None:
    """Refuse an archive member that is not a plain file or folder, or whose path is absolute or climbs out
    of the folder it is unpacked into (``..``): what tarfile's ``data`` filter refuses, for the Python
    versions that lack it."""
    for member in members:
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() or ".." in parts:
            raise tarfile.TarError(f"unsafe member {member.name!r} (not a plain file or folder inside the archive)")


def _unpack(remote: Remote, data_dir: Path, checksums: dict) -> None:
    """Unpack the archive ``remote`` into a temporary folder beside it, check every file it provides, and
    move them into place (the whole folder when none was there); the archive is then deleted."""
    archive = data_dir / remote.target
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=archive.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[0] == remote.unpack]
            _check_members(members)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and 3.12): tarfile's own check too
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=members)
        unpacked = tmp / remote.unpack
        for rel in remote.provides:
            name = rel.rsplit("/", 1)[-1]
            if not (unpacked / name).is_file():
                raise FetchError(f"{archive} lacks {remote.unpack}/{name}: it is not the publisher's archive")
            if rel in checksums and md5(unpacked / name) != checksums[rel]:
                raise FetchError(f"{archive}: {remote.unpack}/{name} is not the publisher's file (MD5)")
        folder = archive.parent / remote.unpack
        if not folder.exists():
            os.replace(unpacked, folder)
        for rel in remote.provides:
            if not (data_dir / rel).exists():
                os.replace(unpacked / rel.rsplit("/", 1)[-1], data_dir / rel)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise FetchError(f"cannot unpack {archive}: {error}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    log.info("%s: unpacked into %s", archive.name, archive.parent / remote.unpack)


def _by_hand(remote: Remote, data_dir: Path, mirrors: list[str]) -> str:
    """What to do when no mirror gives ``remote``: the same file, put where the loader (or this module) reads it."""
    url = f"{mirrors[0].rstrip('/')}/{remote.name}" if mirrors else remote.name
    if remote.unpack:
        return (f"download {url} yourself and unpack it in {(data_dir / remote.target).parent} (the loader reads "
                f"{(data_dir / remote.target).parent / remote.unpack}/), or put it at {data_dir / remote.target} "
                f"and run `snakemake --cores 1 {TARGET}` again")
    return f"download {url} yourself and put it at {data_dir / remote.target}"


def fetch(dataset: str, data_dir: str | Path, mirrors: list[str] | None = None, checksums: dict | None = None,
          verify: bool = True, timeout: float = TIMEOUT) -> None:
    """Fetch the files of ``dataset`` into ``data_dir`` from ``mirrors`` (tried in order; default: the
    schema's), unless already there and verified against ``checksums`` (default :data:`CHECKSUMS`; with
    ``verify`` false, files that are there are taken as they are). Downloads are always checked against the
    published MD5. Raises :class:`FetchError`, one line, when a file cannot be had."""
    if dataset not in REMOTES:
        raise FetchError(f"dataset {dataset!r} is not downloaded (datasets that are: {', '.join(REMOTES)})")
    data_dir = Path(data_dir)
    checksums = CHECKSUMS if checksums is None else checksums
    mirrors = default_mirrors()[dataset] if mirrors is None else list(mirrors)
    if not mirrors:
        raise FetchError(f"dataset {dataset!r}: no mirror to download it from (download.mirrors.{dataset} is empty)")
    for remote in REMOTES[dataset]:
        missing = [rel for rel in remote.provides if not _present(data_dir, rel, checksums, verify)]
        if not missing:
            log.info("%s: %s already present%s; nothing to download", dataset,
                     remote.unpack or remote.name.removesuffix(".gz"),
                     " and verified" if verify else " (not verified: verify_data_files is false)")
            continue
        target = data_dir / remote.target
        if target.exists() and checksums.get(remote.target) in (None, md5(target)):
            log.info("%s: %s already downloaded and verified", dataset, target)
        else:
            failures = _download(remote, data_dir, mirrors, checksums, timeout)
            if failures:
                raise FetchError(f"dataset {dataset!r}: could not download {remote.name} from "
                                 f"{', '.join(failures)}; {_by_hand(remote, data_dir, mirrors)}")
        if remote.unpack:
            _unpack(remote, data_dir, checksums)
