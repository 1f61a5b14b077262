"""Published numbers (``results/published/*.csv``) and the ours-vs-theirs comparison.

Each CSV row is one number from a paper or an official repository, transcribed from the reference sheets
(``../shared/reference``); ``results/published/README.md`` describes the columns. Only rows tagged
``[code]`` or ``[src]`` are *verified*; ``[R]`` rows are recalled from the paper and must be checked
against it before being used as a reproduction target — the comparison table prints the tag of each row.

Pairing, like with like:

- **Key.** (method, dataset, noise label, rate), spelling-proof (``ELR+`` = ``elr_plus``, ``Co-teaching`` =
  ``coteaching``; see :func:`lnlbench.aggregate.labels.match_key`).
- **Metric.** Our ``best``/``last``/``final``/``selected`` meets only published rows of the same metric
  (``last`` = mean of the last 10 epochs, ``final`` = the final epoch, as ELR's README). A source that does
  not say (``unspecified``) is listed under every metric, labelled, and never gets a Δ.
- **Variant.** A row's ``recipe`` (``truncated=true;q=0.7``) names the hyperparameters its number was
  produced with. Among the rows of one source for one cell, only those whose recipe agrees best with the
  run's *resolved* hyperparameters are kept (GCE ``truncated=True`` → the truncated-L_q rows); a kept row
  that still differs on some key is marked † and the difference footnoted.
- **Comparable.** Δ = ours − published is printed only for a like-for-like pair: our ``paper`` preset, the
  same network, the same metric, no recipe difference, the paper's preset entry found (``recipe.status``
  not ``default``) and no mixed precision. A non-``paper`` preset is "CPU scale, not comparable". Rows
  whose result ran with ``amp`` other than ``off`` (A) or did not record it (A?), and rows whose preset
  lookup fell back to the defaults (D) carry a mark.
- **Budget.** Each pair shows our epochs and network and the published row's; ‡ marks a published budget that
  differs from the method's own ``paper`` preset or from the setting's other published rows
  (:mod:`lnlbench.aggregate.budget`). A recipe's ``epochs=paper`` (the row used the paper's own recipe) is
  the paper preset's epochs; a pair whose stated epochs differ gets no Δ ("different epochs").
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from lnlbench.errors import LnlError

from .budget import MARK, Budget, budget_marks, ours_budget, paper_budget, published_budget
from .export import Row, Table, TCell
from .labels import match_key, method_name, network_name, noise_footnote, noise_label, same_network
from .leaderboard import METRIC_TEXT, Column, Leaderboard

COLUMNS = ["method", "dataset", "noise", "rate", "metric", "value", "std", "source", "tag", "verified",
           "network", "recipe", "notes", "sheet"]
REQUIRED = ["method", "dataset", "noise", "rate", "metric", "value", "source", "tag", "verified"]
PUB_METRICS = ("best", "last", "final", "selected", "unspecified")
TAGS = ("[code]", "[src]", "[R]")
COMPARE_COLUMNS = ["method", "base_method", "dataset", "noise", "rate", "metric", "ours_mean", "ours_std",
                   "ours_n", "ours_model", "ours_preset", "ours_amp", "ours_recipe_status", "published",
                   "published_std", "published_metric", "published_recipe", "recipe_diff", "comparable",
                   "not_comparable", "diff", "tag", "verified", "network", "source", "notes", "file",
                   "ours_epochs", "published_epochs", "paper_epochs", "paper_network", "budget_note"]
COMPARE_NOTES = (
    ("Tags: [code] read in the official code, [src] seen in a named source (both verified); [R] recalled "
     "from the paper, NOT verified — check the paper before treating it as a target."),
)
MARKS = {
    "amp": ("A", "ran with mixed precision (bf16/fp16); the official codes run fp32"),
    "amp?": ("A?", "the result does not record its precision (written before amp was recorded)"),
    "default": ("D", "the preset has no entry for this setting: the method's default hyperparameters ran"),
}


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
    for col in ("network", "recipe", "notes"):
        pub[col] = pub[col] if col in pub else ""
    for recipe in pub["recipe"]:
        parse_recipe(recipe)  # a malformed recipe is an error here, not a silent mismatch later
    pub["noise"] = [noise_label(n, None, None if math.isnan(r) else r)
                    for n, r in zip(pub["noise"], pub["rate"])]
    return pub


def _key(method: str, dataset: str, noise: str, rate: float | None) -> tuple[str, str, str, float | None]:
    rate = None if rate is None or (isinstance(rate, float) and math.isnan(rate)) else round(float(rate), 6)
    return match_key(method), match_key(dataset), match_key(noise), rate


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(low)
    except ValueError:
        return low


def parse_recipe(text: str) -> dict[str, Any]:
    """``"alpha=6;beta=1.0;truncated=true"`` → ``{"alpha": 6.0, "beta": 1.0, "truncated": True}``."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text or "").split(";"))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise LnlError(f"published recipe '{text}': each entry must be key=value, got '{part}'")
        out[key.strip()] = _value(value)
    return out


def recipe_diff(recipe: dict[str, Any], hparams: dict[str, Any]) -> list[str]:
    """``key theirs vs ours value`` for each recipe key our resolved hyperparameters differ on."""
    diffs = []
    for key, theirs in recipe.items():
        ours = _value(json.dumps(hparams[key]) if not isinstance(hparams.get(key), str)
                      else hparams[key]) if key in hparams else None
        same = (isinstance(theirs, float) and isinstance(ours, float) and math.isclose(theirs, ours)) \
            or theirs == ours
        if not same:
            diffs.append(f"{key} {_text(theirs)} vs ours {'not set' if ours is None else _text(ours)}")
    return diffs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell_info(trials: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """Per (row label, dataset, noise, rate): our model, preset, precision, recipe status, hyperparameters."""
    info: dict[tuple, dict[str, Any]] = {}
    for _, t in trials.iterrows():
        rate = None if t["rate"] is None or pd.isna(t["rate"]) else float(t["rate"])
        cell = info.setdefault((t["method"], t["dataset"], t["noise"], rate), {
            "model": t.get("model"), "preset": t.get("preset"), "epochs": t.get("epochs"), "amp": set(),
            "recipe_status": set(),
            "hparams": json.loads(t["config"]) if isinstance(t.get("config"), str) else {}})
        amp = t.get("amp")
        cell["amp"].add(None if amp is None or (isinstance(amp, float) and math.isnan(amp)) else str(amp))
        status = t.get("recipe_status")
        cell["recipe_status"].add(status if isinstance(status, str) else None)
    return info


def _variant_recipe(r: pd.Series) -> dict[str, Any]:
    """The recipe keys that pick a variant: ``epochs=paper`` states the row's budget (the paper's own
    recipe), not a variant, so it is left to the budget check (:func:`_budget_reason`)."""
    recipe = parse_recipe(r["recipe"])
    if recipe.get("epochs") == "paper":
        recipe.pop("epochs")
    return recipe


def _budget_reason(ours: Budget, theirs: Budget, diff: list[str]) -> str:
    """"different epochs" when both state epochs and they differ (unless the recipe diff already says so)."""
    if ours.epochs is None or theirs.epochs is None or ours.epochs == theirs.epochs:
        return ""
    return "" if any(d.startswith("epochs ") for d in diff) else "different epochs"


def _candidates(rows: list[pd.Series], hparams: dict[str, Any]) -> list[tuple[pd.Series, list[str]]]:
    """The rows of each source whose recipe agrees best with the run's hyperparameters, and their diffs."""
    by_source: dict[tuple[str, str], list[tuple[pd.Series, list[str]]]] = {}
    for r in rows:
        diff = recipe_diff(_variant_recipe(r), hparams)
        by_source.setdefault((r["file"], r["source"]), []).append((r, diff))
    kept = []
    for group in by_source.values():
        fewest = min(len(d) for _, d in group)
        kept += [(r, d) for r, d in group if len(d) == fewest]
    return kept


def _why_not(metric: str, r: pd.Series, cell: dict[str, Any], diff: list[str]) -> str:
    """Why a pair is not like for like ("" when it is)."""
    reasons = []
    if cell["preset"] != "paper":
        reasons.append("CPU scale, not comparable" if cell["preset"] == "mini"
                       else f"preset {cell['preset']}, not comparable")
    if r["metric"] != metric:
        reasons.append(f"published metric {r['metric']}")
    if not same_network(cell["model"], r["network"]):
        reasons.append("different network")
    if diff:
        reasons.append("different recipe")
    if cell["amp"] & {"bf16", "fp16"}:
        reasons.append("mixed precision")
    if "default" in cell["recipe_status"]:
        reasons.append("default recipe")
    return "; ".join(reasons)


def compare(board: Leaderboard, published: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (our cell, matching published number): ours, theirs, and ours − theirs (percent points)
    where the pair is like for like (see the module docstring); ``trials`` are the board's trials."""
    pub = published[published["metric"].isin([board.metric, "unspecified"])]
    index: dict[tuple, list[pd.Series]] = {}
    for _, r in pub.iterrows():
        index.setdefault(_key(r["method"], r["dataset"], r["noise"], r["rate"]), []).append(r)
    info = _cell_info(trials)
    rows = []
    for (method, col), cell in board.cells.items():
        base = board.base.get(method, method)
        ours = info.get((method, col.dataset, col.noise, col.rate)) or {
            "model": None, "preset": None, "epochs": None, "amp": {None}, "recipe_status": {None}, "hparams": {}}
        paper = paper_budget(base, col.dataset, col.noise, col.rate)
        matches = index.get(_key(base, col.dataset, col.noise, col.rate), [])
        mine = ours_budget(ours["epochs"], ours["model"])
        for r, diff in _candidates(matches, ours["hparams"]):
            theirs = published_budget(parse_recipe(r["recipe"]), r["network"], paper)
            why = "; ".join(filter(None, [_why_not(board.metric, r, ours, diff), _budget_reason(mine, theirs, diff)]))
            rows.append({
                "method": method, "base_method": base, "dataset": col.dataset, "noise": col.noise,
                "rate": col.rate, "metric": board.metric, "ours_mean": cell.mean, "ours_std": cell.std,
                "ours_n": cell.n, "ours_model": ours["model"], "ours_preset": ours["preset"],
                "ours_amp": ";".join(sorted(a or "unknown" for a in ours["amp"])),
                "ours_recipe_status": ";".join(sorted(s or "unknown" for s in ours["recipe_status"])),
                "published": r["value"], "published_std": r["std"], "published_metric": r["metric"],
                "published_recipe": r["recipe"], "recipe_diff": "; ".join(diff), "comparable": not why,
                "not_comparable": why, "diff": float("nan") if why else cell.mean - r["value"],
                "tag": r["tag"], "verified": r["verified"], "network": r["network"], "source": r["source"],
                "notes": r["notes"], "file": r["file"],
                "ours_epochs": mine.epochs, "published_epochs": theirs.epochs,
                "paper_epochs": paper.epochs if paper else None, "paper_network": paper.network if paper else None,
                "_budget": theirs, "_paper": paper, "setting": f"{col.group} {col.sub}"})
    notes = budget_marks([{**r, "published_budget": r["_budget"], "paper_budget": r["_paper"]} for r in rows])
    for r, note in zip(rows, notes):
        r["budget_note"] = note
    frame = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    return frame.sort_values(["dataset", "noise", "rate", "method"], ignore_index=True)


def _marks(r: pd.Series) -> list[str]:
    amp = set(str(r["ours_amp"]).split(";"))
    marks = [MARKS["amp"][0]] if amp & {"bf16", "fp16"} else [MARKS["amp?"][0]] if "unknown" in amp else []
    return marks + ([MARKS["default"][0]] if "default" in str(r["ours_recipe_status"]).split(";") else [])


def _ours_setup(r: pd.Series) -> str:
    text = f"{network_name(r['ours_model'])}, {r['ours_preset'] or '?'}"
    return text + ("; CPU scale, not comparable" if r["ours_preset"] == "mini" else "")


def comparison_table(board: Leaderboard, comp: pd.DataFrame) -> Table:
    """Ours (with our network and preset) next to theirs (with theirs), Δ for like-for-like pairs only."""
    rows, daggers, budgets = [], [], []
    for _, r in comp.iterrows():
        col = Column(r["dataset"], r["noise"], None if pd.isna(r["rate"]) else float(r["rate"]))
        name = method_name(r["method"], r["base_method"])
        theirs = f"{r['published']:g}" + ("" if pd.isna(r["published_std"]) else f" ± {r['published_std']:g}")
        metric = "" if r["published_metric"] == board.metric else f" ({r['published_metric']})"
        if r["recipe_diff"]:
            daggers.append(f"† {name}, {col.group} {col.sub}: published with {r['published_recipe']}; "
                           f"{r['recipe_diff']}.")
        budget_note = r.get("budget_note") or ""
        if budget_note:
            budgets.append(budget_note)
        rows.append(Row(name, [
            TCell(text=f"{col.group} {col.sub}"),
            TCell(r["ours_mean"], r["ours_std"], note="" if r["ours_n"] > 1 else "n=1"),
            TCell(text=_ours_setup(r)), TCell(text=theirs + metric, dagger=bool(r["recipe_diff"])),
            TCell(text=r["network"] or "?"), TCell(text=f"{r['diff']:+.1f}" if r["comparable"] else "—"),
            TCell(text=r["tag"]), TCell(text=ours_budget(r["ours_epochs"], r["ours_model"]).text()),
            TCell(text=_published_budget_text(r) + (MARK if budget_note else "")),
            TCell(text=r["source"])], marks=_marks(r)))
    notes = [(f"Ours: {METRIC_TEXT[board.metric]}, mean ± sample std over seeds. Like with like: our "
              f"{board.metric} numbers meet only published {board.metric} numbers; a source that does not say "
              f"which (marked '(unspecified)') is listed too, without Δ."),
             ("Δ = ours − published, in percentage points, printed only for a like-for-like pair (our paper "
              "preset, the same network and metric, the same recipe, fp32, the preset's own entry); '—' "
              "otherwise. A mini preset runs at CPU scale: not comparable with the papers."),
             *COMPARE_NOTES]
    used = {m for row in rows for m in row.marks}
    notes += [f"{mark}: {text}." for mark, text in MARKS.values() if mark in used]
    notes += daggers
    if budgets:
        notes.append(f"Budget: training epochs and network. {MARK}: the published number's budget differs from "
                     f"the method's own paper preset for that setting, or from the setting's other published "
                     f"rows (a '?' is compared with nothing): the numbers are not equal-budget.")
        notes += list(dict.fromkeys(budgets))
    notes += [noise_footnote(n) for n in dict.fromkeys(comp["noise"])]
    if comp.empty:
        notes.append(f"No published number matches any of our {len(board.cells)} cells on (method, dataset, "
                     f"noise, rate, metric).")
    header = ["Setting", "Ours", "Ours: network, preset", "Published", "Network", "Δ", "Tag", "Budget: ours",
              "Budget: published", "Source"]
    return Table(f"Ours vs published, test accuracy (%), {board.metric}", "Method", header, rows,
                 footnotes=notes, align="lrlrlrllll")


def _published_budget_text(r: pd.Series) -> str:
    """The published row's epochs (``?`` when unstated) and network, as the comparison recorded them."""
    epochs = None if pd.isna(r["published_epochs"]) else int(r["published_epochs"])
    return Budget(epochs, r["network"] or None).text()
