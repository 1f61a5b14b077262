"""Forward/Backward: the two stages in one trial, the restarted schedule, the known-matrix oracle (handed over
only when asked for, flagged), the estimate scored by the harness, one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lnlbench.aggregate.frame import load_runs
from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.engine import Trial, run_trial
from lnlbench.errors import LnlError
from lnlbench.methods.forward import Backward, Forward, ForwardHparams

CELL = dict(dataset="digits", noise="symmetric", rate=0.5, seed=0, subset=16, preset="mini")


def _cfg(tmp_path, method="forward", epochs=3, **hp):
    return TrialConfig(method=method, epochs=epochs, hparams={"batch_size": 32, "ce_epochs": 1, **hp},
                       out_dir=str(tmp_path), **CELL)


def _method(cls=Forward, transition_matrix=None, **hp) -> Forward:
    x = torch.zeros(40, 1, 8, 8, dtype=torch.uint8)
    ctx = MethodContext(train=TrainSet(x=x, y=torch.arange(40) % 4), num_classes=4, image_shape=(1, 8, 8),
                        device=torch.device("cpu"), seed=0, augmenter=None, transition=transition_matrix)
    base = dict(model="mlp", model_kwargs={"hidden": [8]}, epochs=10, ce_epochs=4, lr=0.1, schedule="step",
                milestones=(2,))
    return cls(ForwardHparams(**{**base, **hp}), ctx)


def test_schedule_restarts_in_the_corrected_stage_and_the_holdout_is_a_tenth():
    m = _method()
    assert [m.stage_lr(e) for e in range(10)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.1, 0.1] + [0.01] * 4)
    assert len(m.holdout) == 4 and len(m.fit_idx) == 36
    assert set(m.holdout.tolist()).isdisjoint(m.fit_idx.tolist())
    assert m.transition_estimate() is None  # nothing estimated yet


def test_estimate_trial_scores_the_anchor_estimate_and_is_not_an_oracle(tmp_path):
    res = run_trial(_cfg(tmp_path))
    assert res["status"] == "ok", res["error"]
    assert res["method_flags"]["uses_true_transition"] is False
    hist = res["history"]
    assert hist[0]["stage"] == "ce" and "transition_mae" not in hist[0]
    assert all(h["stage"] == "corrected" and h["transition_mae"] > 0 for h in hist[1:])
    assert res["transition_mae"] == hist[-1]["transition_mae"]
    # best/selected are the corrected network's: the CE stage's network only estimates T
    assert res["scored_from_epoch"] == 1 and res["best_epoch"] >= 1
    assert res["best_acc"] == max(h["test_acc"] for h in hist[1:])
    runs = load_runs([tmp_path])  # the aggregator reads it: per-epoch curves and the trial's last value
    assert runs.curves["transition_mae"].notna().tolist() == [False, True, True]
    assert runs.trials["transition_mae"].tolist() == [res["transition_mae"]]
    trial = Trial(resolve(_cfg(tmp_path / "again")))
    trial.build()
    assert trial.ctx.transition is None  # the estimating setting never sees the generator's matrix


@pytest.mark.parametrize("method", ["forward", "backward"])
def test_known_matrix_is_handed_over_only_when_asked_and_flagged(tmp_path, method):
    cfg = _cfg(tmp_path, method=method, epochs=2, transition="known")
    trial = Trial(resolve(cfg))
    trial.build()
    np.testing.assert_allclose(trial.ctx.transition.numpy(), trial.data.transition, atol=1e-6)
    torch.testing.assert_close(trial.method.T, trial.ctx.transition)
    assert trial.method.transition_estimate() is None  # an oracle is not an estimate to score
    res = run_trial(cfg)
    assert res["status"] == "ok", res["error"]
    assert res["method_flags"]["uses_true_transition"] is True
    assert [h["stage"] for h in res["history"]] == ["corrected", "corrected"]  # no CE stage
    assert res["transition_mae"] is None
    ce = Trial(resolve(TrialConfig(method="ce", epochs=1, out_dir=str(tmp_path / "ce"), **CELL)))
    ce.build()
    assert ce.ctx.transition is None


def test_bad_settings_are_one_line_errors(tmp_path):
    for hp, match in [({"transition": "oracle"}, "estimate or known"), ({"ce_epochs": 3}, "ce_epochs"),
                      ({"holdout_fraction": 0.6}, "holdout_fraction")]:
        with pytest.raises(LnlError, match=match) as err:
            resolve(_cfg(tmp_path, **hp))
        assert "\n" not in str(err.value)
    resolve(_cfg(tmp_path, epochs=1, transition="known", ce_epochs=5))  # the oracle has no CE stage


def test_backward_inverts_once_per_estimate_and_logs_the_condition():
    m = _method(Backward)
    m.T = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)  # symmetric noise 0.3
    inv = m.inverse()
    torch.testing.assert_close(inv @ m.T, torch.eye(4), atol=1e-5, rtol=0)
    assert m.inverse() is inv  # cached while T is unchanged
    m.T.mul_(1.0)  # an in-place change (a checkpoint restore copies into T): inverted again
    assert m.inverse() is not inv
    assert m.condition == pytest.approx(1 / 0.6)  # eigenvalues 1.0 and 0.6 of the symmetric T


def test_backward_refuses_a_singular_estimate_naming_the_shared_anchor():
    m = _method(Backward)
    m.anchors = torch.tensor([5, 9, 9, 2])  # classes 1 and 2 read the same sample: equal rows
    m.T = torch.eye(4)
    m.T[2] = m.T[1]
    with pytest.raises(LnlError, match="classes 1, 2 share anchor sample 9") as err:
        m.inverse()
    assert "\n" not in str(err.value) and "ce_epochs" in str(err.value)


def test_backward_refuses_a_singular_known_matrix_at_construction():
    with pytest.raises(LnlError, match="generator's transition matrix is singular"):
        _method(Backward, transition_matrix=torch.full((4, 4), 0.25), transition="known")
    _method(Backward, transition_matrix=torch.eye(4), transition="known")
