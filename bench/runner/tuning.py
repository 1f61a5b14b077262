"""``lnlbench tune``'s driver: a noise-blind Ray Tune search per search unit, the winners written back.

For every search unit (:mod:`lnlbench.runner.tune_spec`: a method on a dataset over one noise setting, or
over all of them with ``scope: dataset``) one Tune experiment samples ``budget`` configurations from the
method's ``SEARCH_SPACE`` (random search: Tune's ``BasicVariantGenerator``, seeded) and stops the poor
ones early with ASHA on the per-epoch report. One search trial trains the unit's cells (its noise
settings × the grid's seeds) in lockstep, epoch by epoch (:meth:`lnlbench.engine.Trial.run_epoch`), each
holding out a noisy validation split, and reports :func:`tune_spec.objective_metrics`: the mean *noisy*
validation accuracy and nothing else of the epoch. Every unit gets the same budget; the winner (the best
objective over its epochs, the ``selected`` metric's criterion) goes into ``<recipes>/<dataset>/<method>.yaml``
with its search record (:mod:`lnlbench.recipes`).

Layout of the run folder (``storage`` of the grid)::

    RUN/grid.yaml                   the validated spec
    RUN/search/trials/<id>/         the search trials' folders (result.json with their test accuracy, which
                                    no part of the search reads)
    RUN/search/search-<unit>/       the unit's Tune experiment (restored by a rerun)
    RUN/search/<unit>.json          the unit's finished search record (a rerun skips the unit)

Resume: rerunning ``lnlbench tune`` on the same grid skips finished units, restores an interrupted
unit's Tune experiment (unfinished trials relaunch and each cell continues from its ``checkpoint.pt``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import ray
import ray.tune
import yaml
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from lnlbench.config import TrialConfig, resolve
from lnlbench.errors import LnlError
from lnlbench.files import atomic_write
from lnlbench.recipes import write_entry
from lnlbench.search import to_plain
from lnlbench.types import DatasetLoader

from .lock import driver_lock
from .ray_runner import cluster_nodes, say, start_ray
from .resources import check_fit
from .spec import GridSpec, check_writable
from .tune_spec import SearchUnit, TuneSettings, settings, space_for, units
from .tune_trial import plain, search_trial


def tune_dimension(spec: tuple) -> Any:
    """One plain search dimension (lnlbench.search) as Ray Tune's search-space object."""
    kind = spec[0]
    if kind == "choice":
        return ray.tune.choice(list(spec[1]))
    if kind == "uniform":
        return ray.tune.uniform(float(spec[1]), float(spec[2]))
    if kind == "loguniform":
        return ray.tune.loguniform(float(spec[1]), float(spec[2]))
    return ray.tune.randint(int(spec[1]), int(spec[2]) + 1)  # Tune's upper bound is exclusive


class SearchProgress(ray.tune.Callback):
    """One line per search trial state change with the unit's count, as ``lnlbench run`` prints them."""

    def __init__(self, unit: str, total: int, quiet: bool):
        self.unit, self.total, self.quiet = unit, total, quiet
        self.done = self.failed = 0

    def _line(self, trial: Any, what: str) -> None:
        hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(trial.config.get("hp", {}).items()))
        say(f"[{self.done + self.failed}/{self.total} finished, {self.failed} failed] {self.unit} "
            f"{trial.trial_id} ({hp}): {what}", self.quiet)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        last = trial.last_result or {}
        obj, epoch = last.get("objective"), last.get("epoch")
        self._line(trial, f"done at epoch {epoch}" + (f", noisy-val {obj:.4f}" if isinstance(obj, float) else ""))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self._line(trial, "FAILED (see its trials' result.json)")


def _seed(unit: SearchUnit, tune: TuneSettings) -> int:
    """The sampler's seed: the grid's search_seed and the unit, so each unit draws its own configurations."""
    blob = f"{tune.search_seed}:{unit.method}:{unit.key}".encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16)


def _tuner(spec: GridSpec, unit: SearchUnit, tune: TuneSettings, data: dict | None, quiet: bool,
           max_concurrent: int) -> ray.tune.Tuner:
    trainable = ray.tune.with_parameters(search_trial, units={unit.uid: unit}, data=data,
                                         threads=max(1, int(spec.resources.cpus_per_worker)))
    gpus = 0.0 if spec.resources.gpus_per_worker == "auto" else float(spec.resources.gpus_per_worker)
    if spec.resources.gpus_per_worker == "auto":
        gpus = 1.0 if any(n["GPU"] for n in cluster_nodes()) else 0.0
    trainable = ray.tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_worker, "gpu": gpus})
    path = f"{spec.storage}/search/search-{unit.uid}"
    if ray.tune.Tuner.can_restore(path):
        say(f"resuming {path}", quiet)
        return ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    space = space_for(unit, spec)
    grace = tune.grace_period or max(1, unit.epochs // 10)
    scheduler = ASHAScheduler(time_attr="epoch", metric="objective", mode="max", max_t=unit.epochs,
                              grace_period=min(grace, unit.epochs), reduction_factor=tune.reduction_factor)
    return ray.tune.Tuner(
        trainable, param_space={"unit": unit.uid, "hp": {k: tune_dimension(v) for k, v in space.items()}},
        tune_config=ray.tune.TuneConfig(
            num_samples=tune.budget, scheduler=scheduler, max_concurrent_trials=max_concurrent,
            search_alg=BasicVariantGenerator(random_state=_seed(unit, tune)),
            time_budget_s=None if tune.budget_hours is None else tune.budget_hours * 3600.0),
        run_config=ray.tune.RunConfig(
            name=f"search-{unit.uid}", storage_path=f"{spec.storage}/search", verbose=0,
            callbacks=[SearchProgress(f"{unit.method} {unit.key}", tune.budget, quiet)],
            failure_config=ray.tune.FailureConfig(max_failures=spec.max_failures)))


def _trial_ids(unit: SearchUnit, hp: dict[str, Any]) -> list[str]:
    return [resolve(TrialConfig.from_dict({**c.config, "hparams": {**c.config["hparams"], **hp}})).trial_id
            for c in unit.cells]


def _device_hours(spec: GridSpec, ids: list[str]) -> float:
    total = 0.0
    for tid in ids:
        path = Path(spec.storage) / "search" / "trials" / tid / "result.json"
        try:
            total += float(json.loads(path.read_text()).get("device_hours") or 0.0)
        except (OSError, ValueError):
            continue
    return total


def _trials(spec: GridSpec, unit: SearchUnit, grid: Any) -> list[dict[str, Any]]:
    """Each search trial of a finished experiment: its values, objective (best and last epoch), epochs run."""
    out = []
    for r in grid:
        hp = {k: plain(v) for k, v in (r.config or {}).get("hp", {}).items()}
        df = r.metrics_dataframe
        epochs = int(df["epoch"].max()) if df is not None and "epoch" in df and len(df) else 0
        if df is not None and "scored" in df and "objective" in df:  # the method's own network's epochs
            df = df[df["scored"].fillna(True).astype(bool)]
        objs = [] if df is None or "objective" not in df else [float(x) for x in df["objective"].dropna()]
        diverged = bool(df is not None and "diverged" in df and df["diverged"].fillna(False).astype(bool).any())
        ids = _trial_ids(unit, hp)
        out.append({"hparams": hp, "objective": max(objs) if objs else None, "last_objective": objs[-1] if objs
                    else None, "epochs": epochs, "stopped_early": bool(objs) and epochs < unit.epochs and not diverged,
                    "diverged": diverged, "error": None if r.error is None else type(r.error).__name__,
                    "trial_ids": ids, "device_hours": _device_hours(spec, ids)})
    return out


def _record(spec: GridSpec, unit: SearchUnit, tune: TuneSettings, trials: list[dict[str, Any]],
            wall: float) -> dict[str, Any]:
    """The unit's search record (the recipe file's ``searches`` entry), with the winner first."""
    scored = [t for t in trials if t["objective"] is not None and t["error"] is None]
    if not scored:
        raise LnlError(f"{unit.method} {unit.key}: no search trial finished an epoch; see "
                       f"{spec.storage}/search/trials/*/result.json")
    best = max(scored, key=lambda t: t["objective"])  # ties: the first sampled (max keeps the first)
    first = unit.cells[0].config
    return {
        "winner": best["hparams"], "objective": best["objective"], "space": to_plain(space_for(unit, spec)),
        "budget": {"trials": tune.budget, "hours": tune.budget_hours}, "trials_run": len(trials),
        "device_hours": sum(t["device_hours"] for t in trials), "wall_s": round(wall, 1),
        "objective_name": "mean noisy-validation accuracy (best epoch)", "scope": spec.scope,
        "noise_settings": unit.settings(), "seeds": sorted({c.config["seed"] for c in unit.cells}),
        "val_fraction": tune.val_fraction, "subset": first.get("subset"), "epochs": unit.epochs,
        "searcher": "random (Tune BasicVariantGenerator)", "search_seed": tune.search_seed,
        "scheduler": {"name": "asha", "time_attr": "epoch", "grace_period": tune.grace_period or
                      max(1, unit.epochs // 10), "reduction_factor": tune.reduction_factor, "max_t": unit.epochs},
        "run": spec.storage, "trials": trials}


def _write_recipe(spec: GridSpec, unit: SearchUnit, record: dict[str, Any], recipes: str) -> Path:
    """The winner as the unit's recipe entry: the searched values and what the grid fixed (overrides, epochs)."""
    fixed = dict(spec.overrides.get(unit.method, {}))
    if spec.epochs is not None:
        fixed["epochs"] = spec.epochs
    hparams = json.loads(json.dumps({**fixed, **record["winner"]}, default=list))  # YAML-plain (no tuples)
    entry = {"hparams": hparams, "search": {"objective": record["objective"], "trials_run": record["trials_run"],
                                            "run": spec.storage}}
    search = {k: v for k, v in record.items() if k != "winner"}
    preset = unit.cells[0].config["preset"]
    base = resolve(TrialConfig.from_dict(unit.cells[0].config)).preset if preset == "auto" else preset
    return write_entry(recipes, unit.method, unit.dataset, spec.scope, base, unit.key, entry, search)


def _drop_checkpoints(spec: GridSpec, record: dict[str, Any]) -> None:
    """The checkpoints ASHA's stopped trials left (a finished search never resumes them)."""
    for t in record["trials"]:
        for tid in t["trial_ids"]:
            (Path(spec.storage) / "search" / "trials" / tid / "checkpoint.pt").unlink(missing_ok=True)


def run_unit(spec: GridSpec, unit: SearchUnit, tune: TuneSettings, data: dict | None, quiet: bool,
             max_concurrent: int, recipes: str) -> dict[str, Any]:
    """Search one unit (or restore its search), write its record and recipe entry; returns the record."""
    done = Path(spec.storage) / "search" / f"{unit.uid}.json"
    if done.exists():
        record = json.loads(done.read_text())
        say(f"{unit.method} {unit.key}: searched already ({record['trials_run']} trials) -> {done}", quiet)
    else:
        t0 = time.perf_counter()
        grid = _tuner(spec, unit, tune, data, quiet, max_concurrent).fit()
        record = _record(spec, unit, tune, _trials(spec, unit, grid), time.perf_counter() - t0)
        atomic_write(done, json.dumps(record, indent=1))
        _drop_checkpoints(spec, record)
    path = _write_recipe(spec, unit, record, recipes)
    win = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(record["winner"].items()))
    say(f"{unit.method} {unit.key}: best noisy-val {record['objective']:.4f} ({win}) of {record['trials_run']} "
        f"trials -> {path}", quiet)
    return record


def share(cells: list, load: DatasetLoader | None) -> dict[str, Any]:
    """Every distinct dataset of the search in the object store once (``load``: the loader, for tests)."""
    from lnlbench.config import parse_data_options
    from lnlbench.data import load_dataset

    from . import worker

    refs: dict[str, Any] = {}
    for cell in cells:
        c = cell.config
        parsed = parse_data_options(c["dataset"], c.get("data_options") or {})
        opts = parsed.to_dict() if parsed is not None else None
        key = worker.dataset_key(c["dataset"], c["data_root"], c["data_file"], opts)
        if key not in refs:
            refs[key] = ray.put((load or load_dataset)(c["dataset"], c["data_root"], c["data_file"],
                                                       c["download"], opts))
    return refs


def run_tune(spec: GridSpec, *, budget: int | None = None, budget_hours: float | None = None,
             recipes: str | None = None, address: str | None = None, max_concurrent: int | None = None,
             quiet: bool = False, verbose: bool = False, load: DatasetLoader | None = None) -> list[dict[str, Any]]:
    """Search every unit of ``spec`` with the same budget and write the winners' recipes; returns the records."""
    if spec.is_remote:
        raise LnlError("lnlbench tune needs a local or mounted storage folder (it reads its trials back); "
                       "give storage: a path")
    if spec.preset == "tuned":
        raise LnlError("a tuning grid starts from a preset (paper, mini or auto), not from preset: tuned")
    if spec.resources.num_workers > 1:
        raise LnlError("lnlbench tune runs each search trial in one process; use resources.num_workers: 1")
    tune = settings(spec, budget, budget_hours)
    todo = units(spec, tune, f"{spec.storage}/search/trials")
    check_writable(spec.storage)
    with driver_lock(Path(spec.storage)):
        start_ray(address, quiet, verbose)
        nodes = cluster_nodes()
        check_fit(dataclasses.replace(spec.resources, gpus_per_worker=0), nodes)
        k = max_concurrent or spec.max_concurrent or max(1, int(sum(n["CPU"] for n in nodes)
                                                              // spec.resources.cpus_per_worker))
        atomic_write(Path(spec.storage) / "grid.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        say(f"{spec.name}: {len(todo)} searches (scope {spec.scope}), {tune.budget} trials each"
            + (f" or {tune.budget_hours:g} h" if tune.budget_hours else "") + f", {k} at a time, ASHA on "
            f"noisy-val accuracy (val_fraction {tune.val_fraction:g}) -> {spec.storage}", quiet)
        data = share([c for u in todo for c in u.cells], load) if spec.share_data or load else None
        return [run_unit(spec, u, tune, data, quiet, k, recipes or spec.recipes) for u in todo]
