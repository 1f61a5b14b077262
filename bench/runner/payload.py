"""What each Tune trial receives from the driver: its cell's trial config and how to run it (no Ray here).

The driver builds one :class:`TrialPayload` per cell (:func:`lnlbench.runner.ray_runner.trial_payloads`)
and Tune hands it to the trial function (:mod:`lnlbench.runner.worker`) as ``config["trial"]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lnlbench.config import TrialConfig

REPORT_EVERY_S = 10.0  # at most one report (and checkpoint copy) to Ray per this many seconds


@dataclass(frozen=True)
class RunOptions:
    """How one trial runs: where the grid stores things, its workers' resources, its retries."""

    trial_id: str
    storage: str  # the grid's run folder (a path or a URI)
    remote: bool  # storage is a URI (s3://, gs://): the trial folder is uploaded after the trial
    train_storage: str  # where Ray Train keeps its runs (train executor)
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    report_every_s: float = REPORT_EVERY_S
    session: str = ""  # one per driver run: a deterministic failure is not retried within it


@dataclass(frozen=True)
class TrialPayload:
    """One grid cell as Tune runs it."""

    cell: TrialConfig
    run: RunOptions

    @property
    def trial_id(self) -> str:
        return self.run.trial_id

    @property
    def trial_dir(self) -> Path:
        """The engine's trial folder on this machine."""
        return Path(self.cell.out_dir) / self.run.trial_id
