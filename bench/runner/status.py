"""The state of a run folder from its files alone (no Ray): per cell done / running / failed / pending.

Reads ``RUN/cells.json`` (written before the grid starts) and each ``RUN/trials/<id>/result.json``.
``running`` means the trial's result says so: it is running now, or its driver was stopped and
``lnlbench resume RUN`` will continue it from its checkpoint. Each trial shows epochs done / total, and
the grid an ETA (:meth:`RunStatus.eta_s`) from the times the trials' result.json files already record.
The leaderboard of a run is the aggregator's (``lnlbench.aggregate``), never a table of its own.
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
    epochs_total: int | None = None  # the trial's epochs (its hparams); None before it wrote a result
    wall_time_s: float = 0.0  # engine time so far (all attempts)

    @property
    def epochs(self) -> str:
        """``done/total`` (``done`` alone when the total is unknown)."""
        return f"{self.epochs_done}/{self.epochs_total}" if self.epochs_total else str(self.epochs_done)

    @property
    def s_per_epoch(self) -> float | None:
        return self.wall_time_s / self.epochs_done if self.epochs_done else None

    @property
    def remaining_s(self) -> float | None:
        """Engine time this trial still needs at its own pace so far (None if unknown)."""
        if self.state == "done":
            return 0.0
        if self.s_per_epoch is None or not self.epochs_total:
            return None
        return self.s_per_epoch * max(0, self.epochs_total - self.epochs_done)


@dataclass(frozen=True)
class RunStatus:
    run_dir: str
    cells: list[CellStatus]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.state == s for c in self.cells) for s in STATES}

    def eta_s(self) -> float | None:
        """Seconds until the grid ends, estimated from what the trial folders record.

        Running trials need their remaining epochs at their own pace; a pending trial is taken to last as
        long as the mean finished trial (else the mean projected running one); the work is shared by as
        many slots as trials run now (at least one). None when nothing has timed an epoch yet.
        """
        cells = [c for c in self.cells if c.state != "failed"]
        running = [c for c in cells if c.state == "running"]
        done = [c.wall_time_s for c in cells if c.state == "done" and c.wall_time_s]
        projected = [c.wall_time_s + c.remaining_s for c in running if c.remaining_s is not None]
        per_trial = (sum(done) / len(done)) if done else (sum(projected) / len(projected)) if projected else None
        pending = sum(c.state == "pending" for c in cells)
        if per_trial is None and (pending or running):
            return None
        left = sum(c.remaining_s if c.remaining_s is not None else per_trial for c in running)
        return (left + pending * (per_trial or 0.0)) / max(1, len(running))

    def progress_line(self) -> str:
        """``12 trials: 3 done, 2 running, ...; running: ab12cd 4/10, ...; ETA 0:03:10``."""
        from lnlbench.progress import duration

        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        running = [f"{c.trial_id[:12]} {c.epochs}" for c in self.cells if c.state == "running"]
        line = f"{len(self.cells)} trials: {counts}"
        if running:
            line += "; running: " + ", ".join(running)
        if any(c.state in ("running", "pending") for c in self.cells):
            line += f"; ETA {duration(self.eta_s())}"
        return line

    def table(self) -> str:
        lines = [f"{'trial':<56} {'state':<8} {'epochs':>9} {'s/epoch':>8} {'last acc':>8}  error"]
        for c in self.cells:
            acc = "" if c.last_acc is None else f"{c.last_acc:.4f}"
            pace = "" if c.s_per_epoch is None else f"{c.s_per_epoch:.2f}"
            lines.append(f"{c.trial_id:<56} {c.state:<8} {c.epochs:>9} {pace:>8} {acc:>8}  {c.error or ''}")
        lines.append(self.progress_line())
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
    total = (res.get("hparams") or {}).get("epochs")
    return CellStatus(folder.name, state, int(res.get("epochs_done") or 0), res.get("last_acc"),
                      message, _starts(folder), int(total) if total else None, float(res.get("wall_time_s") or 0.0))


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
