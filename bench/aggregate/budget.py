"""Training budgets in the ours-vs-published comparison: how many epochs, on which network.

Several papers train far longer than the methods they are compared with (ProMix 600 epochs against DivideMix's
300; SOP+ 300 epochs on PreAct ResNet-18 against the CIFAR-N leaderboard's CE, 100 on ResNet-34), so the
comparison table shows each number's budget beside it and marks ‡ an unequal one (issue 21):

- **Ours.** The epochs and network our trials recorded (``result.json`` ``hparams``).
- **Published.** The epochs of the row's ``recipe`` (``epochs=300``) and its ``network``. A row whose recipe says
  ``epochs=paper`` (the number was produced with the paper's own recipe) takes the epochs of the method's
  ``paper`` preset for that cell; otherwise a row without epochs shows ``?``, never a guess.
- **‡.** A published budget that differs from the method's own ``paper`` preset for that cell, or from the
  budget of another published row of the same setting in the table (the baselines it is read against). Only
  what both sides state is compared: a ``?`` differs from nothing.

The ``paper`` preset is read through the method registry (which imports torch); in an analysis-only install
without it the preset is unknown and only the published rows are compared with each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lnlbench.errors import LnlError

from .labels import match_key, method_name, network_name

MARK = "‡"


@dataclass(frozen=True)
class Budget:
    """A training budget: epochs and the network's display name (None: not stated)."""

    epochs: int | None
    network: str | None

    def text(self) -> str:
        """``300 ep, PreAct ResNet-18``; ``?`` for what is not stated."""
        epochs = "?" if self.epochs is None else str(self.epochs)
        return f"{epochs} ep, {self.network or '?'}"

    def differs(self, other: Budget | None) -> bool:
        """Whether the two budgets differ on something both state (the network read spelling-proof, the
        pretraining note in parentheses ignored: ``ResNet-50 (ImageNet-pretrained)`` = ``ResNet-50``)."""
        if other is None:
            return False
        epochs = self.epochs is not None and other.epochs is not None and self.epochs != other.epochs
        nets = self.network and other.network and _net_key(self.network) != _net_key(other.network)
        return bool(epochs or nets)


def _net_key(network: str) -> str:
    return match_key(str(network).split("(")[0])


def _epochs(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else int(round(number))


def paper_budget(method: str, dataset: str, noise: str, rate: float | None) -> Budget | None:
    """The epochs and network of ``method``'s ``paper`` preset for the cell (``noise`` a label such as
    ``asymmetric:dividemix``; the preset is keyed by the noise name); None when the method is not registered,
    has no such preset, or the registry cannot be imported (no torch)."""
    try:  # the method registry imports torch; the aggregate itself never needs it
        from lnlbench.registry import METHODS

        if method not in METHODS:
            return None
        hp = METHODS.get(method).preset_hparams("paper", dataset, str(noise).partition(":")[0], rate)
    except (ImportError, AttributeError, TypeError, LnlError):  # no torch, a plugin without the hook or
        return None  # without default hyperparameters, no paper preset: unknown
    model = hp.get("model")
    return Budget(_epochs(hp.get("epochs")), network_name(model) if isinstance(model, str) else None)


def ours_budget(epochs: Any, model: Any) -> Budget:
    """Our cell's budget from its trials' recorded epochs and model."""
    return Budget(_epochs(epochs), network_name(model) if isinstance(model, str) and model else None)


def published_budget(recipe: dict[str, Any], network: str, paper: Budget | None) -> Budget:
    """A published row's budget: its recipe's epochs (``epochs=paper``: the paper preset's) and network."""
    epochs = recipe.get("epochs")
    if epochs == "paper":
        epochs = paper.epochs if paper else None
    return Budget(_epochs(epochs), network or None)


def budget_marks(rows: list[dict[str, Any]]) -> list[str]:
    """Per comparison row (``method``, ``base_method``, ``setting``, ``published_budget``, ``paper_budget``),
    the footnote of its ‡ mark, or "" when its published budget is the paper preset's and its setting's."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    notes = []
    for r in rows:
        theirs: Budget = r["published_budget"]
        reasons = []
        if theirs.differs(r["paper_budget"]):
            reasons.append(f"our paper preset for it trains {r['paper_budget'].text()}")
        others = {f"{method_name(o['method'], o['base_method'])} {o['published_budget'].text()}"
                  for o in by_setting[r["setting"]] if theirs.differs(o["published_budget"])}
        if others:
            reasons.append(f"the setting's other published rows: {'; '.join(sorted(others))}")
        notes.append(f"{MARK} {method_name(r['method'], r['base_method'])}, {r['setting']}: published with "
                     f"{theirs.text()}, but {', and '.join(reasons)}." if reasons else "")
    return notes
