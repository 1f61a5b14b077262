"""What ``lnlbench tune`` searches: the grid's search units, their budget and their objective. No Ray here.

A tuning grid is a run grid (:mod:`lnlbench.runner.spec`) read differently: its ``seeds`` are the search
seeds, its preset is the recipe the search starts from, and ``scope`` says what one search covers:

- ``scope: cell`` (default): one search per (method, dataset, noise setting); the recipe file gets one entry
  per setting (``digits/symmetric@0.5``).
- ``scope: dataset``: one search per (method, dataset) over all its noise settings, the CIFAR-N leaderboard's
  "one configuration per dataset" rule; the objective is the mean over the settings; one entry (``digits``).

The optional ``tune:`` mapping::

    tune:
      budget: 12            # trials per search, the same for every method (--budget overrides)
      budget_hours: null    # and/or device-hours per search (--budget-hours; Tune's time budget)
      val_fraction: 0.1     # the noisy validation split the objective reads (the grid's trial.val_fraction
                            #   if it sets one)
      grace_period: null    # ASHA: epochs before a trial can be stopped (default: a tenth of the epochs, ≥ 1)
      reduction_factor: 3   # ASHA: the fraction 1/η of trials kept at each rung
      search_seed: 0        # seeds the random sampler, so a search draws the same configurations again

**Noise-blind.** Every search trial holds out ``val_fraction`` of the *noisy* training set and the objective
is the mean accuracy on those noisy labels (:func:`objective_metrics` is the only way a metric reaches
Tune: a fixed set of keys, none of them test or clean-label figures).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from lnlbench.config import TrialConfig, resolve
from lnlbench.errors import LnlError
from lnlbench.registry import METHODS

from .spec import Cell, GridSpec, expand
from .tune_settings import TuneSettings, parse_settings

# The only metrics a search trial reports to Tune (objective and scheduler): noisy-validation accuracy and
# the training loss; never test accuracy, clean validation accuracy or sample-selection scores.
REPORTED = ("epoch", "objective", "val_accs", "train_loss", "unit", "diverged", "scored")


@dataclass(frozen=True)
class SearchUnit:
    """One search: a method on a dataset over one noise setting (scope cell) or all of them (dataset)."""

    method: str
    dataset: str
    key: str  # the recipe table key it writes (digits/symmetric@0.5 or digits)
    cells: tuple[Cell, ...]  # the base configurations (setting × search seed) every sampled trial trains
    epochs: int  # the most epochs of its cells (ASHA's max_t)

    @property
    def uid(self) -> str:
        """A short stable id (folder names): the method, the key and a hash of its cells."""
        digest = hashlib.sha256("\n".join(sorted(c.trial_id for c in self.cells)).encode()).hexdigest()[:8]
        safe = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in self.key)
        return f"{self.method}_{safe}_{digest}"

    def settings(self) -> list[dict[str, Any]]:
        """The noise settings it covers (the recipe's record)."""
        seen = {(c.config["noise"], c.config["rate"]): None for c in self.cells}
        return [{"noise": n, "rate": r} for n, r in seen]


def settings(spec: GridSpec, budget: int | None = None, budget_hours: float | None = None) -> TuneSettings:
    """The grid's search settings under the command line's ``--budget`` / ``--budget-hours``."""
    return parse_settings(spec.tune, spec.trial, budget, budget_hours)


def table_key(config: dict[str, Any]) -> str:
    """The preset key of a cell (lnlbench.hparams): dataset/noise@rate, or dataset/noise for real noise."""
    noise = str(config["noise"]).partition(":")[0]
    rate = config["rate"]
    return f"{config['dataset']}/{noise}" + ("" if rate is None else f"@{rate:g}")


def units(spec: GridSpec, tune: TuneSettings, out_dir: str) -> list[SearchUnit]:
    """Every search of the grid, its cells validated (trials under ``out_dir``), in grid order."""
    if spec.golden_add:
        raise LnlError("lnlbench tune does not tune golden_add rows; remove golden_add from the grid")
    search = dataclasses.replace(spec, trial={**spec.trial, "val_fraction": tune.val_fraction})
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in expand(search, out_dir):
        c = cell.config
        key = c["dataset"] if spec.scope == "dataset" else table_key(c)
        groups.setdefault((c["method"], c["dataset"], key), []).append(cell)
    out = []
    for (method, dataset, key), cells in groups.items():
        noises = {c.config["noise"] for c in cells}
        if spec.scope == "cell" and len(noises) > 1:
            raise LnlError(f"{method} on {dataset}: noise settings {', '.join(sorted(noises))} share the recipe key "
                           f"'{key}'; tune them with scope: dataset")
        epochs = max(resolve(TrialConfig.from_dict(c.config)).hparams.epochs for c in cells)
        out.append(SearchUnit(method, dataset, key, tuple(cells), epochs))
    return out


def space_for(unit: SearchUnit, spec: GridSpec) -> dict[str, tuple]:
    """The unit's method's search space, without what the grid's ``overrides`` fix."""
    from lnlbench.search import check_space, space_of

    cls = METHODS.get(unit.method)
    space = space_of(cls, spec.overrides.get(unit.method))
    check_space(unit.method, cls.Hparams, space)
    return space


def objective_metrics(epoch: int, val_accs: list[float | None], losses: list[float | None],
                      unit: str, scored: bool = True) -> dict[str, Any]:
    """The one dict a search trial reports to Tune per epoch: the mean noisy-validation accuracy over the
    unit's settings × seeds (``objective``), each of them, and the mean training loss. Built from those
    numbers alone, so nothing else of an epoch's record (test accuracy, clean validation, selection
    scores) can reach the searcher or the scheduler. ``scored``: the epoch is one of the method's own
    network (``Method.scored_from_epoch``); the winner's objective is the best scored epoch's."""
    if any(v is None for v in val_accs):
        raise LnlError("a search trial has no noisy validation accuracy; tune needs val_fraction > 0")
    finite = [float(x) for x in losses if x is not None]
    return {"epoch": epoch + 1, "objective": sum(val_accs) / len(val_accs), "val_accs": list(val_accs),
            "train_loss": sum(finite) / len(finite) if finite else None, "unit": unit, "diverged": False,
            "scored": scored}
