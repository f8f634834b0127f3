"""Config validation: the JSON schema, defaults filled in, then checks the schema cannot express.

Every problem becomes one :class:`ConfigError` whose message names the key, the value and what is allowed,
raised before any job starts.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import logging
import math
import re
from pathlib import Path
from collections.abc import Callable, Container, Mapping
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


# What a string read as YAML must be to stand for a value of each JSON schema type.
_SCALARS = {"integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def _scalar(text: str, kinds: list[str]) -> Any:
    """``text`` read as YAML when that gives a value of one of ``kinds`` (``1e-3`` counts as a number, which
    YAML 1.1 reads as a string); otherwise ``text`` itself, which validation then reports with its key."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if "number" in kinds and isinstance(value, str):
        try:
            value = float(text) if math.isfinite(float(text)) else text
        except ValueError:
            return text
    wanted = tuple(t for kind in kinds for t in _SCALARS.get(kind, ()))
    fits = isinstance(value, wanted) and not (isinstance(value, bool) and bool not in wanted)
    return value if fits else text


def _coerce(value: Any, schema: dict, root: dict) -> Any:
    """``value`` with every string the schema wants as a number, boolean or null read as YAML."""
    schema = _resolve(schema, root)
    kind = {dict: "object", list: "array"}.get(type(value))
    for branch in schema.get("oneOf", []):  # the branch of the value's kind (learning_rates: list or mapping)
        if kind and _resolve(branch, root).get("type") == kind:
            schema = _resolve(branch, root)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else {}), root) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [_coerce(v, items, root) for v in value] if isinstance(items, dict) else value
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    return _scalar(value, kinds) if isinstance(value, str) and kinds and "string" not in kinds else value


def command_line_values(overrides: Mapping[str, Any], schema_path: str | Path | None = None) -> dict:
    """The values of ``snakemake --config`` with the numbers written there as numbers.

    Snakemake reads the items of a list or mapping given on the command line as strings (``seeds=[0,1]``
    gives ``['0', '1']``, ``budget="{epochs: 4}"`` gives ``{'epochs': '4'}``); each string the schema wants
    as a number, boolean or null is read as YAML, and any other value is left for validation to report.
    """
    schema = load_schema(schema_path)
    plain = json.loads(json.dumps(dict(overrides), default=dict))  # immutable mappings into dicts
    return _coerce(plain, schema, schema)


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


def _check_inputs(config: dict, options: dict[str, dict]) -> None:
    """Every architecture takes inputs of as many dimensions as every dataset has."""
    for arch in config["architectures"]:
        ndim = models.ARCHITECTURES[arch].input_ndim
        for dataset in config["datasets"]:
            shape = data.DATASETS[dataset].input_shape(options[dataset])
            if ndim is not None and len(shape) != ndim:
                raise ConfigError(
                    f"'architectures': {arch!r} takes inputs of {ndim} dimensions but dataset {dataset!r} has "
                    f"shape {shape}; use it with "
                    + ("signal datasets (mnist1d, blobs)" if ndim == 2 else "image datasets (digits, mnist, fashion_mnist, cifar10)")
                )


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


def _check_semantics(config: dict) -> None:
    _check_names(config)
    options = {}
    for name in config["datasets"]:
        try:
            options[name] = data.resolve_options(name, config["dataset_options"].get(name))
        except data.DatasetError as e:
            raise ConfigError(f"'{str(e).split(':', 1)[0]}':{str(e).split(':', 1)[1]}") from None
    _check_inputs(config, options)
    n_train = {d: data.DATASETS[d].train_size(options[d]) for d in config["datasets"]}
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
        if (Path(prepared_dir) / f"{name}.npz").exists() or not data.DATASETS[name].user_files:
            continue
        try:
            data.check_user_files(name, config["data_dir"], config["verify_data_files"])
        except data.DatasetError as error:
            hint = "; or choose a generated dataset (mnist1d, digits, blobs)" if "expected file" in str(error) else ""
            raise ConfigError(f"'datasets[{i}]': {error}{hint}") from None


def _drop_unused_settings(config: dict, warn: Callable[[str], None]) -> None:
    """Settings for a registered dataset or architecture that the study does not train are dropped with a
    one-line warning, not an error: a study narrowed on the command line (``--config datasets=[digits]
    architectures=[mlp]``) keeps the config file's options, overrides and variants for what it leaves out.
    A name that is not registered at all stays an error (a typo), reported by the checks after this."""
    for name in [n for n in config["dataset_options"] if n not in config["datasets"] and n in data.DATASETS]:
        warn(f"'{_key(['dataset_options', name])}': {name!r} is not one of the study's datasets "
             f"({', '.join(config['datasets'])}); its options are ignored")
        del config["dataset_options"][name]
    studied = config["architectures"]
    for name in [n for n in config["overrides"] if n not in studied and n in models.ARCHITECTURES]:
        warn(f"'{_key(['overrides', name])}': {name!r} is not one of the study's architectures "
             f"({', '.join(studied)}); its overrides are ignored")
        del config["overrides"][name]
    for name, variant in list(config["variants"].items()):
        archs = variant.get("architectures")
        left_out = [a for a in archs or [] if a not in studied and a in models.ARCHITECTURES]
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
        raise ConfigError(_describe(error, schema))
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
