"""``lnlbench tune``'s settings in a grid file (``scope``, ``tune:``), validated when the grid loads.

See :mod:`lnlbench.runner.tune_spec` for what they mean. Apart from it so the grid parser (spec) can check
them without importing the search units (which import the parser).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lnlbench.errors import LnlError, unknown_keys

SCOPES = ("cell", "dataset")
TUNE_KEYS = ("budget", "budget_hours", "val_fraction", "grace_period", "reduction_factor", "search_seed")


@dataclass(frozen=True)
class TuneSettings:
    """The search settings every unit of a tuning grid shares (the same budget for every method)."""

    budget: int = 12
    budget_hours: float | None = None
    val_fraction: float = 0.1
    grace_period: int | None = None
    reduction_factor: int = 3
    search_seed: int = 0


def check_tune(scope: str, tune: dict[str, Any], trial: dict[str, Any]) -> None:
    """The grid's ``scope`` and ``tune`` keys (every grid command validates them)."""
    if scope not in SCOPES:
        raise LnlError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    unknown = set(tune) - set(TUNE_KEYS)
    if unknown:
        raise LnlError(f"tune: {unknown_keys('key', unknown, TUNE_KEYS)}")
    parse_settings(tune, trial)


def _number(raw: dict[str, Any], key: str, kind: type, low: float, default: Any) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise LnlError(f"tune.{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < low:
        raise LnlError(f"tune.{key} must be ≥ {low}, got {value!r}")
    return kind(value)


def parse_settings(tune: dict[str, Any], trial: dict[str, Any], budget: int | None = None,
                   budget_hours: float | None = None) -> TuneSettings:
    """The search settings: the grid's ``tune:`` under the command line's ``--budget`` / ``--budget-hours``;
    the validation split is the grid's ``trial.val_fraction`` where it sets one."""
    raw = dict(tune)
    val = trial.get("val_fraction") or raw.get("val_fraction", 0.1)
    out = TuneSettings(
        budget=_number({"budget": budget or raw.get("budget", 12)}, "budget", int, 1, 12),
        budget_hours=_number({"budget_hours": budget_hours or raw.get("budget_hours")}, "budget_hours",
                             float, 1e-6, None),
        val_fraction=float(val), grace_period=_number(raw, "grace_period", int, 1, None),
        reduction_factor=_number(raw, "reduction_factor", int, 2, 3),
        search_seed=_number(raw, "search_seed", int, 0, 0))
    if not 0.0 < out.val_fraction < 0.5:
        raise LnlError(f"tune.val_fraction must be in (0, 0.5): the search needs a noisy validation split, got "
                       f"{out.val_fraction}")
    return out
