"""The published numbers: well-formed CSVs, every row traceable to its reference sheet, ours vs theirs."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from test_aggregate import write_trial

from lnlbench.aggregate.frame import load_runs
from lnlbench.aggregate.leaderboard import build_leaderboard
from lnlbench.aggregate.published import COLUMNS, compare, default_published_dir, load_published
from lnlbench.cli import main
from lnlbench.errors import LnlError

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
SHEETS = Path(__file__).resolve().parents[2] / "shared" / "reference"
LOCAL_SHEETS = PUBLISHED / "sheets"


def test_published_csvs_are_well_formed() -> None:
    assert default_published_dir().resolve() == PUBLISHED.resolve() or Path("results/published").is_dir()
    pub = load_published(PUBLISHED)
    for path in PUBLISHED.glob("*.csv"):
        assert list(pd.read_csv(path, nrows=0).columns) == COLUMNS, path.name
    assert set(pub["metric"]) <= {"best", "last", "final", "selected", "unspecified"}
    assert (pub["verified"] == pub["tag"].isin(["[code]", "[src]"])).all()
    assert pub["value"].between(0, 100).all()
    assert not pub.duplicated(["method", "dataset", "noise", "rate", "metric", "source", "notes", "recipe"]).any()
    dm = pub[(pub["method"] == "dividemix") & (pub["dataset"] == "cifar10")
             & (pub["file"] == "dividemix_table1.csv")]
    assert dm.set_index(["noise", "rate", "metric"])["value"].to_dict()[("symmetric", 0.5, "best")] == 94.6


def _section(text: str, ref: str) -> str:
    """The text of section ``§3.2`` (or ``§9``) of a sheet, up to the next heading of the same level."""
    lines = text.splitlines()
    pat = re.compile(rf"^(#+) {re.escape(ref)}[.\s]")
    for i, line in enumerate(lines):
        m = pat.match(line)
        if m:
            level = len(m.group(1))
            end = next((j for j in range(i + 1, len(lines)) if re.match(rf"^#{{1,{level}}} ", lines[j])),
                       len(lines))
            return "\n".join(lines[i:end])
    raise AssertionError(f"section §{ref} not found")


def _sheet_texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.glob("*.md")} if folder.is_dir() else {}


def _check_rows_in_sheets(texts: dict[str, str], local_only: bool = False) -> int:
    """Every row's value (and std) appears in one of the sheet sections it names; the rows checked."""
    pub = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in PUBLISHED.glob("*.csv")])
    checked = 0
    for _, row in pub.iterrows():
        refs = [r.strip() for r in row["sheet"].split(";")]
        if local_only and not all(ref.split(" §")[0] in texts for ref in refs):
            continue
        found = []
        for ref in refs:
            sheet, section = ref.split(" §")
            body = _section(texts[sheet], section)
            found.append(re.search(rf"(?<![\d.]){re.escape(row['value'])}(?![\d])", body) is not None)
            if row["std"]:
                found[-1] &= row["std"] in body
        what = f"{row['method']} {row['dataset']} {row['noise']} {row['rate']} = {row['value']}"
        assert any(found), f"{what} not found in {row['sheet']}"
        checked += 1
    return checked


@pytest.mark.skipif(not SHEETS.is_dir(), reason="the reference sheets (../shared/reference) are not here")
def test_every_published_number_is_in_its_reference_section() -> None:
    # the shared sheets, and the repository's own (results/published/sheets: numbers the shared ones lack)
    _check_rows_in_sheets(_sheet_texts(SHEETS) | _sheet_texts(LOCAL_SHEETS))


def test_numbers_from_the_repository_sheets_are_in_them() -> None:
    """The rows that cite only results/published/sheets are checked even where ../shared is absent."""
    assert _check_rows_in_sheets(_sheet_texts(LOCAL_SHEETS), local_only=True) > 0


def test_compare_matches_on_method_dataset_noise_rate_metric(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.95, 0.96]):
        write_trial(tmp_path, "dividemix", 0.93, best=acc, rate=0.5, seed=seed)
        write_trial(tmp_path, "DivideMix", 0.10, rate=0.5, seed=seed, noise="symmetric_exclusive")
    runs = load_runs([tmp_path])
    pub = load_published(PUBLISHED)
    comp = compare(build_leaderboard(runs.trials, runs.skipped, "best"), pub, runs.trials)
    sym = comp[(comp["noise"] == "symmetric") & (comp["dataset"] == "cifar10")]
    assert sym["published"].tolist() == [94.6]  # DivideMix Table 1, Best, sym 50 %
    assert not sym["comparable"].iloc[0] and sym["not_comparable"].iloc[0].startswith("CPU scale")
    assert sym["tag"].iloc[0] == "[src]" and bool(sym["verified"].iloc[0])
    last = compare(build_leaderboard(runs.trials, runs.skipped, "last"), pub, runs.trials)
    assert last[last["noise"] == "symmetric"]["published"].tolist() == [94.4]
    # 'DivideMix' would match 'dividemix', but MOIT's DMix* rows are at sym-x 20/40/80 %, not 50 %
    assert comp[comp["noise"] == "symmetric_exclusive"].empty


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_trial(tmp_path / "r", "elr", 0.9123, rate=0.4)
    assert main(["table", str(tmp_path / "r"), "--compare", "published", "--metric", "final"]) == 0
    out = capsys.readouterr().out
    # the ELR README's two runs (plain, cosine annealing): the final epoch; a mini run gets no Δ, and a run
    # whose schedule is neither of theirs meets both, marked †; a CPU trial without amp ran fp32 (no A? mark)
    mini = "| MLP (CPU scale), mini; CPU scale, not comparable |"
    assert f"| ELR | CIFAR-10 sym 40% | 91.2 (n=1) {mini} 89.15† | ResNet-34 | — | [src] |" in out
    assert f"| ELR | CIFAR-10 sym 40% | 91.2 (n=1) {mini} 91.43† | ResNet-34 | — | [src] |" in out


def test_malformed_published_csv_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("method,dataset,noise,rate,metric,value,source,tag,verified\n"
                                      "ce,cifar10,symmetric,0.2,best,80,x,[R],true\n")
    with pytest.raises(LnlError, match=r"bad.csv, row 2: verified must be true exactly for \[code\]/\[src\]"):
        load_published(tmp_path)
    with pytest.raises(LnlError, match="no published CSV files found"):
        load_published(tmp_path / "none")


PAPER = {"amp": "off", "recipe": {"status": "preset", "missing": None}}


def _compare(root: Path, metric: str) -> pd.DataFrame:
    runs = load_runs([root])
    return compare(build_leaderboard(runs.trials, runs.skipped, metric), load_published(PUBLISHED), runs.trials)


def test_final_metric_meets_only_final_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """ELR's README reports the final epoch: `--metric final` reads final_acc and meets those rows; `last`
    (the mean of the last 10 epochs) no longer pairs with them."""
    hp = {"model": "resnet34", "schedule": "cosine_restarts"}
    for seed, (last, final) in enumerate([(0.90, 0.915), (0.91, 0.913)]):
        write_trial(tmp_path, "elr", last, rate=0.4, seed=seed, final=final, preset="paper", hparams=hp,
                    extra=PAPER)
    final = _compare(tmp_path, "final")
    assert final["published"].tolist() == [91.43]  # only the cosine-annealing row: the schedule that ran
    assert final["comparable"].tolist() == [True]
    assert final["diff"].iloc[0] == pytest.approx(91.4 - 91.43)
    assert _compare(tmp_path, "last").query("base_method == 'elr' and file == 'elr.csv'").empty
    assert main(["table", str(tmp_path), "--compare", "published", "--metric", "final"]) == 0
    out = capsys.readouterr().out
    assert "| ELR | CIFAR-10 sym 40% | 91.4 ± 0.1 | ResNet-34, paper | 91.43 | ResNet-34 | -0.0 | [src] |" in out
    assert "our final numbers meet only published final numbers" in out


@pytest.mark.parametrize("truncated,expected", [(True, 89.70), (False, 89.83)])
def test_gce_rows_follow_the_variant_that_ran(tmp_path: Path, truncated: bool, expected: float) -> None:
    write_trial(tmp_path, "gce", 0.88, noise="symmetric_exclusive", rate=0.2, preset="paper",
                hparams={"model": "resnet34", "truncated": truncated, "q": 0.7, "k": 0.5}, extra=PAPER)
    comp = _compare(tmp_path, "best")
    assert comp["published"].tolist() == [expected]
    assert comp["recipe_diff"].tolist() == [""]


def test_sce_recipe_difference_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Our CIFAR-100 SCE preset runs β 0.1, the SCELoss-Reproduce numbers β 1.0: the row is kept, marked
    †, and gets no Δ; with β 1.0 it is like for like."""
    for beta, root in ((0.1, tmp_path / "a"), (1.0, tmp_path / "b")):
        write_trial(root, "sce", 0.45, dataset="cifar100", noise="symmetric_exclusive", rate=0.4, preset="paper",
                    hparams={"model": "resnet34", "alpha": 6.0, "beta": beta}, extra=PAPER)
    flagged = _compare(tmp_path / "a", "best")
    assert flagged["published"].tolist() == [46.50] and flagged["recipe_diff"].tolist() == ["beta 1 vs ours 0.1"]
    assert not flagged["comparable"].iloc[0] and pd.isna(flagged["diff"].iloc[0])
    same = _compare(tmp_path / "b", "best")
    assert same["recipe_diff"].tolist() == [""] and same["comparable"].tolist() == [True]
    assert main(["table", str(tmp_path / "a"), "--compare", "published", "--metric", "best"]) == 0
    out = capsys.readouterr().out
    assert "| 46.5† | ResNet-34 | — |" in out
    assert "† SCE, CIFAR-100 sym-x 40%: published with alpha=6.0;beta=1.0; beta 1 vs ours 0.1." in out


def test_cpu_scale_precision_and_default_recipe_are_marked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """mini runs: 'CPU scale, not comparable', no Δ; amp bf16 (A), amp not recorded on a GPU (A?) and a preset
    lookup that fell back to the defaults (D) carry marks and get no Δ. The paper runs train the paper
    preset's budget (301 epochs, PreAct ResNet-18), as the DivideMix rows state (``epochs=paper``)."""
    hp = {"model": "preact_resnet18", "epochs": 301}
    write_trial(tmp_path / "mini", "dividemix", 0.95, extra=PAPER)
    write_trial(tmp_path / "bf16", "dividemix", 0.95, preset="paper", hparams=hp,
                extra={**PAPER, "amp": "bf16"})
    write_trial(tmp_path / "unknown", "dividemix", 0.95, preset="paper", hparams=hp, extra={"device": "cuda:0"})
    write_trial(tmp_path / "default", "dividemix", 0.95, preset="paper", hparams=hp,
                extra={**PAPER, "recipe": {"status": "default", "missing": "cifar10/symmetric/0.5"}})
    write_trial(tmp_path / "fine", "dividemix", 0.95, preset="paper", hparams=hp, extra=PAPER)
    expect = {"mini": ("CPU scale, not comparable", ""), "bf16": ("mixed precision", "A"),
              "unknown": ("", "A?"), "default": ("default recipe", "D"), "fine": ("", "")}
    for name, (why, mark) in expect.items():
        comp = _compare(tmp_path / name, "best")
        row = comp[comp["file"] == "dividemix_table1.csv"].iloc[0]
        assert row["published"] == 94.6 and row["not_comparable"].startswith(why), name
        assert bool(why) != bool(row["comparable"]) and (why or row["not_comparable"] == ""), name
        assert main(["table", str(tmp_path / name), "--compare", "published", "--metric", "best"]) == 0
        out = capsys.readouterr().out
        label = "DivideMix" + (f"<sup>{mark}</sup>" if mark else "")
        delta = "+0.4" if not why else "—"
        assert f"| {label} | CIFAR-10 sym 50% | 95.0 (n=1) |" in out, name
        assert f"| 94.6 | PreAct ResNet-18 | {delta} | [src] |" in out, name


def test_precision_of_results_written_before_amp_was_recorded():
    """A CPU trial without ``amp`` ran fp32 (the old ``auto`` used bf16 on CUDA only); a CUDA one is unknown."""
    from lnlbench.aggregate.frame import recorded_amp

    assert recorded_amp(None, "cpu") == "off"
    assert recorded_amp(None, "cuda:0") is None
    assert recorded_amp("bf16", "cuda:0") == "bf16" and recorded_amp(float("nan"), None) is None
