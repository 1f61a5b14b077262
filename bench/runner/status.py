"""The state of a run folder from its files alone (no Ray): per cell done / running / failed / pending.

Reads ``RUN/cells.json`` (written before the grid starts) and each ``RUN/trials/<id>/result.json``.
``running`` means the trial's result says so: it is running now, or its driver was stopped and
``lnlbench resume RUN`` will continue it from its checkpoint. The leaderboard of a run is the aggregator's
(``lnlbench.aggregate``), never a table of its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnlbench.errors import LnlError

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class CellStatus:
    trial_id: str
    state: str
    epochs_done: int = 0
    last_acc: float | None = None
    error: str | None = None
    starts: int = 0  # "start" + "resume" records in events.jsonl: how often the trial was (re)launched


@dataclass(frozen=True)
class RunStatus:
    run_dir: str
    cells: list[CellStatus]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.state == s for c in self.cells) for s in STATES}

    def table(self) -> str:
        lines = [f"{'trial':<56} {'state':<8} {'epochs':>6} {'last acc':>8}  error"]
        for c in self.cells:
            acc = "" if c.last_acc is None else f"{c.last_acc:.4f}"
            lines.append(f"{c.trial_id:<56} {c.state:<8} {c.epochs_done:>6} {acc:>8}  {c.error or ''}")
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        lines.append(f"{len(self.cells)} trials: {counts}")
        return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _starts(folder: Path) -> int:
    try:
        lines = (folder / "events.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return sum(json.loads(line).get("event") in ("start", "resume") for line in lines if line.strip())


def cell_status(folder: Path) -> CellStatus:
    """One trial folder's state from its result.json."""
    res = _read_json(folder / "result.json")
    if res is None:
        return CellStatus(folder.name, "pending")
    state = {"ok": "done", "running": "running", "failed": "failed"}.get(res.get("status"), "pending")
    err = res.get("error") or {}
    message = f"{err.get('type')}: {err.get('message')}" if err else None
    return CellStatus(folder.name, state, int(res.get("epochs_done") or 0), res.get("last_acc"),
                      message, _starts(folder))


def collect(run_dir: str | Path) -> RunStatus:
    """The state of every cell of a local run folder."""
    if "://" in str(run_dir):
        raise LnlError(f"status reads a local or mounted run folder; copy {run_dir} down first")
    run = Path(run_dir)
    cells_file = run / "cells.json"
    if cells_file.exists():
        ids = list(json.loads(cells_file.read_text()))
    elif (run / "trials").is_dir():
        ids = sorted(p.name for p in (run / "trials").iterdir() if p.is_dir())
    else:
        raise LnlError(f"{run} is not a run folder (no cells.json or trials/); give a grid's storage folder")
    return RunStatus(str(run), [cell_status(run / "trials" / tid) for tid in ids])
