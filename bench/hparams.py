"""Hyperparameters shared by every method, recipes (presets), the optimiser and learning-rate schedules.

A method's hyperparameters are a frozen dataclass that extends :class:`TrainHparams` with the method's
own fields. Its ``PRESETS`` hold the published recipe (``paper``) and a CPU-scale one (``mini``), keyed by
dataset, then ``dataset/noise``, then ``dataset/noise@rate``, applied in that order (later wins)::

    PRESETS = {
        "paper": {"cifar10": dict(epochs=300, lr=0.02), "cifar10/asymmetric": dict(lambda_u=0)},
        "mini": {"digits": DIGITS_MLP, "cifar10": MINI_CIFAR.with_hparams(alpha=1.0)},
    }

An entry is a :class:`Recipe`: the method's hyperparameters and, apart, the trial :class:`Protocol` (training
subset, test subset, augmentation, the training pool it needs). A plain dict is a recipe of hyperparameters
only. The two never mix: a hyperparameter key is checked against the method's dataclass, a protocol key
against :class:`Protocol`, and a key that is neither is a one-line error when the recipe is built or looked
up, never dropped. ``epochs`` is a hyperparameter, not protocol: every method's schedule is a function of it
(cosine annealing, Co-teaching's linear decay to n_epoch, ramps), papers give it per method, and keeping it
in :class:`TrainHparams` keeps the trial ids of existing runs; ``--epochs`` overrides it.

**Coverage.** A table says which cells it covers by its keys. A dataset with ``dataset/noise@rate`` entries
(a per-setting table such as DivideMix's λ_u by rate) covers exactly those (noise, rate) cells, and, for
real noise without a rate, the noises with a ``dataset/noise`` entry; a dataset without rate entries is
covered whole by its ``dataset`` entry (``dataset/noise`` entries only specialise it); a dataset with no
entry is not covered. A lookup for a cell the table does not cover falls back to what applies and the
dataclass defaults, and says so: :class:`RecipeLookup` ``status`` is ``"default"`` with the ``missing`` key
(the engine writes it to ``result.json`` as ``recipe`` and prints one line on stderr); ``"preset"``
otherwise. An empty entry (``"cifar10/symmetric@0.4": {}``) declares a cell covered by the shallower ones.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import LnlError, unknown_keys

if TYPE_CHECKING:  # torch is imported where it is used, so configs validate without it
    import torch


@dataclass(frozen=True)
class Protocol:
    """How a trial is run apart from the method: the data it trains and tests on.

    ``None`` fields leave the choice to the trial (the user's option, else the default). ``train_pool`` is
    what the recipe needs the loaded training pool to hold: ``"all"`` (the dataset's whole training set) or
    a number of images; a dataset loader that caps its pool (Clothing1M's ``max_train``) below it stops the
    trial with a one-line error naming the cap option, instead of silently training on fewer.
    """

    subset: int | None = None  # training images per class
    test_subset: int | None = None  # test images per class (a fixed stratified part)
    augment: bool | None = None  # train-time crop/flip (None: on)
    train_pool: int | str | None = None  # "all" | images | None (whatever the loader holds)
    golden_per_class: int | None = None  # clean-labelled (golden) images per class carved out of training

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Protocol:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(d) - set(names)
        if unknown:
            raise unknown_keys("protocol key", unknown, names)
        pool = d.get("train_pool")
        if pool is not None and pool != "all" and not (type(pool) is int and pool > 0):
            raise LnlError(f"protocol train_pool must be 'all' or a positive number of images, got {pool!r}")
        golden = d.get("golden_per_class")
        if golden is not None and not (type(golden) is int and golden > 0):
            raise LnlError(f"protocol golden_per_class must be a positive number of images, got {golden!r}")
        return cls(**d)

    def set_fields(self) -> dict[str, Any]:
        """The fields this protocol sets (not None), to merge over another."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Recipe:
    """A preset entry: the method's hyperparameters and, apart, the trial protocol (see the module)."""

    hparams: Mapping[str, Any] = field(default_factory=dict)
    protocol: Protocol = field(default_factory=Protocol)

    def __post_init__(self) -> None:
        if isinstance(self.protocol, Mapping):  # Recipe(protocol=dict(subset=300)): validated here
            object.__setattr__(self, "protocol", Protocol.from_dict(self.protocol))
        clash = set(self.hparams) & {f.name for f in dataclasses.fields(Protocol)}
        if clash:
            names = ", ".join(f"'{k}'" for k in sorted(clash))
            raise LnlError(f"hyperparameter(s) {names} are trial protocol; put them in Recipe(protocol=...)")

    def with_hparams(self, **hparams: Any) -> Recipe:
        """This recipe with more (or other) hyperparameters; the protocol is kept."""
        return Recipe({**self.hparams, **hparams}, self.protocol)

    def with_protocol(self, **protocol: Any) -> Recipe:
        return Recipe(self.hparams, Protocol.from_dict({**self.protocol.set_fields(), **protocol}))


def as_recipe(entry: Recipe | Mapping[str, Any]) -> Recipe:
    """A preset entry as a :class:`Recipe` (a plain dict is hyperparameters only)."""
    return entry if isinstance(entry, Recipe) else Recipe(dict(entry))


# The CPU-scale CIFAR-10 protocol every method's ``mini`` preset builds on (the memorisation regime):
# the 3-stage small ResNet on 300 training images per class, no crop/flip augmentation, a constant
# learning rate for 25 epochs, tested on a fixed stratified 2,000-image part of the test set. Without
# augmentation CE fits the noisy labels within ~10 epochs (test accuracy peaks near epoch 5, then falls),
# as a paper-scale network does late in its schedule; with crop/flip and this small net it never does, and
# a comparison with CE would say nothing about robustness. About 4 s per CE epoch on one CPU core.
MINI_CIFAR = Recipe(
    hparams=dict(model="cnn_small", epochs=25, batch_size=128, lr=0.05, nesterov=True, weight_decay=5e-4,
                 schedule="constant"),
    protocol=Protocol(subset=300, test_subset=200, augment=False))

# The CPU-scale Tiny-ImageNet protocol (CE's and Co-teaching's ``mini`` entry): the same small ResNet and
# memorisation regime as MINI_CIFAR on 40 training images per class (8,000 of the 200 classes, 64×64) and a
# fixed 10-per-class (2,000) part of the validation set, 12 epochs: about 10 minutes of one CPU core per CE
# trial (64×64 costs ~4× a 32×32 image). A CPU check of the pipeline and the ranking, not a paper figure.
MINI_TINY = Recipe(
    hparams=dict(model="cnn_small", epochs=12, batch_size=128, lr=0.05, nesterov=True, weight_decay=5e-4,
                 schedule="constant"),
    protocol=Protocol(subset=40, test_subset=10, augment=False))

# The digits ``mini`` recipe (CE's, which the other methods' digits recipes build on): the 2-hidden-layer
# MLP long enough at a constant lr that CE memorises the noise (../shared/reference/cpu-calibration.md).
DIGITS_MLP: dict[str, Any] = dict(model="mlp", epochs=100, batch_size=64, lr=0.05, nesterov=False,
                                  weight_decay=5e-4, schedule="constant")

# The CIFAR-N CE recipe (UCSC-REAL/cifar-10-100n ``main.py``): ResNet-34, SGD lr 0.1 for 60 epochs then 0.01
# for 40, momentum 0.9, weight decay 5e-4, batch 128; the methods without a published CIFAR-N recipe use it.
# Protocol note: the CIFAR-N leaderboard reports the *best test accuracy over epochs*, chosen without a
# validation set (``main.py`` keeps the max test accuracy), i.e. model selection on the test labels. Our
# ``best_acc`` is that number; ``bench/grids/cifar-n.yaml`` also holds out a noisy validation split
# (``val_fraction: 0.1``), so every trial records ``selected_acc``: the test accuracy at the epoch the noisy
# validation accuracy picks, a noise-blind choice a user can make. Tables show both; compare published
# CIFAR-N figures with ``best_acc`` (trained on 90 % of the images here, the paper on 100 %).
CIFAR_N_CE: dict[str, Any] = dict(model="resnet34", epochs=100, batch_size=128, lr=0.1, nesterov=False,
                                  weight_decay=5e-4, schedule="step", milestones=(60,))


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

    # Fields (where the class has them) that must be > 0, and numbers that are probabilities or momenta in
    # [0, 1]; :func:`check_ranges` checks them when a trial resolves. A method's Hparams may extend either.
    POSITIVE: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr")
    PROBABILITIES: ClassVar[tuple[str, ...]] = ("momentum", "p_threshold", "forget_rate", "ema_alpha",
                                                "target_momentum", "k", "q")


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
    if hp.schedule == "cosine_restarts" and hasattr(hp, "restart_period"):
        return warm_restart_lr(epoch, hp.lr, hp.eta_min, hp.restart_period)
    raise LnlError(f"unknown lr schedule '{hp.schedule}'; use step, cosine or constant (cosine_restarts "
                   f"for methods with a restart_period)")


def warm_restart_lr(epoch: int, lr: float, eta_min: float, period: int) -> float:
    """torch's ``CosineAnnealingWarmRestarts(T_0=period, T_mult=1, eta_min)`` stepped once per epoch.

    Epoch e (0-based) trains at T_cur = e mod period: lr at the first epoch of each cycle, the cycle's
    minimum (just above eta_min) at its last. A method using it declares ``restart_period`` (ELR, CAR).
    """
    t = (epoch % max(1, int(period))) / max(1, int(period))
    return eta_min + 0.5 * (lr - eta_min) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class RecipeLookup:
    """A preset looked up for one (dataset, noise, rate) cell: the merged recipe and whether it covers it."""

    preset: str
    hparams: dict[str, Any]
    protocol: Protocol
    applied: tuple[str, ...]  # the table keys that applied, shallow to deep
    missing: str | None  # the key the table's depth asks for and lacks (None: the cell is covered)

    @property
    def status(self) -> str:
        return "default" if self.missing else "preset"

    def to_dict(self) -> dict[str, Any]:
        """What ``result.json`` records as ``recipe``."""
        return {"status": self.status, "missing": self.missing, "preset": self.preset,
                "applied": list(self.applied)}


def _cell_keys(dataset: str, noise: str, rate: float | None) -> list[str]:
    keys = [dataset, f"{dataset}/{noise}"]
    if rate is not None:
        keys.append(f"{dataset}/{noise}@{rate:g}")
    return keys


def _wanted(table: Mapping[str, Any], keys: list[str]) -> str:
    """The key that must be in the table for the cell to be covered (see the module's Coverage)."""
    dataset = keys[0]
    per_rate = any(k.partition("/")[0] == dataset and "@" in k for k in table)
    return keys[-1] if per_rate else dataset  # keys[-1] is dataset/noise for a rate-less (real) noise


def lookup_recipe(presets: Mapping[str, Any], preset: str, dataset: str, noise: str,
                  rate: float | None) -> RecipeLookup:
    """Merge a preset's entries for one cell (dataset, then dataset/noise, then dataset/noise@rate)."""
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "(none)"
        raise LnlError(f"unknown preset '{preset}'; this method has: {known}")
    table = presets[preset]
    hparams: dict[str, Any] = {}
    protocol: dict[str, Any] = {}
    applied = []
    keys = _cell_keys(dataset, noise, rate)
    for key in keys:
        if key in table:
            entry = as_recipe(table[key])
            hparams.update(entry.hparams)
            protocol.update(entry.protocol.set_fields())
            applied.append(key)
    wanted = _wanted(table, keys)
    missing = None if wanted in applied else wanted
    return RecipeLookup(preset, hparams, Protocol(**protocol), tuple(applied), missing)


def preset_overrides(presets: Mapping[str, Any], preset: str, dataset: str, noise: str,
                     rate: float | None) -> dict[str, Any]:
    """The merged hyperparameters of a preset for one (dataset, noise, rate) cell (no protocol)."""
    return lookup_recipe(presets, preset, dataset, noise, rate).hparams


def check_presets(method: str, hparams_cls: type, presets: Mapping[str, Any]) -> None:
    """Every entry of every preset: a recipe whose hyperparameters are fields of ``hparams_cls``.

    One-line error naming the method, preset and key; a protocol key in the hyperparameters is named as such.
    """
    names = {f.name for f in dataclasses.fields(hparams_cls)}
    protocol = {f.name for f in dataclasses.fields(Protocol)}
    for preset, table in presets.items():
        for key, entry in table.items():
            if not isinstance(entry, (Recipe, Mapping)):
                raise LnlError(f"{method} preset '{preset}' entry '{key}' is a {type(entry).__name__}; "
                               "use a Recipe or a dict of hyperparameters")
            where = f"{method} preset '{preset}' entry '{key}'"
            try:
                unknown = set(as_recipe(entry).hparams) - names
            except LnlError as exc:  # a protocol key among a plain dict's hyperparameters
                raise LnlError(f"{where}: {exc}") from None
            if unknown:
                hint = " (protocol keys go in Recipe(protocol=...))" if unknown & protocol else ""
                raise LnlError(f"{where}: {unknown_keys('hyperparameter', unknown, names)}{hint}")


def preset_keys(dataset: str, noise: str, rate: float | None) -> list[str]:
    """The preset keys of one (dataset, noise, rate) cell, most general first (later entries win)."""
    return _cell_keys(dataset, noise, rate)


def check_waiting(method: str, waiting: Mapping[str, str], dataset: str, noise: str, rate: float | None) -> None:
    """A one-line error when the cell's recipe is marked as waiting (``Method.WAITING``) for a part that is
    not registered yet, so asking for it names what is missing instead of failing somewhere later."""
    for key in _cell_keys(dataset, noise, rate):
        if key in waiting:
            raise LnlError(f"{method}'s recipe for '{key}' cannot run yet: {waiting[key]}")


def check_ranges(hp: Any) -> None:
    """One-line errors for out-of-range hyperparameters (batch 0, lr ≤ 0, a probability above 1), at
    resolve time: a grid that cannot run fails its ``--dry-run``, not inside a trial."""
    names = {f.name for f in dataclasses.fields(hp)}
    for key in getattr(hp, "POSITIVE", ()):
        val = getattr(hp, key, None)
        if key not in names or val is None:
            continue
        whole = key in ("epochs", "batch_size")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0 or (whole and val != int(val)):
            kind = "a positive integer" if whole else "a positive number"
            raise LnlError(f"hyperparameter {key} must be {kind}, got {val!r}")
    for key in getattr(hp, "PROBABILITIES", ()):
        val = getattr(hp, key, None)
        if key in names and isinstance(val, (int, float)) and not isinstance(val, bool):
            if not (0.0 <= float(val) <= 1.0) or math.isnan(float(val)):
                raise LnlError(f"hyperparameter {key} must be in [0, 1], got {val!r}")


def build_hparams(cls: type, overrides: dict[str, Any]) -> Any:
    """Instantiate a hyperparameter dataclass, with a one-line error for unknown or ill-typed fields."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise LnlError(f"{cls.__qualname__}: {unknown_keys('hyperparameter', unknown, names)}")
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
