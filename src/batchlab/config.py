"""Config validation: the JSON schema (batchlab.schema, defaults filled in), then the checks a schema cannot
express (names registered, settings that fit the datasets, variants), and the settings of each architecture
and variant.

Every problem becomes one :class:`ConfigError` whose message names the key, the value and what is allowed,
raised before any job starts.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
from pathlib import Path
from collections.abc import Callable, Container
from typing import Any

import jsonschema
import yaml

from batchlab import builders, data, models
from batchlab.schema import SCHEMA_PATH, command_line_values, load_schema  # noqa: F401  (read through config)
from batchlab.schema import describe, fill_defaults
from batchlab.schema import key_path as _key

RUN_KEYS = ("batch_sizes", "learning_rates", "budget", "optimizer", "warmup", "schedule", "targets", "model_options")


class ConfigError(ValueError):
    """An invalid config; the message names the key, the value and what is allowed."""


def _lr_values(lr_spec: Any) -> list[float]:
    return lr_spec if isinstance(lr_spec, list) else lr_spec["base"]


# Names that become parts of paths (run folders, results/data/<dataset>.npz, logs): letters, digits and
# underscores only, so no name can reach outside the results folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _check_names(config: dict) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", config["study"]):  # the schema's pattern lets a final newline by
        raise ConfigError(f"'study': value {config['study']!r} is invalid (allowed: letters, digits, _ and -, at most 64)")
    for key, registry, what in (("datasets", data.DATASETS, "dataset"), ("architectures", models.ARCHITECTURES, "architecture")):
        users = config["builders"][key]
        for name in users:
            if name in registry:
                raise ConfigError(f"'builders.{key}.{name}': {name!r} is a registered {what}; give yours another name")
        for i, name in enumerate(config[key]):
            if name not in registry and name not in users:
                raise ConfigError(f"'{key}[{i}]': unknown {what} {name!r}; allowed: {', '.join([*registry, *users])} "
                                  f"(or your own, under builders.{key})")
            if not SAFE_NAME.fullmatch(name):
                raise ConfigError(
                    f"'{key}[{i}]': {what} name {name!r} cannot name files (it is registered in batchlab.{'data' if key == 'datasets' else 'models'}); "
                    "allowed: letters, digits and underscores, at most 64"
                )
    for name in config["overrides"]:
        if name not in config["architectures"]:
            raise ConfigError(
                f"'{_key(['overrides', name])}': {name!r} is not one of the study's architectures "
                f"({', '.join(config['architectures'])})"
            )


def _check_model_options(arch: str, options: dict, where: str) -> None:
    if arch not in models.ARCHITECTURES:  # a user builder's, checked with it (_check_builders)
        return
    params = inspect.signature(models.ARCHITECTURES[arch].build).parameters
    allowed = [p for p in params if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in allowed:
            raise ConfigError(f"'{where}.{_key([key])}': architecture {arch!r} takes no option {key!r}; allowed: {allowed}")


def arch_settings(config: dict, arch: str) -> dict:
    """The run-level settings of one architecture: study-wide values with its overrides applied."""
    settings = {k: config.get(k, {}) for k in RUN_KEYS if k != "model_options"}
    settings["model_options"] = {}
    settings.update(copy.deepcopy(config["overrides"].get(arch, {})))
    return settings


VARIANT_KEYS = ("architectures", "seeds", "batch_schedule")


def variant_settings(config: dict, name: str, arch: str) -> dict:
    """The run-level settings of one architecture in variant ``name``: its :func:`arch_settings` with the
    variant's settings applied, ``seeds`` (the variant's or the study's) and ``batch_schedule`` (or None)."""
    variant = config["variants"][name]
    settings = arch_settings(config, arch)
    settings.update(copy.deepcopy({k: v for k, v in variant.items() if k not in VARIANT_KEYS}))
    settings["seeds"] = list(variant.get("seeds", config["seeds"]))
    settings["batch_schedule"] = copy.deepcopy(variant.get("batch_schedule"))
    return settings


def variant_architectures(config: dict, name: str) -> list[str]:
    return list(config["variants"][name].get("architectures", config["architectures"]))


def _check_run_settings(arch: str, s: dict, where: str, n_train: dict[str, int], own: Container[str]) -> None:
    """The checks of one architecture's run settings ``s``, the grid's or a variant's: model options it takes,
    nesterov with momentum, batch sizes (grown by a batch schedule) within every training set, a schedule
    that fits. ``where`` prefixes the keys named; ``own`` holds the keys set at that level (the others were
    checked where they were set, and batch sizes inherited but grown are named by the schedule)."""
    prefix = f"{where}." if where else ""
    if "model_options" in own:
        _check_model_options(arch, s["model_options"], f"{prefix}model_options")
    opt = s["optimizer"]
    if "optimizer" in own and opt.get("nesterov") and not opt.get("momentum"):
        raise ConfigError(f"'{prefix}optimizer.nesterov': true needs momentum > 0 (got momentum {opt.get('momentum')})")
    bs = s.get("batch_schedule")
    growth = bs["factor"] ** len(bs["milestones"]) if bs and bs["kind"] == "step" else 1
    for dataset, n in n_train.items():
        for i, b in enumerate(s["batch_sizes"]):
            largest = int(round(b * growth))
            if largest > n:
                key = f"{prefix}batch_sizes[{i}]" if "batch_sizes" in own else f"{prefix}batch_schedule"
                value = f"value {b}" if growth == 1 else f"batch size {b} grown to {largest}"
                raise ConfigError(f"'{key}': {value} is larger than the training set of {dataset!r} ({n} examples); "
                                  f"allowed: 1 to {n}")
            if bs and bs["kind"] == "drop" and bs["small_batch"] >= b:
                raise ConfigError(f"'{prefix}batch_schedule.small_batch': value {bs['small_batch']} is not smaller "
                                  f"than the batch size {b} of {arch!r}; allowed: 1 to {b - 1}")
    if bs and bs["kind"] == "step" and "steps" in s["budget"]:
        raise ConfigError(f"'{prefix}budget': a batch_schedule of kind step needs a budget in epochs or "
                          f"examples (its milestones are fractions of the examples), not {s['budget']!r}")


def _check_variants(config: dict, n_train: dict[str, int]) -> None:
    """Variants: known architectures, then each architecture's settings in the variant."""
    for name, variant in config["variants"].items():
        where = _key(["variants", name])
        for i, arch in enumerate(variant.get("architectures", [])):
            if arch not in config["architectures"]:
                raise ConfigError(f"'{where}.architectures[{i}]': {arch!r} is not one of the study's architectures "
                                  f"({', '.join(config['architectures'])})")
        for arch in variant_architectures(config, name):
            _check_run_settings(arch, variant_settings(config, name, arch), where, n_train, variant)


def _check_builders(config: dict) -> None:
    """The user builders the study trains: found, of the right signature, taking the model options given
    for them (the study's, under overrides, and each variant's that trains them)."""
    for arch in config["architectures"]:
        path = builders.architecture_path(config, arch)
        if path is None:
            continue
        key = _key(["builders", "architectures", arch])
        main = config["overrides"].get(arch, {})
        option_sets = {_key(["overrides", arch, "model_options"]) if "model_options" in main else key:
                       main.get("model_options", {})}
        for name, variant in config["variants"].items():
            if "model_options" in variant and arch in variant_architectures(config, name):
                option_sets[_key(["variants", name, "model_options"])] = variant["model_options"]
        try:
            builders.check_architecture(key, path, option_sets)
        except builders.BuilderError as error:
            raise ConfigError(str(error)) from None
    for name in config["datasets"]:
        if name in config["builders"]["datasets"]:
            try:
                builders.check_loader(_key(["builders", "datasets", name, "load"]),
                                      config["builders"]["datasets"][name]["load"])
            except builders.BuilderError as error:
                raise ConfigError(str(error)) from None


def _check_inputs(config: dict, options: dict[str, dict]) -> None:
    """Every architecture takes inputs of as many dimensions as every dataset has."""
    for arch in config["architectures"]:
        ndim = models.ARCHITECTURES[arch].input_ndim if arch in models.ARCHITECTURES else None
        for dataset in config["datasets"]:
            shape = _dataset(config, dataset).input_shape(options[dataset])
            if ndim is not None and len(shape) != ndim:
                raise ConfigError(
                    f"'architectures': {arch!r} takes inputs of {ndim} dimensions but dataset {dataset!r} has "
                    f"shape {shape}; use it with "
                    + ("signal datasets (mnist1d, blobs)" if ndim == 2 else "image datasets (digits, mnist, fashion_mnist, cifar10)")
                )


def _check_augmentation(config: dict, options: dict[str, dict]) -> None:
    """Augmentation of the study's image datasets (inputs (C, H, W)) only, a crop padding below the image
    size, and at least one of crop and flip switched on. Entries for registered datasets the study leaves
    out were dropped before (see :func:`_drop_unused_settings`)."""
    for name, settings in config["augmentation"].items():
        where = _key(["augmentation", name])
        if name not in config["datasets"]:
            raise ConfigError(f"'{where}': unknown dataset {name!r}; allowed: the study's datasets "
                              f"({', '.join(config['datasets'])})")
        shape = _dataset(config, name).input_shape(options[name])
        if len(shape) != 3:
            images = [d for d, ds in data.DATASETS.items() if len(ds.input_shape(ds.defaults)) == 3]
            raise ConfigError(f"'{where}': dataset {name!r} has inputs of shape {shape}, not images (C, H, W); "
                              f"allowed: image datasets ({', '.join(images)})")
        size, padding = min(shape[1:]), settings["crop_padding"]
        if padding >= size:
            raise ConfigError(f"'{where}.crop_padding': value {padding} is not below the image size {size} of "
                              f"{name!r}; allowed: 0 to {size - 1}")
        if not padding and not settings["flip"]:
            raise ConfigError(f"'{where}': {settings!r} augments nothing; allowed: crop_padding > 0, flip: true "
                              "or both (leave the dataset out for no augmentation)")


def _check_interpolation(config: dict) -> None:
    interp = config["evaluation"]["interpolation"]
    if interp["points"] and interp["alpha_min"] >= interp["alpha_max"]:
        raise ConfigError(f"'evaluation.interpolation.alpha_min': {interp['alpha_min']} is not below alpha_max "
                          f"{interp['alpha_max']}; allowed: a number smaller than alpha_max")
    if interp["points"] and interp["batch_sizes"] is not None:
        for arch in config["architectures"]:
            sizes = arch_settings(config, arch)["batch_sizes"]
            missing = [b for b in interp["batch_sizes"] if b not in sizes]
            if missing:
                raise ConfigError(f"'evaluation.interpolation.batch_sizes': {missing[0]} is not a batch size of "
                                  f"architecture {arch!r}; allowed: two of {sorted(sizes)}, or null")


def _dataset(config: dict, name: str) -> data.Dataset:
    """Dataset ``name``, registered or the user's (``builders.datasets``)."""
    return data.dataset(name, builders.dataset_declaration(config, name))


def _check_semantics(config: dict) -> None:
    _check_names(config)
    _check_builders(config)
    options = {}
    for name in config["datasets"]:
        try:
            options[name] = data.resolve_options(name, config["dataset_options"].get(name),
                                                 builders.dataset_declaration(config, name))
        except data.DatasetError as e:
            raise ConfigError(f"'{str(e).split(':', 1)[0]}':{str(e).split(':', 1)[1]}") from None
    _check_inputs(config, options)
    _check_augmentation(config, options)
    n_train = {d: _dataset(config, d).train_size(options[d]) for d in config["datasets"]}
    for arch in config["architectures"]:
        where = _key(["overrides", arch]) if arch in config["overrides"] else ""
        _check_run_settings(arch, arch_settings(config, arch), where, n_train, RUN_KEYS)
    _check_interpolation(config)
    _check_variants(config, n_train)
    n_runs = sum(
        len(arch_settings(config, a)["batch_sizes"]) * len(_lr_values(arch_settings(config, a)["learning_rates"]))
        for a in config["architectures"]
    ) * len(config["datasets"]) * len(config["seeds"])
    if n_runs == 0:
        raise ConfigError("the grid is empty: datasets x architectures x batch_sizes x learning_rates x seeds has no run")


def check_data_available(config: dict, prepared_dir: str | Path) -> None:
    """Datasets read from the user's files must be there and, unless ``verify_data_files`` is false, be the
    publishers' files (see :func:`batchlab.data.check_user_files`), unless already prepared: before any job."""
    for i, name in enumerate(config["datasets"]):
        if (Path(prepared_dir) / f"{name}.npz").exists() or not _dataset(config, name).user_files:
            continue
        try:
            data.check_user_files(name, config["data_dir"], config["verify_data_files"])
        except data.DatasetError as error:
            hint = "; `snakemake --cores 1 download_data` fetches the publisher's files" + (
                ", or choose a generated dataset (mnist1d, digits, blobs)" if "expected file" in str(error) else "")
            raise ConfigError(f"'datasets[{i}]': {error}{hint}") from None


def _drop_unused_settings(config: dict, warn: Callable[[str], None]) -> None:
    """Settings for a registered dataset or architecture that the study does not train are dropped with a
    one-line warning, not an error: a study narrowed on the command line (``--config datasets=[digits]
    architectures=[mlp]``) keeps the config file's options, overrides and variants for what it leaves out.
    A name that is not registered at all stays an error (a typo), reported by the checks after this."""
    known_datasets, known_archs = ({*registry, *config["builders"][key]} for key, registry in
                                   (("datasets", data.DATASETS), ("architectures", models.ARCHITECTURES)))
    for name in [n for n in config["dataset_options"] if n not in config["datasets"] and n in known_datasets]:
        warn(f"'{_key(['dataset_options', name])}': {name!r} is not one of the study's datasets "
             f"({', '.join(config['datasets'])}); its options are ignored")
        del config["dataset_options"][name]
    for name in [n for n in config["augmentation"] if n not in config["datasets"] and n in data.DATASETS]:
        warn(f"'{_key(['augmentation', name])}': {name!r} is not one of the study's datasets "
             f"({', '.join(config['datasets'])}); its augmentation is ignored")
        del config["augmentation"][name]
    studied = config["architectures"]
    for name in [n for n in config["overrides"] if n not in studied and n in known_archs]:
        warn(f"'{_key(['overrides', name])}': {name!r} is not one of the study's architectures "
             f"({', '.join(studied)}); its overrides are ignored")
        del config["overrides"][name]
    for name, variant in list(config["variants"].items()):
        archs = variant.get("architectures")
        left_out = [a for a in archs or [] if a not in studied and a in known_archs]
        if not left_out:
            continue
        kept = [a for a in archs if a not in left_out]
        where = _key(["variants", name, "architectures"])
        if kept:
            warn(f"'{where}': {', '.join(left_out)} not among the study's architectures ({', '.join(studied)}); "
                 f"the variant trains {', '.join(kept)}")
            variant["architectures"] = kept
        else:
            warn(f"'{where}': none of {', '.join(archs)} is among the study's architectures "
                 f"({', '.join(studied)}); the variant {name!r} is left out")
            del config["variants"][name]


def validate(config: dict, schema_path: str | Path | None = None, warn: Callable[[str], None] | None = None) -> dict:
    """Return a validated copy of ``config`` with every default filled in, or raise :class:`ConfigError`.

    ``warn`` receives the one-line warnings about settings that are ignored (by default, this module's
    logger)."""
    if not isinstance(config, dict) or not config:
        raise ConfigError("the config is empty: expected a mapping with datasets, architectures, batch_sizes, ...")
    schema = load_schema(schema_path)
    config = copy.deepcopy(config)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # the deepest error under a oneOf says more than the oneOf itself
        error = errors[0]
        raise ConfigError(describe(error, schema))
    fill_defaults(config, schema, schema)
    _drop_unused_settings(config, warn or logging.getLogger(__name__).warning)
    _check_semantics(config)
    return config


def load(path: str | Path, schema_path: str | Path | None = None) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:  # one line: where, and what the parser expected
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    return validate(raw, schema_path)
