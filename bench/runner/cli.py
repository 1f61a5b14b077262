"""The ``run``, ``resume``, ``status``, ``tune`` and ``quickstart`` commands (declared in :data:`COMMANDS`, which
``lnlbench.cli`` reads).

Ray is imported only by the commands that start it: ``run --dry-run`` and ``status`` work without it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lnlbench.command import Command
from lnlbench.errors import LnlError

from .lock import describe
from .resources import check_fit, concurrency
from .spec import GridSpec, expand, load_spec, noise_names, parse_methods
from .status import collect

if TYPE_CHECKING:
    from .ray_runner import Outcome

GRIDS = Path(__file__).resolve().parent.parent / "grids"


def _grid(path: str, args: argparse.Namespace) -> GridSpec:
    spec = load_spec(path)
    if getattr(args, "executor", None):
        spec = dataclasses.replace(spec, executor=args.executor)
    if getattr(args, "storage", None):
        from .spec import resolve_storage

        spec = dataclasses.replace(spec, storage=resolve_storage(args.storage))
    if getattr(args, "preset", None):
        spec = dataclasses.replace(spec, preset=args.preset)
    if getattr(args, "recipes", None):
        from .spec import resolve_storage

        spec = dataclasses.replace(spec, recipes=resolve_storage(args.recipes))
    return spec


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto, ray://HOST:10001 or HOST:6379 (default: $RAY_ADDRESS, "
                        "else a private local Ray)")
    p.add_argument("--quiet", action="store_true", help="print only the final counts")
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' output")


def _finish(outcome: Outcome, quiet: bool) -> int:
    """The per-trial table (unless quiet), the timings, and exit code 1 if any trial is not done."""
    if not quiet and "://" not in outcome.run_dir:
        print(collect(outcome.run_dir).table())
    counts = ", ".join(f"{n} {state}" for state, n in outcome.counts.items())
    print(f"{counts}; ray start-up {outcome.ray_start_s:.1f}s, grid {outcome.wall_s:.1f}s; "
          f"lnlbench status {outcome.run_dir}", flush=True)
    return 0 if outcome.ok else 1


# -- run -----------------------------------------------------------------------------------------------
def dry_run(spec: GridSpec) -> int:
    """Print the expanded trials and their count; needs no Ray."""
    import torch

    cells = expand(spec)
    for cell in cells:
        print(f"{cell.trial_id}  {cell.label}")
    nodes = [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]
    try:
        check_fit(spec.resources, nodes)
        k = spec.max_concurrent or concurrency(spec.resources, nodes, len(cells))
        here = f"{k} at a time on this machine"
    except LnlError as exc:  # a cluster grid need not fit the machine that plans it
        here = f"not on this machine ({exc})"
    settings = sum(len(noise_names(n)) * len(n.rates) for n in spec.noise)
    axes = (f"datasets {len(spec.datasets)}, methods {len(spec.methods)}, noise settings {settings}, "
            f"seeds {len(spec.seeds)}")
    print(f"{len(cells)} trials ({axes}); executor {spec.executor}; {here}; "
          f"run folder {spec.storage}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = _grid(args.grid, args)
    if args.dry_run:
        return dry_run(spec)
    from .ray_runner import run_grid

    outcome = run_grid(spec, address=args.address, max_concurrent=args.max_concurrent, quiet=args.quiet,
                       verbose=args.verbose)
    return _finish(outcome, args.quiet)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", help="grid spec YAML (see bench/grids/*.yaml)")
    _ray_args(p)
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at once (default: the grid's max_concurrent, else what the cluster holds)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded trial list and its size; run nothing")
    p.add_argument("--executor", choices=["train", "light"], default=None,
                   help="train: each trial through a Ray Train TorchTrainer; light: a plain Tune function "
                        "(less overhead, CPU-only tiny grids). Default: the grid's")
    p.add_argument("--storage", default=None, help="override the grid's run folder (path or URI)")
    p.add_argument("--recipes", default=None, metavar="DIR",
                   help="tuned recipes for preset: tuned (default: the grid's recipes, else results/recipes)")
    p.add_argument("--preset", default=None,
                   help="override the grid's preset: paper | mini | auto | tuned (e.g. the untuned twin of a "
                        "tuned grid, with --storage)")



# -- resume --------------------------------------------------------------------------------------------
def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "grid.yaml").exists():
        raise LnlError(f"{run_dir} has no grid.yaml; give the run folder that `lnlbench run` printed")
    spec = dataclasses.replace(load_spec(run_dir / "grid.yaml"), storage=str(run_dir))
    from .ray_runner import run_grid

    outcome = run_grid(spec, address=args.address, quiet=args.quiet, retry_failed=not args.skip_failed,
                         verbose=args.verbose)
    return _finish(outcome, args.quiet)


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder of an interrupted grid (its storage)")
    _ray_args(p)
    p.add_argument("--skip-failed", action="store_true", help="do not retry trials that failed")



# -- status --------------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    status = collect(args.run_dir)
    print(status.table())
    driver = describe(args.run_dir) if "://" not in str(args.run_dir) else None
    if driver:
        print(driver)
    if status.counts()["done"]:
        print()
        print_leaderboard(args.run_dir, status=True)
    return 0


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder (local or mounted); read from its files, no Ray needed")



# -- quickstart ----------------------------------------------------------------------------------------
def print_leaderboard(run_dir: str, status: bool = False) -> None:
    """The aggregator's leaderboard of a run folder, cell for cell what ``lnlbench table RUN_DIR`` prints.

    An aggregator error is an error: it propagates (there is no second, simpler table to fall back to).
    Under ``status`` (whose state table already lists failed and running trials) skipped files are not
    repeated, and a run without a readable finished trial prints a line instead of stopping."""
    from lnlbench.aggregate.cli import board_text, report_problems
    from lnlbench.aggregate.frame import load_runs

    runs = load_runs([run_dir])
    if status and runs.trials.empty:
        print(f"(no leaderboard: none of the {runs.files} result files holds a readable finished trial)")
        return
    if not status:
        report_problems(runs)
    runs.require_trials()
    print(board_text(runs))


def quickstart_spec(args: argparse.Namespace) -> GridSpec:
    """The quickstart grid: its chosen methods (``methods:`` in quickstart.yaml, a fixed list so the run
    stays within minutes however many methods are registered), or ``--methods all`` / ``--methods a,b``."""
    spec = _grid(str(GRIDS / "quickstart.yaml"), args)
    chosen = getattr(args, "methods", None)
    if chosen:
        names = "all" if chosen.strip() == "all" else [m.strip() for m in chosen.split(",") if m.strip()]
        spec = dataclasses.replace(spec, methods=parse_methods(names))
    return spec


def cmd_quickstart(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    spec = quickstart_spec(args)
    from .ray_runner import run_grid

    outcome = run_grid(spec, address=args.address, quiet=args.quiet, verbose=args.verbose)
    print_leaderboard(outcome.run_dir)
    print(f"quickstart: {sum(outcome.counts.values())} trials in {time.perf_counter() - t0:.1f}s "
          f"(ray start-up {outcome.ray_start_s:.1f}s) -> {outcome.run_dir}")
    return 0 if outcome.ok else 1


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    _ray_args(p)
    p.add_argument("--executor", choices=["train", "light"], default=None,
                   help="default light: a plain Tune function per trial (Ray Train adds ~10-14 s per trial)")
    p.add_argument("--storage", default=None, help="run folder (default results/runs/quickstart)")
    p.add_argument("--methods", default=None, metavar="all|M1,M2",
                   help="methods to run: 'all' (every registered method; 4 trials each, so longer) or a "
                        "comma-separated list (default: the chosen set in bench/grids/quickstart.yaml: CE, "
                        "the seed methods and a few baselines)")


# -- tune ----------------------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    from .tune_spec import settings, units

    spec = _grid(args.grid, args)
    tune = settings(spec, args.budget, args.budget_hours)
    if args.dry_run:
        todo = units(spec, tune, f"{spec.storage}/search/trials")
        for u in todo:
            print(f"{u.uid}  {u.method} {u.key}: {len(u.cells)} cells per trial, {u.epochs} epochs")
        hours = f" or {tune.budget_hours:g} h" if tune.budget_hours else ""
        print(f"{len(todo)} searches (scope {spec.scope}), {tune.budget} trials each{hours}; recipes -> "
              f"{spec.recipes}; run folder {spec.storage}")
        return 0
    from .tuning import run_tune

    records = run_tune(spec, budget=args.budget, budget_hours=args.budget_hours, address=args.address,
                       max_concurrent=args.max_concurrent, quiet=args.quiet, verbose=args.verbose)
    hours = sum(r["device_hours"] for r in records)
    print(f"{len(records)} searches, {sum(r['trials_run'] for r in records)} trials, {hours:.3f} device-hours; "
          f"recipes in {spec.recipes}. Train the winners with fresh seeds: a grid with preset: tuned "
          f"(recipes: {spec.recipes}) and `lnlbench run`", flush=True)
    return 0


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", help="grid spec YAML: its methods, datasets, noise settings and (search) seeds; "
                                "scope: cell | dataset, tune: {...} (README: Tune hyperparameters fairly)")
    _ray_args(p)
    p.add_argument("--budget", type=int, default=None, metavar="N",
                   help="trials per search, the same for every method (default: the grid's tune.budget, else 12)")
    p.add_argument("--budget-hours", type=float, default=None, metavar="H",
                   help="wall-clock hours per search as well (Tune's time budget; default: none)")
    p.add_argument("--recipes", default=None, metavar="DIR",
                   help="where the winners are written, <DIR>/<dataset>/<method>.yaml (default: the grid's "
                        "recipes, else results/recipes)")
    p.add_argument("--max-concurrent", type=int, default=None, help="search trials at once (default: the CPUs)")
    p.add_argument("--storage", default=None, help="override the grid's run folder (a path)")
    p.add_argument("--dry-run", action="store_true", help="list the searches and their budget; run nothing")


COMMANDS = (
    Command("run", "run a grid spec on Ray (Tune over the cells, Ray Train per trial); reruns resume",
            _run_args, cmd_run),
    Command("resume", "finish an interrupted grid: finished trials are kept, the others continue",
            _resume_args, cmd_resume),
    Command("status", "done / running / failed / pending per cell of a run folder (no Ray needed)",
            _status_args, cmd_status),
    Command("tune", "noise-blind hyperparameter search (Ray Tune, ASHA, noisy-validation objective) with "
                    "equal budgets; winners written as recipes for preset: tuned", _tune_args, cmd_tune),
    Command("quickstart", "run the digits grid offline (a chosen set of methods, --methods all for every "
                          "one; a few noise settings and seeds) and print the leaderboard", _quickstart_args,
            cmd_quickstart),
)
