"""batchlab.grid: expansion of a config into run specs, lr scaling, budgets, run ids and packs."""

from __future__ import annotations

import copy
import math
import random
import re

import pytest

from batchlab import config, grid

from studies import TINY, tiny_specs


def expand(**changes) -> list[dict]:
    return tiny_specs(**changes)


# -- expansion -------------------------------------------------------------------------------------------


def test_expand_counts_the_full_product():
    specs = expand(
        datasets=["mnist1d", "blobs"], architectures=["logreg", "mlp"], batch_sizes=[4, 8, 16],
        learning_rates=[0.1, 0.2], seeds=[0, 1, 2],
    )
    assert len(specs) == 2 * 2 * 3 * 2 * 3
    combos = {(s["dataset"], s["arch"], s["batch_size"], s["lr"], s["seed"]) for s in specs}
    assert len(combos) == len(specs)
    assert {s["dataset"] for s in specs} == {"mnist1d", "blobs"}
    assert {s["seed"] for s in specs} == {0, 1, 2}


def test_expand_specs_are_fully_resolved():
    spec = expand()[0]
    assert set(spec) == {
        "version", "dataset", "dataset_options", "arch", "model_options", "batch_size", "lr", "lr_grid_value",
        "lr_scaling", "lr_reference_batch_size", "steps", "budget", "optimizer", "warmup", "schedule", "seed",
        "eval_points", "noise_scale", "sharpness", "divergence_loss_factor", "precision", "run_id",
        "keep_weights",  # the tiny study's two batch sizes are the ends of its interpolation
    }
    assert spec["version"] == grid.TRAINING_VERSION
    assert spec["dataset_options"] == {"num_samples": 300, "seed": 42}
    assert spec["optimizer"] == {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    assert spec["schedule"] == {"kind": "constant"}
    assert spec["warmup"] == {"fraction": 0.0, "start_factor": 0.03125}
    assert spec["eval_points"] == 3
    assert spec["noise_scale"] == {"pairs": 4, "small_batch": spec["batch_size"], "big_batch": 8 * spec["batch_size"],
                                   "every": 2}
    assert spec["sharpness"] == {"epsilons": [0.0005, 0.001], "steps": 10, "examples": 1000}
    only = {"epsilons": [0.001], "steps": 5, "examples": 100, "batch_sizes": [1024]}
    assert grid.sharpness_settings(only, 8) == {"epsilons": []}
    assert grid.sharpness_settings(only, 1024) == {"epsilons": [0.001], "steps": 5, "examples": 100}
    assert grid.noise_scale_batches({"pairs": 2, "big_batch_factor": 8, "big_batch_max": 2048, "every": 1}, 1024) == {
        "pairs": 2, "small_batch": 1024, "big_batch": 2048, "every": 1}
    assert spec["divergence_loss_factor"] == 10.0


def test_expand_adam_and_schedules_keep_only_their_own_fields():
    spec = expand(optimizer={"name": "adam", "momentum": 0.5}, schedule={"kind": "step", "gamma": 0.5})[0]
    assert spec["optimizer"] == {"name": "adam", "betas": [0.9, 0.999], "weight_decay": 0.0}
    assert spec["schedule"] == {"kind": "step", "milestones": [0.5, 0.75], "gamma": 0.5}
    spec = expand(schedule={"kind": "cosine", "final_factor": 0.1})[0]
    assert spec["schedule"] == {"kind": "cosine", "final_factor": 0.1}


def test_overrides_apply_only_to_their_architecture():
    specs = expand(
        architectures=["logreg", "mlp"], batch_sizes=[8, 16, 32], learning_rates=[0.1, 0.2], seeds=[0, 1],
        budget={"steps": 12},
        overrides={"mlp": {
            "batch_sizes": [16], "budget": {"steps": 7},
            "learning_rates": {"base": [0.001, 0.002, 0.004], "scaling": "linear"},
            "optimizer": {"momentum": 0.9, "nesterov": True}, "model_options": {"width": 8},
        }},
    )
    logreg = [s for s in specs if s["arch"] == "logreg"]
    mlp = [s for s in specs if s["arch"] == "mlp"]
    assert len(logreg) == 3 * 2 * 2 and len(mlp) == 1 * 3 * 2
    assert {s["steps"] for s in logreg} == {12} and {s["steps"] for s in mlp} == {7}
    assert {s["lr"] for s in logreg} == {0.1, 0.2} and {s["lr_scaling"] for s in logreg} == {"none"}
    assert sorted({s["lr"] for s in mlp}) == pytest.approx([0.016, 0.032, 0.064])
    assert {s["lr_scaling"] for s in mlp} == {"linear"}
    assert all(s["optimizer"]["nesterov"] and s["optimizer"]["momentum"] == 0.9 for s in mlp)
    assert all(not s["optimizer"]["nesterov"] and s["optimizer"]["momentum"] == 0.0 for s in logreg)
    assert all(s["model_options"] == {"width": 8} for s in mlp)
    assert all(s["model_options"] == {} for s in logreg)


# -- learning rates and budgets --------------------------------------------------------------------------


@pytest.mark.parametrize("base, batch, rule, ref, expected", [
    (0.1, 64, "none", 32, 0.1),
    (0.1, 64, "linear", 32, 0.2),
    (0.1, 8, "linear", 32, 0.025),
    (0.001, 256, "linear", 1, 0.256),
    (0.1, 128, "sqrt", 32, 0.2),
    (0.1, 16, "sqrt", 32, 0.1 * math.sqrt(0.5)),
    (0.5, 32, "sqrt", 32, 0.5),
])
def test_scale_lr_known_values(base, batch, rule, ref, expected):
    value = grid.scale_lr(base, batch, rule, ref)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12)


def test_expand_scales_lr_and_keeps_the_grid_value():
    specs = expand(batch_sizes=[8, 32], learning_rates={"base": [0.01], "scaling": "sqrt", "reference_batch_size": 8})
    by_batch = {s["batch_size"]: s for s in specs}
    assert by_batch[8]["lr"] == pytest.approx(0.01)
    assert by_batch[32]["lr"] == pytest.approx(0.02)
    assert {s["lr_grid_value"] for s in specs} == {0.01}
    assert {s["lr_reference_batch_size"] for s in specs} == {8}


@pytest.mark.parametrize("budget, batch, n, steps", [
    ({"steps": 5}, 32, 240, 5),
    ({"steps": 5}, 1, 240, 5),
    ({"epochs": 2}, 32, 240, 15),
    ({"epochs": 1}, 7, 240, 34),  # 240 / 7 = 34.3
    ({"epochs": 0.5}, 7, 240, 17),  # 120 / 7 = 17.1
    ({"examples": 1000}, 64, 240, 16),  # 15.6
    ({"examples": 10}, 64, 240, 1),  # at least one step
    ({"epochs": 0.01}, 200, 240, 1),
])
def test_resolve_steps(budget, batch, n, steps):
    assert grid.resolve_steps(budget, batch, n) == steps


def test_expand_resolves_steps_from_the_training_set_size():
    specs = expand(batch_sizes=[8, 48], budget={"epochs": 2})  # 240 training examples
    assert {s["batch_size"]: s["steps"] for s in specs} == {8: 60, 48: 10}


# -- run ids ---------------------------------------------------------------------------------------------


def test_run_ids_are_deterministic_and_unique():
    changes = dict(architectures=["logreg", "mlp"], batch_sizes=[8, 32], learning_rates=[0.1, 0.2], seeds=[0, 1])
    a, b = expand(**changes), expand(**changes)
    assert [s["run_id"] for s in a] == [s["run_id"] for s in b]
    assert len({s["run_id"] for s in a}) == len(a) == 16
    for s in a:
        assert s["run_id"] == grid.run_id(grid.without_id(s))


def test_run_id_format():
    spec = expand()[0]
    assert re.fullmatch(r"mnist1d-mlp-b8-lr0\.05-s0-[0-9a-f]{10}", spec["run_id"])
    assert spec["run_id"].endswith(grid.spec_hash(grid.without_id(spec))[:10])


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path, obj


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.125
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [0.75]
    raise TypeError(value)


def test_run_id_changes_when_any_spec_field_changes():
    spec = grid.without_id(expand(
        optimizer={"name": "sgd", "momentum": 0.9}, schedule={"kind": "step"},
        overrides={"mlp": {"model_options": {"width": 8}}},
    )[0])
    base = grid.run_id(spec)
    leaves = list(_leaves(spec))
    assert len(leaves) >= 20
    for path, value in leaves:
        changed = copy.deepcopy(spec)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = _changed(value)
        assert grid.run_id(changed) != base, f"changing {'.'.join(path)} kept the id"
    # a new key (e.g. a new model option) changes it too
    changed = copy.deepcopy(spec)
    changed["model_options"]["depth"] = 1
    assert grid.run_id(changed) != base


def test_run_id_does_not_depend_on_key_order():
    spec = grid.without_id(expand()[0])
    reordered = dict(reversed(list(spec.items())))
    reordered["optimizer"] = dict(reversed(list(spec["optimizer"].items())))
    assert grid.run_id(reordered) == grid.run_id(spec)


@pytest.mark.parametrize("as_int, as_float", [
    ({"learning_rates": [1]}, {"learning_rates": [1.0]}),
    ({"learning_rates": {"base": [1], "scaling": "sqrt"}}, {"learning_rates": {"base": [1.0], "scaling": "sqrt"}}),
    ({"budget": {"epochs": 2}}, {"budget": {"epochs": 2.0}}),
    ({"budget": {"steps": 12}}, {"budget": {"steps": 12.0}}),
    ({"optimizer": {"momentum": 0}}, {"optimizer": {"momentum": 0.0}}),
    ({"warmup": {"fraction": 0}}, {"warmup": {"fraction": 0.0}}),
    ({"divergence": {"loss_factor": 10}}, {"divergence": {"loss_factor": 10.0}}),
    ({"batch_sizes": [8]}, {"batch_sizes": [8.0]}),
])
def test_int_or_float_spelling_does_not_change_the_id(as_int, as_float):
    a, b = expand(**as_int), expand(**as_float)
    assert [s["run_id"] for s in a] == [s["run_id"] for s in b]


def test_unrelated_config_keys_do_not_change_ids():
    a = expand()
    b = expand(study="other", training={"pack_size": 1, "threads": 2}, evaluation={"points": 3, "batch_size": 7})
    assert [s["run_id"] for s in a] == [s["run_id"] for s in b]


def test_targets_are_analysis_not_training():
    """Targets are read off the history when tabulating: changing them retrains nothing."""
    a, b = expand(targets=[0.3]), expand(targets=[0.5, 0.9], overrides={"mlp": {"targets": [0.2]}})
    assert [s["run_id"] for s in a] == [s["run_id"] for s in b]
    cfg = config.validate({**TINY, "architectures": ["logreg", "mlp"], "targets": [0.5, 0.3],
                           "overrides": {"mlp": {"targets": [0.2]}}})
    assert grid.targets(cfg) == {"logreg": [0.3, 0.5], "mlp": [0.2]}


# -- packs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_specs() -> list[dict]:
    # two shape groups (batch 8 and 32) of 5 lrs x 2 seeds = 10 runs each, plus logreg: 40 runs
    return tiny_specs(architectures=["mlp", "logreg"], learning_rates=[0.01, 0.02, 0.04, 0.08, 0.16], seeds=[0, 1])


def test_packs_of_all_incomplete_runs(many_specs):
    ids = {s["run_id"] for s in many_specs}
    packs = grid.packs(many_specs, ids, 4)
    assert len(packs) == 4 * 3  # four groups of 10 runs: chunks of 4, 4, 2
    assert sorted(len(p.members) for p in packs) == [2] * 4 + [4] * 8
    assert sorted(s["run_id"] for p in packs for s in p.members) == sorted(ids)
    for p in packs:
        keys = {grid.shape_key(s) for s in p.members}
        assert len(keys) == 1
        assert {s["steps"] for s in p.members} == {p.steps}


def test_pack_names_are_unique_identifiers(many_specs):
    packs = grid.packs(many_specs, {s["run_id"] for s in many_specs}, 3)
    names = [p.name for p in packs]
    assert len(set(names)) == len(names)
    assert all(name.isidentifier() for name in names)
    assert "mnist1d_mlp_b8_n12_p0" in names


def test_pack_names_are_identifiers_whatever_the_names():
    spec = {"dataset": "my-data.v2", "dataset_options": {}, "arch": "wide-mlp", "model_options": {},
            "batch_size": 8, "steps": 3, "run_id": "x"}
    (pack,) = grid.packs([spec], {"x"}, 2)
    assert pack.name == "my_data_v2_wide_mlp_b8_n3_p0"
    assert pack.name.isidentifier()


@pytest.mark.parametrize("pack_size", [1, 3, 4, 16])
def test_packs_hold_at_most_pack_size_members_and_only_incomplete_runs(many_specs, pack_size):
    rng = random.Random(pack_size)
    ids = sorted(s["run_id"] for s in many_specs)
    incomplete = set(rng.sample(ids, 17))
    packs = grid.packs(many_specs, incomplete, pack_size)
    members = [s["run_id"] for p in packs for s in p.members]
    assert all(0 < len(p.members) <= pack_size for p in packs)
    assert sorted(members) == sorted(incomplete)  # each incomplete run in exactly one pack


def test_nothing_to_train_gives_no_packs(many_specs):
    assert grid.packs(many_specs, set(), 4) == []


@pytest.mark.parametrize("seed", range(5))
def test_pack_names_and_members_are_stable_whatever_else_is_complete(many_specs, seed):
    full = {p.name: p for p in grid.packs(many_specs, {s["run_id"] for s in many_specs}, 4)}
    rng = random.Random(seed)
    incomplete = {s["run_id"] for s in many_specs if rng.random() < 0.5}
    shuffled = list(many_specs)
    rng.shuffle(shuffled)  # the order of the specs does not matter either
    for p in grid.packs(shuffled, incomplete, 4):
        assert p.name in full
        assert [s["run_id"] for s in p.members] == [s["run_id"] for s in full[p.name].members if s["run_id"] in incomplete]


def test_a_chunk_keeps_its_name_and_members_when_other_chunks_complete(many_specs):
    full = grid.packs(many_specs, {s["run_id"] for s in many_specs}, 4)
    keep = full[1]
    incomplete = {s["run_id"] for s in keep.members}
    (again,) = grid.packs(many_specs, incomplete, 4)
    assert again == keep


def test_retries_ask_for_more_memory():
    pack = grid.Pack("p", tuple({"steps": 1000} for _ in range(4)), 1000)
    assert grid.mem_mb(pack, 100.0, attempt=3) == 3 * grid.mem_mb(pack, 100.0)
    assert grid.mem_mb(pack, 100.0, configured=16000, attempt=2) == 32000


def test_memory_estimate_grows_with_dataset_and_pack():
    def pack(n):
        return grid.Pack("p", tuple({"steps": 10} for _ in range(n)), 10)

    assert grid.mem_mb(pack(1), 0.0) == 2100
    assert grid.mem_mb(pack(4), 737.0) == 2000 + 3 * 737 + 400  # CIFAR-10 as float32, a pack of 4
    assert grid.mem_mb(pack(8), 10.0) > grid.mem_mb(pack(4), 10.0) > grid.mem_mb(pack(4), 1.0)
    assert grid.mem_mb(pack(8), 10.0, configured=500) == 500


def test_dataset_options_fills_defaults():
    cfg = config.validate(copy.deepcopy(TINY))
    assert grid.dataset_options(cfg, "mnist1d") == {"num_samples": 300, "seed": 42}
    cfg = config.validate({**copy.deepcopy(TINY), "datasets": ["blobs"], "dataset_options": {}})
    assert grid.dataset_options(cfg, "blobs")["n_train"] == 2000


def test_run_ids_are_sorted_and_shown_by_count_and_digest():
    ids = grid.RunIds(["b", "a", "c"])
    assert list(ids) == ["a", "b", "c"] and ids == grid.RunIds(["c", "b", "a"])
    assert repr(ids).startswith("RunIds(3 runs, sha256 ") and "'a'" not in repr(ids)
    assert repr(ids) != repr(grid.RunIds(["a", "b"]))  # Snakemake sees a changed set of runs in the params
    assert repr(ids) == repr(grid.RunIds(["c", "a", "b"]))


def test_receipt_path_is_per_pack(many_specs):
    packs = grid.packs(many_specs, {s["run_id"] for s in many_specs}, 2)
    paths = {grid.receipt_path(p) for p in packs}
    assert len(paths) == len(packs) and all(p.startswith("results/packs/") for p in paths)


def test_interpolation_marks_only_the_runs_at_its_two_batch_sizes():
    def marked(**interp):
        specs = expand(batch_sizes=[8, 16, 32], architectures=["mlp", "logreg"],
                       overrides={"logreg": {"batch_sizes": [16, 64]}}, evaluation={"points": 3, "interpolation": interp})
        return {(s["arch"], s["batch_size"]) for s in specs if s.get("keep_weights")}, specs

    default, specs = marked()  # the smallest and the largest batch size of each architecture
    assert default == {("mlp", 8), ("mlp", 32), ("logreg", 16), ("logreg", 64)}
    assert all(s.get("keep_weights") in (None, True) for s in specs)
    off, unmarked = marked(points=0)
    assert off == set()
    assert [s["run_id"] for s in specs] == [s["run_id"] for s in unmarked]  # keeping weights is not in the id
    cfg = config.validate(dict(TINY, batch_sizes=[8, 16, 32], evaluation={"interpolation": {"batch_sizes": [32, 16]}}))
    assert grid.interpolation_ends(cfg, "mlp") == (16, 32)
    assert {s["batch_size"] for s in grid.expand(cfg) if s.get("keep_weights")} == {16, 32}
    assert grid.interpolation_jobs(cfg) == [{"dataset": "mnist1d", "arch": "mlp", "small_batch": 16, "large_batch": 32}]
    single = config.validate(dict(TINY, batch_sizes=[8]))
    assert grid.interpolation_ends(single, "mlp") is None and grid.interpolation_jobs(single) == []
# -- variants -------------------------------------------------------------------------------------------

# sha256 of the sorted run ids and pack names of the shipped configs' main grids before variants existed (the
# default study's run ids: of its seeds 0 and 1, the two it then had; the smoke study's: of MNIST-1D, its one
# dataset then)
MAIN_GRID = {
    "config.yaml": ("ce9f92a25e373716b7459ae81bdb0a29301f097f9bdceb0f722dc5fa2ae0ad2e",
                    "28a0803844b8c4532c36e2ff3aebf13580b04193c19d75d2a22a3d2067af3d93"),
    "configs/smoke.yaml": ("66aa7bd6815ed6e707f26e3a53e65ff85be72378b618bd0ab152620a46c1437d",
                           "df562d6842cb2aea4687f298e5dd77f79c4870bb6cee69e82364f13474b482b4"),
}


@pytest.mark.parametrize("path", sorted(MAIN_GRID))
def test_variants_leave_the_main_grids_run_ids_and_pack_names_as_they_were(path):
    import hashlib

    from studies import ROOT

    c = config.load(ROOT / path)
    assert c["variants"], "the shipped configs have variants"
    main = [s for s in grid.expand(c) if "variant" not in s]
    digest = lambda names: hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()  # noqa: E731
    # the default study's third seed came later, and so did the smoke study's second dataset
    then = [s for s in main if (path != "config.yaml" or s["seed"] in (0, 1)) and s["dataset"] == "mnist1d"]
    assert digest(s["run_id"] for s in then) == MAIN_GRID[path][0]
    packed = main if path == "config.yaml" else then
    assert digest(p.name for p in grid.packs(packed, {s["run_id"] for s in packed}, c["training"]["pack_size"])) == MAIN_GRID[path][1]


def test_variant_runs_carry_their_name_settings_and_schedule():
    specs = expand(architectures=["mlp", "logreg"], budget={"epochs": 2}, variants={
        "grow": {"architectures": ["mlp"], "batch_sizes": [8], "seeds": [3, 4], "schedule": {"kind": "constant"},
                 "batch_schedule": {"kind": "step", "milestones": [0.5], "factor": 2}},
        "fixed": {"batch_sizes": [32], "budget": {"steps": 7}}})
    main = [s for s in specs if "variant" not in s]
    grown = [s for s in specs if s.get("variant") == "grow"]
    fixed = [s for s in specs if s.get("variant") == "fixed"]
    assert len(main) == 4 and all("batch_schedule" not in s for s in main + fixed)
    assert [(s["arch"], s["seed"]) for s in grown] == [("mlp", 3), ("mlp", 4)]
    assert grown[0]["batch_schedule"] == {"kind": "step", "milestones": [0.5], "factor": 2.0}
    assert grown[0]["steps"] == 30 + 15  # 240 examples at 8, then 240 at 16
    assert grown[0]["noise_scale"] == {"pairs": 0} and grown[0]["sharpness"] == {"epsilons": []}
    assert sorted(s["arch"] for s in fixed) == ["logreg", "mlp"] and {s["steps"] for s in fixed} == {7}
    assert len({s["run_id"] for s in specs}) == len(specs)
    # a scheduled run never shares a pack with constant-batch runs; its pack is named after the schedule
    names = {p.name: p for p in grid.packs(specs, {s["run_id"] for s in specs}, 16)}
    scheduled = [n for n, p in names.items() if any("batch_schedule" in s for s in p.members)]
    assert len(scheduled) == 1 and re.fullmatch(r"mnist1d_mlp_b8_n45_step_[0-9a-f]{6}_p0", scheduled[0])
    assert all("batch_schedule" in s for s in names[scheduled[0]].members)
