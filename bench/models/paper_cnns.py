"""Small CNNs that LNL papers train on CIFAR, re-written from their reference code.

- ``sce_cnn``: the 8-layer CNN of SCE's CIFAR-10 experiments (Wang et al. 2019). Sources read: the
  official Keras ``YisenWang/symmetric_cross_entropy_for_noisy_labels`` ``models.py`` (``cifar-10``
  branch) and its PyTorch port ``HanxunH/SCELoss-Reproduce`` ``model.py`` (``SCEModel``).
- ``lenet``: the LeNet-style ``CNN_small`` Co-teaching+ trains on CIFAR-10 (``xingruiyu/coteaching_plus``
  ``model.py``): conv5×5 6 → pool → conv5×5 16 → pool → FC 120 → 84 → head, ReLU, no batch norm.
- ``cotplus_cnn``: the 6-conv ``CNN`` Co-teaching+ trains on CIFAR-100 (same file) and JoCoR on CIFAR-10
  and CIFAR-100 (``hongxin001/JoCoR`` ``model/cnn.py``, the same layers): conv3×3 64-64-pool-
  128-128-pool-196-16-pool, each with BN + ReLU, the 16×4×4 = 256 features into the head.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from .base import LnlModel, check_build_args


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SCECNN(LnlModel):
    """Three blocks of (conv3×3-BN-ReLU)×2 + max-pool (64, 128, 196 channels), FC 256-BN-ReLU, head."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (64, 128, 196):
            layers += _conv_bn_relu(cin, cout) + _conv_bn_relu(cout, cout) + [nn.MaxPool2d(2, 2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.fc1 = nn.Sequential(nn.Linear(196 * side * side, 256), nn.BatchNorm1d(256),
                                 nn.ReLU(inplace=True))
        self.feature_dim = 256
        self.head = nn.Linear(256, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.features(x).flatten(1))


@register_model("sce_cnn")
def sce_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> SCECNN:
    """SCE's 8-layer CIFAR-10 CNN: 6 conv (64-64-128-128-196-196, BN, max-pools) + FC 256 + head.

    1.64 M parameters for 10 classes at 32×32 (the flattened 196×4×4 = 3,136 features of the reference).
    PyTorch default init, as SCELoss-Reproduce's latest ``model.py`` (the Keras original uses he_normal).
    Deviation: the flatten size follows the input size (the references hard-code 3,136 for 32×32).
    """
    check_build_args("sce_cnn", num_classes, in_channels, image_size, 8)
    return SCECNN(num_classes, in_channels, image_size)


class LeNet(LnlModel):
    """Co-teaching+'s CIFAR-10 ``CNN_small``: two conv5×5 + max-pool stages (6, 16), FC 120 → 84, head."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc = nn.Sequential(nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True), nn.Linear(120, 84),
                                nn.ReLU(inplace=True))
        self.feature_dim = 84
        self.head = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register_model("lenet")
def lenet(num_classes: int, in_channels: int = 3, image_size: int = 32) -> LeNet:
    """Co-teaching+'s CIFAR-10 LeNet (62 k parameters for 10 classes at 32×32: 16×5×5 = 400 features).

    Deviation: the flatten size follows the input size (the reference hard-codes 400 for 32×32)."""
    check_build_args("lenet", num_classes, in_channels, image_size, 16)
    return LeNet(num_classes, in_channels, image_size)


class CoteachingPlusCNN(LnlModel):
    """Co-teaching+'s CIFAR-100 ``CNN``: 6 conv3×3 + BN + ReLU (64-64, 128-128, 196-16), 3 max-pools."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for pair in ((64, 64), (128, 128), (196, 16)):
            for cout in pair:
                layers += _conv_bn_relu(cin, cout)
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.feature_dim = 16 * side * side
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


@register_model("cotplus_cnn")
def cotplus_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> CoteachingPlusCNN:
    """Co-teaching+'s CIFAR-100 6-conv CNN (0.54 M parameters for 100 classes at 32×32; 256 features).

    BN momentum 0.1 (the reference's default); no dropout (the reference defines a rate and never uses it).
    Deviation: the flatten size follows the input size (the reference hard-codes 256 for 32×32)."""
    check_build_args("cotplus_cnn", num_classes, in_channels, image_size, 8)
    return CoteachingPlusCNN(num_classes, in_channels, image_size)
