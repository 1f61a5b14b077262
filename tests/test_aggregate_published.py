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


def test_published_csvs_are_well_formed() -> None:
    assert default_published_dir().resolve() == PUBLISHED.resolve() or Path("results/published").is_dir()
    pub = load_published(PUBLISHED)
    for path in PUBLISHED.glob("*.csv"):
        assert list(pd.read_csv(path, nrows=0).columns) == COLUMNS, path.name
    assert set(pub["metric"]) <= {"best", "last", "selected", "unspecified"}
    assert (pub["verified"] == pub["tag"].isin(["[code]", "[src]"])).all()
    assert pub["value"].between(0, 100).all()
    assert not pub.duplicated(["method", "dataset", "noise", "rate", "metric", "source", "notes"]).any()
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


@pytest.mark.skipif(not SHEETS.is_dir(), reason="the reference sheets (../shared/reference) are not here")
def test_every_published_number_is_in_its_reference_section() -> None:
    pub = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in PUBLISHED.glob("*.csv")])
    texts = {p.name: p.read_text() for p in SHEETS.glob("*.md")}
    for _, row in pub.iterrows():
        refs = [r.strip() for r in row["sheet"].split(";")]
        found = []
        for ref in refs:
            sheet, section = ref.split(" §")
            body = _section(texts[sheet], section)
            found.append(re.search(rf"(?<![\d.]){re.escape(row['value'])}(?![\d])", body) is not None)
            if row["std"]:
                found[-1] &= row["std"] in body
        what = f"{row['method']} {row['dataset']} {row['noise']} {row['rate']} = {row['value']}"
        assert any(found), f"{what} not found in {row['sheet']}"


def test_compare_matches_on_method_dataset_noise_rate_metric(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.95, 0.96]):
        write_trial(tmp_path, "dividemix", 0.93, best=acc, rate=0.5, seed=seed)
        write_trial(tmp_path, "DivideMix", 0.10, rate=0.5, seed=seed, noise="symmetric_exclusive")
    runs = load_runs([tmp_path])
    pub = load_published(PUBLISHED)
    comp = compare(build_leaderboard(runs.trials, runs.skipped, "best"), pub)
    sym = comp[(comp["noise"] == "symmetric") & (comp["dataset"] == "cifar10")]
    assert sym["published"].tolist() == [94.6]  # DivideMix Table 1, Best, sym 50 %
    assert sym["diff"].iloc[0] == pytest.approx(95.5 - 94.6)
    assert sym["tag"].iloc[0] == "[src]" and bool(sym["verified"].iloc[0])
    last = compare(build_leaderboard(runs.trials, runs.skipped, "last"), pub)
    assert last[last["noise"] == "symmetric"]["published"].tolist() == [94.4]
    # 'DivideMix' would match 'dividemix', but MOIT's DMix* rows are at sym-x 20/40/80 %, not 50 %
    assert comp[comp["noise"] == "symmetric_exclusive"].empty


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_trial(tmp_path / "r", "elr", 0.9123, rate=0.4)
    assert main(["table", str(tmp_path / "r"), "--compare", "published"]) == 0
    out = capsys.readouterr().out
    # the ELR README's two runs (plain, cosine annealing)
    assert "| elr | CIFAR-10 sym 40% | 91.2 (n=1) | 89.15 | +2.1 | [src] | ResNet-34 |" in out
    assert "| elr | CIFAR-10 sym 40% | 91.2 (n=1) | 91.43 | -0.2 | [src] | ResNet-34 |" in out


def test_malformed_published_csv_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("method,dataset,noise,rate,metric,value,source,tag,verified\n"
                                      "ce,cifar10,symmetric,0.2,best,80,x,[R],true\n")
    with pytest.raises(LnlError, match=r"bad.csv, row 2: verified must be true exactly for \[code\]/\[src\]"):
        load_published(tmp_path)
    with pytest.raises(LnlError, match="no published CSV files found"):
        load_published(tmp_path / "none")
