"""Config validation: the JSON schema, defaults filled in, then checks the schema cannot express.

Every problem becomes one :class:`ConfigError` whose message names the key, the value and what is allowed,
raised before any job starts.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from batchlab import data, models

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
RUN_KEYS = ("batch_sizes", "learning_rates", "budget", "optimizer", "warmup", "schedule", "targets", "model_options")


class ConfigError(ValueError):
    """An invalid config; the message names the key, the value and what is allowed."""


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill in every ``default`` of ``schema`` missing from ``instance`` (in place, recursively)."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        for branch in schema.get("oneOf", []):
            if _resolve(branch, root).get("type") == "object":
                fill_defaults(instance, branch, root)
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in props:
                    fill_defaults(instance[key], extra, root)


def _key(path) -> str:
    """A key's path as messages write it (``optimizer.momentum``, ``batch_sizes[1]``); a key with quotes,
    spaces or control characters in it is written escaped, so a message stays one line."""
    out = ""
    for p in path:
        if not isinstance(p, int) and not re.fullmatch(r"[\w.-]+", str(p)):
            p = repr(str(p))[1:-1].replace("'", "\\'") or '""'
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(error: jsonschema.ValidationError, root: dict) -> str:
    """One line naming the key, the value and what is allowed."""
    key = _key(error.absolute_path)
    schema = _resolve(error.schema, root) if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed))
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(str(extra), allowed, n=1)
            hints.append(f"'{_key([extra])}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        where = f"in '{key}'" if error.absolute_path else "at the top level"
        return f"unknown key {', '.join(hints)} {where}; allowed keys: {', '.join(allowed)}"
    if error.validator == "required":
        return f"'{key}': {error.message}"
    if error.validator == "oneOf":
        return (
            f"'{key}': value {error.instance!r} is invalid; allowed: a list of positive numbers, or "
            "{base: [positive numbers], scaling: none|linear|sqrt, reference_batch_size: positive integer}"
        )
    if error.validator in ("minProperties", "maxProperties") and "budget" in key:
        return f"'{key}': value {error.instance!r} must give exactly one of epochs, steps or examples"
    description = schema.get("description", "")
    allowed = f" (allowed: {_allowed(error, schema)})"
    return f"'{key}': value {error.instance!r} is invalid{allowed}" + (f"; {description.strip()}" if description else "")


_NOUNS = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list",
          "object": "a mapping", "boolean": "true or false", "null": "null"}
_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _allowed(error: jsonschema.ValidationError, schema: dict) -> str:
    """What the schema allows at the failing key (not what is wrong with the value)."""
    v = error.validator_value
    kind = schema.get("type")
    noun = _NOUNS.get(kind, "a value") if isinstance(kind, str) else "a value"
    if error.validator == "type":
        kinds = [v] if isinstance(v, str) else list(v)
        return " or ".join(_NOUNS.get(k, k) for k in kinds)
    if error.validator in _BOUNDS:
        return f"{noun} " + " and ".join(f"{op} {schema[b]}" for b, op in _BOUNDS.items() if b in schema)
    if error.validator == "enum":
        return "one of " + ", ".join(map(str, v))
    if error.validator == "pattern":
        return f"a string matching {v}"
    if error.validator == "minItems":
        return "a non-empty list" if v == 1 else f"a list of at least {v} items"
    if error.validator == "maxItems":
        return f"a list of at most {v} items"
    if error.validator == "uniqueItems":
        return "a list without repeated values"
    return error.message


def _lr_values(lr_spec: Any) -> list[float]:
    return lr_spec if isinstance(lr_spec, list) else lr_spec["base"]


# Names that become parts of paths (run folders, results/data/<dataset>.npz, logs): letters, digits and
# underscores only, so no name can reach outside the results folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _check_names(config: dict) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", config["study"]):  # the schema's pattern lets a final newline by
        raise ConfigError(f"'study': value {config['study']!r} is invalid (allowed: letters, digits, _ and -, at most 64)")
    for key, registry, what in (("datasets", data.DATASETS, "dataset"), ("architectures", models.ARCHITECTURES, "architecture")):
        for i, name in enumerate(config[key]):
            if name not in registry:
                raise ConfigError(f"'{key}[{i}]': unknown {what} {name!r}; allowed: {', '.join(registry)}")
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
    for name in config["dataset_options"]:
        if name not in config["datasets"]:
            raise ConfigError(
                f"'{_key(['dataset_options', name])}': {name!r} is not one of the study's datasets ({', '.join(config['datasets'])})"
            )


def _check_model_options(arch: str, options: dict, where: str) -> None:
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


def _check_variants(config: dict, n_train: dict[str, int]) -> None:
    """Variants: known architectures, options they take, batch sizes within the data, schedules that fit."""
    for name, variant in config["variants"].items():
        where = _key(["variants", name])
        for i, arch in enumerate(variant.get("architectures", [])):
            if arch not in config["architectures"]:
                raise ConfigError(f"'{where}.architectures[{i}]': {arch!r} is not one of the study's architectures "
                                  f"({', '.join(config['architectures'])})")
        for arch in variant_architectures(config, name):
            s = variant_settings(config, name, arch)
            if "model_options" in variant:
                _check_model_options(arch, s["model_options"], f"{where}.model_options")
            if "optimizer" in variant and s["optimizer"].get("nesterov") and not s["optimizer"].get("momentum"):
                raise ConfigError(f"'{where}.optimizer.nesterov': true needs momentum > 0 (got momentum {s['optimizer'].get('momentum')})")
            bs = s["batch_schedule"]
            for dataset, n in n_train.items():
                for i, b in enumerate(s["batch_sizes"]):
                    largest, what = b, "value"
                    if bs and bs["kind"] == "step":
                        largest, what = int(round(b * bs["factor"] ** len(bs["milestones"]))), "grown to"
                    if largest > n:
                        key = f"{where}.batch_sizes[{i}]" if "batch_sizes" in variant else f"{where}.batch_schedule"
                        raise ConfigError(f"'{key}': batch size {b} {what} {largest} is larger than the training set of "
                                          f"{dataset!r} ({n} examples); allowed: 1 to {n}")
                    if bs and bs["kind"] == "drop" and bs["small_batch"] >= b:
                        raise ConfigError(f"'{where}.batch_schedule.small_batch': value {bs['small_batch']} is not smaller "
                                          f"than the batch size {b} of {arch!r}; allowed: 1 to {b - 1}")
            if bs and bs["kind"] == "step" and "steps" in s["budget"]:
                raise ConfigError(f"'{where}.budget': a batch_schedule of kind step needs a budget in epochs or "
                                  f"examples (its milestones are fractions of the examples), not {s['budget']!r}")


def _check_semantics(config: dict) -> None:
    _check_names(config)
    resolved_opts = {}
    for name in config["datasets"]:
        try:
            resolved_opts[name] = data.resolve_options(name, config["dataset_options"].get(name))
        except data.DatasetError as e:
            raise ConfigError(f"'{str(e).split(':', 1)[0]}':{str(e).split(':', 1)[1]}") from None
    for arch in config["architectures"]:
        s = arch_settings(config, arch)
        where = f"overrides.{arch}" if arch in config["overrides"] else ""
        prefix = f"{where}." if where else ""
        _check_model_options(arch, s["model_options"], f"{prefix}model_options".lstrip("."))
        opt = s["optimizer"]
        if opt.get("nesterov") and not opt.get("momentum"):
            raise ConfigError(
                f"'{prefix}optimizer.nesterov': true needs momentum > 0 (got momentum {opt.get('momentum')})"
            )
        for dataset in config["datasets"]:
            ndim = models.ARCHITECTURES[arch].input_ndim
            shape = data.DATASETS[dataset].input_shape(resolved_opts[dataset])
            if ndim is not None and len(shape) != ndim:
                raise ConfigError(
                    f"'architectures': {arch!r} takes inputs of {ndim} dimensions but dataset {dataset!r} has "
                    f"shape {shape}; use it with "
                    + ("signal datasets (mnist1d, blobs)" if ndim == 2 else "image datasets (digits, mnist, fashion_mnist, cifar10)")
                )
            n_train = data.DATASETS[dataset].train_size(resolved_opts[dataset])
            for i, b in enumerate(s["batch_sizes"]):
                if b > n_train:
                    raise ConfigError(
                        f"'{prefix}batch_sizes[{i}]': value {b} is larger than the training set of {dataset!r} "
                        f"({n_train} examples); allowed: 1 to {n_train}"
                    )
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
    _check_variants(config, {d: data.DATASETS[d].train_size(resolved_opts[d]) for d in config["datasets"]})
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
        if (Path(prepared_dir) / f"{name}.npz").exists() or not data.DATASETS[name].user_files:
            continue
        try:
            data.check_user_files(name, config["data_dir"], config["verify_data_files"])
        except data.DatasetError as error:
            hint = "; or choose a generated dataset (mnist1d, digits, blobs)" if "expected file" in str(error) else ""
            raise ConfigError(f"'datasets[{i}]': {error}{hint}") from None


def validate(config: dict, schema_path: str | Path | None = None) -> dict:
    """Return a validated copy of ``config`` with every default filled in, or raise :class:`ConfigError`."""
    if not isinstance(config, dict) or not config:
        raise ConfigError("the config is empty: expected a mapping with datasets, architectures, batch_sizes, ...")
    schema = load_schema(schema_path)
    config = copy.deepcopy(config)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # the deepest error under a oneOf says more than the oneOf itself
        error = errors[0]
        raise ConfigError(_describe(error, schema))
    fill_defaults(config, schema, schema)
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
