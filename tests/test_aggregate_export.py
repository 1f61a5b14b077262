"""Exports (LaTeX well formed, Markdown, CSV, HTML) and the ``table``/``plot``/``report`` command lines."""
from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_aggregate import write_grid, write_trial

from lnlbench.aggregate import cli as agg_cli
from lnlbench.aggregate.export import FORMATS, Row, Table, TCell, render, tex_escape, to_latex
from lnlbench.aggregate.leaderboard import METRICS
from lnlbench.aggregate.plots import KINDS
from lnlbench.cli import main


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_grid(root, {("ce", 0.2): [0.90, 0.92, 0.94], ("elr_plus", 0.2): [0.95, 0.96, 0.97],
                      ("ce", 0.8): [0.40, 0.45], ("elr_plus", 0.8): [0.70, 0.72, 0.74]})
    write_trial(root, "dividemix", 0.90, rate=0.8, status="failed")
    return root


def _latex_is_well_formed(tex: str) -> None:
    envs = re.findall(r"\\(begin|end)\{([^}]*)\}", tex)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"
    unescaped = re.sub(r"\\[{}]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    ncol = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1))
    for line in body.splitlines():
        if line.endswith(r"\\") and "multicolumn" not in line:
            assert len(re.split(r"(?<!\\)&", line)) == ncol, f"wrong number of cells: {line}"


def test_latex_is_a_well_formed_standalone_document(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "board.tex"
    assert main(["table", str(runs_dir), "--format", "latex", "--out", str(out)]) == 0
    tex = out.read_text()
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    assert r"\usepackage{booktabs}" in tex and r"\pm" in tex and r"\cmidrule" in tex
    # the display name, not the registry key; bold through Styler's CSS conversion (was \mathbf{96.0 \pm 1.0})
    assert "ELR+" in tex and r"\bfseries 96.0 $\pm$ 1.0" in tex
    assert "---" in tex  # the missing dividemix cells
    _latex_is_well_formed(tex)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: the LaTeX was checked for structure only")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", out.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "board.pdf").stat().st_size > 0


def test_marks_in_every_format() -> None:
    """Bold and underline through Styler (LaTeX: CSS conversion and its LaTeX-command style), the dagger,
    notes, a rule before the clean-data rows and repeated row labels (the comparison table has them)."""
    cells = [TCell(95.1, 0.2, bold=True), TCell(90.0, underline=True, dagger=True, note="n=2")]
    table = Table("t", "Method", ["a", "b"], [Row("m", cells), Row("m", [TCell(), TCell(text="x")],
                                                               marks=["C"], rule_before=True)],
                  groups=[("G", 2)], footnotes=["note"])
    tex = to_latex(table, standalone=False)
    assert r"\bfseries 95.1 $\pm$ 0.2" in tex and r"\underline{90.0$^\dagger$\,{\scriptsize (n=2)}}" in tex
    assert tex.count(r"\midrule") == 2 and r"\cmidrule(lr){2-3}" in tex and r"m$^{\mathrm{C}}$ & --- & x" in tex
    _latex_is_well_formed(tex)
    assert "| m | **95.1 ± 0.2** | <ins>90.0</ins>† (n=2) |" in render(table, pd.DataFrame(), "md")
    page = render(table, pd.DataFrame(), "html")
    assert "<b>95.1 ± 0.2</b>" in page and "<u>90.0</u>&dagger;" in page and 'colspan="2"' in page
    _html_is_balanced(page)


def test_latex_fragment_and_escaping() -> None:
    table = Table("a_b & c", "Method", ["x%"], [Row("m_1", [TCell(text="#1 ~ {x}")], marks=["C"])],
                  footnotes=["α ≤ 0.05 — † mark"])
    tex = to_latex(table, standalone=False)
    assert r"\documentclass" not in tex
    assert r"a\_b \& c" in tex and r"x\%" in tex and r"\#1 \textasciitilde{} \{x\}" in tex
    assert tex_escape("α ≤ 0.05 — †") == r"$\alpha$ $\le$ 0.05 --- $^\dagger$"
    _latex_is_well_formed(tex)


def test_markdown_csv_and_html(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["table", str(runs_dir)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "trial failed" in captured.err  # reported, not fatal
    md = captured.out
    assert "| Method | CIFAR-10 sym 20% | CIFAR-10 sym 80% |" in md
    assert "| DivideMix | — | — |" in md and "DivideMix on CIFAR-10 sym 80% (1 failed trial)" in md
    assert "42.5 ± 3.5 (n=2)" in md
    csv_path = tmp_path / "board.csv"
    assert main(["table", str(runs_dir), "--format", "csv", "--out", str(csv_path)]) == 0
    frame = pd.read_csv(csv_path)
    row = frame[(frame["method"] == "ce") & (frame["rate"] == 0.2)].iloc[0]
    assert row["mean"] == pytest.approx(92.0) and row["std"] == pytest.approx(2.0) and row["n"] == 3
    assert pd.isna(row["rank"]) and row["values"] == "90.0000;92.0000;94.0000"  # 2 entries: no second
    assert "elr_plus" in set(frame["method"])  # the CSV keeps the registry key; tables show ELR+
    html_path = tmp_path / "board.html"
    assert main(["table", str(runs_dir), "--format", "html", "--out", str(html_path)]) == 0
    page = html_path.read_text()
    assert "<b>96.0 ± 1.0</b>" in page and 'colspan="2"' in page
    _html_is_balanced(page)


def _html_is_balanced(page: str) -> None:
    class Checker(HTMLParser):
        void = {"meta", "br"}

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag not in self.void:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.stack.pop() == tag

    checker = Checker()
    checker.feed(page)
    assert checker.stack == []


@pytest.mark.parametrize("name", ["table", "plot", "report"])
def test_help(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "RUN_DIR" in capsys.readouterr().out


def test_cli_choices_match_the_modules() -> None:
    assert agg_cli.METRICS == tuple(METRICS) and agg_cli.FORMATS == FORMATS and agg_cli.KINDS == KINDS


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["table", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no result.json files found under" in capsys.readouterr().err
    write_trial(tmp_path / "r", "ce", 0.5)
    assert main(["table", str(tmp_path / "r"), "--dataset", "digits"]) == 2
    assert "no finished trial matches --dataset digits; the runs have datasets ['cifar10']" in \
        capsys.readouterr().err
