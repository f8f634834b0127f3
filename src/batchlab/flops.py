"""The arithmetic of a model: floating-point operations per example of a forward pass and of a training
step, counted from the shapes its layers see (forward hooks on a one-example input), for a roofline of the
engines against the machine's matrix-multiply speed (benchmarks/roofline.py).

A multiply-add counts 2 operations. Counted: ``Linear`` (2 x in x out per output position) and ``Conv1d``,
``Conv2d`` (2 x C_in / groups x kernel size x each output element); the rest (activations, pooling,
normalisation, the loss) is memory-bound and small beside them, and left out. A training step costs about 3
forward passes per example: the backward pass computes the gradients of both the inputs and the weights of
each layer, each as costly as its forward product.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# forward + backward (input gradients) + backward (weight gradients)
TRAINING_FACTOR = 3


def layer_flops(module: nn.Module, output: torch.Tensor) -> int:
    """Operations of ``module``'s forward pass that gave ``output`` (batch of one), 0 for uncounted layers."""
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * output.numel()
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * per_output * output.numel()
    return 0


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Operations of one example's forward pass through ``model`` (input of shape ``input_shape``, no batch
    dimension), summed over its Linear and convolution layers."""
    total = 0

    def count(module: nn.Module, _inputs, output) -> None:
        nonlocal total
        total += layer_flops(module, output)

    leaves = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            param = next(model.parameters(), None)
            dtype = param.dtype if param is not None else torch.float32
            device = param.device if param is not None else torch.device("cpu")
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def training_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Operations of one example's share of a training step: about 3 forward passes (see the module's
    docstring)."""
    return TRAINING_FACTOR * forward_flops(model, input_shape)
