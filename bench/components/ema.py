"""Exponential moving average of a network's weights (mean teacher; ELR+'s weight averaging)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ after each step; buffers (batch-norm statistics) are copied.

    The EMA model is a separate copy in eval mode with no gradients; ``state_dict`` makes it part of a
    method's checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        d = self.decay if decay is None else float(decay)
        ema_p = list(self.model.parameters())
        src_p = [p.detach() for p in model.parameters()]
        torch._foreach_mul_(ema_p, d)
        torch._foreach_add_(ema_p, src_p, alpha=1.0 - d)
        # one fused copy of every buffer (3 per batch-norm layer), not one kernel launch each, every step
        ema_b, src_b = list(self.model.buffers()), list(model.buffers())
        if ema_b:
            torch._foreach_copy_(ema_b, src_b)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.model.load_state_dict(state["model"])
