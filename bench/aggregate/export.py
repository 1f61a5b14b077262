"""Render a :class:`Table` as Markdown, LaTeX (booktabs, standalone document or fragment) or HTML.

A :class:`Table` is format-neutral: a header (optionally grouped), rows of cells that carry a mean ± std or
a text, and the marks a cell may have (bold = best, underline = second, dagger = not significantly different
from the best, a note such as ``n=2``). Numbers are printed with one decimal (percent, as papers print them).
The CSV export is the tidy frame of the table's source (``Leaderboard.to_frame()``), not the display strings.

The layout is the libraries': LaTeX through pandas' ``Styler.to_latex`` (booktabs rules, ``\\multicolumn``
group headers, bold through its CSS-to-LaTeX conversion of ``font-weight: bold``), HTML through
``Styler.to_html`` (``colspan`` group headers, caption, CSS), Markdown through ``DataFrame.to_markdown``
(tabulate, pipe tables). What they do not do, measured with pandas 3.1 / tabulate 0.9, stays here:

- **Escaping.** ``Styler.format(escape="latex")`` escapes ``& % $ # _ { } ~ ^ \\`` but leaves Unicode as it
  is, and pdflatex stops at ``α ≤ → ≈ Δ`` ("Unicode character not set up"); :func:`tex_escape` maps those
  symbols to math. HTML cells are escaped with :func:`html.escape` and carry ``<b>``/``<u>``.
- **Underline.** The CSS conversion knows ``font-weight`` and ``font-style`` but not ``text-decoration``;
  underline uses Styler's own LaTeX-command style, kept through the conversion (``underline: --rwrap --latex``).
- **Rules and notes.** Styler writes no ``\\cmidrule`` under a column group, no ``\\midrule`` before an
  arbitrary row (the clean-data methods) and no notes under the tabular; those three are inserted into its
  output. tabulate pads every cell to its column's width to align it (with the Source column of a
  comparison every row becomes hundreds of characters wide), so cells are asked for unpadded and the
  alignment row (``---:``) is written here.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.io.formats.style import Styler

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


# -- Markdown (DataFrame.to_markdown) --------------------------------------------------------------
def _md_cell(c: TCell) -> str:
    text = c.plain().replace("|", "\\|")
    if c.bold:
        text = f"**{text}**"
    if c.underline:
        text = f"<ins>{text}</ins>"  # GitHub renders <ins> as underline; <u> is stripped
    return text + ("†" if c.dagger else "") + (f" ({c.note})" if c.note else "")


def _flat_header(table: Table) -> list[str]:
    if not table.groups:
        return list(table.header)
    out, i = [], 0
    for group, span in table.groups:
        out += [f"{group} {h}".strip() for h in table.header[i:i + span]]
        i += span
    return out


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: one header row (``group rate``), bold/underline, footnotes as a list."""
    labels = [row.label + "".join(f"<sup>{m}</sup>" for m in row.marks) for row in table.rows]
    frame = pd.DataFrame([[lab, *(_md_cell(c) for c in row.cells)] for lab, row in zip(labels, table.rows)],
                         columns=[table.stub, *_flat_header(table)])
    text = frame.to_markdown(index=False, tablefmt="pipe", stralign=None, numalign=None,
                             disable_numparse=True)
    lines = text.splitlines()
    lines[1] = "|---|" + "".join("---:|" if a == "r" else "---|" for a in table.aligns())
    out = [f"**{table.title}**", "", *lines, ""] + [f"- {note}" for note in table.footnotes]
    return "\n".join(out) + "\n"


# -- LaTeX (Styler.to_latex) -----------------------------------------------------------------------
_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "—": "---", "–": "--", "→": r"$\to$", "≈": r"$\approx$",
               "×": r"$\times$", "≤": r"$\le$", "≥": r"$\ge$", "−": "$-$", "α": r"$\alpha$", "Δ": r"$\Delta$",
               "·": r"$\cdot$", "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    """Escape plain Unicode text for LaTeX (the symbols the tables use become math)."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_cell(c: TCell) -> str:
    """The cell's LaTeX in text mode (so that Styler's ``\\bfseries`` bolds the digits too)."""
    body = tex_escape(c.plain()) if (c.mean is not None or c.text) else "---"
    if c.dagger:
        body += r"$^\dagger$"
    if c.note:
        body += rf"\,{{\scriptsize ({tex_escape(c.note)})}}"
    return body


def _columns(table: Table, esc) -> pd.Index:
    """The header as columns: (group, column) pairs under a group header, else one level."""
    if not table.groups:
        return pd.Index([esc(table.stub), *map(esc, table.header)])
    assert sum(span for _, span in table.groups) == len(table.header), "column groups must span the header"
    groups = [g for g, span in table.groups for _ in range(span)]
    return pd.MultiIndex.from_tuples([("", esc(table.stub)), *zip(map(esc, groups), map(esc, table.header))])


def _styled(table: Table, cell: Callable[[TCell], str], esc: Callable[[str], str], mark: Callable[[str], str],
            bold: str, underline: str) -> Styler:
    """A Styler over the table (a plain index hidden, so repeated row labels are fine)."""
    data = [[esc(row.label) + "".join(map(mark, row.marks)), *map(cell, row.cells)] for row in table.rows]
    frame = pd.DataFrame(data, columns=_columns(table, esc))
    css = pd.DataFrame([["", *(bold * c.bold + underline * c.underline for c in row.cells)]
                        for row in table.rows], columns=frame.columns)
    # a fixed id instead of Styler's random one, so that the same table always writes the same HTML
    return frame.style.apply(lambda _: css, axis=None).hide(axis="index").set_uuid("lnlbench")


def to_latex(table: Table, standalone: bool = True) -> str:
    """A booktabs tabular in a ``table`` float with its notes below; ``standalone`` wraps it in a document
    that compiles on its own (``article`` in landscape, booktabs)."""
    styler = _styled(table, _tex_cell, tex_escape, lambda m: rf"$^{{\mathrm{{{tex_escape(m)}}}}}$",
                     "font-weight: bold;", "underline: --rwrap --latex;")
    tex = styler.to_latex(column_format="l" + table.aligns(), hrules=True, multicol_align="c",
                          caption=tex_escape(table.title), environment="table", position="ht",
                          position_float="centering", convert_css=True)
    lines = tex.splitlines()
    if table.groups:  # \cmidrule under each group, after the group header row
        rules, i = [], 2
        for _, span in table.groups:
            rules.append(rf"\cmidrule(lr){{{i}-{i + span - 1}}}")
            i += span
        top = lines.index(r"\toprule") + 1
        lines.insert(top + 1, " ".join(rules))
    first = lines.index(r"\midrule") + 1
    for k, row in reversed(list(enumerate(table.rows))):
        if row.rule_before:
            lines.insert(first + k, r"\midrule")
    if table.footnotes:
        notes = [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize",
                 *(tex_escape(n) + r"\par" for n in table.footnotes), r"\end{minipage}"]
        end = lines.index(r"\end{table}")
        lines[end:end] = notes
    body = "\n".join(lines) + "\n"
    if not standalone:
        return body
    return ("\\documentclass[10pt]{article}\n\\usepackage[landscape,margin=1.5cm]{geometry}\n"
            "\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\pagestyle{empty}\n"
            "\\begin{document}\n" + body + "\\end{document}\n")


# -- HTML (Styler.to_html) -------------------------------------------------------------------------
def _html_cell(c: TCell) -> str:
    text = html.escape(c.plain())
    if c.bold:
        text = f"<b>{text}</b>"
    if c.underline:
        text = f"<u>{text}</u>"
    note = f" <small>({html.escape(c.note)})</small>" if c.note else ""
    return text + ("&dagger;" if c.dagger else "") + note


_CSS = [{"selector": "", "props": "border-collapse:collapse;font-family:sans-serif;font-size:14px;"
                                  "border-top:2px solid #000;border-bottom:2px solid #000"},
        {"selector": "th, td", "props": "padding:3px 8px;text-align:right"},
        {"selector": "td.col0, th.col0", "props": "text-align:left"},
        {"selector": "thead tr:last-child th", "props": "border-bottom:1px solid #000"}]


def to_html(table: Table) -> str:
    """A standalone HTML page with the table (grouped header) and its notes."""
    styler = _styled(table, _html_cell, html.escape, lambda m: f"<sup>{html.escape(m)}</sup>", "", "")
    left = [i + 1 for i, a in enumerate(table.aligns()) if a == "l"]
    css = _CSS + [{"selector": f"td.col{i}", "props": "text-align:left"} for i in left]
    rules = [f"td.row{k}" for k, row in enumerate(table.rows) if row.rule_before]
    css += [{"selector": ", ".join(rules), "props": "border-top:1px solid #000"}] if rules else []
    body = styler.set_table_styles(css).set_caption(html.escape(table.title)).to_html()
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.footnotes)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(table.title)}</title>"
            f"</head><body>\n{body}\n<ul>{notes}</ul>\n</body></html>\n")


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
