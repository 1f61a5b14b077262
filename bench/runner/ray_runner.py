"""The driver: start or join Ray, size the grid to the cluster, run it with Ray Tune, resume it.

Layout of a run folder (``storage`` of the grid; ``RUN`` below)::

    RUN/grid.yaml          the validated spec (``lnlbench resume RUN`` reloads it)
    RUN/cells.json         the expanded cells: trial id → config (``lnlbench status RUN`` reads it)
    RUN/trials/<id>/       the engine's trial folders: result.json, events.jsonl, checkpoint.pt
    RUN/tune-<hash>/       the Tune experiment (named by a hash of the executor and the cell ids, so a
                           changed grid starts a new experiment and an unchanged one is restored)
    RUN/train/<id>/        the Ray Train run of each trial (``train`` executor): its checkpoints

Resume (``lnlbench resume RUN`` or ``lnlbench run`` on the same spec): if the Tune experiment can be
restored it is (``resume_unfinished``, and ``resume_errored`` unless ``--skip-failed``); otherwise a
fresh experiment runs the same cells. Either way, a trial whose ``result.json`` says ``ok`` is reported
back without training, and an unfinished one continues from its checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
import yaml

from lnlbench.config import TrialConfig
from lnlbench.errors import LnlError
from lnlbench.files import atomic_write

from . import worker
from .lock import driver_lock
from .payload import RunOptions, TrialPayload
from .resources import Resources, check_fit, concurrency
from .spec import Cell, GridSpec, check_writable, expand, trials_dir
from .status import collect

# Local clusters only: a shorter Train health-check poll and no preemption watcher cut Ray Train's
# per-trial start/stop time (ray-2.60.md); on a real cluster Ray's defaults stay.
LOCAL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "1"}
# The Tune trial of the train executor only waits on its TorchTrainer; it takes no CPU (Train's workers
# take theirs) and one byte of memory, because Tune refuses a trial that asks for nothing.
TRAIN_TRIAL_RESOURCES = {"cpu": 0, "memory": 1}


@dataclass
class Outcome:
    """What a grid run did: counts per state, the wall time and Ray's start-up time."""

    run_dir: str
    counts: dict[str, int]
    wall_s: float
    ray_start_s: float

    @property
    def ok(self) -> bool:
        return self.counts.get("failed", 0) == 0 and self.counts.get("pending", 0) == 0 and \
            self.counts.get("running", 0) == 0


def say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# -- Ray -----------------------------------------------------------------------------------------------
def start_ray(address: str | None, quiet: bool = True, verbose: bool = False, num_cpus: int | None = None) -> float:
    """Join ``address`` (or ``$RAY_ADDRESS``) or start a private local Ray; returns the seconds it took.

    An already initialised Ray (a test fixture, a notebook) is used as it is. Workers' output reaches
    the terminal only with ``verbose`` (a trial's errors are in its result.json either way).
    """
    if ray.is_initialized():
        return 0.0
    for key, val in QUIET_ENV.items():
        os.environ.setdefault(key, val)
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        for key, val in LOCAL_ENV.items():
            os.environ.setdefault(key, val)
    t0 = time.perf_counter()
    try:
        extra = {"num_cpus": num_cpus} if num_cpus is not None and address == "local" else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level="ERROR", configure_logging=True, **extra)
    except ConnectionError as exc:
        raise LnlError(f"cannot reach the Ray cluster at {address} ({exc}); check --address/RAY_ADDRESS") \
            from None
    return time.perf_counter() - t0


@contextlib.contextmanager
def private_ray(num_cpus: int | None = None) -> Iterator[float | None]:
    """A private local Ray for the block, shut down after it; yields its start-up seconds.

    A Ray that is already initialised is used as it is, left running, and yields None.
    """
    if ray.is_initialized():
        yield None
        return
    seconds = start_ray("local", num_cpus=num_cpus)
    try:
        yield seconds
    finally:
        ray.shutdown()


def cluster_nodes() -> list[dict[str, float]]:
    """CPU and GPU of every alive node of the connected cluster."""
    return [{"CPU": float(n["Resources"].get("CPU", 0)), "GPU": float(n["Resources"].get("GPU", 0))}
            for n in ray.nodes() if n.get("Alive")]


def share_datasets(cells: list[Cell]) -> dict[str, Any]:
    """Load every distinct dataset of the grid once and put it in the object store."""
    from lnlbench.config import parse_data_options
    from lnlbench.data import load_dataset

    refs: dict[str, Any] = {}
    for cell in cells:
        c = cell.config
        parsed = parse_data_options(c["dataset"], c.get("data_options") or {})
        opts = parsed.to_dict() if parsed is not None else None  # complete, as prepare() passes them
        key = worker.dataset_key(c["dataset"], c["data_root"], c["data_file"], opts)
        if key not in refs:
            refs[key] = ray.put(load_dataset(c["dataset"], c["data_root"], c["data_file"], c["download"], opts))
    return refs


# -- the run folder ------------------------------------------------------------------------------------
def write_manifest(spec: GridSpec, cells: list[Cell]) -> None:
    """grid.yaml and cells.json in the run folder, before anything runs."""
    grid = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    table = json.dumps({c.trial_id: c.config for c in cells}, indent=1)
    if spec.is_remote:
        from .storage import write_text

        write_text(f"{spec.storage}/grid.yaml", grid)
        write_text(f"{spec.storage}/cells.json", table)
        return
    for name, text in (("grid.yaml", grid), ("cells.json", table)):
        atomic_write(Path(spec.storage) / name, text)


def experiment_name(spec: GridSpec, cells: list[Cell]) -> str:
    """The Tune experiment of these cells and this executor: the same grid restores it, a changed one not."""
    key = "\n".join([spec.executor, *sorted(c.trial_id for c in cells)])
    return f"tune-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def trial_payloads(spec: GridSpec, cells: list[Cell], res: Resources, gpus: float) -> dict[str, TrialPayload]:
    """What each Tune trial receives, by trial id: its cell's TrialConfig and how to run it.

    Tune's search space holds only the trial ids (plain strings: Tune rewrites other objects); the
    payloads reach the trial functions through ``tune.with_parameters`` (the object store).
    """
    session = uuid.uuid4().hex[:12]  # this driver run (a resume is another)

    def options(tid: str) -> RunOptions:
        return RunOptions(trial_id=tid, storage=spec.storage, remote=spec.is_remote,
                          train_storage=f"{spec.storage}/train", num_workers=int(res.num_workers),
                          cpus_per_worker=float(res.cpus_per_worker), gpus_per_worker=float(gpus),
                          max_failures=int(spec.max_failures), session=session)
    return {c.trial_id: TrialPayload(TrialConfig.from_dict(c.config), options(c.trial_id)) for c in cells}


def trial_name(trial: Any) -> str:
    """Tune trial (and folder) name: the cell's trial id."""
    return trial.config["trial"]


# -- progress ------------------------------------------------------------------------------------------
PROGRESS_EVERY_S = 30.0  # at most one grid progress line (epochs / total per running trial, ETA) per this


class Progress(ray.tune.Callback):
    """One line per trial state change, with the overall count; and, while trials report epochs, a grid
    line (each running trial's epoch / total, the grid's ETA; read from the run folder) at most every
    :data:`PROGRESS_EVERY_S` seconds (local or mounted run folders only)."""

    def __init__(self, total: int, quiet: bool, run_dir: str | None = None):
        self.total, self.quiet, self.run_dir = total, quiet, run_dir
        self.done = self.failed = 0
        self.labels: dict[str, str] = {}
        self.last_line = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.quiet or self.run_dir is None or time.monotonic() - self.last_line < PROGRESS_EVERY_S:
            return
        self.last_line = time.monotonic()
        with contextlib.suppress(LnlError, OSError, ValueError):  # a progress line never stops the grid
            say(collect(self.run_dir).progress_line())

    def _line(self, trial: Any, what: str) -> None:
        tid = trial_name(trial)
        count = f"[{self.done + self.failed}/{self.total} finished, {self.failed} failed]"
        say(f"{count} {tid}: {what}", self.quiet)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        last = trial.last_result or {}
        acc = last.get("last_acc")
        self._line(trial, "done" + (f", last acc {acc:.4f}" if isinstance(acc, float) else ""))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self._line(trial, "FAILED (see its result.json)")


# -- the grid ------------------------------------------------------------------------------------------
def _tuner(spec: GridSpec, cells: list[Cell], payloads: dict[str, TrialPayload], data: dict | None, quiet: bool,
           max_concurrent: int, retry_failed: bool, explicit_k: bool = False) -> ray.tune.Tuner:
    fn = worker.train_trial if spec.executor == "train" else worker.light_trial
    trainable = ray.tune.with_parameters(fn, payloads=payloads, data=data)
    if spec.executor == "train":
        trainable = ray.tune.with_resources(trainable, TRAIN_TRIAL_RESOURCES)
    else:
        gpus = next(iter(payloads.values())).run.gpus_per_worker
        trainable = ray.tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_worker, "gpu": gpus})
    name = experiment_name(spec, cells)
    if explicit_k and ray.tune.Tuner.can_restore(f"{spec.storage}/{name}"):
        # A restored Tune experiment keeps its concurrency; a fresh one (named after the new limit) does not,
        # and loses nothing: trials skip what their result.json says is done and resume from checkpoint.pt.
        name = f"{name}-k{max_concurrent}"
        say(f"lnlbench: --max-concurrent {max_concurrent}: continuing in a fresh Tune experiment {name} "
            "(finished trials are skipped, unfinished ones resume from their checkpoints)", quiet)
    path = f"{spec.storage}/{name}"
    if ray.tune.Tuner.can_restore(path):
        say(f"resuming {path}", quiet)
        return ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=retry_failed)
    tune_retries = 0 if spec.executor == "train" else spec.max_failures  # Train retries its own workers
    return ray.tune.Tuner(
        trainable, param_space={"trial": ray.tune.grid_search(list(payloads))},
        # light: a trial actor runs the next trial too (torch and lnlbench stay imported: seconds per trial)
        tune_config=ray.tune.TuneConfig(
            max_concurrent_trials=max_concurrent, trial_name_creator=trial_name,
            trial_dirname_creator=trial_name, reuse_actors=spec.executor == "light"),
        run_config=ray.tune.RunConfig(
            name=name, storage_path=spec.storage, verbose=0,
            callbacks=[Progress(len(cells), quiet, None if spec.is_remote else spec.storage)],
            failure_config=ray.tune.FailureConfig(max_failures=tune_retries),
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=1)))


def run_grid(spec: GridSpec, *, address: str | None = None, max_concurrent: int | None = None,
             quiet: bool = False, retry_failed: bool = True, verbose: bool = False) -> Outcome:
    """Run (or finish) every cell of ``spec`` on Ray and return the per-state counts.

    The run folder (for a URI storage: its local staging folder) is locked for the run: a second driver on
    the same storage refuses before it starts Ray (see :mod:`lnlbench.runner.lock`)."""
    cells = expand(spec)
    check_writable(spec.storage)
    with driver_lock(Path(trials_dir(spec)).parent):
        return _run_locked(spec, cells, address, max_concurrent, quiet, retry_failed, verbose)


def _run_locked(spec: GridSpec, cells: list[Cell], address: str | None, max_concurrent: int | None,
                quiet: bool, retry_failed: bool, verbose: bool) -> Outcome:
    ray_start = start_ray(address, quiet, verbose)
    nodes = cluster_nodes()
    res = spec.resources
    check_fit(res, nodes)
    gpus = res.gpus(sum(n["GPU"] for n in nodes))
    if gpus == 0 and res.gpus_per_worker not in ("auto", 0, 0.0):
        say("lnlbench: note: the cluster has no GPU; trials run on CPU", quiet)
    k = max_concurrent or spec.max_concurrent or concurrency(res, nodes, len(cells))
    say(f"{spec.name}: {len(cells)} trials, {k} at a time, executor {spec.executor}, "
        f"{res.cpus_per_worker:g} CPU + {gpus:g} GPU per worker -> {spec.storage}", quiet)
    write_manifest(spec, cells)
    data = share_datasets(cells) if spec.share_data else None
    t0 = time.perf_counter()
    tuner = _tuner(spec, cells, trial_payloads(spec, cells, res, gpus), data, quiet, k, retry_failed,
                   explicit_k=max_concurrent is not None)
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if spec.is_remote:  # no local trial folders to read: Tune's own view
        counts = {"done": len(grid) - grid.num_errors, "running": 0, "failed": grid.num_errors, "pending": 0}
    else:
        counts = collect(spec.storage).counts()
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    say(f"{spec.name}: {summary} in {wall:.1f}s", quiet)
    return Outcome(spec.storage, counts, wall, ray_start)

