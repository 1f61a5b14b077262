"""Render a :class:`Table` as Markdown, LaTeX (booktabs, standalone document or fragment) or HTML.

A :class:`Table` is format-neutral: a header (optionally grouped), rows of cells that carry a mean ± std or
a text, and the marks a cell may have (bold = best, underline = second, dagger = not significantly different
from the best, a note such as ``n=2``). Footnotes are plain Unicode text; each renderer escapes what its
format needs (LaTeX: ``_ & % # $ { } ~ ^ \\`` and the symbols ± † — → ≈ × ≤ ≥). Numbers are printed with
one decimal (percent, as papers print them). The CSV export is the tidy frame of the table's source
(``Leaderboard.to_frame()``), not the display strings.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lnlbench.errors import LnlError

DASH = "—"


@dataclass
class TCell:
    """One displayed cell: ``mean ± std`` when ``mean`` is set, else ``text`` (``—`` when both are empty)."""

    mean: float | None = None
    std: float | None = None
    text: str | None = None
    note: str = ""
    bold: bool = False
    underline: bool = False
    dagger: bool = False

    def plain(self) -> str:
        """The value without marks, in plain Unicode: ``95.7 ± 0.3``, ``95.7`` or the text."""
        if self.mean is None:
            return self.text if self.text else DASH
        return f"{self.mean:.1f}" + ("" if self.std is None else f" ± {self.std:.1f}")


@dataclass
class Row:
    """A table row: its label (a method), superscript marks (``C``, ``R``) and cells."""

    label: str
    cells: list[TCell]
    marks: list[str] = field(default_factory=list)
    rule_before: bool = False


@dataclass
class Table:
    """A format-neutral table. ``groups`` spans ``header`` (sum of spans = number of columns)."""

    title: str
    stub: str
    header: list[str]
    rows: list[Row]
    groups: list[tuple[str, int]] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per header column; default: all right-aligned (numbers)

    def aligns(self) -> str:
        """The alignment of each header column (``r`` unless ``align`` gives one per column)."""
        return self.align if len(self.align) == len(self.header) else "r" * len(self.header)


# -- Markdown --------------------------------------------------------------------------------------
def _md_cell(c: TCell) -> str:
    text = c.plain().replace("|", "\\|")
    if c.bold:
        text = f"**{text}**"
    if c.underline:
        text = f"<ins>{text}</ins>"  # GitHub renders <ins> as underline; <u> is stripped
    return text + ("†" if c.dagger else "") + (f" ({c.note})" if c.note else "")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: one header row (``group rate``), bold/underline, footnotes as a list."""
    names = _flat_header(table)
    rule = "".join("---:|" if a == "r" else "---|" for a in table.aligns())
    lines = [f"**{table.title}**", "", "| " + " | ".join([table.stub, *names]) + " |", "|---|" + rule]
    for row in table.rows:
        label = row.label + ("".join(f"<sup>{m}</sup>" for m in row.marks))
        lines.append("| " + " | ".join([label, *(_md_cell(c) for c in row.cells)]) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.footnotes]
    return "\n".join(lines) + "\n"


def _flat_header(table: Table) -> list[str]:
    if not table.groups:
        return list(table.header)
    out, i = [], 0
    for group, span in table.groups:
        out += [f"{group} {h}".strip() for h in table.header[i:i + span]]
        i += span
    return out


# -- LaTeX -----------------------------------------------------------------------------------------
_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "–": "--", "→": r"$\to$", "≈": r"$\approx$",
               "×": r"$\times$", "≤": r"$\le$", "≥": r"$\ge$", "−": "$-$", "α": r"$\alpha$", "Δ": r"$\Delta$",
               "·": r"$\cdot$", "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    """Escape plain Unicode text for LaTeX (the symbols the tables use become math)."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_cell(c: TCell) -> str:
    if c.mean is None:
        body = tex_escape(c.text) if c.text else "---"
    else:
        num = f"{c.mean:.1f}" + ("" if c.std is None else rf" \pm {c.std:.1f}")
        body = rf"$\mathbf{{{num}}}$" if c.bold else f"${num}$"
    if c.underline:
        body = rf"\underline{{{body}}}"
    if c.dagger:
        body += r"$^\dagger$"
    if c.note:
        body += rf"\,{{\scriptsize ({tex_escape(c.note)})}}"
    return body


def _tex_header(table: Table) -> list[str]:
    ncol = len(table.header)
    if not table.groups:
        return [" & ".join([tex_escape(table.stub), *map(tex_escape, table.header)]) + r" \\"]
    tops, rules, i = [], [], 2
    for group, span in table.groups:
        tops.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(group)}}}")
        rules.append(rf"\cmidrule(lr){{{i}-{i + span - 1}}}")
        i += span
    assert i - 2 == ncol, "column groups must span the header"
    return [" & ".join(["", *tops]) + r" \\", " ".join(rules),
            " & ".join([tex_escape(table.stub), *map(tex_escape, table.header)]) + r" \\"]


def to_latex(table: Table, standalone: bool = True) -> str:
    """A booktabs tabular in a ``table`` float with its notes below; ``standalone`` wraps it in a document
    that compiles on its own (``article`` in landscape, booktabs)."""
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{tex_escape(table.title)}}}",
             r"\begin{tabular}{l" + table.aligns() + "}", r"\toprule", *_tex_header(table),
             r"\midrule"]
    for row in table.rows:
        if row.rule_before:
            lines.append(r"\midrule")
        label = tex_escape(row.label) + "".join(rf"$^{{\mathrm{{{m}}}}}$" for m in row.marks)
        lines.append(" & ".join([label, *(_tex_cell(c) for c in row.cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.footnotes:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
        lines += [tex_escape(n) + r"\par" for n in table.footnotes]
        lines.append(r"\end{minipage}")
    lines.append(r"\end{table}")
    body = "\n".join(lines) + "\n"
    if not standalone:
        return body
    return ("\\documentclass[10pt]{article}\n\\usepackage[landscape,margin=1.5cm]{geometry}\n"
            "\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\pagestyle{empty}\n"
            "\\begin{document}\n" + body + "\\end{document}\n")


# -- HTML ------------------------------------------------------------------------------------------
def _html_cell(c: TCell) -> str:
    text = html.escape(c.plain())
    if c.bold:
        text = f"<b>{text}</b>"
    if c.underline:
        text = f"<u>{text}</u>"
    note = f" <small>({html.escape(c.note)})</small>" if c.note else ""
    return text + ("&dagger;" if c.dagger else "") + note


def to_html(table: Table) -> str:
    """A standalone HTML page with the table (grouped header) and its notes."""
    head = []
    if table.groups:
        spans = "".join(f'<th colspan="{s}">{html.escape(g)}</th>' for g, s in table.groups)
        head.append(f"<tr><th></th>{spans}</tr>")
    head.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in [table.stub, *table.header]) + "</tr>")
    body = []
    for row in table.rows:
        style = ' class="rule"' if row.rule_before else ""
        label = html.escape(row.label) + "".join(f"<sup>{html.escape(m)}</sup>" for m in row.marks)
        cells = "".join(f'<td class="{a}">{_html_cell(c)}</td>' for a, c in zip(table.aligns(), row.cells))
        body.append(f"<tr{style}><th>{label}</th>{cells}</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.footnotes)
    css = ("table{border-collapse:collapse;font-family:sans-serif;font-size:14px}"
           "th,td{padding:3px 8px;text-align:right}th:first-child,td.l{text-align:left}"
           "thead tr:last-child th{border-bottom:1px solid #000}"
           "tr.rule th,tr.rule td{border-top:1px solid #000}"
           "table{border-top:2px solid #000;border-bottom:2px solid #000}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(table.title)}</title>"
            f"<style>{css}</style></head><body>\n<h3>{html.escape(table.title)}</h3>\n<table>\n<thead>"
            + "\n".join(head) + "</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
            f"<ul>{notes}</ul>\n</body></html>\n")


# -- dispatch --------------------------------------------------------------------------------------
FORMATS = ("md", "latex", "latex-fragment", "csv", "html")
SUFFIX = {"md": ".md", "latex": ".tex", "latex-fragment": ".tex", "csv": ".csv", "html": ".html"}


def render(table: Table, frame: pd.DataFrame, fmt: str) -> str:
    """The table in one of :data:`FORMATS` (``csv`` writes the tidy ``frame``)."""
    if fmt == "md":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table, standalone=True)
    if fmt == "latex-fragment":
        return to_latex(table, standalone=False)
    if fmt == "html":
        return to_html(table)
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.4f")
    raise LnlError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
