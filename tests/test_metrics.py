"""batchlab.metrics: steps to a target, gradient-norm statistics, divergence, distance from init, evaluation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from batchlab import metrics

# -- steps to target -------------------------------------------------------------------------------------


def test_steps_to_target_reached():
    steps, acc = [0, 10, 20, 30], [0.1, 0.4, 0.6, 0.7]
    assert metrics.steps_to_target(steps, acc, 0.5) == 20.0
    assert metrics.steps_to_target(steps, acc, 0.6) == 20.0  # reaching counts (>=)
    assert metrics.steps_to_target(steps, acc, 0.05) == 0.0
    assert isinstance(metrics.steps_to_target(steps, acc, 0.5), float)


def test_steps_to_target_is_the_first_crossing():
    assert metrics.steps_to_target([0, 5, 10, 15], [0.1, 0.8, 0.3, 0.9], 0.7) == 5.0


def test_steps_to_target_not_reached_is_nan():
    assert math.isnan(metrics.steps_to_target([0, 10], [0.1, 0.2], 0.5))
    assert math.isnan(metrics.steps_to_target([], [], 0.5))


def test_steps_to_target_skips_nan_and_none():
    assert metrics.steps_to_target([0, 1, 2, 3], [math.nan, None, math.nan, 0.9], 0.5) == 3.0
    assert math.isnan(metrics.steps_to_target([0, 1], [math.nan, math.nan], 0.0))


def test_steps_to_target_lower_is_better():
    losses = [2.3, 1.5, 0.9, 0.4]
    assert metrics.steps_to_target([0, 1, 2, 3], losses, 1.0, higher_is_better=False) == 2.0
    assert math.isnan(metrics.steps_to_target([0, 1, 2, 3], losses, 0.1, higher_is_better=False))


def test_steps_to_target_accepts_pandas_series():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"step": [0, 4, 8], "test_acc": [0.1, 0.55, 0.9]})
    assert metrics.steps_to_target(df["step"], df["test_acc"], 0.5) == 4.0


# -- gradient-norm statistics ----------------------------------------------------------------------------


def test_grad_norm_stats_known_values():
    stats = metrics.grad_norm_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert list(stats) == list(metrics.GRAD_STATS)
    assert stats["grad_norm_mean"] == 3.0
    assert stats["grad_norm_std"] == pytest.approx(math.sqrt(2.0))  # population standard deviation
    assert stats["grad_norm_q10"] == pytest.approx(1.4)
    assert stats["grad_norm_q50"] == 3.0
    assert stats["grad_norm_q90"] == pytest.approx(4.6)
    assert stats["grad_norm_max"] == 5.0
    assert all(isinstance(v, float) for v in stats.values())


def test_grad_norm_stats_single_value_and_empty():
    stats = metrics.grad_norm_stats([2.5])
    assert stats == {"grad_norm_mean": 2.5, "grad_norm_std": 0.0, "grad_norm_q10": 2.5, "grad_norm_q50": 2.5,
                     "grad_norm_q90": 2.5, "grad_norm_max": 2.5}
    empty = metrics.grad_norm_stats([])
    assert list(empty) == list(metrics.GRAD_STATS) and all(math.isnan(v) for v in empty.values())


# -- divergence ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss, initial, factor, expected", [
    (math.nan, 2.3, 10.0, True),
    (math.inf, 2.3, 10.0, True),
    (-math.inf, 2.3, 10.0, True),
    (2.3, 2.3, 10.0, False),
    (22.9, 2.3, 10.0, False),
    (23.0, 2.3, 10.0, False),  # equal to the threshold: not above it
    (23.1, 2.3, 10.0, True),
    (4.7, 2.3, 2.0, True),
    (0.0, 2.3, 10.0, False),
])
def test_is_diverged(loss, initial, factor, expected):
    assert metrics.is_diverged(loss, initial, factor) is expected


# -- gradient norm and distance from initialization ------------------------------------------------------


def test_grad_norm_equals_norm_of_concatenated_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    nn.functional.cross_entropy(model(x), y).backward()
    params = list(model.parameters())
    manual = torch.cat([p.grad.reshape(-1) for p in params]).norm()
    value = metrics.grad_norm(params)
    assert value.ndim == 0
    assert float(value) == pytest.approx(float(manual), rel=1e-6)
    assert float(value) == pytest.approx(math.sqrt(sum(float((p.grad**2).sum()) for p in params)), rel=1e-6)


def test_grad_norm_ignores_parameters_without_grad():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad = torch.tensor([3.0, 0.0, 4.0])
    assert float(metrics.grad_norm([a, b])) == pytest.approx(5.0)


def test_flat_params_is_a_detached_copy_of_trainable_parameters():
    model = nn.Linear(3, 2)  # 6 weights + 2 biases
    model.bias.requires_grad_(False)
    flat = metrics.flat_params(model)
    assert flat.shape == (6,) and not flat.requires_grad
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(flat, metrics.flat_params(model))  # a copy, not a view


def test_distance_from_init():
    model = nn.Linear(2, 2)
    w0 = metrics.flat_params(model)
    assert metrics.distance(model, w0) == 0.0
    with torch.no_grad():
        model.weight.add_(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
        model.bias.add_(torch.tensor([0.0, 4.0]))
    assert metrics.distance(model, w0) == pytest.approx(5.0)


# -- evaluation ------------------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """Returns the logits stored for each input index (inputs are the indices)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits[x.long().reshape(-1)] + 0 * self.dummy


def test_evaluate_known_outputs():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    y = torch.tensor([0, 1, 2, 0, 1])
    x = torch.arange(5).float()[:, None]
    expected_loss = float(nn.functional.cross_entropy(logits, y))
    model = FixedLogits(logits)
    model.train()
    for batch_size in (1, 2, 5, 1000):  # the chunking never changes the result
        loss, acc = metrics.evaluate(model, x, y, batch_size)
        assert loss == pytest.approx(expected_loss, rel=1e-6)
        # predictions: 0, 1, 0 (tie -> first), 2, 1 -> correct at indices 0, 1, 4
        assert acc == pytest.approx(3 / 5)
    assert model.training  # the mode is restored


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_and_correct_matches_cross_entropy_and_argmax(dtype):
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(500, 10, generator=gen) * 30).to(dtype)  # large logits: the stabilizer matters
    logits[:50, 3] = logits[:50, 7] = 1e3  # ties: the first maximal index is the prediction, as argmax's
    y = torch.randint(0, 10, (500,), generator=gen)
    loss, correct = metrics.loss_and_correct(logits, y)
    expected = nn.functional.cross_entropy(logits, y, reduction="sum")
    assert float(loss) == pytest.approx(float(expected), rel=1e-6 if dtype == torch.float32 else 1e-12)
    assert int(correct) == int((logits.argmax(1) == y).sum())
    logits[0, 0] = float("nan")  # a diverged model's loss is NaN, as cross_entropy's
    assert math.isnan(float(metrics.loss_and_correct(logits, y)[0]))


def test_evaluate_restores_eval_mode_and_uses_eval_behaviour():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(4, 2))
    model.eval()
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    first = metrics.evaluate(model, x, y, 3)
    assert not model.training
    model.train()
    second = metrics.evaluate(model, x, y, 3)
    assert first == second  # dropout off during evaluation, whatever the mode before
    assert model.training


def test_evaluate_perfect_classifier():
    logits = torch.eye(4) * 100
    loss, acc = metrics.evaluate(FixedLogits(logits), torch.arange(4).float(), torch.arange(4), 3)
    assert acc == 1.0 and loss == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(loss)


def _bn_model(dtype: torch.dtype) -> nn.Module:
    """A 1-D CNN with batch norm whose running statistics have moved away from their start (so evaluation
    mode and training mode give different outputs)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 12, 5)).to(dtype)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 12, dtype=dtype) * 3 + 1)
    return model


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_evaluate_equals_the_straightforward_computation(dtype, rel, batch_norm):
    """The chunked evaluation (inference mode, sums kept on the device, read once) against one forward pass
    over the whole set in evaluation mode: the same mean loss (float64 to 1e-10, float32 to 1e-6 relative)
    and the same accuracy, whatever the chunk size; batch norm uses its running statistics."""
    torch.manual_seed(1)
    x, y = torch.randn(203, 1, 12, dtype=dtype), torch.randint(0, 5, (203,))
    if batch_norm:
        model = _bn_model(dtype)
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)).to(dtype)
    model.train()
    with torch.no_grad():
        model.eval()
        logits = model(x)
        model.train()
        expected_loss = float(nn.functional.cross_entropy(logits, y))
        expected_acc = float((logits.argmax(1) == y).double().mean())
    if batch_norm:  # training mode (batch statistics) would give other numbers
        assert not torch.allclose(copy.deepcopy(model)(x), logits)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for batch_size in (1, 7, 100, 203, 1000):
        loss, acc = metrics.evaluate(model, x, y, batch_size)
        assert loss == pytest.approx(expected_loss, rel=rel)
        assert acc == expected_acc
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# -- gradient noise scale (McCandlish et al. 2018, appendix A.1) ---------------------------------------------


def test_noise_scale_estimator_recovers_a_known_covariance():
    """Per-example gradients G + e with e ~ N(0, Sigma): the estimator's B_simple is tr(Sigma) / |G|^2."""
    rng = np.random.default_rng(0)
    dim, b_small, b_big, pairs = 20, 8, 64, 4000
    G = rng.normal(size=dim)
    sigma = rng.uniform(0.5, 4.0, size=dim)  # diagonal covariance: per-coordinate variances
    small_sq, big_sq = [], []
    for _ in range(pairs):
        for b, out in ((b_small, small_sq), (b_big, big_sq)):
            mean = G + rng.normal(size=(b, dim)).mean(0) * np.sqrt(sigma)
            out.append(float(mean @ mean))
    est = metrics.noise_scale(small_sq, big_sq, b_small, b_big)
    assert est["noise_grad_sq"] == pytest.approx(G @ G, rel=0.05)
    assert est["noise_trace"] == pytest.approx(sigma.sum(), rel=0.05)
    assert est["b_simple"] == pytest.approx(sigma.sum() / (G @ G), rel=0.08)


def test_noise_scale_is_the_ratio_of_the_means_not_the_mean_of_ratios():
    est = metrics.noise_scale([5.0, 3.0], [1.5, 1.5], 1, 4)
    small, big = 4.0, 1.5
    g2 = (4 * big - small) / 3
    trace = (small - big) / (1 - 0.25)
    assert est == pytest.approx({"noise_grad_sq": g2, "noise_trace": trace, "b_simple": trace / g2})
    assert math.isnan(metrics.noise_scale([10.0], [1.0], 1, 4)["b_simple"])  # |G|^2 estimated <= 0
    with pytest.raises(ValueError, match="b_small < b_big"):
        metrics.noise_scale([1.0], [1.0], 8, 8)


def test_measured_noise_scale_matches_the_per_example_gradients():
    """On a small problem every per-example gradient can be computed: their mean G and covariance Sigma
    (over the data set, which the measurement samples with replacement) give the true tr(Sigma)/|G|^2."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 3)).double()
    per_example = []
    for i in range(64):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        per_example.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]))
    grads = torch.stack(per_example)
    G = grads.mean(0)
    trace = float(((grads - G) ** 2).sum(1).mean())
    truth = trace / float(G @ G)
    est = metrics.measure_noise_scale(model, x, y, b_small=4, b_big=32, pairs=3000, seed=1)
    assert est["noise_grad_sq"] == pytest.approx(float(G @ G), rel=0.1)
    assert est["noise_trace"] == pytest.approx(trace, rel=0.1)
    assert est["b_simple"] == pytest.approx(truth, rel=0.15)


def test_measuring_the_noise_scale_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    model.eval()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = metrics.measure_noise_scale(model, x, y, 4, 16, pairs=3, seed=7)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch-norm statistics too
    assert metrics.measure_noise_scale(model, x, y, 4, 16, pairs=3, seed=7) == a  # seeded: the same batches
    assert metrics.measure_noise_scale(model, x, y, 4, 16, pairs=3, seed=8) != a


def test_is_per_example():
    from batchlab import models

    for arch in ("logreg", "mlp", "cnn1d"):
        assert metrics.is_per_example(models.build(arch, (1, 40), 10))
    assert metrics.is_per_example(models.build("cnn", (3, 8, 8), 10))
    assert not metrics.is_per_example(models.build("cnn_bn", (3, 8, 8), 10))  # batch statistics
    assert not metrics.is_per_example(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2)))  # masks


@pytest.mark.parametrize("rounding", [1, 4])
@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_noise_scale_from_distinct_examples_equals_the_batches_as_drawn(arch, rounding, monkeypatch):
    """Forwarding each distinct example of a draw once (padded with weight-0 repeats to a multiple of
    ``rounding``), its loss weighted by its count, gives the gradients of the batches as drawn (repeats
    included): float64 to 1e-10, the same seeded draws."""
    from batchlab import models

    monkeypatch.setattr(metrics, "DISTINCT_ROUNDING", rounding)
    torch.manual_seed(0)
    model = models.build(arch, (1, 40), 10).double()
    x, y = torch.randn(50, 1, 40, dtype=torch.float64), torch.randint(0, 10, (50,))  # 32 of 50: many repeats
    plain = metrics.measure_noise_scale(model, x, y, 8, 32, pairs=3, seed=5, distinct=False)
    distinct = metrics.measure_noise_scale(model, x, y, 8, 32, pairs=3, seed=5, distinct=True)
    assert distinct == pytest.approx(plain, rel=1e-10)
    assert metrics.measure_noise_scale(model, x, y, 8, 32, pairs=3, seed=5) == distinct  # the default here
    idx = torch.tensor([3, 3, 7, 0, 3, 9])
    with torch.no_grad():
        assert float(metrics.batch_loss(model, x, y, idx, True)) == pytest.approx(
            float(nn.functional.cross_entropy(model(x[idx]), y[idx])), rel=1e-12)


def test_noise_scale_of_a_batch_norm_model_uses_the_batches_as_drawn():
    model = _bn_model(torch.float64)
    x, y = torch.randn(40, 1, 12, dtype=torch.float64), torch.randint(0, 5, (40,))
    plain = metrics.measure_noise_scale(model, x, y, 4, 16, pairs=2, seed=3, distinct=False)
    assert metrics.measure_noise_scale(model, x, y, 4, 16, pairs=2, seed=3) == plain


# -- sharpness (Keskar et al. 2017) ----------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [1e-3, 5e-4, 0.1])
def test_sharpness_of_a_quadratic_is_its_box_maximum(epsilon):
    """f(w) = 1/2 sum a_i w_i^2 is maximized over the box coordinate by coordinate, at
    z_i = sign(w_i) * epsilon * (|w_i| + 1): phi = 100 * (f(w + z) - f(w)) / (1 + f(w)). At Keskar's
    epsilons the box is small against the weights and ascent finds that maximum; in a box as wide as the
    weights themselves (0.1) a coordinate near 0 may end in the other, lower corner."""
    torch.manual_seed(0)
    a = torch.rand(50, dtype=torch.float64) * 4 + 0.5
    w0 = torch.randn(50, dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    f = lambda: 0.5 * (a * w**2).sum()  # noqa: E731
    top = 0.5 * (a * (w0.abs() + epsilon * (w0.abs() + 1)) ** 2).sum()
    base = 0.5 * (a * w0**2).sum()
    expected = float(100 * (top - base) / (1 + base))
    phi = metrics._box_sharpness(f, [w], epsilon, steps=10, seed=0)
    if epsilon < 0.01:
        assert phi == pytest.approx(expected, rel=1e-9)
    else:
        assert 0.99 * expected < phi <= expected
    assert torch.equal(w.detach(), w0)  # the weights come back as they were


def test_sharpness_at_a_minimum_starts_from_a_random_point_of_the_box():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # the minimum: the gradient vanishes there
    phi = metrics._box_sharpness(lambda: 0.5 * (a * w**2).sum(), [w], 1e-3, steps=10, seed=3)
    assert phi == pytest.approx(100 * 0.5 * float(a.sum()) * 1e-6, rel=1e-9)  # every corner: z_i = +-epsilon


def test_sharpness_of_a_model_grows_with_epsilon_and_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(200, 1, 10), torch.randint(0, 3, (200,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, large = (metrics.sharpness(model, x, y, eps, steps=5, seed=1) for eps in (5e-4, 1e-3))
    assert 0 < small < large
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert metrics.sharpness(model, x, y, 1e-3, steps=5, seed=1) == large  # seeded


def _reference_sharpness(model, x, y, epsilon, steps, seed):
    """The projected sign ascent written out plainly: a gradient at every point, one parameter at a time."""
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]
    bounds = [epsilon * (w.abs() + 1) for w in originals]
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        base = float(nn.functional.cross_entropy(model(x), y))
        for p, w, b in zip(params, originals, bounds):
            p.copy_(w + (torch.rand(w.shape, generator=generator, dtype=w.dtype) * 2 - 1) * b)
    best = base
    for _ in range(steps + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        best = max(best, float(loss.detach()))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, w, b, g in zip(params, originals, bounds, grads):
                p.copy_(torch.minimum(torch.maximum(p + 0.25 * b * g.sign(), w - b), w + b))
    with torch.no_grad():
        for p, w in zip(params, originals):
            p.copy_(w)
    model.train()
    return 100.0 * (best - base) / (1.0 + base)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sharpness_equals_the_plain_ascent(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    x, y = torch.randn(200, 1, 10, dtype=dtype), torch.randint(0, 3, (200,))
    for epsilon in (1e-3, 0.05):
        expected = _reference_sharpness(model, x, y, epsilon, 6, seed=2)
        assert metrics.sharpness(model, x, y, epsilon, steps=6, seed=2) == pytest.approx(expected, rel=1e-12)
