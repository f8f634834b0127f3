"""batchlab.config: schema validation with defaults filled, semantic checks, and one-line ConfigErrors that
name the key, the value and what is allowed."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from batchlab import config, data, grid, models
from batchlab.config import ConfigError

from studies import ROOT, TINY


def invalid(raw: dict) -> str:
    """Validate ``raw``, expecting a ConfigError; return its message."""
    with pytest.raises(ConfigError) as info:
        config.validate(raw)
    return str(info.value)


def with_(**changes) -> dict:
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return raw


# -- valid configs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["config.yaml", "configs/smoke.yaml"])
def test_shipped_configs_validate_with_defaults_filled(path):
    cfg = config.load(ROOT / path)
    assert cfg["optimizer"]["nesterov"] is False
    assert cfg["optimizer"]["weight_decay"] == 0.0
    assert cfg["optimizer"]["betas"] == [0.9, 0.999]
    assert cfg["warmup"] == {"fraction": 0.0, "start_factor": 0.03125}
    assert cfg["schedule"]["kind"] == "cosine" and cfg["schedule"]["final_factor"] == 0.0
    assert cfg["evaluation"]["batch_size"] == 1000
    assert cfg["divergence"] == {"loss_factor": 10.0}
    assert cfg["precision"] == "fp32"
    assert set(cfg["overrides"]) <= set(cfg["architectures"])
    assert cfg["data_dir"] == "data"
    assert set(cfg["training"]) == {"pack_size", "engine", "device", "threads", "gpu", "jobs_per_gpu", "mem_mb",
                                    "seconds_per_step", "seconds_per_example", "checkpoint"}
    assert cfg["training"]["jobs_per_gpu"] == 1
    assert cfg["training"]["checkpoint"] == {"enabled": True, "every_minutes": 10, "every_steps": None, "keep": False}
    assert cfg["training"]["engine"] == "auto" and cfg["training"]["gpu"] is None and cfg["training"]["mem_mb"] is None
    assert cfg["cluster"] == {"local_light_rules": True}
    assert cfg["learning_rates"]["scaling"] == "linear" and cfg["learning_rates"]["reference_batch_size"] == 1


def test_overrides_default_to_none_and_keep_their_own_defaults():
    assert config.load(ROOT / "configs/smoke.yaml")["overrides"] == {}
    cfg = config.validate({**yaml.safe_load((ROOT / "configs/smoke.yaml").read_text()),
                           "overrides": {"mlp": {"optimizer": {"name": "adam"}}}})
    assert cfg["overrides"]["mlp"]["optimizer"] == {"name": "adam", "momentum": 0.0, "nesterov": False,
                                                    "weight_decay": 0.0, "betas": [0.9, 0.999]}
    assert "budget" not in cfg["overrides"]["mlp"]  # only the keys given are overridden


def test_smoke_config_keeps_its_own_values_over_defaults():
    cfg = config.load(ROOT / "configs" / "smoke.yaml")
    assert cfg["study"] == "smoke"
    assert cfg["training"]["pack_size"] == 4  # set in the file
    assert cfg["training"]["threads"] == 1  # default
    assert cfg["evaluation"] == {"points": 5, "batch_size": 1000, "noise_scale": {"pairs": 4, "big_batch_factor": 8, "big_batch_max": 2048, "every": 2},
                                 "sharpness": {"epsilons": [0.001, 0.0005], "steps": 10, "examples": 1000, "batch_sizes": None},
                                 "interpolation": {"batch_sizes": None, "points": 25, "alpha_min": -1.0, "alpha_max": 2.0}}
    assert cfg["optimizer"] == {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "betas": [0.9, 0.999]}


def test_the_default_study_trains_each_batch_size_and_architecture_in_one_pack():
    """One job per batch size and architecture of the main grid (every learning rate and seed of it), which
    starts Python and torch once for them."""
    from batchlab import grid

    cfg = config.load(ROOT / "config.yaml")
    main = [s for s in grid.expand(cfg) if "variant" not in s]
    packs = grid.packs(main, {s["run_id"] for s in main}, cfg["training"]["pack_size"])
    assert len(packs) == len(cfg["architectures"]) * len(cfg["batch_sizes"])
    assert len(cfg["seeds"]) == 3 and {len(p.members) for p in packs} == {len(cfg["seeds"]) * 6}


def test_minimal_config_gets_every_default_and_input_is_not_mutated():
    raw = {"datasets": ["blobs"], "architectures": ["logreg"], "batch_sizes": [4], "learning_rates": [0.1],
           "budget": {"steps": 3}}
    before = copy.deepcopy(raw)
    cfg = config.validate(raw)
    assert raw == before
    assert cfg["study"] == "study"
    assert cfg["seeds"] == [0]
    assert cfg["targets"] == []
    assert cfg["dataset_options"] == {}
    assert cfg["optimizer"] == {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "betas": [0.9, 0.999]}
    assert cfg["warmup"]["fraction"] == 0
    assert cfg["schedule"] == {"kind": "constant", "final_factor": 0.0, "milestones": [0.5, 0.75], "gamma": 0.1}
    assert cfg["evaluation"] == {"points": 20, "batch_size": 1000, "noise_scale": {"pairs": 4, "big_batch_factor": 8, "big_batch_max": 2048, "every": 2},
                                 "sharpness": {"epsilons": [0.001, 0.0005], "steps": 10, "examples": 1000, "batch_sizes": None},
                                 "interpolation": {"batch_sizes": None, "points": 25, "alpha_min": -1.0, "alpha_max": 2.0}}
    assert cfg["training"]["pack_size"] == 16
    assert cfg["training"]["device"] == "auto"


def test_learning_rate_object_gets_scaling_defaults():
    cfg = config.validate(with_(learning_rates={"base": [0.01]}))
    assert cfg["learning_rates"] == {"base": [0.01], "scaling": "linear", "reference_batch_size": 1}
    cfg = config.validate(with_(learning_rates=[0.01, 0.1]))
    assert cfg["learning_rates"] == [0.01, 0.1]


def test_override_sections_get_defaults():
    cfg = config.validate(with_(overrides={"mlp": {"optimizer": {"momentum": 0.9, "nesterov": True}}}))
    assert cfg["overrides"]["mlp"]["optimizer"] == {
        "name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.0, "betas": [0.9, 0.999]}


def test_nesterov_with_momentum_is_valid():
    cfg = config.validate(with_(optimizer={"momentum": 0.9, "nesterov": True}))
    assert cfg["optimizer"]["nesterov"] is True


def test_batch_size_equal_to_training_set_is_valid():
    # 300 MNIST-1D examples: 240 for training
    config.validate(with_(batch_sizes=[240]))


# -- invalid configs: each message names the key, the value and what is allowed -----------------------------


def test_unknown_top_level_key_suggests_the_right_one():
    raw = copy.deepcopy(TINY)
    raw["batch_size"] = raw.pop("batch_sizes")
    msg = invalid(raw)
    assert "'batch_size'" in msg
    assert "did you mean 'batch_sizes'?" in msg
    assert "allowed keys:" in msg and "learning_rates" in msg


def test_unknown_key_in_a_section_suggests_the_right_one():
    msg = invalid(with_(optimizer={"momentun": 0.9}))
    assert "'momentun'" in msg and "did you mean 'momentum'?" in msg and "in 'optimizer'" in msg
    assert "allowed keys: betas, momentum, name, nesterov, weight_decay" in msg


def test_wrong_type_of_batch_sizes():
    msg = invalid(with_(batch_sizes="32"))
    assert msg.startswith("'batch_sizes': value '32' is invalid")
    assert "allowed: a list" in msg


@pytest.mark.parametrize("sizes, index, value", [([0], 0, 0), ([8, -4], 1, -4)])
def test_non_positive_batch_size(sizes, index, value):
    msg = invalid(with_(batch_sizes=sizes))
    assert f"'batch_sizes[{index}]'" in msg
    assert f"value {value} is invalid" in msg
    assert "allowed: an integer >= 1" in msg


def test_fractional_batch_size():
    msg = invalid(with_(batch_sizes=[8.5]))
    assert "'batch_sizes[0]'" in msg and "8.5" in msg and "allowed: an integer" in msg


def test_batch_size_larger_than_training_set():
    msg = invalid(with_(batch_sizes=[8, 512]))
    assert "'batch_sizes[1]'" in msg
    assert "512" in msg and "'mnist1d'" in msg
    assert "allowed: 1 to 240" in msg


def test_batch_size_larger_than_training_set_in_overrides():
    msg = invalid(with_(architectures=["mlp", "logreg"], overrides={"logreg": {"batch_sizes": [300]}}))
    assert "'overrides.logreg.batch_sizes[0]'" in msg and "allowed: 1 to 240" in msg


def test_batch_size_check_uses_the_real_mnist1d_train_size():
    # mnist1d keeps num_samples // 10 examples per class: 205 samples give 200 examples, 160 for training
    msg = invalid(with_(dataset_options={"mnist1d": {"num_samples": 205}}, batch_sizes=[164]))
    assert "'batch_sizes[0]'" in msg and "allowed: 1 to 160" in msg


@pytest.mark.parametrize("lrs", [[0.1, 0.0], [-0.1], {"base": [0.0]}, {"base": [0.1, -1e-3], "scaling": "sqrt"}])
def test_non_positive_learning_rate(lrs):
    msg = invalid(with_(learning_rates=lrs))
    assert msg.startswith("'learning_rates': value")
    assert repr(lrs) in msg
    assert "allowed: a list of positive numbers" in msg and "scaling: none|linear|sqrt" in msg


def test_non_positive_learning_rate_in_overrides():
    msg = invalid(with_(overrides={"mlp": {"learning_rates": [0]}}))
    assert msg.startswith("'overrides.mlp.learning_rates'") and "positive numbers" in msg


def test_unknown_dataset_lists_allowed_ones():
    msg = invalid(with_(datasets=["mnist2d"], dataset_options={}))
    assert "'datasets[0]'" in msg and "'mnist2d'" in msg
    assert "allowed: " + ", ".join(data.DATASETS) in msg


def test_unknown_architecture_lists_allowed_ones():
    msg = invalid(with_(architectures=["mlp", "transformer"]))
    assert "'architectures[1]'" in msg and "'transformer'" in msg
    assert "allowed: " + ", ".join(models.ARCHITECTURES) in msg


def test_empty_batch_sizes():
    msg = invalid(with_(batch_sizes=[]))
    assert msg.startswith("'batch_sizes': value [] is invalid")
    assert "allowed: a non-empty list" in msg


def test_repeated_batch_sizes():
    msg = invalid(with_(batch_sizes=[8, 8]))
    assert "'batch_sizes'" in msg and "without repeated values" in msg


@pytest.mark.parametrize("budget", [{"epochs": 1, "steps": 10}, {"steps": 10, "examples": 100}, {}])
def test_budget_needs_exactly_one_unit(budget):
    msg = invalid(with_(budget=budget))
    assert msg.startswith("'budget'")
    assert repr(budget) in msg
    assert "exactly one of epochs, steps or examples" in msg


def test_budget_unknown_unit():
    msg = invalid(with_(budget={"minutes": 3}))
    assert "'minutes'" in msg and "allowed keys: epochs, examples, steps" in msg


def test_nesterov_without_momentum():
    msg = invalid(with_(optimizer={"nesterov": True}))
    assert "'optimizer.nesterov'" in msg and "momentum > 0" in msg and "got momentum 0.0" in msg


def test_nesterov_without_momentum_in_overrides():
    msg = invalid(with_(overrides={"mlp": {"optimizer": {"nesterov": True, "momentum": 0}}}))
    assert "'overrides.mlp.optimizer.nesterov'" in msg


def test_image_architecture_on_a_signal_dataset():
    msg = invalid(with_(architectures=["cnn"]))
    assert msg.startswith("'architectures'")
    assert "'cnn'" in msg and "'mnist1d'" in msg and "(1, 40)" in msg
    assert "image datasets" in msg


def test_signal_architecture_on_an_image_dataset():
    msg = invalid(with_(datasets=["digits"], dataset_options={}, architectures=["cnn1d"]))
    assert "'cnn1d'" in msg and "'digits'" in msg and "signal datasets" in msg


def test_unknown_model_option():
    msg = invalid(with_(overrides={"mlp": {"model_options": {"widht": 64}}}))
    assert "'overrides.mlp.model_options.widht'" in msg
    assert "'mlp'" in msg and "allowed: ['width', 'depth']" in msg


def test_known_model_option_is_valid():
    cfg = config.validate(with_(overrides={"mlp": {"model_options": {"width": 16, "depth": 1}}}))
    assert cfg["overrides"]["mlp"]["model_options"] == {"width": 16, "depth": 1}


def test_overrides_for_an_architecture_not_in_the_study_are_dropped_with_a_warning():
    warnings = []
    cfg = config.validate(with_(overrides={"cnn1d": {"budget": {"steps": 3}}, "mlp": {"budget": {"steps": 5}}}),
                          warn=warnings.append)
    assert set(cfg["overrides"]) == {"mlp"} and {s["steps"] for s in grid.expand(cfg)} == {5}
    assert len(warnings) == 1 and warnings[0].startswith("'overrides.cnn1d'")
    assert "not one of the study's architectures (mlp)" in warnings[0] and "ignored" in warnings[0]


def test_overrides_for_an_unregistered_architecture_are_an_error():
    msg = invalid(with_(overrides={"mpl": {"budget": {"steps": 3}}}))
    assert "'overrides.mpl'" in msg and "not one of the study's architectures (mlp)" in msg


def test_variants_keep_only_the_studys_architectures_with_a_warning():
    warnings = []
    narrowed = {"architectures": ["mlp", "cnn1d"], "batch_sizes": [8]}
    gone = {"architectures": ["cnn1d"], "batch_sizes": [8]}
    cfg = config.validate(with_(variants={"narrowed": narrowed, "gone": gone}), warn=warnings.append)
    assert cfg["variants"]["narrowed"]["architectures"] == ["mlp"] and "gone" not in cfg["variants"]
    assert [w.split("'")[1] for w in warnings] == ["variants.narrowed.architectures", "variants.gone.architectures"]
    assert "the variant trains mlp" in warnings[0] and "the variant 'gone' is left out" in warnings[1]
    assert {s["variant"] for s in grid.expand(cfg) if s.get("variant")} == {"narrowed"}


def test_unknown_dataset_option():
    msg = invalid(with_(dataset_options={"mnist1d": {"n_samples": 300}}))
    assert msg.startswith("'dataset_options.mnist1d'")
    assert "'n_samples'" in msg and "allowed: num_samples, seed" in msg


def test_dataset_options_for_a_dataset_not_in_the_study_are_dropped_with_a_warning():
    warnings = []
    cfg = config.validate(with_(dataset_options={"blobs": {"n_train": 10}, "mnist1d": {"num_samples": 300}}),
                          warn=warnings.append)
    assert cfg["dataset_options"] == {"mnist1d": {"num_samples": 300}}
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("'dataset_options.blobs'") and "mnist1d" in warnings[0] and "ignored" in warnings[0]


# -- values from the command line (snakemake --config) ----------------------------------------------------


@pytest.mark.parametrize("given, read", [
    ({"seeds": ["0", "1", "2"]}, {"seeds": [0, 1, 2]}),
    ({"batch_sizes": ["2", "4"]}, {"batch_sizes": [2, 4]}),
    ({"learning_rates": ["0.1", "1e-3", "2"]}, {"learning_rates": [0.1, 0.001, 2]}),
    ({"learning_rates": {"base": ["0.1"], "scaling": "sqrt", "reference_batch_size": "8"}},
     {"learning_rates": {"base": [0.1], "scaling": "sqrt", "reference_batch_size": 8}}),
    ({"budget": {"epochs": "4"}}, {"budget": {"epochs": 4}}),
    ({"optimizer": {"nesterov": "true", "momentum": "0.9", "name": "sgd"}},
     {"optimizer": {"nesterov": True, "momentum": 0.9, "name": "sgd"}}),
    ({"training": {"gpu": "null", "pack_size": "8"}}, {"training": {"gpu": None, "pack_size": 8}}),
    ({"overrides": {"mlp": {"batch_sizes": ["16"]}}}, {"overrides": {"mlp": {"batch_sizes": [16]}}}),
    ({"datasets": ["digits"], "study": "7"}, {"datasets": ["digits"], "study": "7"}),  # strings stay strings
])
def test_numbers_written_on_the_command_line_are_numbers(given, read):
    assert config.command_line_values(given) == read


@pytest.mark.parametrize("given, key, allowed", [
    ({"seeds": ["0", "x"]}, "'seeds[1]'", "allowed: an integer"),
    ({"batch_sizes": ["2.5"]}, "'batch_sizes[0]'", "allowed: an integer"),
    ({"budget": {"epochs": "four"}}, "'budget.epochs'", "allowed: a number"),
    ({"optimizer": {"nesterov": "2"}}, "'optimizer.nesterov'", "allowed: true or false"),
])
def test_a_wrong_type_on_the_command_line_still_names_the_key(given, key, allowed):
    msg = invalid(with_(**config.command_line_values(given)))
    assert msg.startswith(key) and allowed in msg, msg


@pytest.mark.parametrize("section, value, key, allowed", [
    ("optimizer", {"name": "rmsprop"}, "optimizer.name", "one of sgd, adam"),
    ("optimizer", {"momentum": 1.0}, "optimizer.momentum", "a number >= 0 and < 1"),
    ("warmup", {"fraction": 1.5}, "warmup.fraction", "a number >= 0 and < 1"),
    ("schedule", {"kind": "linear"}, "schedule.kind", "one of constant, cosine, step"),
    ("targets", [1.5], "targets[0]", "a number > 0 and <= 1"),
    ("seeds", [-1], "seeds[0]", "an integer >= 0"),
    ("precision", "fp64", "precision", "one of fp32, bf16, fp16"),
    ("study", "my study", "study", "a string matching ^[A-Za-z0-9_-]{1,64}$"),
    ("training", {"pack_size": 0}, "training.pack_size", "an integer >= 1"),
    ("divergence", {"loss_factor": 1}, "divergence.loss_factor", "a number > 1"),
])
def test_schema_messages_say_what_is_allowed(section, value, key, allowed):
    msg = invalid(with_(**{section: value}))
    assert msg.startswith(f"'{key}': value ")
    assert f"(allowed: {allowed})" in msg


def test_missing_required_key():
    raw = copy.deepcopy(TINY)
    del raw["budget"]
    assert "'budget' is a required property" in invalid(raw)


@pytest.mark.parametrize("raw", [None, {}, [], "datasets: [mnist1d]"])
def test_empty_or_non_mapping_config(raw):
    assert "the config is empty" in invalid(raw)


# -- every invalid config: one ConfigError line, never a bare traceback ----------------------------------

INVALID = {
    "typo": ({"batch_size": [8]}, "batch_size"),
    "type": ({"batch_sizes": "32"}, "batch_sizes"),
    "zero": ({"batch_sizes": [0]}, "batch_sizes[0]"),
    "negative": ({"batch_sizes": [-4]}, "batch_sizes[0]"),
    "too large": ({"batch_sizes": [100000]}, "batch_sizes[0]"),
    "lr zero": ({"learning_rates": [0]}, "learning_rates"),
    "lr base": ({"learning_rates": {"base": [-1]}}, "learning_rates"),
    "lr scaling": ({"learning_rates": {"base": [0.1], "scaling": "cubic"}}, "learning_rates"),
    "lr reference": ({"learning_rates": {"base": [0.1], "reference_batch_size": 0}}, "learning_rates"),
    "dataset": ({"datasets": ["imagenet"], "dataset_options": {}}, "datasets[0]"),
    "datasets type": ({"datasets": "mnist1d"}, "datasets"),
    "architecture": ({"architectures": ["vit"]}, "architectures[0]"),
    "empty batch sizes": ({"batch_sizes": []}, "batch_sizes"),
    "two units": ({"budget": {"epochs": 1, "steps": 1}}, "budget"),
    "zero steps": ({"budget": {"steps": 0}}, "budget.steps"),
    "nesterov": ({"optimizer": {"nesterov": True}}, "optimizer.nesterov"),
    "betas": ({"optimizer": {"name": "adam", "betas": [0.9]}}, "optimizer.betas"),
    "image arch": ({"architectures": ["resnet_small"]}, "architectures"),
    "model option": ({"overrides": {"mlp": {"model_options": {"heads": 2}}}}, "model_options.heads"),
    "override arch": ({"overrides": {"cnn_x": {}}}, "overrides.cnn_x"),
    "override key": ({"overrides": {"mlp": {"seeds": [1]}}}, "seeds"),
    "override type": ({"overrides": {"mlp": 3}}, "overrides.mlp"),
    "dataset option": ({"dataset_options": {"mnist1d": {"size": 3}}}, "dataset_options.mnist1d"),
    "dataset option type": ({"dataset_options": {"mnist1d": 3}}, "dataset_options.mnist1d"),
    "warmup": ({"warmup": {"start_factor": 0}}, "warmup.start_factor"),
    "milestones": ({"schedule": {"kind": "step", "milestones": [1.5]}}, "schedule.milestones[0]"),
    "targets": ({"targets": [0]}, "targets[0]"),
    "seeds": ({"seeds": []}, "seeds"),
    "evaluation": ({"evaluation": {"every": 3}}, "every"),
    "interpolation pair": ({"evaluation": {"interpolation": {"batch_sizes": [8, 64]}}}, "evaluation.interpolation.batch_sizes"),
    "interpolation one size": ({"evaluation": {"interpolation": {"batch_sizes": [8]}}}, "evaluation.interpolation.batch_sizes"),
    "interpolation alphas": ({"evaluation": {"interpolation": {"alpha_min": 2.0, "alpha_max": 1.0}}}, "evaluation.interpolation.alpha_min"),
    "device": ({"training": {"device": "tpu"}}, "training.device"),
    "mem": ({"training": {"mem_mb": 10}}, "training.mem_mb"),
    "precision": ({"precision": 16}, "precision"),
    "study": ({"study": ""}, "study"),
}


@pytest.mark.parametrize("changes, key", INVALID.values(), ids=INVALID.keys())
def test_invalid_config_is_one_line_config_error(changes, key):
    try:
        config.validate(with_(**changes))
    except ConfigError as e:
        msg = str(e)
    except Exception as e:  # anything else would reach the user as a traceback
        pytest.fail(f"{type(e).__name__} instead of ConfigError: {e}")
    else:
        pytest.fail("the config was accepted")
    assert msg and "\n" not in msg
    assert "Traceback" not in msg
    assert key in msg
    assert re.search(r"allowed|did you mean|needs|must|not one of|required|use it with", msg), msg


# -- data availability -----------------------------------------------------------------------------------


def mnist_config(tmp_path, **changes) -> dict:
    raw = with_(datasets=["mnist"], dataset_options={}, architectures=["logreg"], data_dir=str(tmp_path / "data"),
                **changes)
    return config.validate(raw)


def test_check_data_available_names_the_expected_path(tmp_path):
    cfg = mnist_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        config.check_data_available(cfg, tmp_path / "prepared")
    msg = str(info.value)
    expected = tmp_path / "data" / "mnist" / "train-images-idx3-ubyte"
    assert "'datasets[0]'" in msg and "'mnist'" in msg
    assert str(expected) in msg and f"{expected}.gz" in msg
    assert "'data_dir'" in msg and "\n" not in msg


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_check_data_available_accepts_plain_or_gzipped_files(tmp_path, suffix):
    cfg = mnist_config(tmp_path, verify_data_files=False)  # empty stand-ins, not the published files
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for stem in data.IDX_STEMS:
        (tmp_path / "data" / "mnist" / (stem + suffix)).write_bytes(b"")
    config.check_data_available(cfg, tmp_path / "prepared")
    (tmp_path / "data" / "mnist" / ("t10k-labels-idx1-ubyte" + suffix)).unlink()
    with pytest.raises(ConfigError, match="'datasets\\[0\\]': .*t10k-labels-idx1-ubyte"):
        config.check_data_available(cfg, tmp_path / "prepared")


def test_check_data_available_checks_the_published_checksums(tmp_path):
    cfg = mnist_config(tmp_path)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for stem in data.IDX_STEMS:
        (tmp_path / "data" / "mnist" / (stem + ".gz")).write_bytes(b"not mnist")
    with pytest.raises(ConfigError) as info:
        config.check_data_available(cfg, tmp_path / "prepared")
    msg = str(info.value)
    assert msg.startswith("'datasets[0]': dataset 'mnist': ")
    assert str(tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg and "\n" not in msg


def test_check_data_available_skips_prepared_datasets(tmp_path):
    cfg = mnist_config(tmp_path)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "mnist.npz").write_bytes(b"")
    config.check_data_available(cfg, tmp_path / "prepared")


def test_check_data_available_ignores_generated_datasets(tmp_path):
    config.check_data_available(config.validate(copy.deepcopy(TINY)), tmp_path / "prepared")


# -- load ------------------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        config.load(path)
    assert str(path) in str(info.value)


def test_load_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("datasets: [mnist1d\nbatch_sizes: {8, 32\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    msg = str(info.value)
    assert msg.startswith(f"config file {path} is not valid YAML (line 2, column 12): ")
    assert "expected ',' or ']'" in msg
    assert "\n" not in msg


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="the config is empty"):
        config.load(path)


def test_load_validates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [blobs]\narchitectures: [mlp]\nbatch_sizes: [0]\nlearning_rates: [0.1]\nbudget: {steps: 2}\n")
    with pytest.raises(ConfigError, match=r"'batch_sizes\[0\]'"):
        config.load(path)


# -- variants -------------------------------------------------------------------------------------------


GROW = {"kind": "step", "milestones": [0.5], "factor": 2}


def test_a_variant_gets_the_defaults_of_its_batch_schedule():
    c = config.validate(with_(variants={"grow": {"budget": {"epochs": 2}, "batch_schedule": {"kind": "drop", "small_batch": 4}}}))
    assert c["variants"]["grow"]["batch_schedule"]["patience"] == 50 and config.validate(TINY)["variants"] == {}


@pytest.mark.parametrize("variant, key, words", [
    ({"batch_size": [8]}, "unknown key", "unknown key 'batch_size' (did you mean 'batch_sizes'?)"),
    ({"architectures": ["cnn1dx"]}, "'variants.v.architectures[0]'", "not one of the study's architectures (mlp)"),
    ({"batch_schedule": {"kind": "grow"}}, "'variants.v.batch_schedule.kind'", "allowed: one of step, drop"),
    ({"batch_schedule": {"kind": "step", "factor": 0.5}}, "'variants.v.batch_schedule.factor'", "> 1"),
    ({"batch_schedule": GROW}, "'variants.v.budget'", "needs a budget in epochs or examples"),
    ({"budget": {"epochs": 1}, "batch_schedule": dict(GROW, factor=16)},
     "'variants.v.batch_schedule'", "batch size 32 grown to 512 is larger than the training set"),
    ({"batch_sizes": [8], "batch_schedule": {"kind": "drop"}}, "'variants.v.batch_schedule.small_batch'",
     "not smaller than the batch size 8"),
    ({"model_options": {"kernel": 3}}, "'variants.v.model_options.kernel'", "takes no option"),
])
def test_bad_variants_are_named_with_what_is_allowed(variant, key, words):
    msg = invalid(with_(variants={"v": variant}))
    assert msg.startswith(key) and words in msg and "'variants.v" in msg, msg


def test_a_variant_name_must_be_able_to_name_files():
    assert "a string matching" in invalid(with_(variants={"no good": {"seeds": [1]}}))
