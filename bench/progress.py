"""Live progress of a trial: a tqdm bar on a terminal, one plain line every few epochs in logs and CI.

:class:`TrialProgress` is an engine epoch hook (``run_trial(..., on_epoch_end=progress)``); ``lnlbench
trial`` uses it. Each update shows the epoch / total, the method's loss, the test accuracy, the
precision of the method's clean-sample selection where it is scored, the time per epoch and the ETA
(the mean epoch time of this run × the epochs left). It only reads the epoch record the engine already
made: no extra host sync, nothing on the device.
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

MODES = ("auto", "bar", "lines", "off")


def duration(seconds: float | None) -> str:
    """``0:03:07`` (hours:minutes:seconds), ``?`` when unknown."""
    return "?" if seconds is None else str(timedelta(seconds=max(0, round(seconds))))


def every_for(total: int) -> int:
    """Plain lines: about ten per trial (every epoch for short trials)."""
    return max(1, total // 10)


class TrialProgress:
    """Shows a trial's progress; ``mode`` auto = a bar if ``stream`` is a terminal, else plain lines."""

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, mode: str = "auto",
                 every: int | None = None):
        self.total, self.label = int(total), label
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode, self.every = mode, every or every_for(self.total)
        self.bar: Any = None
        self.epochs_seen = 0
        self.t_first: float | None = None  # when the first epoch of this run began (estimated)
        self.last = time.monotonic()

    def fields(self, epoch: int, rec: dict[str, Any]) -> dict[str, str]:
        """The figures of one epoch as text, in display order."""
        now = time.monotonic()
        per_epoch = now - self.last  # the whole epoch: training, evaluation, checkpoint
        self.last = now
        if self.t_first is None:
            self.t_first = now - per_epoch
        self.epochs_seen += 1
        mean = (now - self.t_first) / self.epochs_seen
        out = {}
        if isinstance(rec.get("loss"), (int, float)):
            out["loss"] = f"{rec['loss']:.4f}"
        if rec.get("test_acc") is not None:
            out["test acc"] = f"{rec['test_acc']:.4f}"
        precision = (rec.get("selection") or {}).get("precision")
        if precision is not None:
            out["sel prec"] = f"{precision:.3f}"
        out["s/epoch"] = f"{per_epoch:.2f}"
        out["ETA"] = duration(mean * (self.total - epoch - 1))
        return out

    def __call__(self, epoch: int, rec: dict[str, Any], ckpt_path: Path | None = None) -> None:
        if self.mode == "off":
            return
        fields = self.fields(epoch, rec)
        if self.mode == "bar":
            self._bar_update(epoch, fields)
        elif self.epochs_seen == 1 or (epoch + 1) % self.every == 0 or epoch + 1 == self.total:
            text = "  ".join(f"{k} {v}" for k, v in fields.items())
            head = f"{self.label}: " if self.label else ""
            print(f"{head}epoch {epoch + 1}/{self.total}  {text}", file=self.stream, flush=True)

    def _bar_update(self, epoch: int, fields: dict[str, str]) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=epoch, desc=self.label or None, unit="epoch",
                            file=self.stream, dynamic_ncols=True, leave=True)
        self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in fields.items() if k != "ETA"), refresh=False)
        self.bar.update(epoch + 1 - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
