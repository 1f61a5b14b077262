"""The ``table``, ``plot`` and ``report`` commands (declared in :data:`COMMANDS`, which ``lnlbench.cli`` reads).

Each reads only ``result.json`` files; a skipped file is reported on stderr (``lnlbench: skipped PATH:
why``) and the command goes on. Examples::

    lnlbench table results/runs/digits                       # Markdown leaderboard, last accuracy
    lnlbench table results/runs/digits --metric best --format latex --out table.tex
    lnlbench table results/runs/digits --compare published   # ours vs the papers, with the difference
    lnlbench plot results/runs/digits --kind noise --kind curves --out figs/
    lnlbench report results/runs/digits --out results/leaderboards/digits
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lnlbench.command import Command
from lnlbench.errors import LnlError

if TYPE_CHECKING:
    from .frame import Runs

# The choices, spelled here so that `lnlbench --help` and every other command start without importing
# pandas, scipy or matplotlib (tests check they equal the modules' own lists).
METRICS = ("last", "final", "best", "selected")
FORMATS = ("md", "latex", "latex-fragment", "csv", "html")
KINDS = ("noise", "curves", "selection", "compute")


def _load(args: argparse.Namespace) -> Runs:
    """Read the runs, report every skipped file on stderr, apply the filters, insist on some trials."""
    from .frame import load_runs, select

    runs = load_runs(args.runs)
    chosen = select(runs, args.dataset, args.method)
    report_problems(chosen)  # those of other datasets/methods are left out
    if chosen.without_curves:
        print(f"lnlbench: note: {chosen.without_curves} trials come from a trials.csv, which keeps no per-epoch "
              f"history: per-epoch figures (curves, selection) leave them out", file=sys.stderr)
    runs.require_trials()
    if chosen.trials.empty:
        have = f"datasets {sorted(set(runs.trials['dataset']))}, methods {sorted(set(runs.trials['method']))}"
        asked = " ".join(f"--{k} {v}" for k in ("dataset", "method") for v in getattr(args, k) or [])
        raise LnlError(f"no finished trial matches {asked}; the runs have {have}")
    if getattr(args, "metric", "last") is None:  # not given: selected for tuned tables, else last
        from .leaderboard import default_metric

        args.metric = default_metric(chosen.trials)
    return chosen


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="folder(s) holding trial result.json files (searched recursively), or a trials.csv "
                        "written by an earlier lnlbench report (tables and comparisons; no per-epoch curves)")
    p.add_argument("--metric", choices=list(METRICS), default=None,
                   help="last = mean of the last 10 epochs (default), final = the final epoch alone, "
                        "best = best epoch (peeks at test), selected = epoch of best noisy-validation accuracy "
                        "(the default of a table with preset: tuned rows)")
    p.add_argument("--dataset", action="append", default=None, help="only this dataset (repeatable)")
    p.add_argument("--method", action="append", default=None, help="only this method (repeatable)")


# -- table -----------------------------------------------------------------------------------------
def board_text(runs: Runs, metric: str | None = None, alpha: float = 0.05, title: str | None = None,
               fmt: str = "md") -> str:
    """The leaderboard of some runs as ``lnlbench table`` prints it; ``quickstart`` and ``status`` print
    this too, so one run shows the same cells everywhere. ``metric`` None: :func:`default_metric`."""
    from .export import render
    from .leaderboard import build_leaderboard, default_metric, leaderboard_table

    board = build_leaderboard(runs.trials, runs.skipped, metric or default_metric(runs.trials), alpha)
    return render(leaderboard_table(board, title), board.to_frame(), fmt)


def report_problems(runs: Runs) -> None:
    """Each skipped result file on stderr (``lnlbench: skipped PATH: why``)."""
    for problem in runs.problems:
        print(f"lnlbench: {problem}", file=sys.stderr)


def cmd_table(args: argparse.Namespace) -> int:
    """Print or write the leaderboard (or the comparison with the published numbers)."""
    from .export import render, write_text
    from .leaderboard import build_leaderboard
    from .published import compare, comparison_table, load_published

    runs = _load(args)
    if args.compare:
        board = build_leaderboard(runs.trials, runs.skipped, args.metric, args.alpha)
        comp = compare(board, load_published(args.published_dir), runs.trials)
        text = render(comparison_table(board, comp), comp, args.format)
        if comp.empty:
            print("lnlbench: no published number matches these cells", file=sys.stderr)
    else:
        text = board_text(runs, args.metric, args.alpha, args.title, args.format)
    if args.out:
        path = write_text(args.out, text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


def _table_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--format", choices=list(FORMATS), default="md",
                   help="md (default), latex (a standalone document), latex-fragment (the table only), "
                        "csv (tidy, full precision), html")
    p.add_argument("--out", default=None, help="write to this file (e.g. table.tex); default: print")
    p.add_argument("--compare", choices=["published"], default=None,
                   help="show ours next to the published numbers with the difference")
    p.add_argument("--published-dir", default=None,
                   help="folder of published CSVs (default: results/published)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the Welch t-test against the best (default 0.05)")
    p.add_argument("--title", default=None, help="table caption")




# -- plot ------------------------------------------------------------------------------------------
def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the asked figures into a folder."""
    from .plots import make_plots

    runs = _load(args)
    kinds = list(KINDS) if not args.kind or "all" in args.kind else args.kind
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    written = make_plots(runs, kinds, args.out, args.metric, formats)
    for kind in kinds:
        files = written.get(kind, [])
        if files:
            print(f"{kind}: " + ", ".join(str(f) for f in files))
        else:
            print(f"{kind}: nothing to draw (no trial reports it)", file=sys.stderr)
    return 0


def _plot_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--kind", action="append", choices=[*KINDS, "all"], default=None,
                   help="noise (accuracy vs noise rate), curves (test accuracy per epoch), selection "
                        "(clean-sample precision/recall per epoch), compute (device-hours); repeatable; "
                        "default all")
    p.add_argument("--out", default="plots", help="folder for the figures (default: ./plots)")
    p.add_argument("--format", default="png,pdf", help="comma-separated file types (default png,pdf)")




# -- report ----------------------------------------------------------------------------------------
def _report_command(args: argparse.Namespace) -> str:
    """The command line that makes this report again (written into its README)."""
    cmd = ["lnlbench", "report", *args.runs, "--out", args.out]
    if args.metric != "last":
        cmd += ["--metric", args.metric]
    for flag, values in (("--dataset", args.dataset), ("--method", args.method)):
        for v in values or []:
            cmd += [flag, v]
    if args.notes:
        cmd += ["--notes", args.notes]
    return shlex.join(cmd)


def _read_notes(path: str | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LnlError(f"cannot read --notes {path} ({exc.strerror}); pass a Markdown file") from None


def cmd_report(args: argparse.Namespace) -> int:
    """Write every table and figure into one folder with a README.md."""
    from .report import write_report

    runs = _load(args)
    readme = write_report(runs, args.out, args.metric, args.alpha, args.published_dir, _report_command(args),
                          _read_notes(args.notes))
    print(f"wrote {readme} (tables, plots, trials.csv)")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--out", required=True, help="the report folder (created)")
    p.add_argument("--published-dir", default=None,
                   help="folder of published CSVs (default: results/published)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--notes", default=None, help="a Markdown file to put at the top of the README")


COMMANDS = (
    Command("table", "leaderboard of mean ± std over seeds (Markdown, LaTeX, CSV, HTML), or ours vs published",
            _table_args, cmd_table),
    Command("plot", "figures: accuracy vs noise rate, curves per epoch, selection precision/recall, compute",
            _plot_args, cmd_plot),
    Command("report", "write all tables and plots of some runs into one folder with a README.md",
            _report_args, cmd_report),
)
