"""Figures (PNG and PDF, non-empty) and the report folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_aggregate import write_grid, write_trial

from lnlbench.aggregate.frame import load_runs
from lnlbench.aggregate.plots import make_plots, method_colors
from lnlbench.cli import main


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_grid(root, {("ce", 0.2): [0.90, 0.92], ("ce", 0.5): [0.70, 0.75], ("ce", 0.0): [0.95, 0.96]},
               epochs=4)
    write_grid(root, {("coteaching", 0.2): [0.93, 0.94], ("coteaching", 0.5): [0.85, 0.86]}, epochs=4,
               selection=True)
    write_trial(root, "ce", 0.60, noise="symmetric_exclusive", rate=0.5, epochs=4, selected=0.62)
    write_trial(root, "ce", 0.3, noise="pairflip", rate=0.4, status="failed")
    return root


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def _is_pdf(path: Path) -> bool:
    return path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 1000


@pytest.fixture(scope="module")
def report(runs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``lnlbench report`` run (every table and figure), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("report")
    notes = out.parent / "notes.md"
    notes.write_text("These trials are synthetic.\n")
    assert main(["report", str(runs_dir), "--out", str(out), "--notes", str(notes)]) == 0
    return out


def test_every_kind_writes_png_and_pdf(report: Path) -> None:
    names = sorted(p.name for p in (report / "plots").iterdir())
    stems = ["accuracy_vs_noise", "compute", "curves_cifar10_none", "curves_cifar10_symmetric",
             "curves_cifar10_symmetric_exclusive", "selection_cifar10_symmetric"]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("pdf", "png"))
    for f in (report / "plots").iterdir():
        assert (_is_png(f) if f.suffix == ".png" else _is_pdf(f)), f


def test_selection_plot_is_skipped_without_selection_scores(tmp_path: Path) -> None:
    write_trial(tmp_path / "r", "ce", 0.9)
    written = make_plots(load_runs([tmp_path / "r"]), ["selection"], tmp_path / "figs")
    assert written["selection"] == []


def test_method_colours_are_stable() -> None:
    assert method_colors(["b", "a"]) == method_colors(["a", "b", "a"])
    assert len(set(method_colors([f"m{i}" for i in range(12)]).values())) == 12


def test_plot_command(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plot", str(runs_dir), "--kind", "compute", "--out", str(tmp_path), "--format", "png"]) == 0
    assert _is_png(tmp_path / "compute.png") and not (tmp_path / "compute.pdf").exists()


def test_report_folder(report: Path, runs_dir: Path) -> None:
    for name in ["leaderboard_last.md", "leaderboard_last.tex", "leaderboard_last.csv",
                 "leaderboard_last.html", "leaderboard_best.md", "leaderboard_selected.md", "trials.csv",
                 "skipped.txt"]:
        assert (report / name).stat().st_size > 0, name
    readme = (report / "README.md").read_text()
    notes = report.parent / "notes.md"
    assert f"Produced by `lnlbench report {runs_dir} --out {report} --notes {notes}`" in readme
    assert "These trials are synthetic." in readme
    assert "![accuracy_vs_noise](plots/accuracy_vs_noise.png)" in readme
    assert "| Co-teaching |" in readme and "trial failed" in readme
    assert "lnlbench trial --method ce --dataset cifar10 --noise symmetric --rate 0.2 --seed 0" in readme
    for line in readme.splitlines():
        if line.startswith("!["):
            assert (report / line[line.index("(") + 1:line.index(")")]).exists()


def test_tables_from_a_reports_trials_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A report's trials.csv stands in for the run folders: the same tables and comparisons, and the
    per-epoch figures are skipped with a note (the csv keeps no history). It holds finished trials only,
    so a failed trial's '—' cell would be missing: this run has none."""
    runs_dir, report = tmp_path / "runs", tmp_path / "report"
    write_grid(runs_dir, {("ce", 0.2): [0.90, 0.92], ("elr", 0.5): [0.70, 0.75], ("gce", 0.2): [0.95, 0.96]},
               hparams={"truncated": True})
    write_trial(runs_dir, "dividemix", 0.94, rate=0.5, extra={"amp": "bf16"})
    assert main(["report", str(runs_dir), "--out", str(report)]) == 0
    capsys.readouterr()
    csv = str(report / "trials.csv")
    for extra in ([], ["--metric", "best"], ["--compare", "published"], ["--format", "csv"]):
        assert main(["table", str(runs_dir), *extra]) == 0
        from_runs = capsys.readouterr().out
        assert main(["table", csv, *extra]) == 0
        captured = capsys.readouterr()
        assert captured.out == from_runs, extra
        assert "keeps no per-epoch history" in captured.err
        if "--compare" in extra:
            assert "DivideMix<sup>A</sup>" in captured.out and "| CPU scale" not in captured.out
    again = tmp_path / "again"
    assert main(["report", csv, "--out", str(again)]) == 0
    assert "keeps no per-epoch history" in capsys.readouterr().err
    assert (again / "leaderboard_last.md").read_text() == (report / "leaderboard_last.md").read_text()
    assert (again / "plots" / "accuracy_vs_noise.png").exists()
    assert not list((again / "plots").glob("curves*"))


def test_report_says_which_cpus_ran_the_trials(report: Path) -> None:
    import pandas as pd

    from lnlbench.aggregate.report import _cpus

    assert "CPU: not recorded" in (report / "README.md").read_text()  # the synthetic results have none
    t = pd.DataFrame({"cpu": ["Xeon [AVX512]", "Xeon [AVX512]", "EPYC [AVX2]", None]})
    assert _cpus(t) == "CPUs: EPYC [AVX2] (1), Xeon [AVX512] (2); not recorded for 1 older trials."
