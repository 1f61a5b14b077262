"""Search spaces: what ``lnlbench tune`` may vary in a method's hyperparameters, as plain data.

A method declares ``SEARCH_SPACE`` beside its ``PRESETS`` (class attribute, no Ray): hyperparameter name →
one of::

    ("choice", [v1, v2, ...])       one of the values (the paper's grid)
    ("uniform", lo, hi)             a float in [lo, hi]
    ("loguniform", lo, hi)          a float whose log is uniform in [log lo, log hi] (0 < lo < hi)
    ("randint", lo, hi)             an integer in [lo, hi], both ends included

The runner turns these into Ray Tune's search-space objects at its edge (:mod:`lnlbench.runner.tune`);
nothing here imports Ray, so a method file stays plain Python and a space validates without Ray.
The values searched start from the recipe the grid's preset gives (``mini`` on digits, ``paper`` else):
only the named hyperparameters vary, every other one keeps its recipe value.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .errors import LnlError, unknown_keys

KINDS = ("choice", "uniform", "loguniform", "randint")

# Log-uniform SGD learning rate and weight decay, for a method whose paper gives no search of its own:
# a decade either side of the usual CIFAR recipes (lr 0.02, weight decay 5e-4).
SGD_SPACE: dict[str, tuple] = {"lr": ("loguniform", 2e-3, 0.2), "weight_decay": ("loguniform", 5e-5, 5e-3)}


def check_dimension(name: str, spec: Any) -> None:
    """One dimension of a space: a tuple of a known kind and valid bounds (one-line error otherwise)."""
    where = f"search space '{name}'"
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
        raise LnlError(f"{where} must be one of ({', '.join(repr(k) for k in KINDS)}, ...), got {spec!r}")
    kind = spec[0]
    if kind == "choice":
        if len(spec) != 2 or not isinstance(spec[1], (list, tuple)) or not spec[1]:
            raise LnlError(f"{where}: a choice is ('choice', [v1, v2, ...]), got {spec!r}")
        return
    if len(spec) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec[1:]):
        raise LnlError(f"{where}: {kind} takes two numbers (lo, hi), got {spec!r}")
    lo, hi = spec[1], spec[2]
    ordered = lo <= hi if kind == "randint" else lo < hi
    if not ordered:
        raise LnlError(f"{where}: the lower bound {lo} must be below the upper {hi}")
    if kind == "loguniform" and lo <= 0:
        raise LnlError(f"{where}: loguniform bounds must be > 0, got {lo}")
    if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise LnlError(f"{where}: randint bounds must be integers, got {spec!r}")


def check_space(method: str, hparams_cls: type, space: Mapping[str, Any]) -> None:
    """Every dimension names a hyperparameter of ``hparams_cls`` and is well formed."""
    names = {f.name for f in dataclasses.fields(hparams_cls)}
    unknown = set(space) - names
    if unknown:
        raise LnlError(f"{method} SEARCH_SPACE: {unknown_keys('hyperparameter', unknown, names)}")
    for name, spec in space.items():
        try:
            check_dimension(name, spec)
        except LnlError as exc:
            raise LnlError(f"{method} {exc}") from None


def space_of(method_cls: type, overrides: Mapping[str, Any] | None = None) -> dict[str, tuple]:
    """The space searched for a method: its ``SEARCH_SPACE`` (else :data:`SGD_SPACE`), without the
    hyperparameters the grid fixes through ``overrides`` (a fixed value is not searched)."""
    space = dict(getattr(method_cls, "SEARCH_SPACE", None) or SGD_SPACE)
    for key in overrides or {}:
        space.pop(key, None)
    return space


def to_plain(space: Mapping[str, tuple]) -> dict[str, list]:
    """The space as YAML-able lists (the recipe file's search record)."""
    return {k: [v[0], list(v[1])] if v[0] == "choice" else list(v) for k, v in space.items()}


def contains(spec: tuple, value: Any) -> bool:
    """Whether ``value`` lies in one dimension (tests check sampled values with it)."""
    kind = spec[0]
    if kind == "choice":
        return value in list(spec[1])
    if kind == "randint":
        return isinstance(value, int) and spec[1] <= value <= spec[2]
    return isinstance(value, float) and math.isfinite(value) and spec[1] <= value <= spec[2]
