"""Co-teaching's 9-layer CNN (Han et al. 2018), the network of its CIFAR-10/100 and MNIST experiments.

Source read (re-written here, not copied): ``bhanML/Co-teaching`` ``model.py`` class ``CNN``. Three blocks
of 3×3 convolutions with batch norm and leaky ReLU (slope 0.01): 128-128-128 (padding 1), 2×2 max-pool,
dropout2d 0.25; 256-256-256 (padding 1), max-pool, dropout2d 0.25; 512-256-128 (no padding); global average
pool; linear head. Convolutions have biases, as there; PyTorch default initialisation.

Deviation: the official ``forward`` calls ``F.dropout2d(h, p=0.25)``, whose ``training`` argument defaults
to True, so its dropout stays on at test time too (its evaluation is stochastic). Here dropout follows the
module's train/eval mode (``nn.Dropout2d``), so ``model.eval()`` is deterministic. ``top_bn`` (off in every
official run) is not provided.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model
from .base import LnlModel, check_build_args

# (in, out, padding) per convolution; a max-pool and dropout follow the 3rd and the 6th
_LAYERS = ((None, 128, 1), (128, 128, 1), (128, 128, 1),
           (128, 256, 1), (256, 256, 1), (256, 256, 1),
           (256, 512, 0), (512, 256, 0), (256, 128, 0))
MIN_SIZE = 28  # two max-pools then three unpadded 3×3 convolutions: 28 → 14 → 7 → 5 → 3 → 1


class CoteachingCNN(LnlModel):
    """9 conv-BN-leaky-ReLU layers in three blocks, max-pool + dropout2d after the first two, avg-pool."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.25):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for cin, cout, pad in _LAYERS:
            self.convs.append(nn.Conv2d(in_channels if cin is None else cin, cout, 3, stride=1, padding=pad))
            self.bns.append(nn.BatchNorm2d(cout))
        self.dropout = nn.Dropout2d(dropout)
        self.feature_dim = 128
        self.head = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            h = F.leaky_relu(bn(conv(h)), negative_slope=0.01)
            if i in (2, 5):
                h = self.dropout(F.max_pool2d(h, kernel_size=2, stride=2))
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


@register_model("cnn9")
def cnn9(num_classes: int, in_channels: int = 3, image_size: int = 32,
         dropout: float = 0.25) -> CoteachingCNN:
    """Co-teaching's 9-layer CNN (bhanML/Co-teaching model.py): 4.4 M parameters for 10 classes."""
    check_build_args("cnn9", num_classes, in_channels, image_size, MIN_SIZE)
    return CoteachingCNN(num_classes, in_channels, float(dropout))
