"""The grid: a validated config expanded into fully resolved run specs, their ids, and packs of runs.

A run's id is a readable prefix plus a hash of its resolved spec (every default filled in, floats
canonical, ``TRAINING_VERSION`` included): the same spec always maps to the same folder, a changed spec to a
new one. A pack is the unit of one training job: runs sharing dataset, architecture, batch size and step
count, cut into chunks of at most ``pack_size`` in the order of their ids. Chunks are cut over *all* runs of
the group, complete or not, so a pack's name and members come out the same on every parse (a cluster job
re-parses the Snakefile while other jobs finish).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Iterable

from batchlab import batch_schedule, builders, data
from batchlab.ids import UNHASHED, run_id, spec_hash, without_id  # noqa: F401  (the grid's names for them)
from batchlab.config import arch_settings, variant_architectures, variant_settings

# Bump when a change to training changes what a spec means; every run id changes with it.
TRAINING_VERSION = 1


def scale_lr(base: float, batch_size: int, rule: str, reference_batch_size: int) -> float:
    """The learning rate at ``batch_size`` under a scaling rule (none, linear, sqrt) from the reference."""
    ratio = batch_size / reference_batch_size
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]
    return float(base * factor)


def resolve_steps(budget: dict, batch_size: int, n_train: int) -> int:
    """Optimizer steps of a budget given in epochs, steps or examples (at least one step)."""
    if "steps" in budget:
        return int(budget["steps"])
    examples = budget["examples"] if "examples" in budget else budget["epochs"] * n_train
    return max(1, round(examples / batch_size))


def _number(value):
    """An integral number as an int (``epochs: 2.0`` is ``epochs: 2``: the same run, the same id)."""
    return int(value) if float(value).is_integer() else float(value)


def _optimizer(opt: dict) -> dict:
    if opt["name"] == "adam":
        return {"name": "adam", "betas": [float(b) for b in opt["betas"]], "weight_decay": float(opt["weight_decay"])}
    return {
        "name": "sgd",
        "momentum": float(opt["momentum"]),
        "nesterov": bool(opt["nesterov"]),
        "weight_decay": float(opt["weight_decay"]),
    }


def _schedule(s: dict) -> dict:
    if s["kind"] == "cosine":
        return {"kind": "cosine", "final_factor": float(s["final_factor"])}
    if s["kind"] == "step":
        return {"kind": "step", "milestones": [float(m) for m in s["milestones"]], "gamma": float(s["gamma"])}
    return {"kind": "constant"}


def _lr_grid(lr_spec) -> tuple[list[float], str, int]:
    if isinstance(lr_spec, list):
        return [float(v) for v in lr_spec], "none", 1
    return [float(v) for v in lr_spec["base"]], lr_spec["scaling"], int(lr_spec["reference_batch_size"])


def expand(config: dict) -> list[dict]:
    """Every run of a validated config as a fully resolved spec (a plain, JSON-ready dict): the main grid,
    then each variant's runs (see :func:`variant_specs`)."""
    specs = []
    for dataset in config["datasets"]:
        options = dataset_options(config, dataset)
        n_train = train_size(config, dataset, options)
        for arch in config["architectures"]:
            specs += _arch_specs(config, dataset, options, n_train, arch, arch_settings(config, arch), config["seeds"])
    return specs + variant_specs(config)


def variant_specs(config: dict) -> list[dict]:
    """The runs of the config's variants: like the main grid's, with the variant's settings, and in the spec
    ``variant`` (its name) and, for a batch-size schedule, ``batch_schedule`` (see batchlab.batch_schedule).
    They measure neither the noise scale nor the sharpness. Main-grid specs have neither key, so their ids
    do not depend on the variants."""
    specs = []
    for name in config["variants"]:
        for dataset in config["datasets"]:
            options = dataset_options(config, dataset)
            n_train = train_size(config, dataset, options)
            for arch in variant_architectures(config, name):
                s = variant_settings(config, name, arch)
                specs += _arch_specs(config, dataset, options, n_train, arch, s, s["seeds"], name, s["batch_schedule"])
    return specs


def _arch_specs(config: dict, dataset: str, options: dict, n_train: int, arch: str, s: dict, seeds: list[int],
                variant: str | None = None, schedule: dict | None = None) -> list[dict]:
    """The specs of one dataset and architecture with run-level settings ``s``."""
    specs = []
    lrs, rule, ref = _lr_grid(s["learning_rates"])
    warmup = s["warmup"]
    schedule = batch_schedule.settings(schedule) if schedule else None
    ends = interpolation_ends(config, arch) if variant is None else None  # the main grid's interpolation
    augmentation = augmentation_settings(config, dataset)
    for batch_size in s["batch_sizes"]:
        steps = resolve_steps(s["budget"], batch_size, n_train)
        if schedule:
            steps = batch_schedule.resolve_steps(schedule, s["budget"], batch_size, n_train, steps)
        for lr0 in lrs:
            lr = scale_lr(lr0, batch_size, rule, ref)
            for seed in seeds:
                spec = {
                    "version": TRAINING_VERSION,
                    "dataset": dataset,
                    "dataset_options": options,
                    "arch": arch,
                    "model_options": dict(s["model_options"]),
                    "batch_size": int(batch_size),
                    "lr": lr,
                    "lr_grid_value": lr0,
                    "lr_scaling": rule,
                    "lr_reference_batch_size": ref,
                    "steps": steps,
                    "budget": {k: _number(v) for k, v in s["budget"].items()},
                    "optimizer": _optimizer(s["optimizer"]),
                    "warmup": {"fraction": float(warmup["fraction"]), "start_factor": float(warmup["start_factor"])},
                    "schedule": _schedule(s["schedule"]),
                    "seed": int(seed),
                    "eval_points": int(config["evaluation"]["points"]),
                    "noise_scale": noise_scale_batches(config["evaluation"]["noise_scale"], int(batch_size)),
                    "sharpness": sharpness_settings(config["evaluation"]["sharpness"], int(batch_size)),
                    "divergence_loss_factor": float(config["divergence"]["loss_factor"]),
                    "precision": config["precision"],
                }
                spec.update(builders.spec_fields(config, dataset, arch))  # user builders only
                if variant is not None:
                    spec.update(variant=variant, noise_scale={"pairs": 0}, sharpness={"epsilons": []})
                if schedule:
                    spec["batch_schedule"] = schedule
                if augmentation:  # only when on: the ids of runs without augmentation stay as they were
                    spec["augmentation"] = dict(augmentation)
                if ends and batch_size in ends:  # not hashed: the run keeps its id
                    spec["keep_weights"] = True
                spec["run_id"] = run_id(spec)
                specs.append(spec)
    return specs


def augmentation_settings(config: dict, dataset: str) -> dict | None:
    """A dataset's training augmentation as it goes into its runs' specs (batchlab.augment), or None."""
    settings = config["augmentation"].get(dataset)
    if not settings:
        return None
    return {"crop_padding": int(settings["crop_padding"]), "flip": bool(settings["flip"])}


def noise_scale_batches(settings: dict, batch_size: int) -> dict:
    """What a run measures of the gradient noise scale: ``pairs`` gradients over its own batch size and over
    a big batch (``big_batch_factor`` times it, within ``big_batch_max`` but at least twice it), at every
    ``every``-th evaluation."""
    pairs = int(settings["pairs"])
    if pairs == 0:
        return {"pairs": 0}
    big = min(settings["big_batch_factor"] * batch_size, max(2 * batch_size, settings["big_batch_max"]))
    return {"pairs": pairs, "small_batch": batch_size, "big_batch": int(big), "every": int(settings["every"])}


def sharpness_settings(settings: dict, batch_size: int) -> dict:
    """What a run measures of its final weights' sharpness: the box sizes, ascent steps and examples, or no
    box sizes where its batch size is not selected."""
    selected = settings["batch_sizes"] is None or batch_size in settings["batch_sizes"]
    if not settings["epsilons"] or not selected:
        return {"epsilons": []}
    return {"epsilons": sorted(float(e) for e in settings["epsilons"]), "steps": int(settings["steps"]),
            "examples": int(settings["examples"])}


def interpolation_ends(config: dict, arch: str) -> tuple[int, int] | None:
    """The small and the large batch size between whose solutions an architecture's weights are
    interpolated (``evaluation.interpolation``): the listed pair, or by default the smallest and the largest
    of its batch sizes; None where it is switched off (``points: 0``) or the architecture has one batch size."""
    settings = config["evaluation"]["interpolation"]
    sizes = sorted(int(b) for b in arch_settings(config, arch)["batch_sizes"])
    ends = sorted(int(b) for b in settings["batch_sizes"]) if settings["batch_sizes"] is not None else sizes[:1] + sizes[-1:]
    if not settings["points"] or len(set(ends)) < 2:
        return None
    return ends[0], ends[-1]


def interpolation_jobs(config: dict) -> list[dict]:
    """One interpolation job per dataset and architecture that has one: its names and its two batch sizes."""
    jobs = []
    for dataset in config["datasets"]:
        for arch in config["architectures"]:
            ends = interpolation_ends(config, arch)
            if ends:
                jobs.append({"dataset": dataset, "arch": arch, "small_batch": ends[0], "large_batch": ends[1]})
    return jobs


@dataclass(frozen=True)
class Pack:
    name: str  # a valid identifier, stable across parses
    members: tuple[dict, ...]  # specs of the runs still to train
    steps: int


def shape_key(spec: dict) -> tuple:
    """Runs with equal keys share the shapes and step count of training; runs with a batch schedule also
    share it (its tag ends their key, so constant-batch runs keep their keys)."""
    key = (spec["dataset"], spec_hash({"o": spec["dataset_options"]})[:6], spec["arch"],
           spec_hash({"m": spec["model_options"]})[:6], spec["batch_size"], spec["steps"])
    return key + (batch_schedule.tag(spec["batch_schedule"]),) if spec.get("batch_schedule") else key


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def packs(specs: Iterable[dict], incomplete: set[str], pack_size: int) -> list[Pack]:
    """Cut the runs of each shape group into chunks of ``pack_size`` (over all runs, sorted by id) and keep,
    per chunk, only the members whose id is in ``incomplete``. Chunks with nothing left to train are dropped."""
    groups: dict[tuple, list[dict]] = {}
    for spec in specs:
        groups.setdefault(shape_key(spec), []).append(spec)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        members = sorted(members, key=lambda s: s["run_id"])
        dataset, _, arch, _, batch_size, steps = key[:6]  # one option set per dataset and architecture in a study
        schedule = "".join(f"_{t}" for t in key[6:])  # a batch schedule's tag
        for k in range(0, len(members), pack_size):
            todo = tuple(s for s in members[k : k + pack_size] if s["run_id"] in incomplete)
            if todo:
                name = _ident(f"{dataset}_{arch}_b{batch_size}_n{steps}{schedule}_p{k // pack_size}")
                out.append(Pack(name, todo, steps))
    return out


class RunIds(tuple):
    """The ids of a study's runs, sorted. Its ``repr`` is short (the count and a digest), and it is what
    Snakemake records of a rule's params to decide whether they changed: a study of 10,000 runs is then
    not spelled out in every dry run's reasons or in the workflow's metadata."""

    def __new__(cls, ids: Iterable[str]):
        return super().__new__(cls, sorted(ids))

    def __repr__(self) -> str:
        digest = hashlib.sha256("\n".join(self).encode()).hexdigest()[:16]
        return f"RunIds({len(self)} runs, sha256 {digest})"


def receipt_path(pack: Pack, root: str = "results/packs") -> str:
    """Where a pack's job records that it finished (see batchlab.store.write_receipt)."""
    return f"{root}/{pack.name}.json"


def targets(config: dict) -> dict[str, list[float]]:
    """Per architecture, the test accuracies for steps-to-target. They are read off the history when the
    tables are made, so changing them re-aggregates without retraining anything."""
    return {arch: sorted(float(t) for t in arch_settings(config, arch)["targets"]) for arch in config["architectures"]}


def dataset_options(config: dict, name: str) -> dict:
    """A dataset's options with defaults filled in (what its preparation reads)."""
    return data.resolve_options(name, config["dataset_options"].get(name), builders.dataset_declaration(config, name))


def train_size(config: dict, name: str, options: dict) -> int:
    """The number of training examples of dataset ``name`` with ``options`` (a user dataset's as declared)."""
    return data.dataset(name, builders.dataset_declaration(config, name)).train_size(options)


def mem_mb(pack: Pack, dataset_mb: float, configured: int | None = None, attempt: int = 1) -> int:
    """A pack's memory request, times the attempt: ``configured`` when set, else an estimate: 2 GB for the
    interpreter and torch, three copies of the dataset (the file, its tensors, an evaluation's
    intermediates) and 100 MB per member (parameters, optimizer state, activations of a batch)."""
    base = configured if configured is not None else 2000 + 3 * dataset_mb + 100 * len(pack.members)
    return int(math.ceil(base)) * attempt


def hardware_settings(specs: Iterable[dict], dataset: str, arch: str) -> dict:
    """What the measurement of one dataset x architecture reads from the study's runs: the model's options,
    the optimizer and precision it trains with, the dataset's options, its augmentation (where the runs
    have one) and the grid's batch sizes. Nothing
    else (not the learning rates, seeds or budget), so editing those measures nothing again."""
    specs = [s for s in specs if s["dataset"] == dataset and s["arch"] == arch]
    if not specs:
        raise ValueError(f"the study has no run of architecture {arch!r} on dataset {dataset!r}")
    first = specs[0]
    settings = {"model_options": dict(first["model_options"]), "dataset_options": dict(first["dataset_options"]),
                "optimizer": dict(first["optimizer"]), "precision": first["precision"],
                "batch_sizes": sorted({int(s["batch_size"]) for s in specs}),
                **{k: first[k] for k in ("builder", "dataset_builder") if k in first}}  # user builders only
    if first.get("augmentation"):  # part of a step's cost; absent otherwise, so nothing is measured again
        settings["augmentation"] = dict(first["augmentation"])
    return settings
