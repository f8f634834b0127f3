"""batchlab.store: runs are written once, atomically; a complete run is never overwritten."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from batchlab import store
from studies import tiny_specs, tmpfs

SPEC, OTHER = tiny_specs()  # real specs: a run's id is the hash of its spec
HISTORY = pd.DataFrame({"step": [0, 5, 10], "test_acc": [0.1, 0.4, 0.5], "train_loss": [2.3, 1.2, float("nan")]})
SUMMARY = {"run_id": SPEC["run_id"], "final_test_acc": 0.5, "diverged": False, "steps_to_acc_0.9": float("nan")}


def test_write_run_is_complete_and_readable(tmp_path):
    root = tmp_path / "runs"  # created on demand
    assert not store.is_complete(root, SPEC["run_id"])
    folder = store.write_run(root, SPEC, HISTORY, SUMMARY)
    assert folder == root / SPEC["run_id"] == store.run_dir(root, SPEC["run_id"])
    assert store.is_complete(root, SPEC["run_id"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([store.SPEC, store.HISTORY, store.SUMMARY])
    assert store.check_run(root, SPEC["run_id"]) is None
    assert store.read_spec(root, SPEC["run_id"]) == SPEC
    pd.testing.assert_frame_equal(store.read_history(root, SPEC["run_id"]), HISTORY)
    summary = store.read_summary(root, SPEC["run_id"])
    assert summary["final_test_acc"] == 0.5 and summary["diverged"] is False
    assert summary["steps_to_acc_0.9"] != summary["steps_to_acc_0.9"]  # NaN survives the round trip


def test_write_run_leaves_no_temporary_folder(tmp_path):
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    assert [p.name for p in tmp_path.iterdir()] == [SPEC["run_id"]]
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


def test_finished_lists_the_runs_in_place_and_never_one_still_being_written(tmp_path):
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    being_written = tmp_path / f".{SPEC['run_id']}-2.tmp-123"  # as write_run names its folder before the rename
    being_written.mkdir()
    (being_written / store.SUMMARY).write_text("{}")
    assert store.finished(tmp_path) == [store.summary_path(tmp_path, SPEC["run_id"])]
    assert store.finished(tmp_path / "none") == []


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
    root = tmp_path / "runs"
    folder = root / SPEC["run_id"]
    folder.mkdir(parents=True)
    if leftover == "partial":  # a crash after the spec, before the summary
        (folder / store.SPEC).write_text(json.dumps({"run_id": SPEC["run_id"], "stale": True}))
        (folder / "junk.tmp").write_text("half-written")
    assert not store.is_complete(root, SPEC["run_id"])
    store.write_run(root, SPEC, HISTORY, SUMMARY)
    assert store.is_complete(root, SPEC["run_id"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([store.SPEC, store.HISTORY, store.SUMMARY])
    assert store.read_spec(root, SPEC["run_id"]) == SPEC
    # a leftover with files in it is kept aside, not deleted
    aside = list((tmp_path / store.CORRUPT).glob(f"{SPEC['run_id']}.*"))
    assert [sorted(p.name for p in a.iterdir()) for a in aside] == ([["junk.tmp", store.SPEC]] if leftover == "partial" else [])


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
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    store.write_run(tmp_path, OTHER, HISTORY, {**SUMMARY, "run_id": OTHER["run_id"]})
    assert store.is_complete(tmp_path, OTHER["run_id"]) and store.is_complete(tmp_path, SPEC["run_id"])
    assert store.summary_path(tmp_path, OTHER["run_id"]) == tmp_path / OTHER["run_id"] / "summary.json"


def test_receipt_lists_a_packs_runs_only_when_all_are_complete(tmp_path):
    other = OTHER
    store.write_run(tmp_path / "runs", SPEC, HISTORY, SUMMARY)
    receipt = tmp_path / "packs" / "p0.json"
    with pytest.raises(RuntimeError, match=f"1 of its runs are not complete: {other['run_id']}"):
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


# -- damaged runs: detected, never read, set aside when trained again ---------------------------------------


def damage(folder, how: str) -> str:
    """Damage a run folder as a crash, a full disk, a bad copy or a hand edit would; return what check_run says."""
    if how == "truncated history":
        data = (folder / store.HISTORY).read_bytes()
        (folder / store.HISTORY).write_bytes(data[: len(data) // 2])
        return "history.arrow does not match its checksum"
    if how == "flipped byte":
        data = bytearray((folder / store.HISTORY).read_bytes())
        data[len(data) // 2] ^= 1
        (folder / store.HISTORY).write_bytes(bytes(data))
        return "history.arrow does not match its checksum"
    if how == "missing summary":
        (folder / store.SUMMARY).unlink()
        return "summary.json is missing"
    if how == "missing history":
        (folder / store.HISTORY).unlink()
        return "history.arrow is missing"
    if how == "edited spec":
        spec = json.loads((folder / store.SPEC).read_text())
        (folder / store.SPEC).write_text(json.dumps(dict(spec, lr=1.0)))
        return "spec.json does not hash to the folder's name"
    if how == "another run's spec":
        (folder / store.SPEC).write_text(json.dumps(OTHER))
        return "spec.json does not hash to the folder's name"
    if how == "garbled summary":
        (folder / store.SUMMARY).write_text('{"run_id": ')
        return "summary.json cannot be read"
    raise ValueError(how)


DAMAGE = ["truncated history", "flipped byte", "missing summary", "missing history", "edited spec",
          "another run's spec", "garbled summary"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_run_is_found_and_never_read(tmp_path, how):
    root = tmp_path / "runs"
    store.write_run(root, SPEC, HISTORY, SUMMARY)
    store.write_run(root, OTHER, HISTORY, dict(SUMMARY, run_id=OTHER["run_id"]))
    problem = damage(root / SPEC["run_id"], how)
    assert problem in store.check_run(root, SPEC["run_id"])
    assert store.damaged_runs(root, [SPEC["run_id"], OTHER["run_id"], "not-trained-yet"]) == {
        SPEC["run_id"]: store.check_run(root, SPEC["run_id"])}
    with pytest.raises(store.DamagedRunError, match=f"run {SPEC['run_id']} in {root} is damaged: {problem}"):
        store.read_run(root / SPEC["run_id"])
    spec, summary, history = store.read_run(root / OTHER["run_id"])
    assert spec == OTHER and history.num_rows == len(HISTORY)


@pytest.mark.parametrize("how", ["truncated history", "edited spec", "missing summary"])
def test_writing_a_damaged_run_again_sets_the_old_folder_aside(tmp_path, how):
    root = tmp_path / "runs"
    store.write_run(root, SPEC, HISTORY, SUMMARY)
    damage(root / SPEC["run_id"], how)
    before = {p.name: p.read_bytes() for p in (root / SPEC["run_id"]).iterdir()}
    store.write_run(root, SPEC, HISTORY, SUMMARY)
    assert store.check_run(root, SPEC["run_id"]) is None
    (aside,) = (tmp_path / store.CORRUPT).iterdir()
    assert aside.name.startswith(SPEC["run_id"] + ".")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before  # kept as it was, for inspection


def test_a_run_written_before_checksums_is_checked_by_reading_it(tmp_path):
    folder = store.write_run(tmp_path, SPEC, HISTORY, SUMMARY)
    summary = json.loads((folder / store.SUMMARY).read_text())
    del summary["checksums"]
    (folder / store.SUMMARY).write_text(json.dumps(summary))
    assert store.check_run(tmp_path, SPEC["run_id"]) is None
    data = (folder / store.HISTORY).read_bytes()
    (folder / store.HISTORY).write_bytes(data[:100])
    assert "the history cannot be read" in store.check_run(tmp_path, SPEC["run_id"])


# -- a full disk, a folder that cannot be written --------------------------------------------------------------


def test_a_full_disk_fails_with_the_path_and_keeps_the_runs_written(tmp_path):
    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        root = disk / "runs"
        store.write_run(root, SPEC, HISTORY, SUMMARY)
        big = pd.DataFrame({"step": range(100_000), "test_acc": 0.5})  # 1.6 MB: more than the disk holds
        with pytest.raises(store.StoreError, match=f"cannot write run {OTHER['run_id']} to {root}: No space left on device"):
            store.write_run(root, OTHER, big, dict(SUMMARY, run_id=OTHER["run_id"]))
        assert store.check_run(root, SPEC["run_id"]) is None
        assert [p.name for p in root.iterdir()] == [SPEC["run_id"]]  # no half-written run, no temporary folder
        (disk / "filler").write_bytes(bytes(150_000))
        with pytest.raises(store.StoreError, match=f"cannot write to the results folder {disk}: No space left"):
            store.check_writable(disk)


def test_a_read_only_results_folder_fails_with_its_path(tmp_path):
    with tmpfs(tmp_path / "results", "ro,size=64k") as folder:
        with pytest.raises(store.StoreError, match=f"cannot write to the results folder {folder}: Read-only file system"):
            store.check_writable(folder)
        with pytest.raises(store.StoreError, match=f"cannot write run .* to {folder / 'runs'}: Read-only file system"):
            store.write_run(folder / "runs", SPEC, HISTORY, SUMMARY)
    store.check_writable(tmp_path / "not" / "yet" / "made")  # checked in the nearest folder that exists
    assert not (tmp_path / "not").exists()


def test_kept_weights_are_read_back_equal_and_covered_by_the_checksums(tmp_path):
    import torch

    weights = {"0.weight": torch.randn(3, 4), "1.running_mean": torch.randn(3), "1.num_batches_tracked": torch.tensor(7)}
    store.write_run(tmp_path, SPEC, HISTORY, SUMMARY, weights=weights)
    back = store.read_weights(tmp_path, SPEC["run_id"])
    assert back.keys() == weights.keys() and all(torch.equal(back[k], weights[k]) for k in weights)
    assert store.WEIGHTS in store.read_summary(tmp_path, SPEC["run_id"])["checksums"]
    with pytest.raises(store.DamagedRunError, match="no final weights"):  # a run that kept none
        store.write_run(tmp_path, OTHER, HISTORY, dict(SUMMARY, run_id=OTHER["run_id"]))
        store.read_weights(tmp_path, OTHER["run_id"])
    path = tmp_path / SPEC["run_id"] / store.WEIGHTS
    path.write_bytes(path.read_bytes()[:-8])  # truncated: the run is damaged, its weights never read
    assert "weights.pt does not match its checksum" in store.check_run(tmp_path, SPEC["run_id"])
    with pytest.raises(store.DamagedRunError, match="weights.pt"):
        store.read_weights(tmp_path, SPEC["run_id"])


def test_a_complete_run_without_the_weights_it_now_keeps_is_replaced_by_one_with_them_and_kept_aside(tmp_path):
    import torch

    assert SPEC.get("keep_weights")  # the tiny study's batch sizes are both ends of its interpolation
    before = {k: v for k, v in SPEC.items() if k != "keep_weights"}
    root = tmp_path / "runs"
    store.write_run(root, before, HISTORY, SUMMARY)  # written before the run was an end
    assert not store.lacks_weights(root, before) and store.lacks_weights(root, SPEC)
    with pytest.raises(FileExistsError):  # nothing to add: never overwritten
        store.write_run(root, SPEC, HISTORY, SUMMARY)
    store.write_run(root, SPEC, HISTORY, SUMMARY, weights={"w": torch.ones(2)})
    assert not store.lacks_weights(root, SPEC) and store.check_run(root, SPEC["run_id"]) is None
    assert torch.equal(store.read_weights(root, SPEC["run_id"])["w"], torch.ones(2))
    assert [p.name for p in root.iterdir()] == [SPEC["run_id"]]  # nothing left over in the store
    (kept,) = (tmp_path / store.SUPERSEDED).iterdir()  # the copy without weights: kept, never deleted
    assert kept.name.startswith(SPEC["run_id"] + ".") and not (kept / store.WEIGHTS).exists()
    assert (kept / store.SUMMARY).read_text() and (kept / store.HISTORY).exists()
    with pytest.raises(FileExistsError):
        store.write_run(root, SPEC, HISTORY, SUMMARY, weights={"w": torch.zeros(2)})
