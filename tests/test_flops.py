"""The FLOP counter (batchlab.flops) against hand counts of small models."""

from __future__ import annotations

import torch
from torch import nn

from batchlab import flops, models


def test_a_linear_model_costs_two_operations_per_weight_and_example():
    # the MNIST-1D MLP: 40 -> 100 -> 100 -> 10, one multiply-add per weight
    model = models.build("mlp", (1, 40), 10)
    assert flops.forward_flops(model, (1, 40)) == 2 * (40 * 100 + 100 * 100 + 100 * 10) == 30_000
    assert flops.training_flops(model, (1, 40)) == 3 * 30_000
    # a Linear over a sequence pays once per position
    assert flops.forward_flops(nn.Linear(8, 4), (6, 8)) == 2 * 8 * 4 * 6


def test_a_conv1d_model_costs_two_operations_per_kernel_tap_and_output_element():
    # MNIST-1D's CNN on (1, 40): lengths 19, 10, 5 after its three stride-2 convolutions of 25 channels
    model = models.build("cnn1d", (1, 40), 10)
    by_hand = (2 * 1 * 5 * 25 * 19      # conv 1: C_in 1, kernel 5, 25 x 19 outputs
               + 2 * 25 * 3 * 25 * 10   # conv 2: C_in 25, kernel 3, 25 x 10 outputs
               + 2 * 25 * 3 * 25 * 5    # conv 3: C_in 25, kernel 3, 25 x 5 outputs
               + 2 * 125 * 10)          # read-out
    assert flops.forward_flops(model, (1, 40)) == by_hand == 63_500


def test_grouped_and_2d_convolutions_count_their_own_inputs_only():
    grouped = nn.Conv1d(8, 8, 3, padding=1, groups=4)  # each output reads 2 channels x 3 taps
    assert flops.forward_flops(grouped, (8, 10)) == 2 * 2 * 3 * 8 * 10
    conv2d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))  # 4 x 6 x 6 outputs of 3 x 3 x 3 taps
    assert flops.forward_flops(conv2d, (3, 8, 8)) == 2 * 27 * 4 * 36


def test_counting_leaves_the_model_without_hooks_and_unchanged():
    model = models.build("mlp", (1, 40), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops.forward_flops(model, (1, 40))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
