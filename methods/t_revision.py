"""T-Revision: importance reweighting with a revised transition matrix (Xia, Liu, Wang, Han, Gong, Niu,
Sugiyama — NeurIPS 2019, arXiv 1906.00189, "Are anchor points really indispensable in label-noise learning?").

Three stages in one trial, one network (``xiaoboxia/T-Revision`` ``main.py``):

1. *estimate* (``estimate_epochs``): CE on 90 % of the noisy training set (SGD without momentum); the epoch
   of best accuracy on the held-out noisy 10 % gives the anchor-point estimate T̂ from its softmax over the
   training set (:func:`lnlbench.components.transition.anchor_transition`; the 97th-percentile filter on
   CIFAR-10, the plain argmax on CIFAR-100, ``estimate_state``) — T̂ need not come from true anchor points;
2. *reweight* (``reweight_epochs``): from that epoch's weights, importance reweighting β·CE(f(x), ỹ) with
   β = f_ỹ / (f·T̂)_ỹ held constant (``reweight_loss``); SGD with momentum, lr ÷10 twice; the epoch of best
   held-out accuracy of the T̂-corrected prediction is kept;
3. *revision* (the remaining epochs): from that epoch, the slack ΔT (a C×C parameter, zero at the start)
   and the network learn together by Adam at lr 5e-7 on the same loss with T̂ + ΔT, where the gradient now
   flows through β (``reweighting_revision_loss``): ΔT changes only through β's denominator.

The estimate (T̂, then T̂ + ΔT as the revision goes on) is exposed (``transition_estimate``) and scored by
the harness against the generator's matrix (``transition_mae``; the paper reports ‖T̂ − T‖₁ / ‖T‖₁).

Official code read: ``main.py`` (stages, optimisers, schedule, model selection), ``loss.py``
(``reweight_loss``, ``reweighting_revision_loss`` and their ``_v2`` vectorised forms), ``tools.py`` (``fit``,
``norm``, ``error``), ``Resnet.py`` (the slack as the bias-free ``T_revision`` linear layer's weight).

Recipes (``PRESETS``):
- ``paper`` CIFAR-10: ResNet-18 (ours: PreAct ResNet-18), batch 128, lr 0.01, weight decay 1e-4, 20
  estimation epochs, 200 reweighting epochs with lr ×0.1 from epochs 39 and 79 (``MultiStepLR([40, 80])``
  stepped before each epoch), 200 revision epochs (Adam lr 5e-7, weight decay 1e-4), outlier filter on.
- ``paper`` CIFAR-100: ResNet-34, 15 estimation epochs, no outlier filter, the rest as CIFAR-10.
- ``paper`` CIFAR-N (cifar10n / cifar100n noise): no published recipe of this code; the dataset's estimation
  stage, the CIFAR-N CE recipe (ResNet-34, lr 0.1, ÷10 at 60, weight decay 5e-4, 100 epochs) as the
  reweighting stage, and the paper's 200 revision epochs.
- ``mini``: CE's ``mini`` recipe (net, SGD with momentum, constant lr) for the estimation and the
  reweighting stage, the reweighting as long as CE's run (digits 20 + 100 + 20 revision epochs; CIFAR-10
  10 + 25 + 5, CE peaks near epoch 5); the revision stage as the paper's.

Deviations:
- Networks: PreAct ResNet-18 for the official plain ResNet-18 (whose stem conv has no padding).
- T̂ is read from the chosen epoch's predictions on the un-augmented training images (the official code
  stores them on the training transform, i.e. crop + flip); ``fit``'s in-place outlier filter (a numpy view,
  so each class's zeroing leaks into the later rows) is not reproduced; ``norm`` divides by the column index's
  row sum (a broadcasting slip, a no-op on softmax rows) and we normalise the rows.
- The official code evaluates and keeps one checkpoint file per epoch; we keep the best epoch's weights in
  memory. The revision stage has no selection (the official code neither); the engine reports every epoch,
  with ``best`` / ``selected`` over the reweighting and revision stages (``scored_from_epoch``), where the
  official code tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lnlbench.components.transition import anchor_transition, holdout_split, predict_probs, reweighted_loss
from lnlbench.contract import Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import CIFAR_N_CE, DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method

STAGES = ("estimate", "reweight", "revision")


@dataclass(frozen=True)
class TRevisionHparams(TrainHparams):
    """The official CIFAR-10 recipe; ``epochs`` = estimation + reweighting + revision epochs."""

    model: str = "preact_resnet18"
    epochs: int = 420
    lr: float = 0.01
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (39, 79)  # within the reweighting stage
    estimate_epochs: int = 20
    reweight_epochs: int = 200
    estimate_momentum: float = 0.0  # optimizer_es: plain SGD
    revision_lr: float = 5e-7  # Adam over the network and ΔT
    filter_outlier: bool = True
    anchor_percentile: float = 97.0
    holdout_fraction: float = 0.1  # tools.dataset_split(split_per=0.9)

    def __post_init__(self) -> None:
        if self.estimate_epochs < 1 or self.reweight_epochs < 1 or \
                self.estimate_epochs + self.reweight_epochs >= self.epochs:
            raise LnlError(f"t_revision needs estimate_epochs ({self.estimate_epochs}) ≥ 1, reweight_epochs "
                           f"({self.reweight_epochs}) ≥ 1 and their sum below epochs ({self.epochs}) to leave "
                           "a revision stage; lower them or raise --epochs")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise LnlError(f"holdout_fraction must be in (0, 0.5): T-Revision selects its epochs on it, got "
                           f"{self.holdout_fraction}")


_MINI = {"revision_lr": 5e-7, "estimate_momentum": 0.9}
_CIFAR_N = CIFAR_N_CE | {"reweight_epochs": 100}  # the CIFAR-N CE recipe as the reweighting stage, 200 revising
PRESETS = {
    "paper": {
        "cifar10": {"model": "preact_resnet18", "epochs": 420, "estimate_epochs": 20, "reweight_epochs": 200,
                    "filter_outlier": True},
        "cifar100": {"model": "resnet34", "epochs": 415, "estimate_epochs": 15, "reweight_epochs": 200,
                     "filter_outlier": False},
        "cifar10/cifar10n": _CIFAR_N | {"epochs": 320, "estimate_epochs": 20},
        "cifar100/cifar100n": _CIFAR_N | {"epochs": 315, "estimate_epochs": 15},
    },
    "mini": {
        "digits": DIGITS_MLP | _MINI | {"epochs": 140, "estimate_epochs": 20, "reweight_epochs": 100},
        "cifar10": MINI_CIFAR.with_hparams(**_MINI, epochs=40, estimate_epochs=10, reweight_epochs=25),
    },
}


class Slack(nn.Module):
    """ΔT, the C×C revision of the estimated matrix (the official bias-free ``T_revision`` layer's weight)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(num_classes, num_classes))


def revised_loss(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor, slack: torch.Tensor) -> torch.Tensor:
    """The revision stage's loss: β·CE with β = f_ỹ / (f·(T̂ + ΔT))_ỹ, the gradient reaching ΔT through β."""
    return reweighted_loss(logits, y, transition + slack, detach_weights=False)


@register_method("t_revision")
class TRevision(Method):
    """Anchor-point T̂, importance reweighting, then T̂ + ΔT revised with the network (Xia et al. 2019)."""

    display_name = "T-Revision"
    Hparams = TRevisionHparams
    PRESETS = PRESETS
    STATE_ATTRS = ("T", "phase", "best_acc")
    SMOKE = {"estimate_epochs": 1, "reweight_epochs": 1}  # 3 smoke epochs: one per stage
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "lr": ("loguniform", 0.002, 0.05),
        "revision_lr": ("loguniform", 1e-7, 1e-5),
        "filter_outlier": ("choice", [True, False]),
    }

    def __init__(self, hp: TRevisionHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.best = ctx.make_model(hp.model, **hp.model_kwargs)  # the chosen epoch's weights
        self.slack = Slack(ctx.num_classes).to(ctx.device)
        self.est_optimizer = torch.optim.SGD(self.model.parameters(), lr=hp.lr, momentum=hp.estimate_momentum,
                                             weight_decay=hp.weight_decay)
        self.optimizer = make_sgd(self.model.parameters(), hp)
        self.rev_optimizer = torch.optim.Adam([*self.model.parameters(), *self.slack.parameters()],
                                              lr=hp.revision_lr, weight_decay=hp.weight_decay)
        self.T = torch.eye(ctx.num_classes, device=ctx.device)
        self.phase = 0  # the stage whose setup has run: 0 estimate, 1 reweight, 2 revision
        self.best_acc = -1.0
        self.holdout, self.fit_idx = holdout_split(ctx.rng, len(ctx.train), hp.holdout_fraction, ctx.device)

    def stage(self, epoch: int) -> int:
        hp = self.hp
        return 0 if epoch < hp.estimate_epochs else 1 if epoch < hp.estimate_epochs + hp.reweight_epochs else 2

    def stage_lr(self, epoch: int) -> float:
        """Constant lr while estimating; the step schedule within the reweighting stage; Adam's lr after."""
        hp, stage = self.hp, self.stage(epoch)
        if stage != 1:
            return hp.lr if stage == 0 else hp.revision_lr
        base = {f.name: getattr(hp, f.name) for f in dataclasses.fields(TrainHparams)}
        return lr_at(epoch - hp.estimate_epochs, TrainHparams(**{**base, "epochs": hp.reweight_epochs}))

    @torch.no_grad()
    def holdout_accuracy(self, corrected: bool) -> torch.Tensor:
        """Accuracy on the held-out noisy labels of f(x), or of the T̂-corrected f(x)·T̂ (stage 2)."""
        ctx = self.ctx
        self.model.eval()
        probs = predict_probs(self.model, ctx.train.x[self.holdout], ctx.normalize, ctx.eval_batch_size,
                              ctx.autocast)
        if corrected:
            probs = probs @ self.T
        return (probs.argmax(1) == ctx.train.y[self.holdout]).float().mean()

    def keep_if_best(self, acc: torch.Tensor) -> None:
        if float(acc) > self.best_acc:  # one host sync per epoch
            self.best_acc = float(acc)
            self.best.load_state_dict(self.model.state_dict())

    def restart_from_best(self) -> None:
        """The next stage starts from the chosen epoch's weights (rank 0's, so ranks stay identical)."""
        self.model.load_state_dict(self.best.state_dict())
        self.ctx.dist.broadcast_module_(self.model)
        self.best_acc = -1.0

    @torch.no_grad()
    def begin_reweight(self) -> None:
        """T̂ from the chosen estimation epoch's softmax over the whole training set, then continue from it."""
        self.best.eval()
        probs = predict_probs(self.best, self.ctx.train.x, self.ctx.normalize, self.ctx.eval_batch_size,
                              self.ctx.autocast)
        self.T = anchor_transition(probs, self.hp.filter_outlier, self.hp.anchor_percentile)
        self.ctx.broadcast_(self.T)
        self.restart_from_best()
        self.phase = 1

    def begin_revision(self) -> None:
        self.restart_from_best()
        with torch.no_grad():
            self.slack.delta.zero_()  # nn.init.constant_(model.T_revision.weight, 0.0)
        self.phase = 2

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        ctx, stage = self.ctx, self.stage(epoch)
        if stage == 1 and self.phase == 0:
            self.begin_reweight()
        if stage == 2 and self.phase == 1:
            self.begin_revision()
        opt = (self.est_optimizer, self.optimizer, self.rev_optimizer)[stage]
        set_lr(opt, self.stage_lr(epoch))
        self.model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for b in ctx.batches(self.hp.batch_size, n=len(self.fit_idx)):
            idx = self.fit_idx[b]
            y = ctx.train.y[idx]
            with ctx.autocast():
                logits = self.model(ctx.augment(ctx.train.x[idx]))
            if stage == 0:
                loss = F.cross_entropy(logits.float(), y)
            elif stage == 1:
                loss = reweighted_loss(logits, y, self.T)
            else:
                loss = revised_loss(logits, y, self.T, self.slack.delta)
            ctx.step(loss, opt)
            total += loss.detach()
            steps += 1
        logs = {"stage": STAGES[stage], "loss": total / max(1, steps)}
        acc = self.holdout_accuracy(corrected=stage > 0)
        logs["holdout_acc"] = acc
        if stage < 2:
            self.keep_if_best(acc)
        else:
            logs["slack_abs"] = self.slack.delta.detach().abs().mean()
        return logs

    def current_lr(self) -> float | None:
        return float((self.est_optimizer, self.optimizer, self.rev_optimizer)[self.phase].param_groups[0]["lr"])

    def scored_from_epoch(self) -> int:
        """The reweighting and revision stages: the official ``main.py`` tests only there (the estimate
        stage is CE, run to read T̂ off its best held-out epoch)."""
        return self.hp.estimate_epochs

    def transition_estimate(self) -> torch.Tensor | None:
        """T̂ once estimated, T̂ + ΔT during the revision (its rows need not sum to 1 exactly)."""
        if self.phase == 0:
            return None
        return self.T if self.phase == 1 else (self.T + self.slack.delta).detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
