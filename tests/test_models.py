"""batchlab.models: every registered architecture builds and maps (batch, *input_shape) to (batch, classes); a
new architecture is one registry line away from training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from batchlab import config, grid, models, sequential, stacked, training
from batchlab.config import ConfigError

from studies import TINY

SHAPES = {None: [(1, 40), (1, 8, 8), (3, 12, 12)], 2: [(1, 40), (3, 17)], 3: [(1, 8, 8), (1, 28, 28), (3, 32, 32)]}
CASES = [(name, shape) for name, arch in models.ARCHITECTURES.items() for shape in SHAPES[arch.input_ndim]]


@pytest.mark.parametrize("name, shape", CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES])
def test_every_architecture_builds_and_returns_batch_by_classes(name, shape):
    torch.manual_seed(0)
    model = models.build(name, shape, 7)
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 7)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 3, 6])).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(models.ARCHITECTURES))
def test_the_registry_says_which_architectures_the_batched_engine_stacks(name):
    # the estimates read the flag at parse, where no model is built: it must be what can_stack finds
    shape = (3, 32, 32) if models.ARCHITECTURES[name].input_ndim == 3 else (1, 40)
    assert models.stackable(name) == stacked.can_stack(models.build(name, shape, 10))


def test_registry_covers_signal_and_image_architectures():
    assert set(models.ARCHITECTURES) == {"logreg", "mlp", "cnn1d", "cnn", "cnn_bn", "resnet_small"}
    assert models.ARCHITECTURES["cnn1d"].input_ndim == 2
    assert {models.ARCHITECTURES[a].input_ndim for a in ("cnn", "cnn_bn", "resnet_small")} == {3}
    assert models.ARCHITECTURES["logreg"].input_ndim is None and models.ARCHITECTURES["mlp"].input_ndim is None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_known_parameter_counts():
    assert n_params(models.build("logreg", (1, 40), 10)) == 40 * 10 + 10
    assert n_params(models.build("mlp", (1, 40), 10)) == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    assert n_params(models.build("mlp", (1, 40), 10, {"width": 8, "depth": 1})) == (40 * 8 + 8) + (8 * 10 + 10)
    # the MNIST-1D CNN: lengths 40 -> 19 -> 10 -> 5
    c = 25
    expected = (1 * c * 5 + c) + 2 * (c * c * 3 + c) + (c * 5 * 10 + 10)
    assert n_params(models.build("cnn1d", (1, 40), 10)) == expected


def test_options_reach_the_builder():
    plain, bn = models.build("cnn", (1, 8, 8), 10, {"width": 4}), models.build("cnn_bn", (1, 8, 8), 10, {"width": 4})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2
    assert n_params(models.build("resnet_small", (3, 8, 8), 10, {"width": 4})) < n_params(
        models.build("resnet_small", (3, 8, 8), 10, {"width": 8}))
    with pytest.raises(TypeError):
        models.build("logreg", (1, 40), 10, {"width": 3})


def test_build_is_seeded():
    torch.manual_seed(5)
    a = models.build("cnn1d", (1, 40), 10)
    torch.manual_seed(5)
    b = models.build("cnn1d", (1, 40), 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# -- a new architecture, registered in one line ----------------------------------------------------------


def tiny_net(input_shape, num_classes, hidden: int = 5):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Tanh(), nn.Linear(hidden, num_classes))


def test_new_architecture_trains_with_train_run(monkeypatch, mnist1d_tensors):
    monkeypatch.setitem(models.ARCHITECTURES, "tiny_net", models.Architecture(tiny_net, input_ndim=None))
    raw = {**TINY, "architectures": ["tiny_net"], "batch_sizes": [16], "learning_rates": [0.1],
           "overrides": {"tiny_net": {"model_options": {"hidden": 3}}}}
    (spec,) = grid.expand(config.validate(raw))
    assert spec["arch"] == "tiny_net" and spec["model_options"] == {"hidden": 3}
    assert spec["run_id"].startswith("mnist1d-tiny_net-b16-")
    history, summary = sequential.train_run(spec, mnist1d_tensors, torch.device("cpu"))
    assert history["step"].tolist() == training.eval_steps(spec["steps"], spec["eval_points"])
    assert summary["steps_done"] == spec["steps"] and not summary["diverged"]
    assert history["dist_init"].iloc[-1] > 0
    # its builder's signature defines the options the config accepts
    raw["overrides"] = {"tiny_net": {"model_options": {"width": 3}}}
    with pytest.raises(ConfigError, match=r"'overrides.tiny_net.model_options.width'.*allowed: \['hidden'\]"):
        config.validate(raw)


def test_unregistered_architecture_is_rejected_after_the_registration_is_undone():
    assert "tiny_net" not in models.ARCHITECTURES  # monkeypatch restored the registry
    with pytest.raises(ConfigError, match="unknown architecture 'tiny_net'"):
        config.validate({**TINY, "architectures": ["tiny_net"]})
