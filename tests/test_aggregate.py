"""The aggregator's reading and leaderboard: exact mean/std, ranks, significance, missing cells, bad files.

Every test writes its own result.json files (the engine's schema) with :func:`write_trial`; no torch, no Ray.
The other ``test_aggregate_*.py`` files import :func:`write_trial` from here.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from lnlbench.aggregate.export import to_markdown
from lnlbench.aggregate.frame import load_runs, select, trial_command
from lnlbench.aggregate.labels import noise_label
from lnlbench.aggregate.leaderboard import Column, build_leaderboard, leaderboard_table, welch_p
from lnlbench.errors import LnlError


def write_trial(root: Path, method: str, last: float, *, dataset: str = "cifar10", noise: str = "symmetric",
                rate: float | None = 0.5, seed: int = 0, best: float | None = None,
                selected: float | None = None, status: str = "ok", options: dict | None = None,
                flags: dict | None = None, epochs: int = 3, selection: bool = False,
                hparams: dict | None = None, finished_at: str = "2026-01-01T00:00:00+00:00",
                device_hours: float = 0.01, preset: str = "mini", final: float | None = None,
                extra: dict | None = None) -> Path:
    """Write one result.json like the engine's (schema lnlbench.result/1) and return its path; ``extra``
    adds top-level fields (``amp``, ``recipe``, ``noise_label``)."""
    history = []
    for e in range(epochs):
        rec: dict[str, Any] = {"epoch": e, "lr": 0.1, "train_time_s": 1.0, "eval_time_s": 0.1,
                               "test_acc": last - 0.02 * (epochs - 1 - e)}
        if selected is not None:
            rec["val_acc"] = 0.5 + 0.1 * e
        if selection:
            rec["selection"] = {"precision": 0.8 + 0.05 * e, "recall": 0.7 + 0.05 * e, "auc": 0.9,
                                "selected_fraction": 0.5}
        history.append(rec)
    digest = abs(hash((method, last, status, json.dumps(hparams), preset, json.dumps(extra)))) % 10**8
    tid = f"{method}_{dataset}_{noise}_{rate}_s{seed}_{digest:08d}"
    config = {"method": method, "dataset": dataset, "noise": noise, "rate": rate, "seed": seed,
              "preset": preset, "epochs": None, "hparams": {}, "noise_options": options or {},
              "val_fraction": 0.0, "out_dir": str(root)}
    error = {"type": "RuntimeError", "message": "boom\ntrace", "traceback": "..."}
    result = {
        "schema": "lnlbench.result/1", "trial_id": tid, "status": status,
        "error": error if status == "failed" else None,
        "config": config, "method": method, "dataset": dataset,
        "noise": {"name": noise, "options": options or {}, "rate": rate, "realized_rate": rate},
        "seed": seed, "preset": preset, "hparams": {"model": "mlp", "epochs": epochs, **(hparams or {})},
        "method_flags": flags or {"uses_clean_data": False, "reconstructed": False},
        "data": {"n_train": 100, "n_val": 0, "n_test": 50, "num_classes": 10},
        "history": history, "best_acc": best if best is not None else last, "best_epoch": 0,
        "last_acc": last, "final_acc": last if final is None else final, "selected_acc": selected, "epochs_done": epochs,
        "wall_time_s": device_hours * 3600,
        "device": "cpu", "device_name": "cpu", "device_hours": device_hours, "git_commit": "abc",
        "finished_at": finished_at, **(extra or {}),
    }
    path = root / tid / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def write_grid(root: Path, cells: dict[tuple[str, float], list[float]], **kw: Any) -> None:
    """``{(method, rate): [last accuracy per seed]}`` → one trial per seed."""
    for (method, rate), values in cells.items():
        for seed, v in enumerate(values):
            write_trial(root, method, v, rate=rate, seed=seed, **kw)


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """3 methods × sym 20/50/80 % on CIFAR-10; 'c' has no 80 % run; 'b' has 2 of 3 seeds at 50 %."""
    write_grid(tmp_path, {
        ("a", 0.2): [0.90, 0.92, 0.94], ("b", 0.2): [0.88, 0.89, 0.90], ("c", 0.2): [0.80, 0.81, 0.82],
        ("a", 0.5): [0.80, 0.80, 0.81], ("b", 0.5): [0.70, 0.71], ("c", 0.5): [0.75, 0.76, 0.77],
        ("a", 0.8): [0.50, 0.60, 0.70], ("b", 0.8): [0.49, 0.61, 0.68],
    })
    return tmp_path


def test_mean_and_sample_std_are_exact(grid: Path) -> None:
    runs = load_runs([grid])
    board = build_leaderboard(runs.trials, runs.skipped)
    cell = board.cell("a", Column("cifar10", "symmetric", 0.2))
    assert cell.n == 3
    assert cell.mean == pytest.approx(92.0)
    assert cell.std == pytest.approx(2.0)  # sample std (ddof=1) of 90, 92, 94
    assert cell.std == pytest.approx(np.std([90.0, 92.0, 94.0], ddof=1))
    assert "92.0 ± 2.0" in to_markdown(leaderboard_table(board))


def test_bold_best_and_underline_second(grid: Path) -> None:
    runs = load_runs([grid])
    board = build_leaderboard(runs.trials, runs.skipped)
    col = Column("cifar10", "symmetric", 0.2)
    assert [board.cell(m, col).rank for m in "abc"] == [1, 2, None]
    col50 = Column("cifar10", "symmetric", 0.5)
    assert [board.cell(m, col50).rank for m in "abc"] == [1, None, 2]  # c (76) beats b (70.5) at 50 %
    md = to_markdown(leaderboard_table(board))
    row_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert "**92.0 ± 2.0**" in row_a and "<ins>89.0 ± 1.0</ins>" in row_b


def test_missing_cells_show_a_dash_and_are_listed(grid: Path) -> None:
    runs = load_runs([grid])
    board = build_leaderboard(runs.trials, runs.skipped)
    md = to_markdown(leaderboard_table(board))
    row_c = next(line for line in md.splitlines() if line.startswith("| c |"))
    assert row_c.rstrip(" |").endswith("—")
    assert "— missing: c on CIFAR-10 sym 80% (not run)." in md


def test_incomplete_seeds_show_n(grid: Path) -> None:
    runs = load_runs([grid])
    board = build_leaderboard(runs.trials, runs.skipped)
    cell = board.cell("b", Column("cifar10", "symmetric", 0.5))
    assert (cell.n, cell.expected) == (2, 3)
    assert "70.5 ± 0.7 (n=2)" in to_markdown(leaderboard_table(board))


def test_significance_marks(grid: Path) -> None:
    runs = load_runs([grid])
    board = build_leaderboard(runs.trials, runs.skipped)
    # built to be significant: c at 20 % (80, 81, 82) against the best, a (90, 92, 94)
    c20 = board.cell("c", Column("cifar10", "symmetric", 0.2))
    expect = stats.ttest_ind([80, 81, 82], [90, 92, 94], equal_var=False).pvalue
    assert c20.p_value == pytest.approx(expect) and c20.p_value < 0.05 and not c20.same_as_best
    # built not to be: b at 80 % (49, 61, 68) vs a (50, 60, 70): a large spread, a tiny gap
    b80 = board.cell("b", Column("cifar10", "symmetric", 0.8))
    assert b80.p_value > 0.5 and b80.same_as_best
    md = to_markdown(leaderboard_table(board))
    assert "59.3 ± 9.6†" in md and "81.0 ± 1.0†" not in md
    # fewer than 2 seeds: no test, no mark
    assert welch_p(np.array([1.0]), np.array([1.0, 2.0])) is None


def test_zero_variance_cells() -> None:
    assert welch_p(np.array([90.0, 90.0]), np.array([90.0, 90.0])) == 1.0
    assert welch_p(np.array([90.0, 90.0]), np.array([80.0, 80.0])) == 0.0


def test_failed_running_and_corrupt_files_are_reported_and_skipped(grid: Path) -> None:
    write_trial(grid, "c", 0.1, rate=0.8, seed=0, status="failed")
    write_trial(grid, "c", 0.1, rate=0.8, seed=1, status="running")
    (grid / "broken").mkdir()
    (grid / "broken" / "result.json").write_text('{"schema": "lnlbench.result/1", "method": ')
    (grid / "other").mkdir()
    (grid / "other" / "result.json").write_text('{"schema": "someone.else/2"}')
    bad = write_trial(grid, "d", 0.5, rate=0.8, seed=2)
    bad.write_text(bad.read_text().replace('"seed": 2', '"seed": "two"'))
    runs = load_runs([grid])
    reasons = " | ".join(p.reason for p in runs.problems)
    assert len(runs.problems) == 5 and "malformed field (ValueError" in reasons
    assert "trial failed (RuntimeError: boom)" in reasons and "still running" in reasons
    assert "not valid JSON" in reasons and "unknown schema 'someone.else/2'" in reasons
    assert len(runs.trials) == 23  # the good ones are all there
    board = build_leaderboard(runs.trials, runs.skipped)
    assert board.missing[("c", Column("cifar10", "symmetric", 0.8))] == "1 failed trial, 1 running trial"


def test_duplicate_trials_keep_the_newest(tmp_path: Path) -> None:
    write_trial(tmp_path, "a", 0.5, finished_at="2026-01-01T00:00:00+00:00")
    write_trial(tmp_path, "a", 0.7, finished_at="2026-02-01T00:00:00+00:00")
    runs = load_runs([tmp_path])
    assert runs.trials["last_acc"].tolist() == [0.7]
    assert "duplicate" in runs.problems[0].reason


def test_different_configs_are_variants_not_duplicates(tmp_path: Path) -> None:
    for seed, (lo, hi) in enumerate([(0.80, 0.90), (0.82, 0.92)]):
        write_trial(tmp_path, "elr", lo, seed=seed, hparams={"lr": 0.1, "beta": 0.7})
        write_trial(tmp_path, "elr", hi, seed=seed, hparams={"lr": 0.01, "beta": 0.7})
    write_trial(tmp_path, "elr", 0.5, rate=0.8, hparams={"lr": 0.1, "beta": 0.7})  # one config: no label
    write_trial(tmp_path, "elr", 0.5, seed=2, status="running", hparams={"lr": 0.1, "beta": 0.7})
    runs = load_runs([tmp_path])
    assert len(runs.problems) == 1  # the running one: reported, and no row of its own
    board = build_leaderboard(runs.trials, runs.skipped)
    assert board.methods == ["elr", "elr [lr=0.01]", "elr [lr=0.1]"]
    assert board.cell("elr [lr=0.01]", Column("cifar10", "symmetric", 0.5)).mean == pytest.approx(91.0)
    assert board.base["elr [lr=0.1]"] == "elr"
    assert set(select(runs, methods=["elr"]).trials["method"]) == set(board.methods)


def test_no_results_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(LnlError, match="no result.json files found under"):
        load_runs([tmp_path])
    write_trial(tmp_path, "a", 0.5, status="failed")
    runs = load_runs([tmp_path])
    with pytest.raises(LnlError, match="holds a finished trial"):
        runs.require_trials()


def test_flags_clean_data_method_is_listed_last_and_not_ranked(tmp_path: Path) -> None:
    write_grid(tmp_path, {("a", 0.5): [0.80, 0.82], ("b", 0.5): [0.70, 0.72]})
    flags = {"uses_clean_data": True, "reconstructed": True}
    write_grid(tmp_path, {("tssd", 0.5): [0.95, 0.96]}, flags=flags)
    runs = load_runs([tmp_path])
    board = build_leaderboard(runs.trials, runs.skipped)
    col = Column("cifar10", "symmetric", 0.5)
    assert board.methods == ["a", "b", "tssd"]
    assert board.cell("a", col).rank == 1 and board.cell("tssd", col).rank is None
    table = leaderboard_table(board)
    assert table.rows[2].marks == ["C", "R"] and table.rows[2].rule_before
    md = to_markdown(table)
    assert "TSSD<sup>C</sup><sup>R</sup>" in md  # tssd is registered: its display_name
    assert "C: uses extra clean (trusted) data" in md and "R: implementation reconstructed" in md


def test_noise_conventions_are_separate_columns_with_footnotes(tmp_path: Path) -> None:
    write_trial(tmp_path, "a", 0.8, noise="symmetric", rate=0.5)
    write_trial(tmp_path, "a", 0.7, noise="symmetric_exclusive", rate=0.5)
    write_trial(tmp_path, "a", 0.9, noise="asymmetric", rate=0.4)
    write_trial(tmp_path, "a", 0.95, noise="symmetric", rate=0.0)
    runs = load_runs([tmp_path])
    board = build_leaderboard(runs.trials, runs.skipped)
    assert [c.noise for c in board.columns] == ["none", "symmetric", "symmetric_exclusive",
                                                "asymmetric:dividemix"]
    md = to_markdown(leaderboard_table(board))
    assert "sym = symmetric noise, the true class may be drawn (DivideMix" in md
    assert "sym-x = symmetric noise, the true class excluded (MOIT/Co-teaching" in md
    assert noise_label("cifar10n", {"label_set": "rand1"}) == "cifar10n:random1"
    assert noise_label("asymmetric", {"convention": "elr"}, 0.4) == "asymmetric:elr"


def test_metrics_best_and_selected(tmp_path: Path) -> None:
    write_trial(tmp_path, "a", 0.80, best=0.90, seed=0)
    runs = load_runs([tmp_path])
    assert build_leaderboard(runs.trials, runs.skipped, "best").cell(
        "a", Column("cifar10", "symmetric", 0.5)).mean == pytest.approx(90.0)
    with pytest.raises(LnlError, match="--val-fraction"):
        build_leaderboard(runs.trials, runs.skipped, "selected")
    write_trial(tmp_path, "a", 0.80, selected=0.85, seed=1)
    runs = load_runs([tmp_path])
    board = build_leaderboard(runs.trials, runs.skipped, "selected")
    assert board.cell("a", Column("cifar10", "symmetric", 0.5)).values.tolist() == [85.0]


def test_trial_command_rebuilds_the_cli_call() -> None:
    cmd = trial_command({"method": "ce", "dataset": "digits", "noise": "symmetric", "rate": 0.5, "seed": 2,
                         "preset": "auto", "epochs": None, "val_fraction": 0.1, "hparams": {"lr": 0.01},
                         "noise_options": {}, "out_dir": "/tmp/x"})
    assert cmd == ("lnlbench trial --method ce --dataset digits --noise symmetric --rate 0.5 --seed 2 "
                   "--val-fraction 0.1 --hp lr=0.01 --out /tmp/x")


def test_the_aggregator_never_imports_torch_or_ray() -> None:
    """Statically: every import of the aggregate package is the standard library, numpy, pandas, scipy,
    matplotlib, lnlbench.errors, lnlbench.command, lnlbench.cli, lnlbench.registry or the package
    itself (lnlbench.cli imports
    torch lazily; the registry is imported inside functions, for noise labels and method display names, and
    a missing torch only turns display names into registry keys: see the next test)."""
    import lnlbench.aggregate as pkg

    allowed = {"numpy", "pandas", "scipy", "matplotlib", "lnlbench.errors", "lnlbench.cli", "lnlbench.registry",
               "lnlbench.command"}
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                ok = top in sys.stdlib_module_names or top in allowed or name in allowed
                assert ok, f"{path.name} imports {name}"


def test_tables_render_without_torch(grid: Path) -> None:
    """With torch unimportable the leaderboard still renders (display names fall back to registry keys)
    and noise labels still resolve: the aggregator needs no torch."""
    import subprocess

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch': raise ImportError('no torch here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from lnlbench.aggregate.frame import load_runs\n"
            "from lnlbench.aggregate.leaderboard import build_leaderboard, leaderboard_table\n"
            "from lnlbench.aggregate.export import to_markdown\n"
            "from lnlbench.aggregate.labels import method_name, noise_label\n"
            f"runs = load_runs([{str(grid)!r}])\n"
            "print(to_markdown(leaderboard_table(build_leaderboard(runs.trials, runs.skipped))))\n"
            "print(method_name('elr_plus'), noise_label('asymmetric', None, 0.4))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "92.0 ± 2.0" in out.stdout and "elr_plus asymmetric:dividemix" in out.stdout
    assert "torch" not in out.stderr


def test_golden_set_size_is_flagged_in_the_table_and_the_fair_row_is_a_variant(tmp_path: Path) -> None:
    withheld = {"golden": {"per_class": 10, "use": "withheld", "n": 100}}
    write_grid(tmp_path, {("ce", 0.5): [0.70, 0.72], ("gce", 0.5): [0.60, 0.61]}, extra=withheld)
    flags = {"uses_clean_data": True, "reconstructed": True, "reconstruction": "from the abstract"}
    write_grid(tmp_path, {("tssd", 0.5): [0.90, 0.91]}, flags=flags,
               extra={"golden": {"per_class": 10, "use": "context", "n": 100}})
    write_grid(tmp_path, {("ce", 0.5): [0.80, 0.81]}, flags={"uses_clean_data": True, "reconstructed": False},
               extra={"golden": {"per_class": 10, "use": "add", "n": 100}})
    runs = load_runs([tmp_path])
    assert sorted(runs.trials["golden_per_class"].dropna().unique().tolist()) == [10]
    board = build_leaderboard(runs.trials, runs.skipped)
    col = Column("cifar10", "symmetric", 0.5)
    plain, fair = "ce [golden.use=withheld]", "ce [golden.use=add]"
    assert board.methods == [plain, "gce", fair, "tssd"]  # the two clean-data rows below the rule
    assert board.cell(plain, col).rank == 1 and board.cell(fair, col).rank is None
    assert board.cell("tssd", col).rank is None
    assert board.golden == {fair: (10,), "tssd": (10,)}
    table = leaderboard_table(board)
    assert table.rows[2].rule_before and table.rows[2].marks == ["C"] and not table.rows[1].rule_before
    md = to_markdown(table)
    assert "C (TSSD): uses 10 clean labels per class" in md
    assert "C (CE [golden.use=add]): uses 10 clean labels per class" in md


def test_the_default_configuration_keeps_the_plain_name(tmp_path: Path) -> None:
    """A cell with golden-set variants of CE: the run without a golden set is plain 'ce' (one row with CE's
    other cells), the others are named by what they set."""
    import pandas as pd

    from lnlbench.aggregate.frame import label_variants

    base = {"lr": 0.1}
    sigs = [json.dumps(base), json.dumps({**base, "golden.per_class": 10, "golden.use": "withheld"}),
            json.dumps({**base, "golden.per_class": None, "golden.use": None})]
    trials = pd.DataFrame({"base_method": "ce", "method": "ce", "variant": "", "dataset": "digits",
                           "noise": "symmetric", "rate": [0.5, 0.5, 0.2], "config": [sigs[2], sigs[1], sigs[0]]})
    out = label_variants(trials)
    assert out["method"].tolist() == ["ce", "ce [golden.per_class=10, golden.use=withheld]", "ce"]
