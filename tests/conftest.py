"""Shared fixtures of the unit tests: tiny studies (a few hundred MNIST-1D examples, tens of steps) so the
whole suite stays fast on one CPU, and nothing that touches the network."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from batchlab import data, sequential, store, tables, training

from studies import SMALL_STUDY, TINY, tiny_specs

# One thread, like the pipeline's training jobs: these tiny models are faster on one, and the suite then
# neither competes with itself nor with other jobs for the cores.
torch.set_num_threads(1)

@pytest.fixture
def tiny_raw() -> dict:
    """A fresh, unvalidated copy of the tiny study (tests mutate it)."""
    return copy.deepcopy(TINY)


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


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, mnist1d_tensors) -> tuple[Path, list[dict], list[Path]]:
    """The 24 complete runs of ``studies.SMALL_STUDY`` in a run store, trained once per session: (the store,
    the specs, their summaries' paths)."""
    root = tmp_path_factory.mktemp("runs")
    specs = tiny_specs(**SMALL_STUDY)
    for spec in specs:
        history, summary = sequential.train_run(spec, mnist1d_tensors, torch.device("cpu"))
        store.write_run(root, spec, history, summary)
    return root, specs, [store.summary_path(root, s["run_id"]) for s in specs]


@pytest.fixture(scope="session")
def small_tables(small_study) -> tuple:
    """The small study aggregated: (history, runs)."""
    return tables.aggregate(small_study[2], {"logreg": [0.12, 0.2], "mlp": [0.12, 0.2]})
