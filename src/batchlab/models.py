"""Architectures: a registry of builders ``(input_shape, num_classes, **options) -> nn.Module``.

Adding an architecture is one function and one line in ``ARCHITECTURES``::

    def wide_mlp(input_shape, num_classes, width=512):
        return mlp(input_shape, num_classes, width=width, depth=3)

    ARCHITECTURES["wide_mlp"] = Architecture(wide_mlp, input_ndim=None)

``input_ndim`` is the number of non-batch input dimensions the model accepts (2 for (C, L) signals, 3 for
(C, H, W) images, None for any); validation uses it to reject, say, an image CNN on MNIST-1D before training.
Builders never choose a device or precision: the training loop does. torch is imported when a model is
first built, not with this module: the workflow reads the registry to validate a config on every parse,
and a parse should not pay for importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from batchlab import builders


class _LazyNN:
    """``torch.nn``, imported on first use."""

    def __getattr__(self, name):
        from torch import nn as torch_nn

        return getattr(torch_nn, name)


nn = _LazyNN()


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]
    input_ndim: int | None  # non-batch dims accepted: 2 = (C, L), 3 = (C, H, W), None = any
    label: str = ""  # the name figures and the paper print ("logistic regression"); the key where empty
    # whether the batched engine stacks it (batchlab.stacked.can_stack, which a test holds this to); the
    # training-time estimates read it at parse, where no model is built
    stackable: bool = True


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 100, depth: int = 2) -> nn.Module:
    """ReLU MLP with ``depth`` hidden layers of ``width`` units (MNIST-1D's baseline: 2 x 100)."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def cnn1d(input_shape: tuple[int, ...], num_classes: int, channels: int = 25) -> nn.Module:
    """The MNIST-1D paper's 1-D CNN: three stride-2 convolutions, then a linear read-out."""
    c, length = input_shape
    for k in (5, 3, 3):  # each conv: stride 2, padding 1
        length = (length + 2 - k) // 2 + 1
    return nn.Sequential(
        nn.Conv1d(c, channels, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * length, num_classes),
    )


def cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 32, batch_norm: bool = False) -> nn.Module:
    """Small image CNN: two conv-(BN)-ReLU-maxpool blocks and a linear read-out."""
    c, h, w = input_shape

    def block(cin: int, cout: int) -> list[nn.Module]:
        norm = [nn.BatchNorm2d(cout)] if batch_norm else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(c, width), *block(width, 2 * width),
        nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), num_classes),
    )


def cnn_bn(input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """The small image CNN with batch norm after every convolution."""
    return cnn(input_shape, num_classes, width=width, batch_norm=True)


def _res_block(cin: int, cout: int, stride: int) -> nn.Module:
    """A residual block: two 3x3 conv-BN layers, a projection on the skip path when shapes change."""
    from torch import nn as torch_nn

    class ResBlock(torch_nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            )
            self.skip = (
                nn.Identity() if stride == 1 and cin == cout
                else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            )

        def forward(self, x):
            return (self.body(x) + self.skip(x)).relu()

    return ResBlock()


def resnet_small(input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """A ResNet-style CNN with batch norm (three stages of one residual block), for CIFAR-10-sized images."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        _res_block(width, width, 1), _res_block(width, 2 * width, 2), _res_block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


ARCHITECTURES: dict[str, Architecture] = {
    "logreg": Architecture(logreg, None, "logistic regression"),
    "mlp": Architecture(mlp, None, "MLP"),
    "cnn1d": Architecture(cnn1d, 2, "1-D CNN"),
    "cnn": Architecture(cnn, 3, "CNN"),
    "cnn_bn": Architecture(cnn_bn, 3, "CNN + BN"),
    "resnet_small": Architecture(resnet_small, 3, "ResNet-style CNN", stackable=False),  # residual blocks
}


def stackable(name: str) -> bool:
    """Whether the batched engine stacks registered architecture ``name`` (False for one of the user's,
    which is only known once it is built)."""
    arch = ARCHITECTURES.get(name)
    return arch is not None and arch.stackable


def label(name: str) -> str:
    """How figures and the paper name architecture ``name`` (its registry key when it has no label)."""
    arch = ARCHITECTURES.get(name)
    return arch.label if arch is not None and arch.label else name


def build(name: str, input_shape: tuple[int, ...], num_classes: int, options: dict | None = None,
          builder: str | None = None) -> nn.Module:
    """Build architecture ``name`` for inputs of ``input_shape`` (without the batch axis): the registered one,
    or with ``builder`` (a spec's import path ``module:function``, see batchlab.builders) the user's."""
    make = builders.function(builder, f"builders.architectures.{name}") if builder else ARCHITECTURES[name].build
    return make(tuple(input_shape), num_classes, **(options or {}))
