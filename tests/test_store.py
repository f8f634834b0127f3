"""batchlab.store: runs are written once, atomically; a complete run is never overwritten."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from batchlab import store

SPEC = {"run_id": "mnist1d-mlp-b8-lr0.1-s0-0123456789", "batch_size": 8, "lr": 0.1, "optimizer": {"name": "sgd"}}
HISTORY = pd.DataFrame({"step": [0, 5, 10], "test_acc": [0.1, 0.4, 0.5], "train_loss": [2.3, 1.2, float("nan")]})
SUMMARY = {"run_id": SPEC["run_id"], "final_test_acc": 0.5, "diverged": False, "steps_to_acc_0.9": float("nan")}


def test_write_run_is_complete_and_readable(tmp_path):
    root = tmp_path / "runs"  # created on demand
    assert not store.is_complete(root, SPEC["run_id"])
    folder = store.write_run(root, SPEC, HISTORY, SUMMARY)
    assert folder == root / SPEC["run_id"] == store.run_dir(root, SPEC["run_id"])
    assert store.is_complete(root, SPEC["run_id"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([store.SPEC, store.HISTORY, store.SUMMARY])
    assert store.read_spec(root, SPEC["run_id"]) == SPEC
    pd.testing.assert_frame_equal(store.read_history(root, SPEC["run_id"]), HISTORY)
    summary = store.read_summary(root, SPEC["run_id"])
    assert summary["final_test_acc"] == 0.5 and summary["diverged"] is False
    assert summary["steps_to_acc_0.9"] != summary["steps_to_acc_0.9"]  # NaN survives the round trip


def test_write_run_leaves_no_temporary_folder(tmp_path):
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    assert [p.name for p in tmp_path.iterdir()] == [SPEC["run_id"]]
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


def test_write_run_converts_numpy_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    summary = {**SUMMARY, "final_test_acc": np.float32(0.5), "best_test_acc": np.float64(0.25)}
    store.write_run(tmp_path, SPEC, HISTORY, summary)
    assert store.read_summary(tmp_path, SPEC["run_id"])["final_test_acc"] == 0.5


def test_write_run_refuses_to_overwrite_a_complete_run(tmp_path):
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    before = {p.name: p.read_bytes() for p in (tmp_path / SPEC["run_id"]).iterdir()}
    with pytest.raises(FileExistsError, match="already complete") as info:
        store.write_run(tmp_path, SPEC, HISTORY.head(1), {**SUMMARY, "final_test_acc": 0.9})
    assert SPEC["run_id"] in str(info.value)
    after = {p.name: p.read_bytes() for p in (tmp_path / SPEC["run_id"]).iterdir()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == [SPEC["run_id"]]


@pytest.mark.parametrize("leftover", ["empty", "partial"])
def test_write_run_replaces_an_incomplete_leftover(tmp_path, leftover):
    folder = tmp_path / SPEC["run_id"]
    folder.mkdir()
    if leftover == "partial":  # a crash after the spec, before the summary
        (folder / store.SPEC).write_text(json.dumps({"run_id": SPEC["run_id"], "stale": True}))
        (folder / "junk.tmp").write_text("half-written")
    assert not store.is_complete(tmp_path, SPEC["run_id"])
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    assert store.is_complete(tmp_path, SPEC["run_id"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([store.SPEC, store.HISTORY, store.SUMMARY])
    assert store.read_spec(tmp_path, SPEC["run_id"]) == SPEC


def test_write_run_replaces_a_stale_temporary_folder(tmp_path):
    stale = tmp_path / f".{SPEC['run_id']}.tmp-{os.getpid()}"
    stale.mkdir()
    (stale / "junk").write_text("from a crashed attempt")
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    assert not stale.exists()
    assert store.is_complete(tmp_path, SPEC["run_id"])


def test_failed_write_leaves_no_complete_run(tmp_path):
    class Unserializable:
        pass

    with pytest.raises(TypeError):
        store.write_run(tmp_path, {**SPEC, "bad": Unserializable()}, HISTORY, SUMMARY)
    assert not store.is_complete(tmp_path, SPEC["run_id"])
    assert not (tmp_path / SPEC["run_id"]).exists()


def test_runs_do_not_interfere(tmp_path):
    other = {**SPEC, "run_id": "other-run"}
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    store.write_run(tmp_path, other, HISTORY, {**SUMMARY, "run_id": "other-run"})
    assert store.is_complete(tmp_path, "other-run") and store.is_complete(tmp_path, SPEC["run_id"])
    assert store.summary_path(tmp_path, "other-run") == tmp_path / "other-run" / "summary.json"


def test_receipt_lists_a_packs_runs_only_when_all_are_complete(tmp_path):
    other = dict(SPEC, run_id="mnist1d-mlp-b8-lr0.2-s0-abcdef0123")
    store.write_run(tmp_path / "runs", SPEC, HISTORY, SUMMARY)
    receipt = tmp_path / "packs" / "p0.json"
    with pytest.raises(RuntimeError, match="1 of its runs are not complete: mnist1d-mlp-b8-lr0.2"):
        store.write_receipt(receipt, [SPEC, other], tmp_path / "runs")
    assert not receipt.exists()
    store.write_run(tmp_path / "runs", other, HISTORY, dict(SUMMARY, run_id=other["run_id"]))
    store.write_receipt(receipt, [SPEC, other], tmp_path / "runs")
    runs = json.loads(receipt.read_text())["runs"]
    assert sorted(runs) == sorted([SPEC["run_id"], other["run_id"]])
    assert runs[other["run_id"]]["final_test_acc"] == 0.5


def test_reading_the_store_does_not_import_pandas():
    import subprocess
    import sys

    code = "import sys, batchlab.store, batchlab.grid, batchlab.config; print('pandas' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # the workflow parses without importing either


def test_runs_written_with_a_parquet_history_are_still_read(tmp_path):
    folder = store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    (folder / store.HISTORY).unlink()
    HISTORY.to_parquet(folder / store.LEGACY_HISTORY, index=False)
    pd.testing.assert_frame_equal(store.read_history(tmp_path, SPEC["run_id"]), HISTORY)
