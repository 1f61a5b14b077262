"""Forward and Backward loss correction (Patrini, Rozza, Menon, Nock, Qu — CVPR 2017, arXiv 1609.03683,
"Making deep neural networks robust to label noise: a loss correction approach").

With T the class-transition matrix (row = clean class, T_ij = P(noisy j | clean i)) and q the network's
softmax, *forward* correction trains on −log (q·T)_ỹ (the clean posterior pushed through the noise) and
*backward* correction on −(T⁻¹)_ỹ· · log q (the loss vector un-mixed by T⁻¹). T is estimated, as in the
paper's "est." rows, in two stages inside one trial:

1. ``ce_epochs`` epochs of plain CE on the noisy labels, 90 % of the training set, keeping the weights
   of the epoch with the lowest CE on the held-out noisy 10 % (the official Keras ``ModelCheckpoint`` on
   ``val_loss`` with ``validation_split=0.1``);
2. the anchor-point estimate of T from that network's softmax over the whole training set
   (:func:`lnlbench.components.transition.anchor_transition`: per class the image with the highest p_i below
   its 97th percentile, ``filter_outlier``, or the plain argmax as the official code does for CIFAR-100),
   then a freshly initialised network trained with the corrected loss for the remaining epochs, the
   learning-rate schedule starting again.

``transition: known`` is the paper's oracle rows ("forward T", "backward T"): the noise generator's matrix,
which the harness hands over only for this setting (``uses_true_transition``, flagged ``T`` in result.json
and the tables); it skips stage 1 and trains corrected from epoch 0 (pass ``--epochs`` to match a length).
The estimate is exposed (``transition_estimate``) and scored by the harness against the generator's matrix.

Official code: ``giorgiop/loss-correction`` (Keras) — ``loss.py`` (``robust``: both losses on clipped
probabilities), ``models.py`` (``NoiseEstimator``, ``CIFAR10Model``/``CIFAR100Model`` recipes,
``KerasModel.fit_model``), ``experiment.py`` (the ``est_forward``/``est_backward`` pipeline, the CIFAR-100
``filter_outlier=False`` switch), ``resnet.py``.

Recipes (``PRESETS``):
- ``paper`` CIFAR-10: SGD lr 0.1, momentum 0.9, batch 128, lr 0.01 from epoch 41 and 0.001 from 81 (the
  Keras scheduler's ``epoch > 40`` / ``> 80``), 120 epochs per stage (so 240 in all), Keras L2 1e-4 on the
  kernels, i.e. weight decay 2e-4 (L2 λ‖w‖² has gradient 2λw), outlier filter on.
- ``paper`` CIFAR-100: 150 epochs per stage, decays after 80 and 120, L2 1e-3 (weight decay 2e-3), no filter.
- ``paper`` CIFAR-N (cifar10n / cifar100n noise): no published recipe of this code; the CIFAR-N CE recipe
  (ResNet-34, lr 0.1, ÷10 at 60, weight decay 5e-4, 100 epochs) for each stage, the dataset's filter choice.
- ``mini``: CE's ``mini`` recipe for the corrected stage (same net, optimiser, schedule and length), after a
  short CE stage whose best held-out epoch estimates T (digits 30 epochs, CE peaks near epoch 26; CIFAR-10
  10, CE peaks near 5).

Deviations:
- Network: ResNet-34 instead of the official pre-activation ResNet-(6n+2) (``cifar10_resnet``; n = 7,
  ResNet-44, for CIFAR-100), which the registry does not hold; augmentation is our crop + flip (the
  official ±10 % shifts + flip on mean-subtracted pixels).
- The official ``fit_model`` tests the corrected network of the lowest held-out loss; the engine reports
  every epoch's test accuracy instead, with ``best`` and ``selected`` (``--val-fraction``) over the corrected
  stage only (``scored_from_epoch``: the CE stage's network only estimates T and is dropped).
- ``NoiseEstimator.fit`` filters outliers through a view of the probability matrix, so zeroing class i's
  top 3 % also changes the rows later classes read; ours filters each class on the unmodified matrix.
- The official epochs take ``N // batch`` steps over the 90 % part (slightly more than one pass); ours pass
  over it once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lnlbench.components.transition import (
    anchor_indices,
    anchor_transition,
    backward_corrected_loss,
    forward_corrected_loss,
    holdout_split,
    predict_probs,
    shared_anchors,
    transition_inverse,
)
from lnlbench.contract import Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import CIFAR_N_CE, DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


@dataclass(frozen=True)
class ForwardHparams(TrainHparams):
    """The official CIFAR-10 recipe per stage; the CE stage, the estimator, estimate or known T."""

    model: str = "resnet34"
    epochs: int = 240  # both stages: ce_epochs of CE, then the corrected network
    ce_epochs: int = 120
    lr: float = 0.1
    weight_decay: float = 2e-4
    milestones: tuple[int, ...] = (41, 81)  # within each stage
    transition: str = "estimate"  # estimate | known (the generator's matrix: an oracle, flagged)
    filter_outlier: bool = True
    anchor_percentile: float = 97.0
    holdout_fraction: float = 0.1  # held-out noisy part choosing the CE epoch (0: the last CE epoch)

    def __post_init__(self) -> None:
        if self.transition not in ("estimate", "known"):
            raise LnlError(f"transition must be estimate or known, got {self.transition!r}")
        if self.transition == "estimate" and not 0 < self.ce_epochs < self.epochs:
            raise LnlError(f"ce_epochs ({self.ce_epochs}) must be between 0 and epochs ({self.epochs}) to leave "
                           "a corrected stage; lower --hp ce_epochs or raise --epochs")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise LnlError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction}")


_CIFAR_N = CIFAR_N_CE | {"epochs": 200, "ce_epochs": 100}  # the CIFAR-N CE recipe in both stages
PRESETS = {
    "paper": {
        "cifar10": {"model": "resnet34", "epochs": 240, "ce_epochs": 120, "lr": 0.1, "weight_decay": 2e-4,
                    "milestones": (41, 81), "filter_outlier": True},
        "cifar100": {"model": "resnet34", "epochs": 300, "ce_epochs": 150, "lr": 0.1, "weight_decay": 2e-3,
                     "milestones": (81, 121), "filter_outlier": False},
        "cifar10/cifar10n": _CIFAR_N, "cifar100/cifar100n": _CIFAR_N,
    },
    "mini": {
        "digits": DIGITS_MLP | {"epochs": 130, "ce_epochs": 30},
        "cifar10": MINI_CIFAR.with_hparams(epochs=35, ce_epochs=10),
    },
}


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch-mean CE of the first stage (float32 logits under autocast)."""
    return F.cross_entropy(logits.float(), y)


@register_method("forward")
class Forward(Method):
    """CE, anchor-point estimate of T, then a fresh network on the forward-corrected loss (Patrini 2017)."""

    display_name = "Forward"
    Hparams = ForwardHparams
    PRESETS = PRESETS
    STATE_ATTRS = ("T", "estimated", "best_loss")
    SMOKE = {"ce_epochs": 1}  # with 3 smoke epochs: CE in epoch 0, the estimate, corrected in 1 and 2
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "lr": ("loguniform", 0.01, 0.2),
        "filter_outlier": ("choice", [True, False]),
        "anchor_percentile": ("uniform", 90.0, 100.0),
    }

    @classmethod
    def uses_true_transition(cls, hp: Any) -> bool:
        return hp.transition == "known"

    def __init__(self, hp: ForwardHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        c = ctx.num_classes
        known = hp.transition == "known"
        if known and ctx.transition is None:
            raise LnlError("transition=known needs the noise generator's matrix from the harness (ctx.transition)")
        self.ce_model = None if known else ctx.make_model(hp.model, **hp.model_kwargs)
        self.best_ce = None if known else ctx.make_model(hp.model, **hp.model_kwargs)
        self.ce_optimizer = None if known else make_sgd(self.ce_model.parameters(), hp)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer = make_sgd(self.model.parameters(), hp)
        self.T = ctx.transition.clone() if known else torch.eye(c, device=ctx.device)
        self.estimated = known
        self.anchors: torch.Tensor | None = None  # the estimate's anchor sample per class (not checkpointed)
        self.best_loss = float("inf")
        # the official validation_split, on noisy labels
        self.holdout, self.fit_idx = holdout_split(ctx.rng, len(ctx.train), hp.holdout_fraction, ctx.device)

    @property
    def ce_stage(self) -> int:
        return 0 if self.hp.transition == "known" else self.hp.ce_epochs

    def corrected_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return forward_corrected_loss(logits, y, self.T).mean()

    def stage_lr(self, epoch: int) -> float:
        """The schedule restarted in each stage (the official code trains two separate models)."""
        start, length = (0, self.ce_stage) if epoch < self.ce_stage else (self.ce_stage,
                                                                           self.hp.epochs - self.ce_stage)
        base = {f.name: getattr(self.hp, f.name) for f in dataclasses.fields(TrainHparams)}
        return lr_at(epoch - start, TrainHparams(**{**base, "epochs": length}))

    def fit_epoch(self, model: torch.nn.Module, optimizer, lr: float, loss_fn) -> torch.Tensor:
        ctx = self.ctx
        set_lr(optimizer, lr)
        model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for b in ctx.batches(self.hp.batch_size, n=len(self.fit_idx)):
            idx = self.fit_idx[b]
            with ctx.autocast():
                logits = model(ctx.augment(ctx.train.x[idx]))
            loss = loss_fn(logits, ctx.train.y[idx])
            ctx.step(loss, optimizer)
            total += loss.detach()
            steps += 1
        return total / max(1, steps)

    @torch.no_grad()
    def keep_if_best(self) -> float | None:
        """CE of the held-out noisy part under the CE network; its best epoch's weights go to ``best_ce``."""
        ctx = self.ctx
        if len(self.holdout) == 0:
            self.best_ce.load_state_dict(self.ce_model.state_dict())
            return None
        self.ce_model.eval()
        probs = predict_probs(self.ce_model, ctx.train.x[self.holdout], ctx.normalize, ctx.eval_batch_size,
                              ctx.autocast)
        loss = float(F.nll_loss(probs.clamp_min(1e-12).log(), ctx.train.y[self.holdout]))
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_ce.load_state_dict(self.ce_model.state_dict())
        return loss

    @torch.no_grad()
    def estimate(self) -> None:
        """The anchor-point estimate of T from the chosen CE network over the whole training set."""
        self.best_ce.eval()
        probs = predict_probs(self.best_ce, self.ctx.train.x, self.ctx.normalize, self.ctx.eval_batch_size,
                              self.ctx.autocast)
        self.anchors = anchor_indices(probs, self.hp.filter_outlier, self.hp.anchor_percentile)
        self.T = anchor_transition(probs, anchors=self.anchors)
        self.ctx.broadcast_(self.T)
        self.estimated = True

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        lr = self.stage_lr(epoch)
        if epoch < self.ce_stage:
            loss = self.fit_epoch(self.ce_model, self.ce_optimizer, lr, cross_entropy)
            return {"stage": "ce", "loss": loss, "holdout_ce": self.keep_if_best()}
        if not self.estimated:
            self.estimate()
        loss = self.fit_epoch(self.model, self.optimizer, lr, self.corrected_loss)
        return {"stage": "corrected", "loss": loss}

    def current_lr(self) -> float | None:
        opt = self.optimizer if self.estimated else self.ce_optimizer
        return float(opt.param_groups[0]["lr"])

    def scored_from_epoch(self) -> int:
        """The corrected network's epochs: the CE stage's network only estimates T and is dropped (the
        official ``fit_model`` reports the corrected network)."""
        return self.ce_stage

    def transition_estimate(self) -> torch.Tensor | None:
        """The anchor-point estimate once made (None before it, and in the known-matrix setting)."""
        return self.T if self.estimated and self.hp.transition == "estimate" else None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model if self.estimated else self.ce_model
        model.eval()
        return model(x)


@register_method("backward")
class Backward(Forward):
    """As :class:`Forward`, with the backward-corrected loss −(T⁻¹)_ỹ· · log q (Patrini 2017).

    T⁻¹ is computed once per estimate (as the official code does), in float64, and its condition number is
    logged every corrected epoch (``transition_condition``): an ill-conditioned estimate is why a backward
    run collapses. A singular T (two classes whose anchor is the same sample, or a near-rank-one estimate)
    fails the trial with a one-line error naming the classes and the remedies, where the official
    ``numpy.linalg.inv`` raises."""

    display_name = "Backward"
    # the 5-step smoke CE stage at the mini lr leaves near-uniform posteriors, so T is near rank one and its
    # inverse diverges (as the paper warns of ill-conditioned T); at lr 0.2 the smoke estimate is usable
    SMOKE = {"ce_epochs": 1, "lr": 0.2}

    def __init__(self, hp: ForwardHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self._inverse: torch.Tensor | None = None
        self._inverse_of: tuple[torch.Tensor, int] | None = None  # the T it inverts, and T's version then
        self.condition: float | None = None
        if self.estimated:  # the known matrix: refuse a singular one before training
            self.inverse()

    def inverse(self) -> torch.Tensor:
        """T⁻¹, recomputed only when T changes (an estimate, a checkpoint restore)."""
        src = self._inverse_of
        if src is None or src[0] is not self.T or src[1] != self.T._version:
            inv, self.condition = transition_inverse(self.T)
            if inv is None:
                raise LnlError(self.singular_message())
            self._inverse, self._inverse_of = inv.to(self.T.device), (self.T, self.T._version)
        return self._inverse

    def singular_message(self) -> str:
        if self.hp.transition == "known":
            return (f"backward: the noise generator's transition matrix is singular (condition number "
                    f"{self.condition:.3g}), so it has no inverse; use the forward correction for this noise")
        shared = shared_anchors(self.anchors) if self.anchors is not None else []
        why = "; ".join(f"classes {', '.join(map(str, g))} share anchor sample {int(self.anchors[g[0]])}"
                        for g in shared) or "its rows are nearly dependent"
        return (f"backward: the anchor-point estimate of T is singular (condition number {self.condition:.3g}: "
                f"{why}), so it has no inverse; lengthen the CE stage (--hp ce_epochs=N), try --hp "
                "filter_outlier=false, or use the forward correction, which needs no inverse")

    def estimate(self) -> None:
        super().estimate()
        self.inverse()

    def corrected_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return backward_corrected_loss(logits, y, self.inverse()).mean()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        logs = super().train_epoch(epoch)
        if self.estimated and self.condition is not None:
            logs["transition_condition"] = self.condition
        return logs
