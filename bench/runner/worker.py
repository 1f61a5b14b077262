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

**Ranks.** With ``num_workers > 1`` every Train worker runs ``run_trial`` inside Ray Train's process group
and the engine trains data-parallel (:mod:`lnlbench.distributed`: sharded global batches, averaged
gradients, rank 0 evaluates and writes the trial folder). Every rank reports each time (Ray Train's
``report`` is collective); rank 0 decides when and alone attaches the checkpoint.

**Fault injection (tests only).** If ``run["fault_dir"]`` (``$LNLBENCH_FAULT_DIR`` of the driver) holds
``<trial_id>.once``, the worker deletes the file and raises after the first epoch of the attempt has been
checkpointed and reported; ``<trial_id>.always`` raises so in every attempt.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from lnlbench.engine import run_trial
from lnlbench.files import atomic_write

CKPT_FILE = "checkpoint.pt"
CKPT_META = "lnlbench_checkpoint.json"
RESULT_KEYS = ("status", "best_acc", "last_acc", "final_acc", "epochs_done", "wall_time_s")
REPORT_EVERY_S = 10.0  # at most one report (and checkpoint copy) to Ray per this many seconds
Report = Callable[..., None]


class InjectedFault(RuntimeError):
    """The error a test's fault marker raises inside a worker."""


# -- the trial folder ----------------------------------------------------------------------------------
def trial_dir(cell: dict[str, Any], trial_id: str) -> Path:
    return Path(cell["out_dir"]) / trial_id


def finished_result(cell: dict[str, Any], run: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's result.json if it finished (``status: ok``), else None (read from the storage)."""
    tid = run["trial_id"]
    try:
        if run.get("remote"):
            from .storage import read_text

            text = read_text(f"{run['storage']}/trials/{tid}/result.json") or "{}"
        else:
            text = (trial_dir(cell, tid) / "result.json").read_text()
        result = json.loads(text)
    except (OSError, ValueError):
        return None
    return result if result.get("status") == "ok" and result.get("trial_id") == tid else None


def reported_finished(cell: dict[str, Any], run: dict[str, Any]) -> bool:
    """A finished trial (its result.json says ok) is reported to Tune as it is, without training."""
    done = finished_result(cell, run)
    if done is not None:
        ray.tune.report(summary(done, run["trial_id"]))
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


def maybe_fault(run: dict[str, Any], trial_id: str) -> None:
    fault_dir = run.get("fault_dir")
    if not fault_dir:
        return
    once, always = Path(fault_dir) / f"{trial_id}.once", Path(fault_dir) / f"{trial_id}.always"
    if always.exists():
        raise InjectedFault(f"injected fault (always) in {trial_id}")
    with contextlib.suppress(FileNotFoundError):
        once.unlink()
        raise InjectedFault(f"injected fault (once) in {trial_id}")


def epoch_hook(report: Report, ckpt_cls: type | None, run: dict[str, Any], trial_id: str, rank: int = 0):
    """The engine's ``on_epoch_end``: report to Ray, with a copy of the engine's latest checkpoint.

    Reports go out on the first epoch of an attempt and then at most every ``run["report_every_s"]``
    seconds: a report is a round trip through Ray and a checkpoint copy, which would otherwise cost more
    than a small model's epoch. So Ray's checkpoint lags the engine's by at most that interval, which
    only matters where the trial folder is lost (URI storage on a fresh node). ``ckpt_cls=None``: report
    metrics only (the light executor on a local or shared path, where the trial folder is the resume point).
    """
    from lnlbench.distributed import Dist

    seen: dict[str, Any] = {"stamp": None, "calls": 0, "last": 0.0}
    dist = Dist()
    every = float(run.get("report_every_s", REPORT_EVERY_S))

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
        if seen["calls"] == 1:  # the first epoch of this attempt, once it is checkpointed and reported
            maybe_fault(run, trial_id)
    return hook


# -- shared data ---------------------------------------------------------------------------------------
def dataset_key(name: str, data_root: str | None, data_file: str | None) -> str:
    """Which loaded dataset a cell uses (the arguments of ``lnlbench.data.load_dataset``)."""
    return json.dumps([name, data_root, data_file])


@contextlib.contextmanager
def shared_datasets(refs: dict[str, Any] | None) -> Iterator[None]:
    """While a trial runs, datasets the driver put in the object store are read from it (zero-copy).

    The engine loads its dataset through ``lnlbench.data.load_dataset``; this swaps that one function,
    in this worker process only and for the duration of the trial, for a lookup in ``refs`` (falling back
    to the real loader for any other dataset). The image arrays stay read-only shared memory; the small
    label arrays are copied so nothing downstream can trip on a read-only array.
    """
    if not refs:
        yield
        return
    import lnlbench.data as data_module

    original = data_module.load_dataset

    def load(name: str, data_root: str | None = None, data_file: str | None = None, download: bool = False):
        ref = refs.get(dataset_key(name, data_root, data_file))
        if ref is None:
            return original(name, data_root, data_file, download)
        info = ray.get(ref)
        labels = {f.name: getattr(info, f.name).copy() for f in dataclasses.fields(info)
                  if f.name.startswith("y_") and getattr(info, f.name) is not None}
        return dataclasses.replace(info, **labels)

    data_module.load_dataset = load
    try:
        yield
    finally:
        data_module.load_dataset = original


def _run(cell: dict[str, Any], run: dict[str, Any], hook: Callable, refs: dict[str, Any] | None) -> dict:
    torch.set_num_threads(max(1, int(run.get("cpus_per_worker", 1))))
    # Shared arrays are read-only; the engine only reads its test images, which may alias them.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    try:
        with shared_datasets(refs):
            return run_trial(cell, raise_on_error=True, on_epoch_end=hook)
    finally:
        if run.get("remote"):
            from .storage import upload_trial

            upload_trial(trial_dir(cell, run["trial_id"]), run["storage"])


# -- the Train executor --------------------------------------------------------------------------------
def train_worker(config: dict[str, Any]) -> None:
    """Every Ray Train rank runs this: resume point, ``run_trial``, epoch reports with checkpoints."""
    cell, run = config["cell"], config["run"]
    tid = run["trial_id"]
    ctx = ray.train.get_context()
    if ctx.get_world_size() > 1 and torch.cuda.is_available() and cell.get("device", "auto") == "auto":
        device = ray.train.torch.get_device()  # this rank's GPU
        torch.cuda.set_device(device)
        cell = {**cell, "device": str(device)}
    restore_checkpoint(ray.train.get_checkpoint(), trial_dir(cell, tid))
    hook = epoch_hook(ray.train.report, ray.train.Checkpoint, run, tid, ctx.get_world_rank())
    result = _run(cell, run, hook, config.get("data"))
    ray.train.report(summary(result, tid))


def train_trial(config: dict[str, Any], data: dict[str, Any] | None = None) -> None:
    """One Tune trial = one grid cell, trained by a Ray Train ``TorchTrainer`` named after the trial id."""
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cell, run = config["trial"]["cell"], config["trial"]["run"]
    tid = run["trial_id"]
    if reported_finished(cell, run):
        return
    gpus = float(run["gpus_per_worker"])
    per_worker = {"CPU": float(run["cpus_per_worker"]), **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_worker, train_loop_config={"cell": cell, "run": run, "data": data},
        scaling_config=ray.train.ScalingConfig(num_workers=int(run["num_workers"]), use_gpu=gpus > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=tid, storage_path=run["train_storage"], callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=int(run["max_failures"])),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
    trainer.fit()


# -- the light executor --------------------------------------------------------------------------------
def light_trial(config: dict[str, Any], data: dict[str, Any] | None = None) -> None:
    """One Tune trial = one grid cell, trained in the Tune trial's own process (no Ray Train)."""
    cell, run = config["trial"]["cell"], config["trial"]["run"]
    tid = run["trial_id"]
    if reported_finished(cell, run):
        return
    restore_checkpoint(ray.tune.get_checkpoint(), trial_dir(cell, tid))
    hook = epoch_hook(ray.tune.report, ray.tune.Checkpoint if run.get("remote") else None, run, tid)
    result = _run(cell, run, hook, data)
    ray.tune.report(summary(result, tid))
