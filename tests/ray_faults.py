"""Test-side fault injection for the Ray runner tests (the production worker has no fault code).

The session's Ray runs :func:`install` in every worker process (``runtime_env``'s
``worker_process_setup_hook``). It wraps the worker's ``run_trial`` so that, after the first epoch of an
attempt has been checkpointed and reported, a marker ``<trial_id>.once`` in ``$LNLBENCH_TEST_FAULT_DIR``
is deleted and an :class:`InjectedFault` raised; ``<trial_id>.always`` raises so in every attempt.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

ENV = "LNLBENCH_TEST_FAULT_DIR"


class InjectedFault(RuntimeError):
    """The error a test's fault marker raises inside a worker."""


def maybe_fault(trial_id: str) -> None:
    fault_dir = os.environ.get(ENV)
    if not fault_dir:
        return
    once, always = Path(fault_dir) / f"{trial_id}.once", Path(fault_dir) / f"{trial_id}.always"
    if always.exists():
        raise InjectedFault(f"injected fault (always) in {trial_id}")
    with contextlib.suppress(FileNotFoundError):
        once.unlink()
        raise InjectedFault(f"injected fault (once) in {trial_id}")


def install() -> None:
    """Wrap ``lnlbench.runner.worker.run_trial`` in this worker process (idempotent)."""
    import lnlbench.runner.worker as worker

    if getattr(worker.run_trial, "_faulty", False):
        return
    original = worker.run_trial

    def run_trial(config, *, on_epoch_end=None, **kw):
        calls = [0]

        def hook(epoch, rec, ckpt_path):
            on_epoch_end(epoch, rec, ckpt_path)  # the worker's report (and checkpoint copy) first
            calls[0] += 1
            if calls[0] == 1:  # the first epoch of this attempt; the trial folder is named by its id
                maybe_fault(Path(ckpt_path).parent.name)
        return original(config, on_epoch_end=hook, **kw)

    run_trial._faulty = True
    worker.run_trial = run_trial
