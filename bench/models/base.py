"""The contract every lnlbench model obeys, and the input checks the builders share.

A model maps a float NCHW batch (already normalised) to logits in two steps, so methods that need the
penultimate features (MOIT's projection head, kNN label-noise detection, feature-based sample selection)
get them without knowing the architecture::

    feats = model.forward_features(x)   # (B, model.feature_dim)
    logits = model.head(feats)          # model.head is the final nn.Linear; == model(x)

Builders are registered with ``@register_model(name)`` and called as
``builder(num_classes, in_channels=3, image_size=32, **kwargs)``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LnlError


class LnlModel(nn.Module):
    """Base class: ``forward(x) = head(forward_features(x))``; subclasses set ``feature_dim`` and ``head``."""

    feature_dim: int
    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (B, feature_dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def check_build_args(model: str, num_classes: int, in_channels: int, image_size: int, min_size: int) -> None:
    """Raise :class:`LnlError` for arguments the model cannot be built for."""
    for what, value, least in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1),
                               ("image_size", image_size, min_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise LnlError(f"model '{model}': {what} must be an integer >= {least}, got {value!r}")
