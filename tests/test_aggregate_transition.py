"""The transition-matrix estimate in the tables: its error table and report section, and the known-T oracle
flagged (T) and kept out of the ranking like clean-data methods."""
from __future__ import annotations

from pathlib import Path

from test_aggregate import write_grid

from lnlbench.aggregate.export import to_markdown
from lnlbench.aggregate.frame import load_runs
from lnlbench.aggregate.leaderboard import Column, build_leaderboard, leaderboard_table
from lnlbench.aggregate.report import write_report
from lnlbench.aggregate.transition import transition_frame, transition_table

COL = Column("cifar10", "symmetric", 0.5)


def test_known_matrix_oracle_is_flagged_listed_last_and_not_ranked(tmp_path: Path) -> None:
    write_grid(tmp_path, {("ce", 0.5): [0.70, 0.72], ("forward", 0.5): [0.75, 0.76]})
    oracle = {"uses_clean_data": False, "uses_true_transition": True, "reconstructed": False}
    write_grid(tmp_path / "known", {("backward", 0.5): [0.90, 0.91]}, flags=oracle)
    runs = load_runs([tmp_path])
    board = build_leaderboard(runs.trials, runs.skipped)
    assert board.methods == ["ce", "forward", "backward"]
    assert board.cell("forward", COL).rank == 1 and board.cell("backward", COL).rank is None
    table = leaderboard_table(board)
    assert table.rows[2].marks == ["T"] and table.rows[2].rule_before
    assert "T: trains on the noise generator's true transition matrix" in to_markdown(table)
    assert bool(board.to_frame().set_index("method").loc["backward", "uses_true_transition"])


def test_transition_table_shows_mean_error_per_method_and_the_report_embeds_it(tmp_path: Path) -> None:
    write_grid(tmp_path, {("ce", 0.5): [0.70, 0.72]})
    write_grid(tmp_path, {("forward", 0.5): [0.75, 0.76]}, extra={"transition_mae": 0.02})
    write_grid(tmp_path, {("t_revision", 0.5): [0.78, 0.79]}, extra={"transition_mae": 0.01})
    runs = load_runs([tmp_path])
    frame = transition_frame(runs.trials)
    assert frame["method"].tolist() == ["forward", "t_revision"]  # CE estimates nothing: no row
    assert frame["mean"].tolist() == [2.0, 1.0] and frame["n"].tolist() == [2, 2]
    assert runs.curves["transition_mae"].isna().all()  # these histories hold no per-epoch estimate
    table = transition_table(runs.trials)
    assert [r.cells[0].bold for r in table.rows] == [False, True]  # lower is better
    assert "2.0 ± 0.0" in to_markdown(table)
    readme = write_report(runs, tmp_path / "report").read_text()
    assert "## Transition-matrix estimation" in readme
    assert (tmp_path / "report" / "transition.csv").exists() and (tmp_path / "report" / "transition.tex").exists()


def test_no_estimate_no_table(tmp_path: Path) -> None:
    write_grid(tmp_path, {("ce", 0.5): [0.70, 0.72]})
    runs = load_runs([tmp_path])
    assert transition_table(runs.trials) is None
    assert "Transition-matrix" not in write_report(runs, tmp_path / "report").read_text()
