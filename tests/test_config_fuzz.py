"""Random invalid configs (hypothesis): every one ends in a one-line ConfigError that names a key, never in
another exception; names that become paths cannot leave the results folder."""

from __future__ import annotations

import copy
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from batchlab import config, data, grid, models
from batchlab.config import ConfigError
from studies import TINY

VALID = config.validate(copy.deepcopy(TINY))  # every key present, defaults filled in


def leaves(obj, path=()):
    """Every (path, value) of a nested config; lists give their items too."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, (*path, i))


PATHS = [path for path, _ in leaves(VALID) if path]
NUMERIC = [path for path, value in leaves(VALID) if path and isinstance(value, (int, float, list)) and not isinstance(value, bool)]


def key_name(path) -> str:
    """A path as the messages write it: optimizer.momentum, batch_sizes[1]."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def set_at(raw: dict, path, value) -> dict:
    raw = copy.deepcopy(raw)
    target = raw
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return raw


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

# a one-line message that starts by naming a key (or says which key is unknown, or that the grid is empty)
# (a quote in a key the user wrote is escaped in it: 'overrides.\'')
MESSAGE = re.compile(r"^('(?:[^'\\\n]|\\.)+': |unknown key |the grid is empty|the config is empty)[^\n]*$")


def check(raw: dict) -> str | None:
    """Validate ``raw``: the message of the ConfigError it raises, or None when it is valid. Any other
    exception fails the test."""
    try:
        config.validate(raw)
    except ConfigError as error:
        message = str(error)
        assert MESSAGE.match(message), message
        return message
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=junk)
def test_any_value_anywhere_is_valid_or_a_message_naming_a_key(path, value):
    check(set_at(VALID, path, value))


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(NUMERIC), value=st.text(max_size=12))
def test_a_string_where_numbers_belong_names_that_key(path, value):
    message = check(set_at(VALID, path, value))
    assert message is not None
    assert message.startswith(f"'{key_name(path)}'") or message.startswith(f"'{key_name(path[:-1])}'"), message


@settings(max_examples=150, deadline=None)
@given(where=st.sampled_from([()] + [p for p in PATHS if isinstance(dict(leaves(VALID))[p], dict)]),
       key=st.text(min_size=1, max_size=12), value=junk)
def test_an_unknown_key_is_named_with_what_is_allowed(where, key, value):
    target = dict(leaves(VALID))[where] if where else VALID
    if (key in target or (where and where[-1] in ("dataset_options", "augmentation", "overrides", "variants"))
            or where[:1] == ("dataset_options",) or (where[:1] == ("builders",) and len(where) == 2)):
        return  # a known key, or a mapping keyed by names (checked below)
    raw = set_at(VALID, (*where, key), value) if where else dict(copy.deepcopy(VALID), **{key: value})
    message = check(raw)
    assert message is not None and message.startswith("unknown key") and "allowed keys:" in message, message


@settings(max_examples=150, deadline=None)
@given(required=st.sampled_from(["datasets", "architectures", "batch_sizes", "learning_rates", "budget"]))
def test_a_missing_required_key_is_named(required):
    raw = copy.deepcopy(TINY)
    del raw[required]
    assert required in check(raw)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["datasets", "architectures"]),
       name=st.sampled_from(["../x", "/etc/passwd", "..", "a/b", "x\\y", "~", ""]) | st.text(max_size=16))
def test_names_that_are_not_registered_never_reach_a_path(key, name):
    assume(name not in (data.DATASETS if key == "datasets" else models.ARCHITECTURES))
    message = check(set_at(VALID, (key, 0), name))
    assert message is not None and message.startswith(f"'{key}[0]'"), message


@given(study=st.sampled_from(["../escape", "/abs", "a/b", "..", "with space"]) | st.text(min_size=1, max_size=70))
@settings(max_examples=150, deadline=None)
def test_study_names_are_safe_for_paths(study):
    message = check(set_at(VALID, ("study",), study))
    if message is None:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", study)
    else:
        assert message.startswith("'study'")


def test_a_registered_name_that_cannot_name_files_is_refused(monkeypatch):
    monkeypatch.setitem(models.ARCHITECTURES, "../evil", models.ARCHITECTURES["mlp"])
    with pytest.raises(ConfigError, match=r"'architectures\[0\]': architecture name '../evil' cannot name files"):
        config.validate(dict(copy.deepcopy(TINY), architectures=["../evil"]))


def test_run_ids_of_valid_configs_are_single_path_components():
    for spec in grid.expand(VALID):
        assert re.fullmatch(r"[A-Za-z0-9_.+-]+", spec["run_id"]) and ".." not in spec["run_id"]
