"""Warm-up and ramp-up schedules used inside methods (learning-rate schedules live in lnlbench.hparams)."""
from __future__ import annotations

import math


def linear_rampup(current: float, start: float, length: float) -> float:
    """clip((current − start) / length, 0, 1): DivideMix's λ_u ramp (start = warm-up, length = 16)."""
    if length <= 0:
        return 1.0 if current >= start else 0.0
    return float(min(1.0, max(0.0, (current - start) / length)))


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(−5 (1 − t)²) with t = clip(current / length, 0, 1) (Laine & Aila; ELR+'s coefficient ramp)."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, current / length))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def forget_rate_schedule(epoch: int, forget_rate: float, num_gradual: int = 10, exponent: float = 1.0) -> float:
    """Co-teaching's R(T): the fraction of each batch dropped, ramped from 0 to τ over T_k epochs.

    ``rate_schedule = ones(n_epoch) * τ; rate_schedule[:T_k] = linspace(0, τ ** c, T_k)`` in the official
    code (bhanML/Co-teaching main.py), with c = ``exponent``.
    """
    if epoch < num_gradual:
        return float(forget_rate ** exponent * epoch / max(1, num_gradual - 1))
    return float(forget_rate)
