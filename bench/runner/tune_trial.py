"""One search trial of ``lnlbench tune``, inside Ray: a sampled configuration trained on a search unit.

The unit's cells (noise settings × search seeds) train in lockstep, one epoch of each, then one report to
Tune built by :func:`lnlbench.runner.tune_spec.objective_metrics` from their noisy-validation accuracies
and losses alone: the epoch record's test accuracy (and any clean-label figure) stays in the cells'
result.json files and never reaches the searcher or ASHA. Each cell is an ordinary engine trial (its
own folder, checkpoint and result.json), so a relaunched search trial resumes every cell from its
checkpoint and a finished cell is read back, not retrained.

A configuration that diverges (a non-finite loss: an lr too high) is a result, not an error: it reports
objective 0 with ``diverged`` and stops; any other error fails the search trial (Tune records it).
"""
from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import ray.tune
import torch

from lnlbench.config import TrialConfig, resolve
from lnlbench.engine import NonFiniteError, Trial, record_failure

from .tune_spec import SearchUnit, objective_metrics
from .worker import shared_loader


def plain(value: Any) -> Any:
    """A sampled value as plain Python (Tune may hand numpy scalars; YAML and trial ids want Python)."""
    return value.item() if isinstance(value, np.generic) else value


class Cell:
    """One cell of a search trial: an engine :class:`Trial`, or the history of one that finished before."""

    def __init__(self, config: dict[str, Any], load: Any):
        self.trial = Trial(resolve(TrialConfig.from_dict(config)), load=load)
        self.epochs = self.trial.trial.hparams.epochs
        done = self._finished()
        self.history = done["history"] if done else None
        self.first = len(self.history) if done else self.trial.start()
        # the first epoch of the method's own network (a discarded first-stage net's epochs are not scored)
        self.scored_from = int(done.get("scored_from_epoch") or 0) if done else self.trial.scored_from()

    def _finished(self) -> dict[str, Any] | None:
        try:
            res = json.loads((self.trial.dir / "result.json").read_text())
        except (OSError, ValueError):
            return None
        return res if res.get("status") == "ok" and res.get("trial_id") == self.trial.trial.trial_id else None

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Run ``epoch`` if this cell still has it to run; the record of that epoch (or its last one)."""
        if self.history is None and self.first <= epoch < self.epochs:
            self.trial.run_epoch(epoch)
        history = self.history if self.history is not None else self.trial.history
        return history[min(epoch, len(history) - 1)]

    def finish(self) -> None:
        if self.history is None:
            self.trial.finish()


def search_trial(config: dict[str, Any], units: dict[str, SearchUnit], data: dict[str, Any] | None = None,
                 threads: int = 1) -> None:
    """The Tune function: train the unit's cells with the sampled ``config["hp"]``, report each epoch."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    unit = units[config["unit"]]
    hp = {k: plain(v) for k, v in config["hp"].items()}
    load = shared_loader(data)
    cells: list[Cell] = []
    for c in unit.cells:
        cells.append(Cell({**c.config, "hparams": {**c.config["hparams"], **hp}}, load))
    last = max(cell.epochs for cell in cells)
    # from the first epoch a cell still has to run; every cell done already: its final epoch, reported again
    for epoch in range(min(min(cell.first for cell in cells), last - 1), last):
        try:
            recs = [cell.epoch(epoch) for cell in cells]
        except NonFiniteError as exc:
            for cell in cells:
                if cell.history is None:
                    record_failure(cell.trial, exc)
            ray.tune.report({**objective_metrics(epoch, [0.0], [None], unit.uid), "diverged": True})
            return
        except Exception as exc:
            for cell in cells:
                if cell.history is None:
                    record_failure(cell.trial, exc)
            raise
        ray.tune.report(objective_metrics(epoch, [r.get("val_acc") for r in recs],
                                          [r.get("loss") for r in recs], unit.uid,
                                          scored=all(epoch >= cell.scored_from for cell in cells)))
    for cell in cells:
        cell.finish()
