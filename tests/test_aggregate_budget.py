"""The training budget (epochs, network) beside each number of the ours-vs-published table, and the ‡ mark
on a published budget that differs from the method's paper preset or from the setting's other rows."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_aggregate import write_trial

from lnlbench.aggregate.budget import Budget, paper_budget, published_budget
from lnlbench.aggregate.frame import load_runs
from lnlbench.aggregate.leaderboard import build_leaderboard
from lnlbench.aggregate.published import compare, load_published
from lnlbench.cli import main

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
PAPER = {"amp": "off", "recipe": {"status": "preset", "missing": None}}
HEADER = "method,dataset,noise,rate,metric,value,std,source,tag,verified,network,recipe,notes,sheet\n"


def _table(root: Path, capsys: pytest.CaptureFixture, published: Path = PUBLISHED, metric: str = "best") -> str:
    assert main(["table", str(root), "--compare", "published", "--metric", metric,
                 "--published-dir", str(published)]) == 0
    return capsys.readouterr().out


def _cifar_n(root: Path, method: str, epochs: int, model: str) -> None:
    write_trial(root, method, 0.9, noise="cifar10n", rate=None, preset="paper",
                hparams={"model": model, "epochs": epochs}, extra={**PAPER, "noise_label": "cifar10n:worst"})


def test_budget_columns_show_ours_and_the_papers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """DivideMix's own Table 1 row used its paper's recipe (``epochs=paper``): the paper preset's 301 epochs
    fill it; our paper run states its own; equal budgets, no ‡, and the Δ stays."""
    write_trial(tmp_path, "dividemix", 0.95, preset="paper", hparams={"model": "preact_resnet18", "epochs": 301},
                extra=PAPER)
    out = _table(tmp_path, capsys)
    assert "| 94.6 | PreAct ResNet-18 | +0.4 | [src] | 301 ep, PreAct ResNet-18 | 301 ep, PreAct ResNet-18 |" in out
    assert "| Tag | Budget: ours | Budget: published | Source |" in out
    assert "‡" not in out
    runs = load_runs([tmp_path])
    comp = compare(build_leaderboard(runs.trials, None, "best"), load_published(PUBLISHED), runs.trials)
    row = comp[comp["file"] == "dividemix_table1.csv"].iloc[0]
    assert (row["ours_epochs"], row["published_epochs"], row["paper_epochs"]) == (301, 301, 301)
    assert row["paper_network"] == "PreAct ResNet-18" and row["budget_note"] == ""


def test_unequal_budgets_of_one_setting_are_marked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """SOP+ trains 300 epochs on PreAct ResNet-18, the CIFAR-N leaderboard's CE 100 on ResNet-34 (its own
    recipe, ``epochs=paper``): both published cells carry ‡ and a footnote names the other budget."""
    _cifar_n(tmp_path, "sop_plus", 300, "preact_resnet18")
    _cifar_n(tmp_path, "ce", 100, "resnet34")
    out = _table(tmp_path, capsys)
    assert "| [src] | 100 ep, ResNet-34 | 100 ep, ResNet-34‡ |" in out  # CE: ours and theirs
    assert "| [R] | 300 ep, PreAct ResNet-18 | 300 ep, PreAct ResNet-18‡ |" in out  # SOP+
    assert ("‡ CE, CIFAR-10 C10N-worst real: published with 100 ep, ResNet-34, but the setting's other "
            "published rows: SOP+ 300 ep, PreAct ResNet-18.") in out
    assert "‡ SOP+, CIFAR-10 C10N-worst real: published with 300 ep, PreAct ResNet-18, but" in out
    assert "the numbers are not equal-budget" in out
    _cifar_n(tmp_path / "alone", "ce", 100, "resnet34")  # without SOP+ in the table, CE's budget is its paper's
    assert "‡" not in _table(tmp_path / "alone", capsys)


def test_a_budget_unlike_the_paper_preset_is_marked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A published row trained 600 epochs where the method's paper preset trains 301: ‡, the footnote names the
    preset's budget, and a paper run of 301 epochs gets no Δ against it."""
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "long.csv").write_text(HEADER + "dividemix,cifar10,symmetric,0.5,best,97.0,,Someone's long run,[R],"
                                  "false,PreAct ResNet-18,epochs=600,,x\n")
    write_trial(tmp_path / "r", "dividemix", 0.95, preset="paper",
                hparams={"model": "preact_resnet18", "epochs": 301}, extra=PAPER)
    out = _table(tmp_path / "r", capsys, pub)
    assert "| 97† | PreAct ResNet-18 | — | [R] | 301 ep, PreAct ResNet-18 | 600 ep, PreAct ResNet-18‡ |" in out
    assert ("‡ DivideMix, CIFAR-10 sym 50%: published with 600 ep, PreAct ResNet-18, but our paper preset for it "
            "trains 301 ep, PreAct ResNet-18.") in out


def test_missing_epochs_show_a_question_mark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A row without epochs that does not say it used the paper's recipe shows '?', compared with nothing
    (no ‡ for the epochs); ``epochs=paper`` fills them from the preset; a paper run trained for fewer epochs
    than the row's stated budget gets no Δ ("different epochs")."""
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "rows.csv").write_text(HEADER + "dividemix,cifar10,symmetric,0.5,best,94.6,,A,[R],false,"
                                  "PreAct ResNet-18,,,x\n")
    write_trial(tmp_path / "short", "dividemix", 0.95, preset="paper",
                hparams={"model": "preact_resnet18", "epochs": 50}, extra=PAPER)
    out = _table(tmp_path / "short", capsys, pub)
    assert "| 94.6 | PreAct ResNet-18 | +0.4 | [R] | 50 ep, PreAct ResNet-18 | ? ep, PreAct ResNet-18 |" in out
    assert "‡" not in out
    shutil.copy(PUBLISHED / "dividemix_table1.csv", pub / "rows.csv")  # the DivideMix row: epochs=paper
    runs = load_runs([tmp_path / "short"])
    comp = compare(build_leaderboard(runs.trials, None, "best"), load_published(pub), runs.trials)
    row = comp[comp["base_method"] == "dividemix"].iloc[0]
    assert row["published_epochs"] == 301 and row["recipe_diff"] == ""  # a budget, not a variant key
    assert not row["comparable"] and row["not_comparable"] == "different epochs"


def test_budget_parts() -> None:
    """``?`` for what is unstated; the network compared spelling-proof without the pretraining note."""
    assert Budget(None, None).text() == "? ep, ?"
    assert not Budget(None, "ResNet-50 (ImageNet-pretrained)").differs(Budget(80, "resnet50"))
    assert Budget(300, None).differs(Budget(100, "ResNet-34")) and not Budget(300, None).differs(None)
    assert published_budget({"epochs": "paper"}, "ResNet-34", None) == Budget(None, "ResNet-34")
    assert published_budget({"epochs": 300.0}, "", Budget(100, "x")) == Budget(300, None)
    assert paper_budget("ce", "cifar10", "cifar10n:worst", None) == Budget(100, "ResNet-34")
    assert paper_budget("not_a_method", "cifar10", "symmetric", 0.5) is None


def test_every_method_states_its_paper_budget() -> None:
    """Every registered method's ``paper`` preset yields its epochs and network (``Method.preset_hparams``)."""
    from lnlbench.registry import METHODS

    for name in METHODS.names():
        budget = paper_budget(name, "cifar10", "symmetric", 0.5)
        assert budget is not None and isinstance(budget.epochs, int) and budget.epochs > 0, name
        assert budget.network, name
