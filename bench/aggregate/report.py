"""``lnlbench report``: every table and plot of some runs in one folder, with a README.md that embeds them.

Layout of the folder::

    README.md                      the leaderboard (Markdown), the comparison, the figures, what was skipped
    leaderboard_<metric>.{md,tex,csv,html}   one set per metric the trials recorded (last, final, best, selected)
    transition.{md,tex,csv,html}   the transition-matrix estimate's error, when some method recorded one
    compare_<metric>.{md,csv}      ours vs published, when some published number matches
    plots/*.png, plots/*.pdf       accuracy vs noise, per-epoch curves, selection, compute
    trials.csv                     one row per finished trial (the tidy frame), with its re-run command
    skipped.txt                    the result files that were skipped and why (only if any)
"""
from __future__ import annotations

from pathlib import Path

from lnlbench.errors import LnlError

from .export import render, to_markdown, write_text
from .frame import Runs
from .leaderboard import METRICS, build_leaderboard, leaderboard_table
from .plots import KINDS, make_plots
from .published import compare, comparison_table, load_published
from .transition import transition_frame, transition_table

FORMATS = {"md": ".md", "latex": ".tex", "csv": ".csv", "html": ".html"}


def _metrics_present(runs: Runs) -> list[str]:
    return [m for m, col in METRICS.items() if runs.trials[col].notna().any()]


def _write_boards(runs: Runs, out: Path, alpha: float) -> dict[str, str]:
    """leaderboard_<metric>.* for each metric with data; returns the Markdown of each."""
    md = {}
    for metric in _metrics_present(runs):
        board = build_leaderboard(runs.trials, runs.skipped, metric, alpha)
        table = leaderboard_table(board)
        for fmt, suffix in FORMATS.items():
            write_text(out / f"leaderboard_{metric}{suffix}", render(table, board.to_frame(), fmt))
        md[metric] = to_markdown(table)
    return md


def _write_transition(runs: Runs, out: Path) -> str | None:
    """transition.* when some trial scored a transition-matrix estimate; returns its Markdown."""
    table = transition_table(runs.trials)
    if table is None:
        return None
    for fmt, suffix in FORMATS.items():
        write_text(out / f"transition{suffix}", render(table, transition_frame(runs.trials), fmt))
    return to_markdown(table)


def _write_comparisons(runs: Runs, out: Path, alpha: float, published_dir: str | None) -> dict[str, str]:
    """compare_<metric>.{md,csv} where published numbers match; returns the Markdown of each."""
    try:
        pub = load_published(published_dir)
    except LnlError as exc:
        return {"_error": str(exc)}
    md = {}
    for metric in _metrics_present(runs):
        board = build_leaderboard(runs.trials, runs.skipped, metric, alpha)
        comp = compare(board, pub, runs.trials)
        if comp.empty:
            continue
        table = comparison_table(board, comp)
        write_text(out / f"compare_{metric}.md", to_markdown(table))
        write_text(out / f"compare_{metric}.csv", render(table, comp, "csv"))
        md[metric] = to_markdown(table)
    return md


def _figures_md(plots: dict[str, list[Path]], out: Path) -> list[str]:
    titles = {"noise": "Accuracy against the noise rate", "curves": "Test accuracy per epoch",
              "selection": "Clean-sample selection precision / recall per epoch",
              "compute": "Compute (device-hours)"}
    lines = ["## Figures", ""]
    for kind in KINDS:
        pngs = [p for p in plots.get(kind, []) if p.suffix == ".png"]
        lines += [f"### {titles[kind]}", ""]
        if not pngs:
            lines += ["(no data for this figure: no trial reports it)", ""]
        for p in pngs:
            rel = p.relative_to(out).as_posix()
            lines += [f"![{p.stem}]({rel})", f"([PDF]({Path(rel).with_suffix('.pdf').as_posix()}))", ""]
    return lines


def _cpus(t) -> str:
    """Which CPUs ran the trials (float results differ across CPUs, so a rerun compares only on the same)."""
    cpus = t["cpu"].dropna() if "cpu" in t else t.iloc[:0, 0]
    known = ", ".join(f"{c} ({n})" for c, n in sorted(cpus.value_counts().items()))
    unknown = len(t) - len(cpus)
    if not known:
        return "CPU: not recorded (results written before lnlbench recorded it)."
    return f"CPUs: {known}" + (f"; not recorded for {unknown} older trials." if unknown else ".")


def _readme(runs: Runs, boards: dict[str, str], comps: dict[str, str], plots: dict[str, list[Path]],
            out: Path, metric: str, command: str, notes: str, transition: str | None = None) -> str:
    t = runs.trials
    origin = (f"Produced by `{command}` from {runs.files} result files ({len(t)} finished trials, "
              f"{len(runs.problems)} skipped); methods: {', '.join(sorted(t['method'].unique()))}; "
              f"lnlbench commits: {', '.join(sorted(set(t['git_commit'].fillna('?'))))}.")
    origin += " " + _cpus(t)
    lines = [f"# Leaderboard: {', '.join(sorted(t['dataset'].unique()))}", "", origin, ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [f"## Leaderboard ({metric})", "", boards.get(metric, "(no trial recorded this metric)"), ""]
    others = [m for m in boards if m != metric]
    if others:
        lines += ["Other metrics: " + ", ".join(f"[{m}](leaderboard_{m}.md)" for m in others)
                  + ". Every table also exists as LaTeX (`.tex`, compiles standalone), CSV and HTML.", ""]
    if transition:
        lines += ["## Transition-matrix estimation", "", transition, ""]
    lines += ["## Ours vs published", ""]
    if "_error" in comps:
        lines += [f"(not compared: {comps['_error']})", ""]
    elif comps:
        lines += [comps.get(metric) or next(iter(comps.values())), ""]
    else:
        lines += ["No published number matches these (method, dataset, noise, rate, metric) cells.", ""]
    lines += _figures_md(plots, out)
    if runs.problems:
        lines += ["## Skipped result files", "", *[f"- `{p.path}`: {p.reason}" for p in runs.problems], ""]
    cmds = "\n".join(sorted(set(t["command"].dropna())))
    lines += ["## How the trials were run", "", "<details><summary>one command per trial</summary>", "",
              "```bash", cmds, "```", "", "</details>", ""]
    return "\n".join(lines)


def write_report(runs: Runs, out: str | Path, metric: str = "last", alpha: float = 0.05,
                 published_dir: str | None = None, command: str = "lnlbench report", notes: str = "") -> Path:
    """Write the report folder (see the module docstring) and return the README's path; ``notes``
    (Markdown) goes under the README's first paragraph."""
    runs.require_trials()
    if metric not in METRICS:
        raise LnlError(f"unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    boards = _write_boards(runs, out, alpha)
    comps = _write_comparisons(runs, out, alpha, published_dir)
    transition = _write_transition(runs, out)
    plot_metric = metric if metric in boards else "last"
    plots = make_plots(runs, list(KINDS), out / "plots", plot_metric)
    runs.trials.to_csv(out / "trials.csv", index=False)
    skipped = out / "skipped.txt"
    if runs.problems:
        write_text(skipped, "\n".join(str(p) for p in runs.problems) + "\n")
    elif skipped.exists():
        skipped.unlink()
    return write_text(out / "README.md", _readme(runs, boards, comps, plots, out, metric, command, notes,
                                                 transition))
