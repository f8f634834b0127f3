"""The pins agree: every package version named in more than one place (pyproject.toml, the pip locks, the
conda environments in envs/) is the same, and the locks pin every package they install with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("requirements.lock", "requirements-cuda.lock")
# conda-forge's names for the PyPI packages envs/*.yaml install
CONDA_NAMES = {"matplotlib-base": "matplotlib", "nbconvert-core": "nbconvert"}


def normalized(name: str) -> str:
    """A package name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """A version without its local label: torch's 2.13.0+cpu is the release 2.13.0."""
    return version.split("+")[0]


def lock_pins(text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of each requirement of a lock written by `uv pip compile`."""
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\n", 1)[0]
        if first.startswith("#") or not first.strip():
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+) \\", first)
        assert match, f"not pinned with == and hashes: {first!r}"
        pins[normalized(match[1])] = (match[2], block.count("--hash=sha256:"))
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for requirement in named:
        if requirement.startswith("batchlab["):
            continue  # an extra of batchlab's own
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", requirement)
        assert match, f"pyproject.toml: {requirement!r} is not pinned to one version with =="
        pins[normalized(match[1])] = match[2]
    return pins


def env_pins(path: Path) -> dict[str, str]:
    pins = {}
    for item in yaml.safe_load(path.read_text())["dependencies"]:
        for requirement, separator in ([(r, "==") for r in item["pip"]] if isinstance(item, dict) else [(item, "=")]):
            name, _, version = requirement.partition(separator)
            assert version, f"{path.name}: {requirement!r} is not pinned"
            pins[normalized(CONDA_NAMES.get(name, name))] = version
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_a_lock_pins_every_package_with_its_hashes(lock):
    pins = lock_pins((ROOT / lock).read_text())
    assert len(pins) > 100  # the transitive closure, not the direct dependencies alone
    assert all(hashes >= 1 for _, hashes in pins.values()), [name for name, (_, h) in pins.items() if not h]
    assert public(pins["torch"][0]) == "2.13.0"


def test_every_version_named_in_more_than_one_place_is_the_same():
    places = {"pyproject.toml": pyproject_pins()}
    places |= {lock: {name: public(v) for name, (v, _) in lock_pins((ROOT / lock).read_text()).items()}
               for lock in LOCKS}
    places |= {f"envs/{p.name}": env_pins(p) for p in sorted((ROOT / "envs").glob("*.yaml"))}
    named: dict[str, dict[str, str]] = {}
    for place, pins in places.items():
        for name, version in pins.items():
            named.setdefault(name, {})[place] = version
    disagree = {name: where for name, where in named.items() if len(set(where.values())) > 1}
    assert not disagree, disagree
    shared = [name for name, where in named.items() if len(where) > 1]
    assert {"torch", "numpy", "pandas", "snakemake", "matplotlib", "nbconvert", "pytest"} <= set(shared)


def test_every_pin_of_pyproject_is_in_each_lock():
    """A pin added to pyproject.toml without rewriting the locks (envs/update-locks.sh) fails here."""
    for lock in LOCKS:
        pins = lock_pins((ROOT / lock).read_text())
        missing = sorted(set(pyproject_pins()) - set(pins) - {"uv"})
        assert not missing, f"{lock} lacks {missing}: run envs/update-locks.sh"


def test_the_locks_are_made_for_the_python_of_the_conda_environments():
    script = (ROOT / "envs" / "update-locks.sh").read_text()
    python = re.search(r"--python-version (\S+)", script)[1]
    assert {env_pins(p)["python"] for p in (ROOT / "envs").glob("*.yaml")} == {python}
    for lock in LOCKS:
        assert "envs/update-locks.sh" in (ROOT / lock).read_text().split("\n", 3)[1]


def test_the_cuda_lock_differs_by_the_build_of_torch_and_its_libraries_alone():
    cpu, cuda = (lock_pins((ROOT / lock).read_text()) for lock in LOCKS)
    assert cpu["torch"][0] == "2.13.0+cpu" and cuda["torch"][0] == "2.13.0"
    extra = set(cuda) - set(cpu)
    assert set(cpu) <= set(cuda) and extra and all(name.startswith(("nvidia-", "cuda-", "triton")) for name in extra)
