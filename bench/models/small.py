"""Small networks for the CPU-scale (``mini``) presets; see ``shared/reference/cpu-calibration.md``.

No paper uses these; they exist so a CPU run finishes in minutes. PyTorch default init throughout.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LnlError
from ..registry import register_model
from .base import LnlModel, check_build_args
from .resnets import BasicBlock, conv3x3


def _positive_ints(model: str, what: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise LnlError(f"model '{model}': {what} must be one or more positive integers, got {values!r}")
    return values


class MLP(LnlModel):
    """Flatten → (Linear → ReLU) per hidden layer → linear head."""

    def __init__(self, num_inputs: int, num_classes: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(num_inputs, width), nn.ReLU(inplace=True)]
            num_inputs = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = num_inputs
        self.head = nn.Linear(num_inputs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: Sequence[int] = (256, 256)) -> MLP:
    """MLP on flattened pixels, hidden (256, 256) with ReLU; for scikit-learn digits (8×8×1).

    The input size is ``in_channels × image_size²`` (64 for digits: 85 k parameters for 10 classes).
    """
    check_build_args("mlp", num_classes, in_channels, image_size, 1)
    hidden = _positive_ints("mlp", "hidden", hidden)
    return MLP(in_channels * image_size * image_size, num_classes, hidden)


class SmallResNet(LnlModel):
    """3×3 conv stem → BN → ReLU, one post-activation BasicBlock per stage (strides 1, 2, 2, ...), avg-pool."""

    def __init__(self, num_classes: int, in_channels: int, widths: Sequence[int]):
        super().__init__()
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            blocks.append(BasicBlock(in_planes, planes, stride=1 if i == 0 else 2))
            in_planes = planes
        self.stages = nn.Sequential(*blocks)
        self.feature_dim = in_planes
        self.head = nn.Linear(in_planes, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("cnn_small")
def cnn_small(num_classes: int, in_channels: int = 3, image_size: int = 32,
              widths: Sequence[int] = (16, 32, 64)) -> SmallResNet:
    """3-stage ResNet, widths 16/32/64, one BasicBlock per stage: the fast CPU net for CIFAR-size images.

    0.08 M parameters for 10 classes. ``widths`` sets the number of stages and their channels; each stage
    after the first halves the resolution, so the image must be at least ``2 ** (len(widths) - 1)`` pixels.
    """
    widths = _positive_ints("cnn_small", "widths", widths)
    check_build_args("cnn_small", num_classes, in_channels, image_size, 2 ** (len(widths) - 1))
    return SmallResNet(num_classes, in_channels, widths)
