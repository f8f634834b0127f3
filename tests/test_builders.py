"""The user's own architectures and datasets (config ``builders``): the checks at parse time, what the specs
record, preparing a user dataset and training a user model with both engines. The user's modules are
written by the tests into tmp_path and put on sys.path."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from batchlab import builders, config, data, grid, packs, store

from studies import TINY

NETS = '''
from torch import nn


def tiny(input_shape, num_classes, width=8):
    """A small MLP the batched engine can stack."""
    n = 1
    for d in input_shape:
        n *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Linear(width, num_classes))


def load(options, data_dir):
    """Two Gaussian classes of 6-point signals: 100 training and 40 test examples."""
    import numpy as np

    rng = np.random.default_rng(options.get("seed", 0))
    y = rng.integers(0, 3, size=140)
    x = (rng.normal(size=(140, 1, 6)) + y[:, None, None]).astype("float32")
    return x[:100], y[:100], x[100:], y[100:]
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of the user's (its source) into tmp_path, on sys.path; returns its unique name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(source: str, name: str | None = None) -> str:
        name = name or f"user_{uuid.uuid4().hex[:8]}"
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        for module in [m for m in sys.modules if m == name or m.startswith(name.split(".")[0] + ".")]:
            del sys.modules[module]


def study(module: str, **changes) -> dict:
    """The tiny study with the user's model and dataset of ``module`` beside the registered ones."""
    raw = copy.deepcopy(TINY)
    raw.update(
        datasets=["mnist1d", "mine"], architectures=["mlp", "tiny"], batch_sizes=[8, 16], learning_rates=[0.05, 0.1],
        builders={"architectures": {"tiny": f"{module}:tiny"},
                  "datasets": {"mine": {"load": f"{module}:load", "input_shape": [1, 6], "num_classes": 3,
                                        "train_size": 100}}},
    )
    raw.update(changes)
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.validate(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- checks at parse time ------------------------------------------------------------------------------


def test_a_missing_module_is_one_line_naming_the_key():
    raw = study("no_such_module_here.nets")
    assert error_of(raw) == ("'builders.architectures.tiny': module 'no_such_module_here.nets' not found "
                             "(is it installed or on PYTHONPATH?)")


def test_a_missing_function_is_one_line_naming_the_key(user_module):
    module = user_module("def other(input_shape, num_classes):\n    pass\n")
    assert error_of(study(module)) == f"'builders.architectures.tiny': module {module!r} has no function 'tiny'"


def test_a_builder_of_the_wrong_signature_is_named_with_what_it_takes(user_module):
    module = user_module("def tiny(x):\n    pass\n\ndef load(options, data_dir):\n    pass\n")
    assert error_of(study(module)) == (f"'builders.architectures.tiny': {module}:tiny must accept (input_shape, "
                                       "num_classes, **options); it takes (x)")
    module = user_module(NETS.replace("def load(options, data_dir)", "def load(options)"))
    assert error_of(study(module)) == (f"'builders.datasets.mine.load': {module}:load must accept (options, "
                                       "data_dir); it takes (options)")


def test_a_name_may_not_shadow_a_registered_one(user_module):
    module = user_module(NETS)
    raw = study(module)
    raw["builders"]["architectures"]["mlp"] = f"{module}:tiny"
    assert error_of(raw) == "'builders.architectures.mlp': 'mlp' is a registered architecture; give yours another name"
    raw = study(module)
    raw["builders"]["datasets"]["digits"] = raw["builders"]["datasets"]["mine"]
    assert error_of(raw) == "'builders.datasets.digits': 'digits' is a registered dataset; give yours another name"


def test_an_undeclared_name_points_to_builders(user_module):
    raw = study(user_module(NETS), architectures=["mlp", "tiny", "wide"])
    assert error_of(raw).startswith("'architectures[2]': unknown architecture 'wide'; allowed: logreg, ")
    assert error_of(raw).endswith(", tiny (or your own, under builders.architectures)")


def test_model_options_must_be_taken_by_the_builder(user_module):
    module = user_module(NETS)
    config.validate(study(module, overrides={"tiny": {"model_options": {"width": 4}}}))
    assert error_of(study(module, overrides={"tiny": {"model_options": {"depth": 2}}})) == (
        f"'overrides.tiny.model_options.depth': builder {module}:tiny takes no option 'depth'; allowed: ['width']")
    variant = {"v": {"architectures": ["tiny"], "model_options": {"depth": 2}}}
    assert error_of(study(module, variants=variant)).startswith("'variants.v.model_options.depth': builder ")


def test_keyword_arguments_take_any_option_and_required_options_must_be_given(user_module):
    module = user_module("def tiny(input_shape, num_classes, *, depth, **rest):\n    pass\n\n"
                         "def load(options, data_dir, cache=None):\n    pass\n")
    config.validate(study(module, overrides={"tiny": {"model_options": {"depth": 2, "anything": 1}}}))
    assert error_of(study(module)) == (f"'builders.architectures.tiny': builder {module}:tiny needs option 'depth' "
                                       "(it has no default); give it in model_options")


def test_the_parse_runs_neither_the_users_module_nor_its_package(user_module):
    package = uuid.uuid4().hex[:8]
    user_module("raise RuntimeError('the package ran')\n", f"p{package}.__init__")
    module = user_module("raise RuntimeError('the module ran')\n" + NETS, f"p{package}.nets")
    config.validate(study(module))
    assert module not in sys.modules and f"p{package}" not in sys.modules


def test_a_function_that_is_not_a_plain_def_is_checked_by_importing_it(user_module):
    helper = user_module(NETS)
    module = user_module(f"from {helper} import load\n\nclass tiny:\n    def __init__(self, input_shape, num_classes, width=3):\n"
                         "        pass\n")
    config.validate(study(module))
    assert module in sys.modules
    assert error_of(study(module, overrides={"tiny": {"model_options": {"depth": 2}}})).startswith(
        "'overrides.tiny.model_options.depth': ")


def test_the_parse_imports_no_torch(user_module, tmp_path):
    module = user_module(NETS)
    code = (f"import sys; from batchlab import config, grid; sys.path.insert(0, {str(tmp_path)!r}); "
            f"grid.expand(config.validate({study(module)!r})); print('torch' in sys.modules, {module!r} in sys.modules)")
    src = str(Path(builders.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": src}).stdout
    assert out.split() == ["False", "False"]


def test_signatures_read_from_the_source_equal_inspects():
    source = "def f(a, b=1, /, c=2, *args, d, e=3, **kw):\n    pass\n"
    namespace: dict = {}
    exec(source, namespace)
    expected = [(p.name, p.kind, p.default is not p.empty) for p in inspect.signature(namespace["f"]).parameters.values()]
    assert [(p.name, p.kind, p.has_default) for p in builders._source_params(source, "f")] == expected
    assert builders._source_params("g = 1\n", "f") is False
    assert builders._source_params("from m import *\n", "f") is None
    assert builders._source_params("if True:\n    f = print\n", "f") is None
    assert builders._source_params("@cache\ndef f(a):\n    pass\n", "f") is None


# --- specs and run ids ---------------------------------------------------------------------------------


def test_specs_record_the_builders_and_registered_runs_keep_their_ids(user_module):
    module = user_module(NETS)
    specs = grid.expand(config.validate(study(module)))
    plain = {s["run_id"] for s in grid.expand(config.validate(study(module, datasets=["mnist1d"], architectures=["mlp"],
                                                                        builders={})))}
    for spec in specs:
        assert (spec.get("builder") == f"{module}:tiny") == (spec["arch"] == "tiny")
        assert ("dataset_builder" in spec) == (spec["dataset"] == "mine")
        assert (spec["run_id"] in plain) == (spec["arch"] == "mlp" and spec["dataset"] == "mnist1d")
    assert specs[-1]["dataset_builder"] == {"load": f"{module}:load", "input_shape": [1, 6], "num_classes": 3,
                                            "train_size": 100}


def test_changing_the_builders_path_changes_the_run_id(user_module):
    module = user_module(NETS)
    other = user_module(NETS)
    ids = {s["run_id"] for s in grid.expand(config.validate(study(module)))}
    moved = {s["run_id"] for s in grid.expand(config.validate(study(module, builders={
        "architectures": {"tiny": f"{other}:tiny"}, "datasets": study(module)["builders"]["datasets"]})))}
    assert {i for i in ids if "-tiny-" in i}.isdisjoint(moved)
    assert {i for i in ids if "-tiny-" not in i} <= moved


def test_settings_of_a_declared_name_the_study_leaves_out_are_dropped_with_a_warning(user_module):
    warnings: list[str] = []
    raw = study(user_module(NETS), architectures=["mlp"], overrides={"tiny": {"batch_sizes": [4]}})
    config.validate(raw, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("'overrides.tiny': 'tiny' is not one of the study's")


# --- preparing a user dataset --------------------------------------------------------------------------


def declaration(module: str, **changes) -> dict:
    return {"load": f"{module}:load", "input_shape": [1, 6], "num_classes": 3, "train_size": 100, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"input_shape": [6, 1]}, "'builders.datasets.mine.input_shape': the loader's x_train has examples of shape (1, 6), declared [6, 1]"),
    ({"train_size": 99}, "'builders.datasets.mine.train_size': the loader gives 100 training examples, declared 99"),
    ({"num_classes": 2}, "'builders.datasets.mine.num_classes': the loader's y_train has labels from 0 to 2; declared 2 classes"),
])
def test_prepare_checks_the_arrays_against_the_declaration(user_module, tmp_path, changes, message):
    module = user_module(NETS)
    with pytest.raises(ValueError) as info:
        data.prepare("mine", {}, tmp_path, tmp_path / "mine.npz", declaration=declaration(module, **changes))
    assert str(info.value).startswith(message)
    assert not (tmp_path / "mine.npz").exists()


def test_prepare_names_a_loader_that_returns_something_else(user_module, tmp_path):
    module = user_module("def load(options, data_dir):\n    return {'x': 1}\n")
    with pytest.raises(data.DatasetError, match=r"^'builders.datasets.mine.load': .* returned a dict; expected"):
        data.prepare("mine", {}, tmp_path, tmp_path / "mine.npz", declaration=declaration(module))


def test_prepare_passes_the_options_as_given_and_standardizes(user_module, tmp_path):
    module = user_module(NETS)
    shapes = data.prepare("mine", {"seed": 3}, tmp_path, tmp_path / "mine.npz", declaration=declaration(module))
    assert shapes == {"x_train": (100, 1, 6), "y_train": (100,), "x_test": (40, 1, 6), "y_test": (40,)}
    arrays = data.load(tmp_path / "mine.npz")
    np.testing.assert_allclose(arrays["x_train"].mean(), 0.0, atol=1e-5)
    again = data.prepare("mine", {"seed": 4}, tmp_path, tmp_path / "other.npz", declaration=declaration(module))
    assert again == shapes and not np.array_equal(data.load(tmp_path / "other.npz")["y_train"], arrays["y_train"])


# --- training ------------------------------------------------------------------------------------------


def test_a_user_model_on_a_user_dataset_trains_with_both_engines(user_module, tmp_path):
    module = user_module(NETS)
    validated = config.validate(study(module, datasets=["mine"], architectures=["tiny"], batch_sizes=[8]))
    config.check_data_available(validated, tmp_path / "prepared")
    specs = grid.expand(validated)
    (pack,) = grid.packs(specs, {s["run_id"] for s in specs}, 16)
    assert len(pack.members) == 2 and all(s["builder"] == f"{module}:tiny" for s in pack.members)
    path = tmp_path / "mine.npz"
    data.prepare("mine", grid.dataset_options(validated, "mine"), tmp_path, path,
                 declaration=specs[0]["dataset_builder"])
    summaries = {}
    for engine in ("batched", "sequential"):
        root = tmp_path / engine
        packs.train_pack(list(pack.members), str(path), str(root), device="cpu", engine=engine)
        for spec in pack.members:
            assert store.is_complete(root, spec["run_id"]) and store.read_spec(root, spec["run_id"]) == spec
        summaries[engine] = [store.read_summary(root, s["run_id"]) for s in pack.members]
    assert [s["engine"] for s in summaries["batched"]] == ["batched"] * 2
    assert [s["engine"] for s in summaries["sequential"]] == ["sequential"] * 2
    for batched, alone in zip(summaries["batched"], summaries["sequential"]):
        assert batched["final_train_loss"] == pytest.approx(alone["final_train_loss"], rel=1e-4)


@pytest.mark.workflow
def test_the_workflow_trains_a_user_model_on_a_user_dataset_to_the_runs_table(tmp_path):
    import os

    import pandas as pd
    import yaml

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "user_nets_wf.py").write_text(NETS)
    raw = study("user_nets_wf", batch_sizes=[8], learning_rates=[0.05], variants={},
                evaluation={"points": 2, "noise_scale": {"pairs": 0}, "sharpness": {"epsilons": []},
                            "interpolation": {"points": 0}},
                hardware={"enabled": False})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(lib)])}
    cmd = [sys.executable, "-m", "snakemake", "results/tables/runs.parquet", "-s", str(root / "Snakefile"),
           "--directory", str(tmp_path), "--cores", "2", "--configfile", str(tmp_path / "study.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "prepare_user_dataset" in result.stdout + result.stderr
    runs = pd.read_parquet(tmp_path / "results" / "tables" / "runs.parquet")
    assert len(runs) == 4 and runs["final_test_acc"].notna().all()
    users = runs[runs["arch"] == "tiny"]
    assert (users["builder"] == "user_nets_wf:tiny").all() and runs.loc[runs["arch"] == "mlp", "builder"].isna().all()
    assert (runs.loc[runs["dataset"] == "mine", "dataset_builder_load"] == "user_nets_wf:load").all()
