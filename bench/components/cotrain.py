"""Two-network helpers: ensemble prediction of two (or more) networks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Sum of the networks' logits in eval mode (DivideMix's and ELR+'s test-time prediction)."""
    out = None
    for m in models:
        m.eval()
        y = m(x).float()
        out = y if out is None else out + y
    return out

