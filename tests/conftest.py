"""Shared fixtures of the unit tests: tiny studies (a few hundred MNIST-1D examples, tens of steps) so the
whole suite stays fast on one CPU, and nothing that touches the network."""

from __future__ import annotations

import copy
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from batchlab import config, data, grid, training

ROOT = Path(__file__).resolve().parents[1]

# One thread, like the pipeline's training jobs: these tiny models are faster on one, and the suite then
# neither competes with itself nor with other jobs for the cores.
torch.set_num_threads(1)

# A valid study small enough to validate, expand and train in well under a second per run.
TINY = {
    "study": "tiny",
    "datasets": ["mnist1d"],
    "dataset_options": {"mnist1d": {"num_samples": 300, "seed": 42}},
    "architectures": ["mlp"],
    "batch_sizes": [8, 32],
    "learning_rates": [0.05],
    "budget": {"steps": 12},
    "seeds": [0],
    "evaluation": {"points": 3},
    "targets": [0.15, 0.5],
}


@pytest.fixture
def tiny_raw() -> dict:
    """A fresh, unvalidated copy of the tiny study (tests mutate it)."""
    return copy.deepcopy(TINY)


def tiny_specs(**changes) -> list[dict]:
    """The resolved specs of the tiny study with top-level ``changes`` applied."""
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return grid.expand(config.validate(raw))


@pytest.fixture(scope="session")
def mnist1d_npz(tmp_path_factory) -> Path:
    """The tiny study's MNIST-1D (300 examples: 240 train, 60 test), prepared once per session."""
    path = tmp_path_factory.mktemp("prepared") / "mnist1d.npz"
    data.prepare("mnist1d", data.resolve_options("mnist1d", TINY["dataset_options"]["mnist1d"]), "unused", path)
    return path


@pytest.fixture(scope="session")
def mnist1d_tensors(mnist1d_npz) -> dict[str, torch.Tensor]:
    return training.to_tensors(data.load(mnist1d_npz), torch.device("cpu"))


@pytest.fixture(autouse=True)
def restore_torch_state():
    """train_pack sets torch's thread count, deterministic mode and subnormal flushing for its process; undo
    that after every test, so no test depends on the ones before it."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    mkldnn = torch.backends.mkldnn.enabled
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.mkldnn.enabled = mkldnn
    torch.set_flush_denormal(False)  # torch's default (it has no getter); train_pack flushes subnormals


@contextmanager
def tmpfs(path: Path, options: str):
    """A small file system mounted at ``path`` (``options``: ``size=256k`` for a disk that fills up, ``ro`` for
    a read-only one) for the body of the ``with``; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a file system here (root needed): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
