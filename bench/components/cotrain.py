"""Two-network helpers: ensemble prediction and the co-training mechanics Co-teaching, Co-teaching+ and
JoCoR share (the forget-rate source, the official Adam plan, the small-loss exchange, the disagreement set).

The forget rate τ and its sources are described in ``methods/coteaching.py``; the Adam plan is
``bhanML/Co-teaching`` ``main.py``'s ``alpha_plan``/``beta1_plan`` (the same in
``xingruiyu/coteaching_plus`` and ``hongxin001/JoCoR``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import LnlError
from .selection import gmm_clean_probability, minmax, small_loss_mask

FORGET_RATE_SPECS = ("flip_rate", "noise_rate", "estimate")


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Sum of the networks' logits in eval mode (DivideMix's and ELR+'s test-time prediction)."""
    out = None
    for m in models:
        m.eval()
        y = m(x).float()
        out = y if out is None else out + y
    return out


def forget_rate_mode(spec: str | float, noise_rate_hint: float | None, flip_rate_hint: float | None,
                     method: str = "coteaching") -> tuple[str, float]:
    """(mode, τ) of a ``forget_rate`` setting: ``fixed`` (a number), ``flip_rate_hint``, ``noise_rate_hint``
    or ``estimate`` (τ = 0 until :func:`estimate_forget_rate` sets it); ``method`` names the error."""
    if isinstance(spec, str) and spec not in FORGET_RATE_SPECS:
        try:
            spec = float(spec)
        except ValueError:
            raise LnlError(f"{method}: forget_rate must be 'flip_rate', 'noise_rate', 'estimate' or a "
                           f"number in [0, 1), got {spec!r}") from None
    if not isinstance(spec, str):
        if not 0.0 <= float(spec) < 1.0:
            raise LnlError(f"{method}: forget_rate must be in [0, 1), got {spec}")
        return "fixed", float(spec)
    if spec == "flip_rate" and flip_rate_hint is not None:
        return "flip_rate_hint", float(flip_rate_hint)
    if spec in ("flip_rate", "noise_rate") and noise_rate_hint is not None:
        return "noise_rate_hint", float(noise_rate_hint)
    return "estimate", 0.0  # noise-blind, or no nominal rate to use (real noise)


def estimate_forget_rate(losses: torch.Tensor, seed: int) -> float | None:
    """Noise-blind τ̂: the mean posterior of the high-loss component of a 2-component GMM on the finite
    per-sample losses (min-max normalised), clipped to [0, 0.95]; None with fewer than two losses."""
    losses = losses[torch.isfinite(losses)]
    if losses.numel() < 2:
        return None
    p_clean = gmm_clean_probability(minmax(losses), seed=seed)
    return float(np.clip(1.0 - p_clean.mean(), 0.0, 0.95))


class EpochForgetRate:
    """``_tau(epoch)`` of the co-training methods (Co-teaching, Co-teaching+, JoCoR): the fixed or hinted τ, or
    in ``estimate`` mode :func:`estimate_forget_rate` on the previous epoch's per-sample losses, refitted during
    the ramp only (epochs 1 … ``num_gradual`` − 1, one host sync each) and frozen after it. The method holds
    ``mode``, ``tau_fixed``, ``tau_estimate`` (checkpointed), ``last_loss``, ``hp.num_gradual`` and ``ctx.rng``."""

    def _tau(self, epoch: int) -> float:
        if self.mode != "estimate":
            return self.tau_fixed
        if 1 <= epoch < max(1, self.hp.num_gradual):
            tau = estimate_forget_rate(self.last_loss, seed=int(self.ctx.rng.integers(2 ** 31 - 1)))
            if tau is not None:
                self.tau_estimate = tau
        return self.tau_estimate


def adam_plan(epoch: int, lr: float, epochs: int, epoch_decay_start: int,
              beta1_decayed: float = 0.1) -> tuple[float, float]:
    """(lr, Adam β₁) of our 0-based ``epoch``: the official loop trains epochs j = 1…n_epoch−1
    (n_epoch = ``epochs`` + 1) and from j ≥ ``epoch_decay_start`` decays lr linearly to 0 at n_epoch and
    switches β₁ from 0.9 to ``beta1_decayed``."""
    j, n_epoch = epoch + 1, epochs + 1
    if j < epoch_decay_start:
        return lr, 0.9
    return lr * (n_epoch - j) / max(1, n_epoch - epoch_decay_start), beta1_decayed


def set_adam_plan(optimizers: Sequence[torch.optim.Optimizer], lr: float, beta1: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, 0.999)


def small_loss_exchange(ce1: torch.Tensor, ce2: torch.Tensor, rate: float, all_if_none: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-teaching's exchange: each network keeps its ``int((1 − rate)·n)`` smallest losses and is trained
    on its PEER's kept samples (mean per-sample loss over them). Returns (loss1, loss2, keep1, keep2).

    ``all_if_none``: when the count is 0, keep every sample (Co-teaching+ ``loss.py``, which calls it on
    a small disagreement set); otherwise a 0 count gives zero losses."""
    n = ce1.shape[0]
    keep_fraction = 1.0 - rate
    if all_if_none and int(keep_fraction * n) == 0:
        keep_fraction = 1.0
    keep1 = small_loss_mask(ce1.detach(), keep_fraction)
    keep2 = small_loss_mask(ce2.detach(), keep_fraction)
    count = max(1, int(keep_fraction * n))
    return (ce1 * keep2).sum() / count, (ce2 * keep1).sum() / count, keep1, keep2


def disagreement_mask(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the samples the two networks predict differently (Co-teaching+'s disagreement set)."""
    return logits1.argmax(dim=1) != logits2.argmax(dim=1)
