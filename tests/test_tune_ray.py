"""``lnlbench tune`` on a real local Ray: budgets are equal per method, ``scope: dataset`` writes one recipe
per (method, dataset), a rerun resumes, and a grid trains the winners with ``preset: tuned``. Tiny: digits,
10 images per class, 2 epochs, 2 trials per search. (That poisoned test labels change nothing in a search
is tests/test_tune.py's: a search trial's reports, the only thing Tune's sampler and ASHA see, are equal.)"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from lnlbench.recipes import read_recipe, recipe_path
from lnlbench.runner.spec import parse_spec

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for this module (an already running one, e.g. another module's, is reused)."""
    if ray.is_initialized():
        yield
        return
    from lnlbench.runner.ray_runner import LOCAL_ENV, QUIET_ENV

    tmp = tempfile.mkdtemp(prefix="lnltune", dir="/tmp")  # short: Ray's socket paths have a length limit
    for key, val in {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tmp, **QUIET_ENV, **LOCAL_ENV}.items():
        os.environ.setdefault(key, val)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def grid(tmp_path, name="run", **over) -> dict:
    raw = {"name": "tt", "datasets": ["digits"], "methods": ["ce"], "noise": [{"name": "symmetric", "rates": [0.5]}],
           "seeds": [0], "epochs": 2, "subset": 10, "storage": str(tmp_path / name),
           "recipes": str(tmp_path / f"recipes-{name}"), "executor": "light",
           "resources": {"cpus_per_worker": 1, "gpus_per_worker": 0}, "tune": {"budget": 2, "grace_period": 1}}
    return {**raw, **over}


def searched(record: dict) -> list:
    return [(t["hparams"], t["objective"], t["epochs"]) for t in record["trials"]]


def test_scope_dataset_equal_budgets_resume_and_a_tuned_grid(local_ray, tmp_path, capsys):
    from lnlbench.runner.ray_runner import run_grid
    from lnlbench.runner.tuning import run_tune

    raw = grid(tmp_path, methods=["ce", "gce"], noise=[{"name": "symmetric", "rates": [0.2, 0.5]}],
               scope="dataset")
    records = run_tune(parse_spec(raw), quiet=True)
    assert [r["budget"] for r in records] == [{"trials": 2, "hours": None}] * 2
    assert [r["trials_run"] for r in records] == [2, 2]
    for method in ("ce", "gce"):
        recipe = read_recipe(recipe_path(tmp_path / "recipes-run", "digits", method))
        assert recipe["scope"] == "dataset" and list(recipe["table"]) == ["digits"]
        assert len(recipe["searches"]["digits"]["noise_settings"]) == 2
    again = run_tune(parse_spec(raw))  # a rerun resumes: finished searches are read back, not rerun
    assert [searched(r) for r in again] == [searched(r) for r in records]
    assert "searched already" in capsys.readouterr().out

    # the final grid (one method, to keep it short) trains the winner from the recipe with a fresh seed
    final = {**raw, "methods": ["gce"], "preset": "tuned", "seeds": [7], "storage": str(tmp_path / "final"),
             "tune": {}}
    outcome = run_grid(parse_spec(final), quiet=True)
    assert outcome.ok
    results = [json.loads(p.read_text()) for p in (tmp_path / "final" / "trials").glob("*/result.json")]
    assert len(results) == 2 and {r["preset"] for r in results} == {"tuned"}
    for r in results:
        winner = next(x for x in records if x["trials"][0]["trial_ids"][0].startswith(r["method"] + "_"))["winner"]
        assert {k: r["hparams"][k] for k in winner} == winner and r["recipe"]["tuned"]["scope"] == "dataset"
