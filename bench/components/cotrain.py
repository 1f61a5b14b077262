"""Two-network helpers: ensemble prediction and the cross assignment of co-training."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Sum of the networks' logits in eval mode (DivideMix's and ELR+'s test-time prediction)."""
    out = None
    for m in models:
        m.eval()
        y = m(x).float()
        out = y if out is None else out + y
    return out


def swap(pair: Sequence[T]) -> tuple[T, T]:
    """(a, b) → (b, a): each network is trained on the other's division / selection (co-divide)."""
    a, b = pair
    return b, a
