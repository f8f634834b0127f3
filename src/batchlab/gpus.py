"""GPU slots on one machine. Snakemake hands a local job no GPU: every job would train on GPU 0. So each GPU
job takes a slot first thing, before CUDA starts: one lock file per device and slot (``jobs_per_gpu`` per
device), held with ``flock`` so that the lock dies with the process, also when it is killed. The job then
sees only its slot's device (``CUDA_VISIBLE_DEVICES``). The workflow caps how many GPU jobs run at once with
the ``gpu`` resource (``plan``). Under SLURM, for ``training.device: cpu`` and on a machine without GPUs,
slots step aside: nothing is locked and the environment is left alone.

A parse module: it imports no torch, and finding the GPUs costs a directory listing (``nvidia-smi`` only
where the driver's ``/proc`` entries are missing)."""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The devices to hand out, as a comma list of ids or UUIDs ("0,1,2"): wins over detection. For a machine
# whose GPUs are not found, to keep some for other work, and for the tests (fake devices on a CPU).
VISIBLE_ENV = "BATCHLAB_VISIBLE_GPUS"
# The folder of the slots' lock files, shared by every study of the user on the machine.
SLOT_DIR_ENV = "BATCHLAB_GPU_SLOT_DIR"
# A file each slot taken and given back is appended to (one line each, with the time), when set.
JOURNAL_ENV = "BATCHLAB_GPU_JOURNAL"
# Slots per device: set by the workflow from training.jobs_per_gpu for its jobs.
JOBS_PER_GPU_ENV = "BATCHLAB_JOBS_PER_GPU"
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")

log = logging.getLogger("batchlab.gpus")


def parse_devices(text: str) -> list[str]:
    """The devices of a ``CUDA_VISIBLE_DEVICES``-style list. As CUDA reads it, the list ends at the first
    empty or negative entry: "" and "-1" mean no device, "0,-1,1" means device 0 only."""
    devices = []
    for item in text.split(","):
        item = item.strip()
        if not item or re.fullmatch(r"-\d+", item):
            break
        devices.append(item)
    return devices


def count_nvidia_gpus(proc: Path = NVIDIA_PROC, timeout: float = 5.0) -> int:
    """How many NVIDIA GPUs the machine has, without CUDA: the driver's entries under ``proc``, else the
    lines of ``nvidia-smi -L``; 0 when neither answers."""
    try:
        return len(list(proc.iterdir()))
    except OSError:
        pass
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def visible_gpus(environ: Mapping[str, str] | None = None, proc: Path = NVIDIA_PROC) -> list[str]:
    """The GPUs jobs may use: ``BATCHLAB_VISIBLE_GPUS`` when set, else ``CUDA_VISIBLE_DEVICES`` when set, else
    every NVIDIA GPU of the machine (ids 0 to n-1)."""
    env = os.environ if environ is None else environ
    for name in (VISIBLE_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return parse_devices(env[name])
    return [str(i) for i in range(count_nvidia_gpus(proc))]


def slot_devices(device: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The devices a job takes a slot among (``device`` is training.device); none, so that slots step aside,
    for ``cpu``, under SLURM (whose CUDA_VISIBLE_DEVICES is the job's own) and on a machine without GPUs."""
    env = os.environ if environ is None else environ
    if device == "cpu" or "SLURM_JOB_ID" in env:
        return []
    return visible_gpus(env)


@dataclass(frozen=True)
class GpuPlan:
    """What a workflow invocation asks: ``devices`` to hand out (empty: slots step aside), the resources of
    a training or hardware job (``train_request``) and of a job that uses a GPU only when it has one
    (``slot_request``), and the global ``gpu`` limit to register (None: none)."""

    devices: tuple[str, ...]
    train_request: dict
    slot_request: dict
    limit: int | None


def plan(training: Mapping, local: bool, limit_given: bool, environ: Mapping[str, str] | None = None) -> GpuPlan:
    """The GPU resources of one invocation. A local run with GPUs gives each GPU job one slot (``gpu=1``) and
    lets at most devices x ``training.jobs_per_gpu`` run at once, unless the user's ``--resources gpu=...``
    (``limit_given``) sets that. Otherwise, as under a cluster executor, a job asks for ``training.gpu``
    when set, else for nothing, so that the profile's default applies."""
    configured = {} if training["gpu"] is None else {"gpu": training["gpu"]}
    devices = tuple(slot_devices(training["device"], environ)) if local else ()
    if not devices:
        return GpuPlan((), configured, {}, None)
    limit = None if limit_given else len(devices) * training["jobs_per_gpu"]
    return GpuPlan(devices, {"gpu": 1}, {"gpu": 1}, limit)


def slot_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of the lock files: ``BATCHLAB_GPU_SLOT_DIR``, else one per user in the system's temp
    folder, so that every study of the user on this machine shares the slots."""
    env = os.environ if environ is None else environ
    if env.get(SLOT_DIR_ENV):
        return Path(env[SLOT_DIR_ENV])
    return Path(tempfile.gettempdir()) / f"batchlab-gpu-slots-{os.getuid()}"


@dataclass
class Slot:
    """A slot held: the device, the slot's number on it, its lock file and the open descriptor that holds
    the lock (closing it, or the process ending, frees the slot)."""

    device: str
    index: int
    path: Path
    fd: int


def slot_path(directory: Path, device: str, index: int) -> Path:
    """The lock file of slot ``index`` of ``device`` (a UUID's odd characters made safe for a name)."""
    return Path(directory) / f"{re.sub(r'[^A-Za-z0-9._-]', '_', device)}-{index}.lock"


def _lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def loads(devices: list[str], jobs_per_gpu: int, directory: Path) -> dict[str, int]:
    """How many of each device's slots are held now. A free slot is locked and let go at once to tell."""
    held = {}
    for device in devices:
        held[device] = 0
        for index in range(jobs_per_gpu):
            fd = _lock(slot_path(directory, device, index))
            if fd is None:
                held[device] += 1
            else:
                os.close(fd)
    return held


def try_take(devices: list[str], jobs_per_gpu: int, directory: Path) -> Slot | None:
    """A free slot, on the least loaded device first (so that jobs spread over the devices), or None when
    every slot is held."""
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    load = loads(devices, jobs_per_gpu, directory)
    for device in sorted(devices, key=lambda d: load[d]):
        for index in range(jobs_per_gpu):
            path = slot_path(directory, device, index)
            fd = _lock(path)
            if fd is not None:
                # who holds it, for a person who looks (the lock itself is what counts)
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode())
                return Slot(device, index, path, fd)
    return None


def _journal(event: str, slot: Slot) -> None:
    """One line in the journal (``BATCHLAB_GPU_JOURNAL``), when set: time, event, device, slot, pid."""
    path = os.environ.get(JOURNAL_ENV)
    if path:
        with open(path, "a") as journal:  # one short write in append mode: lines of processes never mix
            journal.write(f"{time.time():.6f} {event} {slot.device} {slot.index} {os.getpid()}\n")


def acquire(device: str = "auto", jobs_per_gpu: int | None = None, poll_seconds: float = 1.0) -> Slot | None:
    """Take a free slot (waiting, polling, while every one is held) and make its device the only one CUDA
    sees. None, with nothing changed, where slots step aside (``slot_devices``). ``jobs_per_gpu`` defaults
    to what the workflow sets (``BATCHLAB_JOBS_PER_GPU``), else 1."""
    devices = slot_devices(device)
    if not devices:
        return None
    per_gpu = int(os.environ.get(JOBS_PER_GPU_ENV, "1")) if jobs_per_gpu is None else jobs_per_gpu
    directory, started, waited = slot_dir(), time.monotonic(), False
    while (slot := try_take(devices, per_gpu, directory)) is None:
        if not waited:
            log.info("all %d GPU slots (%d GPUs x %d) are taken, by another study on this machine or by jobs "
                     "started outside this one; waiting for one to free up (lock files in %s)",
                     len(devices) * per_gpu, len(devices), per_gpu, directory)
            waited = True
        time.sleep(poll_seconds)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
    _journal("take", slot)
    after = f" after waiting {time.monotonic() - started:.0f} s" if waited else ""
    log.info("GPU slot %s-%d%s: this job uses GPU %s (CUDA_VISIBLE_DEVICES=%s; %d job(s) per GPU)",
             slot.device, slot.index, after, slot.device, slot.device, per_gpu)
    return slot


def release(slot: Slot) -> None:
    """Give the slot back (the process ending does it too)."""
    if slot.fd < 0:
        return
    _journal("release", slot)
    os.close(slot.fd)
    slot.fd = -1


def take_slot(device: str = "auto", jobs_per_gpu: int | None = None, poll_seconds: float = 1.0) -> Slot | None:
    """``acquire`` for the rest of the process: a job script's first call, before torch starts CUDA."""
    slot = acquire(device, jobs_per_gpu, poll_seconds)
    if slot is not None:
        atexit.register(release, slot)
    return slot


@contextmanager
def gpu_slot(device: str = "auto", jobs_per_gpu: int | None = None, poll_seconds: float = 1.0) -> Iterator[Slot | None]:
    """``acquire`` for a block: the slot is given back and CUDA_VISIBLE_DEVICES restored when it ends."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    slot = acquire(device, jobs_per_gpu, poll_seconds)
    try:
        yield slot
    finally:
        if slot is not None:
            release(slot)
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
