"""Hyperparameters shared by every method, presets, the optimiser and learning-rate schedules.

A method's hyperparameters are a frozen dataclass that extends :class:`TrainHparams` with the method's
own fields. Its ``PRESETS`` hold the published recipe (``paper``) and a CPU-scale one (``mini``), keyed by
dataset, then ``dataset/noise``, then ``dataset/noise@rate``, applied in that order (later wins)::

    PRESETS = {
        "paper": {"cifar10": dict(epochs=300, lr=0.02), "cifar10/asymmetric": dict(lambda_u=0)},
        "mini": {"digits": dict(model="mlp", epochs=60)},
    }

A preset may also carry ``subset`` (images per class), which sets the trial's subset unless the user did.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import LnlError

if TYPE_CHECKING:  # torch is imported where it is used, so configs validate without it
    import torch

TRIAL_KEYS = ("subset", "test_subset", "augment")

# The CPU-scale CIFAR-10 protocol every method's ``mini`` preset builds on (the memorisation regime):
# the 3-stage small ResNet on 300 training images per class, no crop/flip augmentation, a constant
# learning rate for 25 epochs, tested on a fixed stratified 2,000-image part of the test set. Without
# augmentation CE fits the noisy labels within ~10 epochs (test accuracy peaks near epoch 5, then falls),
# as a paper-scale network does late in its schedule; with crop/flip and this small net it never does, and
# a comparison with CE would say nothing about robustness. About 4 s per CE epoch on one CPU core.
MINI_CIFAR: dict[str, Any] = dict(model="cnn_small", epochs=25, batch_size=128, lr=0.05, nesterov=True,
                                  weight_decay=5e-4, schedule="constant", subset=300, test_subset=200,
                                  augment=False)  # preset keys that configure the trial rather than the method


@dataclass(frozen=True)
class TrainHparams:
    """The training recipe every method has: network, epochs, batch, SGD and learning-rate schedule."""

    model: str = "preact_resnet18"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"  # step | cosine | constant
    milestones: tuple[int, ...] = (150,)  # epochs at which the step schedule multiplies lr by gamma
    gamma: float = 0.1
    eta_min: float = 0.0  # cosine floor


def make_sgd(params, hp: TrainHparams) -> torch.optim.SGD:
    """SGD with the recipe's momentum, weight decay and Nesterov flag (lr is set every epoch)."""
    import torch

    return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                           nesterov=hp.nesterov and hp.momentum > 0)


def lr_at(epoch: int, hp: TrainHparams) -> float:
    """The learning rate of a (0-based) epoch under the recipe's schedule."""
    if hp.schedule == "constant":
        return hp.lr
    if hp.schedule == "step":
        return hp.lr * hp.gamma ** sum(epoch >= m for m in hp.milestones)
    if hp.schedule == "cosine":
        return hp.eta_min + 0.5 * (hp.lr - hp.eta_min) * (1 + math.cos(math.pi * epoch / max(1, hp.epochs)))
    raise LnlError(f"unknown lr schedule '{hp.schedule}'; use step, cosine or constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def preset_overrides(presets: dict, preset: str, dataset: str, noise: str, rate: float | None) -> dict:
    """The merged overrides of a preset for one (dataset, noise, rate) cell."""
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "(none)"
        raise LnlError(f"unknown preset '{preset}'; this method has: {known}")
    table = presets[preset]
    merged: dict[str, Any] = {}
    for key in preset_keys(dataset, noise, rate):
        merged.update(table.get(key, {}))
    return merged


def preset_keys(dataset: str, noise: str, rate: float | None) -> list[str]:
    """The preset keys of one (dataset, noise, rate) cell, most general first (later entries win)."""
    keys = [dataset, f"{dataset}/{noise}"]
    if rate is not None:
        keys.append(f"{dataset}/{noise}@{rate:g}")
    return keys


def check_waiting(method: str, waiting: dict[str, str], dataset: str, noise: str, rate: float | None) -> None:
    """A one-line error when the cell's recipe is marked as waiting (``Method.WAITING``) for a part that is
    not registered yet, so asking for it names what is missing instead of failing somewhere later."""
    for key in preset_keys(dataset, noise, rate):
        if key in waiting:
            raise LnlError(f"{method}'s recipe for '{key}' cannot run yet: {waiting[key]}")


def build_hparams(cls: type, overrides: dict[str, Any]) -> Any:
    """Instantiate a hyperparameter dataclass, with a one-line error for unknown or ill-typed fields."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise LnlError(f"unknown hyperparameter(s) {', '.join(unknown)} for {cls.__qualname__}; "
                       f"known: {', '.join(sorted(names))}")
    values = {}
    for key, val in overrides.items():
        default = getattr(cls, key, None) if names[key].default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            if isinstance(val, (list, tuple)):
                val = tuple(val)
            elif isinstance(val, (int, float)) and not isinstance(val, bool):
                val = (val,)  # `--hp milestones=20` means (20,)
            else:
                raise LnlError(f"hyperparameter {key} must be a list such as [100, 150], got {val!r}")
        elif isinstance(default, bool) and not isinstance(val, bool):
            raise LnlError(f"hyperparameter {key} must be true or false, got {val!r}")
        elif isinstance(default, float) and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        elif isinstance(default, (int, float)) and not isinstance(val, (int, float)):
            raise LnlError(f"hyperparameter {key} must be a number, got {val!r}")
        values[key] = val
    return cls(**values)
