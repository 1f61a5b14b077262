"""InceptionResNetV2 (Szegedy et al., AAAI 2017) from timm, trained from scratch: mini-WebVision's network.

DivideMix (``LiJunnan1992/DivideMix`` ``InceptionResNetV2.py``) and ELR+ (``shengliu66/ELR``
``ELR_plus/model/InceptionResNetV2.py``) train Cadene's ``pretrainedmodels`` InceptionResNetV2 from random
initialisation on 227-px crops; timm's ``inception_resnet_v2`` is the port of that same network (stem,
35×/17×/8× blocks with 10/20/10 repeats, 1536 features, global average pooling). timm is a light dependency
made for this network (its weights are never downloaded: ``pretrained=False``). Here the trunk is timm's
model without its classifier and ``head`` a new linear layer, so methods get the 1536 features.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LnlError
from ..registry import register_model
from .base import LnlModel, check_build_args


class TimmNet(LnlModel):
    """A timm trunk (``num_classes=0``: pooled features) with a linear ``head``."""

    def __init__(self, name: str, num_classes: int, in_channels: int):
        super().__init__()
        try:
            import timm
        except ImportError:  # pragma: no cover - timm is a declared dependency
            raise LnlError(f"model '{name}' needs timm; pip install timm") from None
        self.trunk = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
        self.feature_dim = int(self.trunk.num_features)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


@register_model("inception_resnet_v2")
def inception_resnet_v2(num_classes: int, in_channels: int = 3, image_size: int = 227) -> TimmNet:
    """InceptionResNetV2 from scratch (mini-WebVision: 50 classes, 227-px crops); at least 75 px."""
    check_build_args("inception_resnet_v2", num_classes, in_channels, image_size, 75)
    return TimmNet("inception_resnet_v2", num_classes, in_channels)
