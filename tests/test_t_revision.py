"""T-Revision: the importance weights by hand, the slack ΔT's gradient on the matrix by hand, the stages
(estimate → reweight → revision) with their restarts from the chosen epoch, one-line errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.transition import importance_weights, reweighted_loss
from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.errors import LnlError
from lnlbench.methods.t_revision import TRevision, TRevisionHparams, revised_loss

LOGITS = torch.tensor([[0.0, math.log(3.0)]]).repeat(2, 1)  # q = (0.25, 0.75)
Y = torch.tensor([0, 1])
T2 = torch.tensor([[0.8, 0.2], [0.4, 0.6]])  # q·T = (0.5, 0.5)


def test_importance_weights_and_reweighted_loss_by_hand():
    torch.testing.assert_close(importance_weights(LOGITS, Y, T2), torch.tensor([0.5, 1.5]))
    ce = torch.tensor([-math.log(0.25), -math.log(0.75)])
    assert reweighted_loss(LOGITS, Y, T2).item() == pytest.approx(((torch.tensor([0.5, 1.5]) * ce).mean()).item())


def test_reweighting_is_unbiased_for_the_clean_loss():
    # with f the clean posterior, E_{ỹ ~ f·T}[β(ỹ)·ℓ(ỹ)] = Σ_j f_j ℓ_j = E_{y ~ f}[ℓ(y)]
    logits = torch.randn(1, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    f = F.softmax(logits, 1)[0]
    noisy = f @ t
    terms = [noisy[j] * reweighted_loss(logits, torch.tensor([j]), t) for j in range(3)]
    clean = sum(f[j] * F.cross_entropy(logits, torch.tensor([j])) for j in range(3))
    torch.testing.assert_close(sum(terms), clean)


def test_slack_gradient_on_the_matrix_by_hand():
    # one sample, label y: β = q_y / (q·(T+ΔT))_y, so ∂(β·CE)/∂ΔT_iy = −q_y·CE·q_i / (q·(T+ΔT))_y², zero off column y
    slack = torch.zeros(2, 2, requires_grad=True)
    for y in (0, 1):
        loss = revised_loss(LOGITS[:1], torch.tensor([y]), T2, slack)
        g, = torch.autograd.grad(loss, slack)
        q = torch.tensor([0.25, 0.75])
        ce = -math.log(q[y])
        want = torch.zeros(2, 2)
        want[:, y] = -q[y] * ce * q / 0.5 ** 2
        torch.testing.assert_close(g, want)
    # at ΔT = 0 the revision loss is the reweighting loss; only the revision lets the gradient reach β
    torch.testing.assert_close(revised_loss(LOGITS, Y, T2, torch.zeros(2, 2)), reweighted_loss(LOGITS, Y, T2))
    logits = LOGITS.clone().requires_grad_(True)
    g_rw, = torch.autograd.grad(reweighted_loss(logits, Y, T2), logits)
    g_ce = torch.autograd.grad((torch.tensor([0.5, 1.5]) * F.cross_entropy(logits, Y, reduction="none")).mean(),
                               logits)[0]
    torch.testing.assert_close(g_rw, g_ce)  # β is a constant in the reweighting stage
    g_rev, = torch.autograd.grad(revised_loss(logits, Y, T2, torch.zeros(2, 2)), logits)
    assert not torch.allclose(g_rev, g_rw)


def _method(**hp) -> TRevision:
    g = torch.Generator().manual_seed(0)
    ctx = MethodContext(train=TrainSet(x=torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8, generator=g),
                                       y=torch.arange(40) % 4), num_classes=4, image_shape=(1, 8, 8),
                        device=torch.device("cpu"), seed=0, augmenter=_Identity())
    base = dict(model="mlp", model_kwargs={"hidden": [8]}, epochs=8, estimate_epochs=2, reweight_epochs=4,
                lr=0.1, schedule="step", milestones=(2,), batch_size=16)
    return TRevision(TRevisionHparams(**{**base, **hp}), ctx)


class _Identity:
    padding, flip = 0, False

    def __call__(self, x, gen):
        return x.float() / 255

    def normalize(self, x):
        return x.float() / 255


def test_stages_schedule_and_restarts_from_the_chosen_epoch():
    m = _method()
    assert [m.stage(e) for e in range(8)] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert m.scored_from_epoch() == 2  # best/selected from the reweighting stage, where the official code tests
    assert [m.stage_lr(e) for e in range(8)] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 5e-7, 5e-7])
    assert m.transition_estimate() is None
    m.train_epoch(0)
    m.train_epoch(1)
    chosen = {k: v.clone() for k, v in m.best.state_dict().items()}
    m.train_epoch(2)  # begins the reweighting stage: T̂ from the chosen epoch, training resumed from it
    assert m.phase == 1 and m.transition_estimate() is m.T
    torch.testing.assert_close(m.T.sum(1), torch.ones(4))
    assert not torch.equal(m.T, torch.eye(4))
    for e in (3, 4, 5):
        m.train_epoch(e)
    m.slack.delta.data.fill_(0.5)
    best = {k: v.clone() for k, v in m.best.state_dict().items()}
    m.train_epoch(6)  # the revision: ΔT zeroed, then moved by Adam; the estimate is T̂ + ΔT
    assert m.phase == 2 and 0 < m.slack.delta.abs().max() < 1e-5
    torch.testing.assert_close(m.transition_estimate(), m.T + m.slack.delta.detach())
    assert any(not torch.equal(best[k], chosen[k]) for k in best)  # the reweighting stage trained on


def test_stage_lengths_and_holdout_are_checked(tmp_path):
    for hp, match in [({"estimate_epochs": 0}, "estimate_epochs"), ({"reweight_epochs": 200}, "revision stage"),
                      ({"holdout_fraction": 0.0}, "holdout_fraction")]:
        with pytest.raises(LnlError, match=match) as err:
            resolve(TrialConfig(method="t_revision", rate=0.5, hparams=hp, out_dir=str(tmp_path)))
        assert "\n" not in str(err.value)
