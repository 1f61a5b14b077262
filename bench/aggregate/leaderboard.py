"""The leaderboard: methods × (dataset, noise, rate) cells of mean ± std over seeds, ranked and tested.

Choices, stated once here and repeated in every table's footnotes:

- **Metric.** ``last`` (default; the mean test accuracy of the last 10 epochs, DivideMix's "Last"),
  ``final`` (the test accuracy of the final epoch alone, what ELR's README reports — under a warm-restart
  cosine schedule ``last`` averages a whole restart cycle instead), ``best`` (the highest test accuracy
  over all epochs — optimistic, it peeks at the test set) or ``selected`` (test accuracy at the epoch of
  best *noisy*-validation accuracy; needs ``--val-fraction``).
- **Units.** Accuracy in percent, shown with one decimal as the LNL papers print it; the CSV export keeps
  full precision (still in percent).
- **Spread.** mean ± *sample* standard deviation over seeds (``ddof=1``); one seed shows the mean alone.
  The seeds a cell should have are the seeds seen anywhere in the run for that dataset; a cell with fewer
  shows ``(n=k)``.
- **Ranking.** Per column the highest mean is **bold** (when at least two methods have a value) and the
  second highest underlined (when at least three do). Methods that use extra clean data, or the noise
  generator's true transition matrix (Forward/Backward's known-T oracle), are listed below the others and not
  ranked, unless every method of the column does (methods.md, TSSD); a footnote says how many clean labels
  per class each used (result.json ``golden``).
- **Significance.** Each other ranked cell is compared with the best by Welch's t-test over its seeds
  (``scipy.stats.ttest_ind(equal_var=False)``); a cell whose difference from the best is *not* significant
  at α = 0.05 (two-sided) gets a dagger †. With fewer than 2 seeds on either side there is no test and no
  mark. Two cells with zero variance count as different unless their means are equal.
- **Missing** cells show "—" and are listed in a footnote with the reason (not run, failed, running).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from lnlbench.errors import LnlError

from .export import Row, Table, TCell
from .labels import dataset_name, method_name, noise_footnote, noise_short, noise_sort_key, rate_text

METRICS = {"last": "last_acc", "final": "final_acc", "best": "best_acc", "selected": "selected_acc"}
METRIC_TEXT = {
    "last": "Last: mean test accuracy (%) of the last 10 epochs",
    "final": "Final: test accuracy (%) of the final epoch",
    "best": "Best: highest test accuracy (%) over all epochs (peeks at the test set)",
    "selected": "Selected: test accuracy (%) at the epoch of best noisy-validation accuracy",
}


@dataclass(frozen=True, order=True)
class Column:
    """One leaderboard column: a dataset, a noise label and a rate (None for real noise)."""

    dataset: str
    noise: str
    rate: float | None

    @property
    def group(self) -> str:
        """The column-group header, e.g. ``CIFAR-10 sym``."""
        return f"{dataset_name(self.dataset)} {noise_short(self.noise)}"

    @property
    def sub(self) -> str:
        """The column header under its group, e.g. ``20%``."""
        return rate_text(self.rate) if self.noise != "none" else "0%"


@dataclass
class Cell:
    """The seeds of one method in one column (values in percent) and what the table marks on them."""

    values: np.ndarray
    expected: int
    rank: int | None = None  # 1 = best (bold), 2 = second (underlined)
    p_value: float | None = None  # Welch's t-test against the column's best
    same_as_best: bool = False  # not significantly different from the best (dagger)

    @property
    def n(self) -> int:
        """The number of seeds."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """The mean over seeds (percent)."""
        return float(np.mean(self.values))

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None with a single seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None


@dataclass
class Leaderboard:
    """A built leaderboard; :func:`leaderboard_table` turns it into a displayable table."""

    metric: str
    alpha: float
    methods: list[str]
    columns: list[Column]
    cells: dict[tuple[str, Column], Cell]
    flags: dict[str, dict[str, bool]]
    missing: dict[tuple[str, Column], str] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)  # row label -> registry name (variants share one)
    reconstruction: dict[str, str] = field(default_factory=dict)  # row label -> from what it was rebuilt
    golden: dict[str, tuple[int, ...]] = field(default_factory=dict)  # row label -> clean labels per class
    tuned: dict[str, str] = field(default_factory=dict)  # row label -> its tuned recipes' search budget

    def cell(self, method: str, column: Column) -> Cell | None:
        """The cell of a method in a column; None when it is missing."""
        return self.cells.get((method, column))

    def to_frame(self) -> pd.DataFrame:
        """One tidy row per (method, column), missing ones included: the CSV export."""
        rows = []
        for m in self.methods:
            for col in self.columns:
                c = self.cell(m, col)
                rows.append({
                    "method": m, "dataset": col.dataset, "noise": col.noise, "rate": col.rate,
                    "metric": self.metric, "mean": None if c is None else c.mean,
                    "std": None if c is None else c.std, "n": 0 if c is None else c.n,
                    "n_expected": None if c is None else c.expected,
                    "values": "" if c is None else ";".join(f"{v:.4f}" for v in c.values),
                    "rank": None if c is None else c.rank,
                    "p_value_vs_best": None if c is None else c.p_value,
                    "not_significant_vs_best": None if c is None else c.same_as_best,
                    "missing": self.missing.get((m, col), ""), **self.flags.get(m, {})})
        frame = pd.DataFrame(rows)
        return frame.astype({"n_expected": "Int64", "rank": "Int64"}) if len(frame) else frame


def _expected_seeds(trials: pd.DataFrame, skipped: pd.DataFrame) -> dict[str, int]:
    """Per dataset: how many distinct seeds appear anywhere in the run (finished or not)."""
    both = pd.concat([trials[["dataset", "seed"]], skipped[["dataset", "seed"]]])
    return both.groupby("dataset")["seed"].nunique().to_dict()


def _column_of(row: pd.Series) -> Column:
    rate = row["rate"]
    return Column(row["dataset"], row["noise"], None if rate is None or math.isnan(rate) else float(rate))


def _sorted_columns(cols: set[Column]) -> list[Column]:
    def key(c: Column) -> tuple:
        return c.dataset, noise_sort_key(c.noise), -1.0 if c.rate is None else c.rate

    return sorted(cols, key=key)


def welch_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Welch t-test p-value; None with fewer than 2 values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.var(a) == 0 and np.var(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _rank_column(cells: list[Cell], alpha: float) -> None:
    """Bold the best, underline the second best (distinct means) and test each against the best."""
    if len(cells) < 2:
        return
    means = sorted({c.mean for c in cells}, reverse=True)
    best = [c for c in cells if c.mean == means[0]]
    for c in best:
        c.rank = 1
    if len(cells) >= 3 and len(means) >= 2:
        for c in cells:
            if c.mean == means[1]:
                c.rank = 2
    ref = max(best, key=lambda c: c.n)
    for c in cells:
        if c.rank == 1:
            continue
        c.p_value = welch_p(c.values, ref.values)
        c.same_as_best = c.p_value is not None and c.p_value >= alpha


def _missing_reason(skipped: pd.DataFrame, method: str, col: Column, has_trials: bool, metric: str) -> str:
    if has_trials:
        return f"no {METRICS[metric]} recorded (run with --val-fraction > 0)" if metric == "selected" \
            else f"no {METRICS[metric]} recorded"
    rows = skipped[(skipped["method"] == method) & (skipped["dataset"] == col.dataset)
                   & (skipped["noise"] == col.noise)]
    rows = rows[rows["rate"].isna()] if col.rate is None else rows[rows["rate"] == col.rate]
    if len(rows):
        counts = rows["status"].value_counts().to_dict()
        return ", ".join(f"{n} {s} trial{'s' if n > 1 else ''}" for s, n in sorted(counts.items()))
    return "not run"


def build_leaderboard(trials: pd.DataFrame, skipped: pd.DataFrame | None = None, metric: str = "last",
                      alpha: float = 0.05) -> Leaderboard:
    """Group the finished trials by (method, column) and rank each column; see the module docstring."""
    if metric not in METRICS:
        raise LnlError(f"unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    if not 0.0 < alpha < 1.0:
        raise LnlError(f"significance level must be in (0, 1), got {alpha}")
    skipped = skipped if skipped is not None else pd.DataFrame(columns=["method", "dataset", "noise",
                                                                         "rate", "seed", "status"])
    col_key = METRICS[metric]
    if metric == "selected" and len(trials) and trials[col_key].isna().all():
        raise LnlError("no trial has selected_acc (it needs a noisy validation split); re-run trials with "
                       "--val-fraction 0.1, or use --metric last or best")
    expected = _expected_seeds(trials, skipped)
    # an unfinished trial of a method whose finished trials are split into variants belongs to no row
    variants = set(trials["base_method"]) - set(trials["method"]) if "base_method" in trials else set()
    unfinished = skipped[~skipped["method"].isin(variants)].assign(**{col_key: np.nan})
    grouped: dict[tuple[str, Column], list[float]] = {}
    for _, row in pd.concat([trials, unfinished], ignore_index=True).iterrows():
        vals = grouped.setdefault((row["method"], _column_of(row)), [])
        if row.get("status") == "ok" and pd.notna(row[col_key]):
            vals.append(100.0 * float(row[col_key]))
    methods = sorted({m for m, _ in grouped})
    flags = {m: {f: bool(g[f].any()) for f in FLAG_MARKS if f in g} for m, g in trials.groupby("method")}
    notes = {m: "; ".join(sorted({str(v) for v in g["reconstruction"].dropna() if str(v)}))
             for m, g in trials.groupby("method")} if "reconstruction" in trials else {}
    methods.sort(key=lambda m: (is_oracle(flags.get(m, {})), m))
    columns = _sorted_columns({c for _, c in grouped})
    base = dict(zip(trials["method"], trials["base_method"])) if "base_method" in trials else {}
    board = Leaderboard(metric, alpha, methods, columns, {}, flags, base=base,
                        reconstruction={m: n for m, n in notes.items() if n}, golden=_golden_sizes(trials),
                        tuned=_tuned_budgets(trials))
    has_trials = set(zip(trials["method"], trials.apply(_column_of, axis=1))) if len(trials) else set()
    for (m, col), vals in grouped.items():
        if vals:
            board.cells[(m, col)] = Cell(np.array(vals), expected.get(col.dataset, len(vals)))
        else:
            board.missing[(m, col)] = _missing_reason(skipped, m, col, (m, col) in has_trials, metric)
    for m in methods:
        for col in columns:
            if (m, col) not in grouped:
                board.missing[(m, col)] = "not run"
    for col in columns:
        _rank_column(_ranked_cells(board, col), alpha)
    return board


def _tuned_budgets(trials: pd.DataFrame) -> dict[str, str]:
    """Per row label of ``preset: tuned`` trials, the search budget(s) of their recipes."""
    if "tuned" not in trials:
        return {}
    return {m: "; ".join(sorted({str(v) for v in g["tuned"] if isinstance(v, str) and v}))
            for m, g in trials.groupby("method") if g["tuned"].map(lambda v: isinstance(v, str) and bool(v)).any()}


def default_metric(trials: pd.DataFrame) -> str:
    """``selected`` for a table with tuned rows whose trials recorded it (model selection on the noisy
    validation split, as the search selected its winner), else ``last``."""
    tuned = trials[trials["preset"] == "tuned"] if "preset" in trials else trials.iloc[:0]
    return "selected" if len(tuned) and tuned["selected_acc"].notna().any() else "last"


def _golden_sizes(trials: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """Per row label, the golden set sizes (clean labels per class) its trials trained on."""
    if "golden_per_class" not in trials:
        return {}
    out = {}
    for m, g in trials.groupby("method"):
        sizes = sorted({int(float(v)) for v in g["golden_per_class"] if v is not None and pd.notna(v)})
        if sizes:
            out[m] = tuple(sizes)
    return out


def _ranked_cells(board: Leaderboard, col: Column) -> list[Cell]:
    """The cells that compete in a column: those of methods without extra clean data, if any have one."""
    present = [(m, board.cells[(m, col)]) for m in board.methods if (m, col) in board.cells]
    fair = [c for m, c in present if not is_oracle(board.flags.get(m, {}))]
    return fair if fair else [c for _, c in present]


FLAG_MARKS = {
    "uses_clean_data": ("C", "uses extra clean (trusted) data; listed below the rule and not ranked"),
    "uses_true_transition": ("T", "trains on the noise generator's true transition matrix (an oracle, e.g. "
                                  "Forward/Backward with transition=known); listed below the rule and not ranked"),
    "reconstructed": ("R", "implementation reconstructed from the paper, not from official code"),
}
ORACLE_FLAGS = ("uses_clean_data", "uses_true_transition")  # knowledge a noisy-label method lacks


def is_oracle(flags: dict[str, bool]) -> bool:
    """A row trained on something beyond the noisy labels (clean data, the true transition matrix)."""
    return any(flags.get(f, False) for f in ORACLE_FLAGS)


def _display(cell: Cell | None) -> TCell:
    if cell is None:
        return TCell()
    note = f"n={cell.n}" if cell.n < cell.expected else ""
    return TCell(cell.mean, cell.std, note=note, bold=cell.rank == 1, underline=cell.rank == 2,
                 dagger=cell.same_as_best)


def board_footnotes(board: Leaderboard) -> list[str]:
    """What every mark in the table means, which convention each noise column follows, what is missing."""
    spread = (f"{METRIC_TEXT[board.metric]}; mean ± sample std (ddof=1) over seeds, one decimal; "
              f"(n=k): only k of the run's seeds for that dataset finished.")
    marks = (f"Bold: best mean of the column; underlined: second best. †: not significantly different from "
             f"the best (Welch's t-test over seeds, two-sided, α = {board.alpha:g}); no test with fewer than "
             f"2 seeds.")
    notes = [spread, marks]
    notes += [noise_footnote(n) for n in dict.fromkeys(c.noise for c in board.columns)]
    for flag, (mark, text) in FLAG_MARKS.items():
        if any(f.get(flag) for f in board.flags.values()):
            notes.append(f"{mark}: {text}.")
    for m, sizes in board.golden.items():  # each method on clean data says how many labels
        plural = "s" if sizes != (1,) else ""
        notes.append(f"C ({method_name(m, board.base.get(m))}): uses {' or '.join(map(str, sizes))} clean "
                     f"label{plural} per class (a golden set carved out of its training set).")
    by_budget: dict[str, list[str]] = {}  # the tuned rows say how their recipes were searched, once per budget
    for m, budget in board.tuned.items():
        by_budget.setdefault(budget, []).append(method_name(m, board.base.get(m)))
    for budget, rows in by_budget.items():
        notes.append(f"{', '.join(rows)}: hyperparameters from `lnlbench tune` (random search + ASHA, "
                     f"objective: accuracy on a noisy validation split; no clean or test label), budget "
                     f"{budget}, the same for each; retrained here with the table's seeds.")
    for m, how in board.reconstruction.items():  # each reconstructed method says from what
        notes.append(f"R ({method_name(m, board.base.get(m))}): {how}.")
    if board.missing:
        notes.append("— missing: " + "; ".join(_missing_items(board)) + ".")
    return notes


def _missing_items(board: Leaderboard) -> list[str]:
    """``method on col, col (reason)`` per method and reason, columns in table order."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for m in board.methods:
        for col in board.columns:
            why = board.missing.get((m, col))
            if why is not None:
                grouped.setdefault((m, why), []).append(f"{col.group} {col.sub}")
    return [f"{method_name(m, board.base.get(m))} on {', '.join(cols)} ({why})"
            for (m, why), cols in grouped.items()]


def leaderboard_table(board: Leaderboard, title: str | None = None) -> Table:
    """The leaderboard as a format-neutral :class:`~lnlbench.aggregate.export.Table`."""
    groups: list[tuple[str, int]] = []
    for col in board.columns:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    rows, seen_clean = [], False
    for m in board.methods:
        flags = board.flags.get(m, {})
        marks = [FLAG_MARKS[f][0] for f in FLAG_MARKS if flags.get(f)]
        clean = is_oracle(flags)
        rows.append(Row(method_name(m, board.base.get(m)), [_display(board.cell(m, c)) for c in board.columns],
                        marks,
                        rule_before=clean and not seen_clean and bool(rows)))
        seen_clean = seen_clean or clean
    title = title or f"Test accuracy (%), {board.metric}"
    return Table(title, "Method", [c.sub for c in board.columns], rows, groups, board_footnotes(board))
