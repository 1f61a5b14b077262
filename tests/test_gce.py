"""GCE: L_q against its closed form (1 − p_y^q)/q, the truncated loss and weights, the pruning schedule."""
from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.methods.gce import GCE, GCEHparams, gce_loss, is_prune_epoch, lq_loss, truncation_weights

# Hand-worked: logits (0, ln 3) → p = (0.25, 0.75).
LOGITS = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
Y = torch.tensor([1, 0])


def test_lq_matches_closed_form_by_hand():
    # q = 0.7: 0.75^0.7 = 0.817604, 0.25^0.7 = 0.378929 → L_q = 0.260566, 0.887244
    torch.testing.assert_close(lq_loss(LOGITS, Y, 0.7), torch.tensor([0.260566, 0.887244]), atol=1e-5, rtol=0)
    p_y = torch.tensor([0.75, 0.25])
    torch.testing.assert_close(lq_loss(LOGITS, Y, 0.7), (1 - p_y ** 0.7) / 0.7)


def test_lq_limits_are_ce_and_mae():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    p_y = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(lq_loss(logits, y, 1.0), 1 - p_y)  # q = 1: MAE (up to a factor 2)
    torch.testing.assert_close(lq_loss(logits, y, 1e-5), F.cross_entropy(logits, y, reduction="none"),
                               atol=1e-3, rtol=1e-3)  # q → 0: CE


def test_lq_gradient_is_p_y_to_the_q_times_ce_gradient():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    g_lq, = torch.autograd.grad(lq_loss(logits, y, 0.7).sum(), logits)
    ce = F.cross_entropy(logits, y, reduction="none")
    g_ce = torch.stack([torch.autograd.grad(ce[i], logits, retain_graph=True)[0][i] for i in range(4)])
    p_y = torch.exp(-ce.detach())
    torch.testing.assert_close(g_lq, p_y[:, None] ** 0.7 * g_ce)
    # finite where p_y underflows to 0 in float32
    big = torch.tensor([[0.0, 200.0]], requires_grad=True)
    g, = torch.autograd.grad(lq_loss(big, torch.tensor([0]), 0.7).sum(), big)
    assert torch.isfinite(g).all()


def test_truncated_loss_by_hand_and_pruned_samples_get_no_gradient():
    lq_k = (1 - 0.5 ** 0.7) / 0.7  # 0.549183
    assert abs(lq_k - 0.549183) < 1e-6
    logits = LOGITS.clone().requires_grad_(True)
    loss = gce_loss(logits, Y, torch.tensor([1.0, 0.0]), 0.7, 0.5)
    assert abs(loss.item() - (0.260566 - lq_k) / 2) < 1e-5  # mean over the batch, pruned rows count as 0
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    plain = gce_loss(LOGITS, Y, torch.tensor([1.0, 0.0]), 0.7, 0.5, truncated=False)
    assert abs(plain.item() - (0.260566 + 0.887244) / 2) < 1e-5


def test_truncation_weights_keep_p_y_above_k():
    p = torch.tensor([0.9, 0.51, 0.49, 0.1, 1e-30])
    torch.testing.assert_close(truncation_weights(p.log(), 0.7, 0.5), torch.tensor([1.0, 1, 0, 0, 0]))
    torch.testing.assert_close(truncation_weights(p.log(), 0.7, 0.05), torch.tensor([1.0, 1, 1, 1, 0]))


def test_prune_schedule_as_the_reference():
    # main.py: (epoch+1) >= start_prune and (epoch+1) % 10 == 0, before that epoch's training
    assert [e for e in range(120) if is_prune_epoch(e, 40, 10)] == [39, 49, 59, 69, 79, 89, 99, 109, 119]
    assert [e for e in range(150) if is_prune_epoch(e, 80, 10)][:2] == [79, 89]


class _Plain:
    """A deterministic augmenter (no crop/flip), so the pruning pass can be recomputed exactly."""

    def __call__(self, x, generator=None):
        return self.normalize(x)

    def normalize(self, x):
        return x.float() / 255.0


def _ctx(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return MethodContext(train=TrainSet(x=x, y=y), num_classes=10, image_shape=(1, 8, 8),
                         device=torch.device("cpu"), seed=seed, augmenter=_Plain())


def test_pruning_pass_sets_weights_from_the_current_model():
    torch.manual_seed(0)
    ctx = _ctx()
    hp = GCEHparams(model="mlp", epochs=3, batch_size=16, lr=0.1, schedule="constant", start_prune=2,
                    prune_every=1, k=0.1)
    method = GCE(hp, ctx)
    method.train_epoch(0)  # epoch 1 (1-based) < start_prune: no pruning yet
    assert method.prunes == 0 and method.clean_probability() is None and bool((method.weight == 1).all())
    before = copy.deepcopy(method.model).eval()
    with torch.no_grad():
        log_p = F.log_softmax(before(ctx.normalize(ctx.train.x)), 1)
    log_py = log_p.gather(1, ctx.train.y[:, None]).squeeze(1)
    method.train_epoch(1)  # prunes with the network as it was after epoch 0, then trains
    expected = (log_py.exp() > 0.1).float()
    assert 0 < expected.sum() < len(expected)  # a non-trivial split on this data
    torch.testing.assert_close(method.weight, expected)
    torch.testing.assert_close(method.clean_probability(), expected)
    assert method.prunes == 1


def test_plain_lq_never_prunes():
    ctx = _ctx()
    method = GCE(GCEHparams(model="mlp", epochs=2, batch_size=16, truncated=False, start_prune=1,
                            prune_every=1), ctx)
    method.train_epoch(0)
    method.train_epoch(1)
    assert method.prunes == 0 and bool((method.weight == 1).all())


def test_presets_follow_the_reference_recipe():
    hp = GCEHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.weight_decay, hp.milestones, hp.q, hp.k, hp.start_prune) == \
        ("resnet34", 120, 0.01, 1e-4, (40, 80), 0.7, 0.5, 40)
    c100 = dataclasses.replace(hp, **GCE.PRESETS["paper"]["cifar100"])
    assert (c100.epochs, c100.milestones, c100.start_prune) == (150, (80, 120), 80)
