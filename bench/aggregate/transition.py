"""The transition-matrix estimation table: how far each method's estimate of T lies from the noise generator's.

A trial of a method that estimates a class-transition matrix (Forward, Backward, T-Revision) records
``transition_mae``: the mean absolute error over the C×C entries of its estimate against the matrix the
noise generator meant, scored by the harness at the last epoch that had an estimate (the per-epoch values
are in the history). This table shows it per method and (dataset, noise, rate) cell as mean ± sample std
over seeds, ×100 (percentage points of probability), lower is better; methods without an estimate, and the
known-matrix oracles (which estimate nothing), have no row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .export import Row, Table, TCell
from .labels import method_name
from .leaderboard import Column, _column_of, _sorted_columns

TITLE = "Transition-matrix estimate: mean absolute error ×100 (lower is better)"
NOTE = ("Mean absolute error over the C×C entries of the method's estimate of T (row = clean class) against "
        "the noise generator's intended matrix, at the trial's last estimate, ×100; mean ± sample std (ddof=1) "
        "over seeds. Real noise (CIFAR-N) is scored against its empirical matrix.")


def transition_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """One tidy row per (method, column) with a recorded estimate: mean, std, n and the values (×100)."""
    if "transition_mae" not in trials or not trials["transition_mae"].notna().any():
        return pd.DataFrame(columns=["method", "dataset", "noise", "rate", "mean", "std", "n", "values"])
    have = trials[trials["transition_mae"].notna()]
    rows = []
    for (method, col), g in have.groupby([have["method"], have.apply(_column_of, axis=1)], sort=False):
        vals = 100.0 * g["transition_mae"].astype(float).to_numpy()
        rows.append({"method": method, "dataset": col.dataset, "noise": col.noise, "rate": col.rate,
                     "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                     "n": len(vals), "values": ";".join(f"{v:.4f}" for v in vals)})
    return pd.DataFrame(rows).sort_values(["method", "dataset", "noise", "rate"], ignore_index=True)


def transition_table(trials: pd.DataFrame) -> Table | None:
    """The table (best mean of each column in bold), or None when no trial recorded an estimate."""
    frame = transition_frame(trials)
    if frame.empty:
        return None
    base = dict(zip(trials["method"], trials["base_method"])) if "base_method" in trials else {}
    columns: list[Column] = _sorted_columns({Column(r.dataset, r.noise, r.rate) for r in frame.itertuples()})
    cells = {(r.method, Column(r.dataset, r.noise, r.rate)): r for r in frame.itertuples()}
    means = {c: [r.mean for (_, cc), r in cells.items() if cc == c] for c in columns}
    rows = []
    for m in sorted(frame["method"].unique()):
        out = []
        for c in columns:
            r = cells.get((m, c))
            bold = r is not None and len(means[c]) > 1 and r.mean == min(means[c])
            out.append(TCell() if r is None else TCell(r.mean, None if pd.isna(r.std) else r.std, bold=bold))
        rows.append(Row(method_name(m, base.get(m)), out))
    groups: list[tuple[str, int]] = []
    for c in columns:
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1] + 1)
        else:
            groups.append((c.group, 1))
    return Table(TITLE, "Method", [c.sub for c in columns], rows, groups, [NOTE])
