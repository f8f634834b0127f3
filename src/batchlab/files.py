"""Writing files safely: errors that name the path (a full disk, a folder without write permission), and
a check that a results folder can be written before any job starts. A leaf module: the run store and the
dataset preparation both write through it.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path


class StoreError(OSError):
    """The run store cannot be written (a full disk, a folder without write permission): names the path."""

    @classmethod
    def of(cls, error: OSError, message: str) -> StoreError:
        """``message``, then the system's reason for ``error`` (the text of its errno: pyarrow's own
        ``strerror`` wraps it in words of its own)."""
        reason = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
        new = cls(f"{message}: {reason}")
        new.errno = error.errno
        return new


def check_writable(folder: str | Path, room: int = 2**20) -> None:
    """Raise :class:`StoreError` naming ``folder`` unless a file of ``room`` bytes can be written there (in
    its nearest existing parent when it does not exist yet, so nothing is created): a read-only, full or
    forbidden results folder then stops the workflow before any job, not in the middle of one."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    probe = existing / f".batchlab-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(room))
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise StoreError.of(error, f"cannot write to the results folder {folder.absolute()}"
                            f"{'' if existing == folder else f' (in {existing})'}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def writing(path: str | Path, what: str):
    """Turn an ``OSError`` while writing ``what`` to ``path`` (a full disk, no permission) into a
    :class:`StoreError` that names the path."""
    try:
        yield
    except StoreError:
        raise
    except OSError as error:
        raise StoreError.of(error, f"cannot write {what} to {path}") from error


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks: a prepared CIFAR-10 is hundreds of MB."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
