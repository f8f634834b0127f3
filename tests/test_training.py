"""batchlab.training: the settings training runs under (oneDNN switched for training and back for evaluation,
always restored) and the one training step both engines and the hardware sweep take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from batchlab import models, training

CPU = torch.device("cpu")


def test_settings_switch_onednn_for_training_and_evaluation_and_restore_it_on_an_error():
    torch.backends.mkldnn.enabled = True
    with training.TrainingSettings(CPU, batch_size=8) as settings:  # small CPU batches: native kernels
        assert not torch.backends.mkldnn.enabled
        with settings.evaluation():
            assert torch.backends.mkldnn.enabled
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled
    with pytest.raises(KeyError), training.TrainingSettings(CPU, batch_size=8) as settings:
        with settings.evaluation():
            raise KeyError("stop")
    assert torch.backends.mkldnn.enabled
    with training.TrainingSettings(CPU, batch_size=64):
        assert torch.backends.mkldnn.enabled


def test_settings_autocast_only_below_fp32():
    assert isinstance(training.TrainingSettings(CPU, 8, "bf16").autocast(), torch.autocast)
    assert not isinstance(training.TrainingSettings(CPU, 8, "fp32").autocast(), torch.autocast)


def _model_and_optimizer():
    torch.manual_seed(0)
    model = models.build("mlp", (1, 40), 10)
    spec = {"lr": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}}
    return model, training.make_optimizer(model, spec)


def test_the_step_with_a_loss_scaler_unscales_before_the_norm_and_the_update():
    """A power-of-two scale is exact: with the scaler, the norm and the update are bitwise those without."""
    x, y = torch.randn(8, 1, 40, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 10
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        model, optimizer = _model_and_optimizer()
        params = list(model.parameters())
        loss, norm = training.training_step(model, optimizer, x, y, scaler,
                                            grad_norm=lambda params=params: torch.linalg.vector_norm(
                                                torch.stack([p.grad.norm() for p in params])))
        results.append((float(loss.detach()), float(norm), [p.detach().clone() for p in params]))
    (loss_a, norm_a, params_a), (loss_b, norm_b, params_b) = results
    assert loss_a == loss_b == pytest.approx(float(F.cross_entropy(_model_and_optimizer()[0](x), y).detach()))
    assert norm_a == norm_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


def test_the_step_returns_no_norm_unless_asked():
    model, optimizer = _model_and_optimizer()
    loss, norm = training.training_step(model, optimizer, torch.randn(4, 1, 40), torch.arange(4))
    assert norm is None and loss.dim() == 0

