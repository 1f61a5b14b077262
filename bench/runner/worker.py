"""What runs inside Ray: the Tune trial functions and the Ray Train worker loop around ``run_trial``.

Two executors, chosen per grid:

- ``train`` (default): the Tune trial :func:`train_trial` launches a Ray Train ``TorchTrainer`` whose
  worker :func:`train_worker` calls :func:`lnlbench.engine.run_trial`. The Train run is named after the
  trial id (a hash of the resolved config), so a relaunched trial finds its own Train run again.
- ``light``: the Tune trial :func:`light_trial` calls ``run_trial`` itself in a reused trial actor (no
  Train workers; a few seconds of overhead per trial instead of Train's 10–14 s or more), for CPU-only
  tiny grids such as the quickstart.

**Checkpoints: one source of truth, two copies that agree.** The engine writes ``checkpoint.pt`` in the
trial folder after every checkpointed epoch and resumes from it by itself. The runner's epoch hook then
reports *a copy of that same file* (plus ``lnlbench_checkpoint.json`` with the trial id and epoch) as the
Ray Train checkpoint (for ``light``: as the Tune checkpoint, with URI storage only), after the engine wrote
it, at most every ``REPORT_EVERY_S``. So the trial folder's checkpoint is never older than Ray's. On a
restart (Train's ``FailureConfig`` after a worker error, Tune relaunching the trial after a driver restart)
the worker keeps the trial folder's checkpoint when it has one (local disk or a shared NFS path: always),
and otherwise, e.g. with s3:// storage on a fresh node, copies Ray's checkpoint into the trial folder
first. Either way the engine resumes from ``checkpoint.pt``
and logs a ``resume`` event; nothing else decides where a trial continues.

**Finished trials are never rerun**: every trial function first reads the trial folder's ``result.json``;
``status: ok`` is reported back to Tune as it is, without training.

**Deterministic failures are not retried.** A trial that diverges (:class:`lnlbench.engine.NonFiniteError`)
or meets a user error (:class:`lnlbench.errors.LnlError`: a noise file for other data, ...) would fail the
same way again, so it is failed at once: the Train worker returns instead of raising (Train does not
retry), the Tune trial raises :class:`FinalFailure`, and a Tune retry in the same driver session (the
light executor's ``max_failures``) sees the ``final_failure.json`` marker and fails again without
training. A transient fault (a worker killed, a node lost) is still retried from the checkpoint. A later
``lnlbench resume`` is a new session and retries it (the user may have changed the code or data).

**Ranks.** With ``num_workers > 1`` every Train worker runs ``run_trial`` inside Ray Train's process group
and the engine trains data-parallel (:mod:`lnlbench.distributed`: sharded global batches, averaged
gradients, rank 0 evaluates and writes the trial folder). Every rank reports each time (Ray Train's
``report`` is collective); rank 0 decides when and alone attaches the checkpoint.

**Datasets from the object store.** With ``share_data`` the driver puts each dataset in the object store
once; :func:`shared_loader` is the loader the worker passes to ``run_trial`` (a parameter: nothing is
patched), which reads those and loads any other dataset as usual.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from lnlbench.data import load_dataset
from lnlbench.engine import NonFiniteError, run_trial
from lnlbench.errors import LnlError
from lnlbench.files import atomic_write
from lnlbench.types import DatasetInfo, DatasetLoader

from .payload import TrialPayload

CKPT_FILE = "checkpoint.pt"
CKPT_META = "lnlbench_checkpoint.json"
FINAL_MARKER = "final_failure.json"
RESULT_KEYS = ("status", "best_acc", "last_acc", "final_acc", "epochs_done", "wall_time_s")
DETERMINISTIC = (NonFiniteError, LnlError)  # errors that a retry would meet again
Report = Callable[..., None]


class FinalFailure(RuntimeError):
    """A trial failed deterministically (diverged, or a user error): it is not retried in this session."""


def final_failure(p: TrialPayload) -> str | None:
    """The error of a deterministic failure of this trial in this driver session, else None."""
    try:
        mark = json.loads((p.trial_dir / FINAL_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return mark.get("error") if isinstance(mark, dict) and mark.get("session") == p.run.session else None


def _mark_final(p: TrialPayload, exc: BaseException) -> str:
    error = f"{type(exc).__name__}: {exc}"
    atomic_write(p.trial_dir / FINAL_MARKER, json.dumps({"session": p.run.session, "error": error}))
    return error


# -- the trial folder ----------------------------------------------------------------------------------
def finished_result(p: TrialPayload) -> dict[str, Any] | None:
    """The trial's result.json if it finished (``status: ok``), else None (read from the storage)."""
    tid = p.trial_id
    try:
        if p.run.remote:
            from .storage import read_text

            text = read_text(f"{p.run.storage}/trials/{tid}/result.json") or "{}"
        else:
            text = (p.trial_dir / "result.json").read_text()
        result = json.loads(text)
    except (OSError, ValueError):
        return None
    return result if result.get("status") == "ok" and result.get("trial_id") == tid else None


def reported_finished(p: TrialPayload) -> bool:
    """A finished trial (its result.json says ok) is reported to Tune as it is, without training."""
    done = finished_result(p)
    if done is not None:
        ray.tune.report(summary(done, p.trial_id))
    return done is not None


def summary(result: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """The few figures reported to Tune at the end of a trial (the full record is result.json)."""
    out = {k: result.get(k) for k in RESULT_KEYS}
    return {**out, "trial_id": trial_id, "finished": True}


def restore_checkpoint(ckpt: ray.train.Checkpoint | None, folder: Path) -> None:
    """Copy Ray's checkpoint into the trial folder only where the folder has none of its own."""
    if ckpt is None or (folder / CKPT_FILE).exists():
        return
    with ckpt.as_directory() as src:
        if (Path(src) / CKPT_FILE).exists():
            with open(Path(src) / CKPT_FILE, "rb") as f:
                atomic_write(folder / CKPT_FILE, lambda out: shutil.copyfileobj(f, out))


def epoch_hook(report: Report, ckpt_cls: type | None, p: TrialPayload, rank: int = 0):
    """The engine's ``on_epoch_end``: report to Ray, with a copy of the engine's latest checkpoint.

    Reports go out on the first epoch of an attempt and then at most every ``p.run.report_every_s``
    seconds: a report is a round trip through Ray and a checkpoint copy, which would otherwise cost more
    than a small model's epoch. So Ray's checkpoint lags the engine's by at most that interval, which
    only matters where the trial folder is lost (URI storage on a fresh node). ``ckpt_cls=None``: report
    metrics only (the light executor on a local or shared path, where the trial folder is the resume point).
    """
    from lnlbench.distributed import Dist

    seen: dict[str, Any] = {"stamp": None, "calls": 0, "last": 0.0}
    dist = Dist()
    every, trial_id = p.run.report_every_s, p.trial_id

    def hook(epoch: int, rec: dict[str, Any], ckpt_path: Path) -> None:
        seen["calls"] += 1
        now = time.monotonic()
        due = seen["calls"] == 1 or now - seen["last"] >= every
        if dist.active:  # ray.train.report is collective: every rank follows rank 0's clock
            due = dist.broadcast_object(due)
        if due:
            seen["last"] = now
            metrics = {"epoch": epoch, "test_acc": rec.get("test_acc"), "trial_id": trial_id}
            # The engine replaces the file atomically on each save: a new inode or mtime = a new checkpoint.
            stat = ckpt_path.stat() if ckpt_path.exists() else None
            stamp = None if stat is None else (stat.st_ino, stat.st_mtime_ns)
            if ckpt_cls is not None and rank == 0 and stamp is not None and stamp != seen["stamp"]:
                seen["stamp"] = stamp
                with tempfile.TemporaryDirectory(prefix="lnlbench-ckpt-") as tmp:
                    shutil.copy2(ckpt_path, Path(tmp) / CKPT_FILE)
                    (Path(tmp) / CKPT_META).write_text(json.dumps({"trial_id": trial_id, "epoch": epoch}))
                    report(metrics, checkpoint=ckpt_cls.from_directory(tmp))
            else:
                report(metrics)
    return hook


# -- shared data ---------------------------------------------------------------------------------------
def dataset_key(name: str, data_root: str | None, data_file: str | None, options: dict | None = None) -> str:
    """Which loaded dataset a cell uses (the arguments of ``lnlbench.data.load_dataset``)."""
    return json.dumps([name, data_root, data_file] + ([options] if options else []), sort_keys=True)


def shared_loader(refs: dict[str, Any] | None) -> DatasetLoader:
    """The loader a worker passes to ``run_trial``: datasets the driver put in the object store (zero-copy),
    :func:`lnlbench.data.load_dataset` for any other.

    The image arrays stay read-only shared memory; the small label arrays are copied so nothing
    downstream can trip on a read-only array.
    """
    def load(name: str, data_root: str | None = None, data_file: str | None = None,
             download: bool = False, options: dict | None = None, stream: bool | None = None) -> DatasetInfo:
        ref = (refs or {}).get(dataset_key(name, data_root, data_file, options))
        if ref is None or stream is not None:  # the driver loaded the dataset's own choice (stream unset)
            return load_dataset(name, data_root, data_file, download, options, stream)
        info = ray.get(ref)
        labels = {f.name: getattr(info, f.name).copy() for f in dataclasses.fields(info)
                  if f.name.startswith("y_") and getattr(info, f.name) is not None}
        return dataclasses.replace(info, **labels)
    return load


def _run(p: TrialPayload, hook: Callable, refs: dict[str, Any] | None) -> dict:
    torch.set_num_threads(max(1, int(p.run.cpus_per_worker)))
    # Shared arrays are read-only; the engine only reads its test images, which may alias them.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    try:
        return run_trial(p.cell, raise_on_error=True, on_epoch_end=hook, load=shared_loader(refs))
    except DETERMINISTIC as exc:  # result.json already says failed; a retry would fail the same way
        raise FinalFailure(f"{p.trial_id} failed and is not retried: {_mark_final(p, exc)}") from None
    finally:
        if p.run.remote:
            from .storage import upload_trial

            upload_trial(p.trial_dir, p.run.storage)


# -- the Train executor --------------------------------------------------------------------------------
def train_worker(config: dict[str, Any]) -> None:
    """Every Ray Train rank runs this: resume point, ``run_trial``, epoch reports with checkpoints."""
    p: TrialPayload = config["trial"]
    ctx = ray.train.get_context()
    if ctx.get_world_size() > 1 and torch.cuda.is_available() and p.cell.device == "auto":
        device = ray.train.torch.get_device()  # this rank's GPU
        torch.cuda.set_device(device)
        p = dataclasses.replace(p, cell=dataclasses.replace(p.cell, device=str(device)))
    restore_checkpoint(ray.train.get_checkpoint(), p.trial_dir)
    hook = epoch_hook(ray.train.report, ray.train.Checkpoint, p, ctx.get_world_rank())
    try:
        result = _run(p, hook, config.get("data"))
    except FinalFailure:  # return, so that Train does not retry; the Tune trial raises it (train_trial)
        ray.train.report({"status": "failed", "trial_id": p.trial_id, "finished": True})
        return
    ray.train.report(summary(result, p.trial_id))


def train_trial(config: dict[str, Any], payloads: dict[str, TrialPayload],
                data: dict[str, Any] | None = None) -> None:
    """One Tune trial = one grid cell, trained by a Ray Train ``TorchTrainer`` named after the trial id."""
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    p = payloads[config["trial"]]  # Tune's config holds the trial id
    if reported_finished(p):
        return
    run = p.run
    gpus = float(run.gpus_per_worker)
    per_worker = {"CPU": float(run.cpus_per_worker), **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_worker, train_loop_config={"trial": p, "data": data},
        scaling_config=ray.train.ScalingConfig(num_workers=run.num_workers, use_gpu=gpus > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=p.trial_id, storage_path=run.train_storage, callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
    trainer.fit()
    error = final_failure(p)
    if error is not None:
        raise FinalFailure(f"{p.trial_id} failed and is not retried: {error}")


# -- the light executor --------------------------------------------------------------------------------
def light_trial(config: dict[str, Any], payloads: dict[str, TrialPayload],
                data: dict[str, Any] | None = None) -> None:
    """One Tune trial = one grid cell, trained in the Tune trial's own process (no Ray Train)."""
    p = payloads[config["trial"]]  # Tune's config holds the trial id
    if reported_finished(p):
        return
    error = final_failure(p)
    if error is not None:  # Tune's retry of a deterministic failure: fail again without training
        raise FinalFailure(f"{p.trial_id} failed and is not retried: {error}")
    restore_checkpoint(ray.tune.get_checkpoint(), p.trial_dir)
    hook = epoch_hook(ray.tune.report, ray.tune.Checkpoint if p.run.remote else None, p)
    result = _run(p, hook, data)
    ray.tune.report(summary(result, p.trial_id))
