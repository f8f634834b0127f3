"""The config's JSON schema (``workflow/schemas/config.schema.yaml``): loading it, filling in its defaults,
one line for each of its errors (the key, the value and what is allowed), and reading the values given on
the command line (``snakemake --config``) against it. batchlab.config adds the checks a schema cannot
express.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict:
    with open(path or SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill in every ``default`` of ``schema`` missing from ``instance`` (in place, recursively)."""
    schema = resolve(schema, root)
    if isinstance(instance, dict):
        for branch in schema.get("oneOf", []):
            if resolve(branch, root).get("type") == "object":
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
    schema = resolve(schema, root)
    kind = {dict: "object", list: "array"}.get(type(value))
    for branch in schema.get("oneOf", []):  # the branch of the value's kind (learning_rates: list or mapping)
        if kind and resolve(branch, root).get("type") == kind:
            schema = resolve(branch, root)
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


def key_path(path) -> str:
    """A key's path as messages write it (``optimizer.momentum``, ``batch_sizes[1]``); a key with quotes,
    spaces or control characters in it is written escaped, so a message stays one line."""
    out = ""
    for p in path:
        if not isinstance(p, int) and not re.fullmatch(r"[\w.-]+", str(p)):
            p = repr(str(p))[1:-1].replace("'", "\\'") or '""'
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def describe(error: jsonschema.ValidationError, root: dict) -> str:
    """One line naming the key, the value and what is allowed."""
    key = key_path(error.absolute_path)
    schema = resolve(error.schema, root) if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed))
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(str(extra), allowed, n=1)
            hints.append(f"'{key_path([extra])}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
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
