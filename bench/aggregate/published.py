"""Published numbers (``results/published/*.csv``) and the ours-vs-theirs comparison.

Each CSV row is one number from a paper or an official repository, transcribed from the reference sheets
(``../shared/reference``); ``results/published/README.md`` describes the columns. Only rows tagged
``[code]`` or ``[src]`` are *verified*; ``[R]`` rows are recalled from the paper and must be checked
against it before being used as a reproduction target — the comparison table prints the tag of each row.

Matching is on (method, dataset, noise label, rate, metric), spelling-proof (``ELR+`` = ``elr_plus``,
``Co-teaching`` = ``coteaching``; see :func:`lnlbench.aggregate.labels.match_key`). A published metric of
``unspecified`` (the source does not say Best or Last) matches any of our metrics and says so.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lnlbench.errors import LnlError

from .export import Row, Table, TCell
from .labels import match_key, noise_footnote, noise_label
from .leaderboard import METRIC_TEXT, Column, Leaderboard

COLUMNS = ["method", "dataset", "noise", "rate", "metric", "value", "std", "source", "tag", "verified",
           "network", "notes", "sheet"]
REQUIRED = ["method", "dataset", "noise", "rate", "metric", "value", "source", "tag", "verified"]
PUB_METRICS = ("best", "last", "selected", "unspecified")
TAGS = ("[code]", "[src]", "[R]")
COMPARE_COLUMNS = ["method", "dataset", "noise", "rate", "metric", "ours_mean", "ours_std", "ours_n",
                   "published", "published_std", "published_metric", "diff", "tag", "verified", "network",
                   "source", "notes", "file"]
COMPARE_NOTES = (
    ("Δ = ours − published, in percentage points. A difference in network, epochs or data scale (e.g. a "
     "CPU-scale subset) is expected to move the number; read the Network column."),
    ("Tags: [code] read in the official code, [src] seen in a named source (both verified); [R] recalled "
     "from the paper, NOT verified — check the paper before treating it as a target."),
)


def default_published_dir() -> Path:
    """``./results/published`` if it exists, else the one in the lnlbench source checkout."""
    here = Path("results/published")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "results" / "published"


def _check(frame: pd.DataFrame, path: Path) -> None:
    """One-line errors naming the file and row of a malformed published CSV."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise LnlError(f"{path} lacks column(s) {', '.join(missing)}; see results/published/README.md")
    for i, r in frame.iterrows():
        where = f"{path}, row {int(i) + 2}"
        if r["metric"] not in PUB_METRICS:
            raise LnlError(f"{where}: metric '{r['metric']}' must be one of {', '.join(PUB_METRICS)}")
        if r["tag"] not in TAGS:
            raise LnlError(f"{where}: tag '{r['tag']}' must be one of {', '.join(TAGS)}")
        if str(r["verified"]).lower() != str(r["tag"] in ("[code]", "[src]")).lower():
            raise LnlError(f"{where}: verified must be true exactly for [code]/[src] rows, "
                           f"got {r['verified']}")
        try:
            float(r["value"])
        except ValueError:
            raise LnlError(f"{where}: value '{r['value']}' is not a number (percent)") from None


def load_published(folder: str | Path | None = None) -> pd.DataFrame:
    """All published rows, checked, with ``file`` and the canonical ``noise`` label added."""
    folder = Path(folder) if folder else default_published_dir()
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise LnlError(f"no published CSV files found in {folder}; pass --published-dir DIR")
    parts = []
    for path in files:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        _check(frame, path)
        parts.append(frame.assign(file=path.name))
    pub = pd.concat(parts, ignore_index=True)
    pub["value"] = pub["value"].astype(float)
    pub["std"] = pd.to_numeric(pub.get("std", ""), errors="coerce")
    pub["rate"] = pd.to_numeric(pub["rate"], errors="coerce")
    pub["verified"] = pub["verified"].str.lower() == "true"
    pub["noise"] = [noise_label(n, None, None if math.isnan(r) else r)
                    for n, r in zip(pub["noise"], pub["rate"])]
    return pub


def _key(method: str, dataset: str, noise: str, rate: float | None) -> tuple[str, str, str, float | None]:
    rate = None if rate is None or (isinstance(rate, float) and math.isnan(rate)) else round(float(rate), 6)
    return match_key(method), match_key(dataset), match_key(noise), rate


def compare(board: Leaderboard, published: pd.DataFrame) -> pd.DataFrame:
    """One row per (our cell, matching published number): ours, theirs and ours − theirs (percent points)."""
    pub = published[published["metric"].isin([board.metric, "unspecified"])]
    index: dict[tuple, list[pd.Series]] = {}
    for _, r in pub.iterrows():
        index.setdefault(_key(r["method"], r["dataset"], r["noise"], r["rate"]), []).append(r)
    rows = []
    for (method, col), cell in board.cells.items():
        for r in index.get(_key(board.base.get(method, method), col.dataset, col.noise, col.rate), []):
            rows.append({"method": method, "dataset": col.dataset, "noise": col.noise, "rate": col.rate,
                         "metric": board.metric, "ours_mean": cell.mean, "ours_std": cell.std,
                         "ours_n": cell.n, "published": r["value"], "published_std": r["std"],
                         "published_metric": r["metric"], "diff": cell.mean - r["value"], "tag": r["tag"],
                         "verified": r["verified"], "network": r.get("network", ""), "source": r["source"],
                         "notes": r.get("notes", ""), "file": r["file"]})
    frame = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    return frame.sort_values(["dataset", "noise", "rate", "method"], ignore_index=True)


def comparison_table(board: Leaderboard, comp: pd.DataFrame) -> Table:
    """Ours next to theirs, with the difference, the source's tag and network."""
    rows = []
    for _, r in comp.iterrows():
        col = Column(r["dataset"], r["noise"], None if pd.isna(r["rate"]) else float(r["rate"]))
        theirs = f"{r['published']:g}" + ("" if pd.isna(r["published_std"]) else f" ± {r['published_std']:g}")
        metric = "" if r["published_metric"] == board.metric else f" ({r['published_metric']})"
        rows.append(Row(r["method"], [
            TCell(text=f"{col.group} {col.sub}"), TCell(r["ours_mean"], r["ours_std"],
                                                        note="" if r["ours_n"] > 1 else "n=1"),
            TCell(text=theirs + metric), TCell(text=f"{r['diff']:+.1f}"), TCell(text=r["tag"]),
            TCell(text=r["network"] or "?"), TCell(text=r["source"])]))
    ours = (f"Ours: {METRIC_TEXT[board.metric]}, mean ± sample std over seeds. Published: as printed by "
            f"the source; '(unspecified)' = the source does not say Best or Last.")
    notes = [ours, *COMPARE_NOTES]
    notes += [noise_footnote(n) for n in dict.fromkeys(comp["noise"])]
    if comp.empty:
        notes.append(f"No published number matches any of our {len(board.cells)} cells on (method, dataset, "
                     f"noise, rate, metric).")
    header = ["Setting", "Ours", "Published", "Δ", "Tag", "Network", "Source"]
    return Table(f"Ours vs published, test accuracy (%), {board.metric}", "Method", header, rows,
                 footnotes=notes, align="lrrrlll")
