"""An optimiser step with gradient-norm clipping between backward and step.

``MethodContext.step`` is zero_grad → backward → step; methods whose reference code clips the gradient norm
(SCELoss-Reproduce ``train.py``: ``clip_grad_norm_(params, 5.0)`` before every step) need the clip in the
middle. With a GradScaler (fp16) the gradients are unscaled first, so the bound applies to the true norm.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def clipped_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor],
                 max_norm: float, scaler: torch.amp.GradScaler | None = None,
                 sync: Callable[[torch.optim.Optimizer], None] | None = None) -> torch.Tensor:
    """zero_grad, backward, clip the total gradient norm to ``max_norm`` (≤ 0: no clip), step.

    Returns the total norm before clipping as a 0-d tensor (no host sync), for logging. ``sync`` (pass
    ``ctx.sync_grads``) averages the gradients over data-parallel ranks before the norm is taken.
    """
    params = [p for p in params if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
    if sync is not None:
        sync(optimizer)
    if scaler is not None:
        scaler.unscale_(optimizer)
    bound = max_norm if max_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, bound)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return norm.detach()
