"""MOIT+: MOIT, then a re-initialised classifier fine-tuned on the detected-clean set (Ortego, Arazo,
Albert, O'Connor, McGuinness — "Multi-Objective Interpolation Training for Robustness to Label Noise",
CVPR 2021, arXiv 2012.04462).

Official code ``github.com/DiegoOrtego/LabelNoiseMOIT`` at HEAD f36c3e7: ``cifar10/train_MOITplus.py``,
``utils_labelNoise/utils_noise.py`` (``train_mixupBoot``, ``criterionMixBoot``, ``ReInitializeClassif``),
``cifar*/RunScripts_cifar_MOIT*.sh``; ../shared/reference/methods.md §4. MOIT itself (the first stage,
its maths and deviations) is :mod:`lnlbench.methods.moit`.

After ``moit_epochs`` of MOIT (the SAME trial continued), the classifier is re-initialised and the network
fine-tuned on the last detected-clean samples only, with mixup CE on the simple (crop/flip) view, a fresh
SGD at ``plus_lr``, and hard bootstrapping (β 0.2, the argmax of the x⁰ prediction) from
``plus_boot_start`` epochs into the stage (:func:`mix_boot_loss`). One trial, not two: a grid cell needs no
other cell's checkpoint, so "the MOIT trial is missing / failed / of another cell" cannot happen.
The official loop is 1-based with ``scheduler.step()`` before each epoch: its MOIT+ milestone 120 acts
from stage epoch 119 (0-based) and bootstrapping when ``epoch > 30``.

Recipes (``PRESETS``): ``paper`` CIFAR-10/100 — MOIT's recipe, then 140 MOIT+ epochs (lr 0.001, ×0.1 at
120) for symmetric (and no) noise, 70 at a constant lr for asymmetric. ``mini``: MOIT's mini recipe, then a
stage 56 % as long as MOIT, ×0.1 at 85 % of the stage, bootstrapping from 12 %
of MOIT's length, at lr/10 of MOIT's (the paper's MOIT+ lr is MOIT's final lr; mini MOIT's lr is constant);
28 % as long and a constant lr for the asymmetric/pair-flip rows, as the paper's 70 of 250.

Deviations: MOIT's (see :mod:`lnlbench.methods.moit`), and
- a trial's ``best_acc`` spans both stages (``stage`` is in the history); the official MOIT+ best is over
  MOIT+ epochs only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.contract import ComputeFloor, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import Recipe, as_recipe, make_sgd, set_lr
from lnlbench.methods.moit import MOIT, MOIT_DIGITS, MOIT_MINI_CIFAR10, MOIT_PAPER, MOITHparams
from lnlbench.registry import register_method


@dataclass(frozen=True)
class MOITPlusHparams(MOITHparams):
    """MOIT then MOIT+ in one trial: ``epochs`` = ``moit_epochs`` + the MOIT+ epochs."""

    epochs: int = 390  # 250 + 140 (symmetric script)
    moit_epochs: int = 250  # the stage boundary
    plus_lr: float = 0.001
    plus_weight_decay: float = 1e-4
    plus_milestones: tuple[int, ...] = (119,)  # stage-relative 0-based epochs
    plus_boot_start: int = 30  # stage-relative 0-based epoch of the first bootstrapped epoch
    plus_boot_beta: float = 0.2


def _plus(base, moit: int, plus: int, milestone: int | None, boot: int, lr: float) -> Recipe:
    """MOIT's recipe (a Recipe or a dict) followed by a MOIT+ stage; the trial protocol is kept."""
    return as_recipe(base).with_hparams(moit_epochs=moit, epochs=moit + plus, plus_lr=lr, plus_boot_start=boot,
                                        plus_milestones=() if milestone is None else (milestone,))


PLUS_PRESETS = {
    "paper": {"cifar10": _plus(MOIT_PAPER, 250, 140, 119, 30, 0.001),
              "cifar100": _plus(MOIT_PAPER, 250, 140, 119, 30, 0.001),
              "cifar10/asymmetric": {"epochs": 320, "plus_milestones": ()},
              "cifar100/asymmetric": {"epochs": 320, "plus_milestones": ()}},
    "mini": {"digits": _plus(MOIT_DIGITS, 100, 56, 48, 12, 0.005),
             "digits/pairflip": {"epochs": 128, "plus_milestones": ()},
             "cifar10": _plus(MOIT_MINI_CIFAR10, 25, 14, 12, 3, 0.005),
             "cifar10/asymmetric": {"epochs": 32, "plus_milestones": ()}},
}


def mix_boot_loss(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float,
                  z: torch.Tensor | None, beta: float) -> torch.Tensor:
    """MOIT+'s ``criterionMixBoot``: mixup CE, or with hard labels ``z`` (argmax on the un-augmented view)
    (1 − β)·mixup CE(labels) + β·mixup CE(z)."""
    ce = lambda t: F.cross_entropy(logits.float(), t, reduction="none")
    loss = lam * ce(y) + (1 - lam) * ce(y[perm])
    if z is None:
        return loss.mean()
    return ((1 - beta) * loss + beta * (lam * ce(z) + (1 - lam) * ce(z[perm]))).mean()


@register_method("moit_plus")
class MOITPlus(MOIT):
    """MOIT, then MOIT+: a re-initialised classifier fine-tuned on the detected-clean set (Ortego et al. 2021)."""

    Hparams = MOITPlusHparams
    PRESETS = PLUS_PRESETS
    STATE_ATTRS = ("clean", "q", "detections", "pool")
    SMOKE = {"xbm_begin": 1, "start_correction": 1, "k_val": 10, "moit_epochs": 2, "plus_boot_start": 0}
    # the mixed batch trained, the un-augmented batch forwarded
    COMPUTE_FLOOR = ComputeFloor(train=1, forward=1)
    display_name = "MOIT+"

    def __init__(self, hp: MOITPlusHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.plus_optimizer = make_sgd(self.model.parameters(), hp)  # fresh momentum for the stage
        self.pool: torch.Tensor | None = None  # the MOIT+ training set (indices), once the stage starts

    def current_lr(self) -> float:
        opt = self.plus_optimizer if self.in_plus else self.optimizer
        return float(opt.param_groups[0]["lr"])

    @property
    def in_plus(self) -> bool:
        return self.pool is not None

    def start_plus(self) -> None:
        """Keep the last detection's clean samples and re-initialise the classifier (``ReInitializeClassif``)."""
        pool = torch.nonzero(self.clean > 0.5).squeeze(1)
        if pool.numel() == 0:
            raise LnlError("moit_plus: the last MOIT detection kept no sample; check k_val and the MOIT stage")
        self.pool = pool
        self.model.classifier.reset_parameters()  # the default init of a new nn.Linear
        self.ctx.dist.broadcast_module_(self.model.classifier)

    def _plus_epoch(self, stage_epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        lr = hp.plus_lr * hp.gamma ** sum(stage_epoch >= m for m in hp.plus_milestones)
        set_lr(self.plus_optimizer, lr)
        for group in self.plus_optimizer.param_groups:
            group["weight_decay"] = hp.plus_weight_decay
        boot = stage_epoch >= hp.plus_boot_start
        self.model.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        for b in ctx.batches(hp.batch_size, n=len(self.pool)):
            idx = self.pool[b]
            x, y = ctx.train.x[idx], ctx.train.y[idx]
            mixed, perm, lam = self._mix(ctx.augment(x))
            with ctx.autocast():
                logits = self.model(mixed)
                with torch.no_grad():  # every epoch, as the official loop (its batch-norm statistics count)
                    plain = self.model(ctx.normalize(x))
            loss = mix_boot_loss(logits, y, perm, lam, plain.argmax(1) if boot else None, hp.plus_boot_beta)
            ctx.step(loss, self.plus_optimizer)
            total, steps = total + loss.detach(), steps + 1
        return {"stage": "moit+", "phase": "boot" if boot else "mixup-ce", "ce_loss": total / max(1, steps),
                "loss": total / max(1, steps), "plus_samples": len(self.pool), "detected_clean": self.clean.mean()}

    def train_epoch(self, epoch: int) -> dict:
        if epoch < self.hp.moit_epochs:
            return self._moit_epoch(epoch)
        if not self.in_plus:
            self.start_plus()
        self.pool = self.pool.to(self.ctx.device)  # a checkpoint may restore it on the CPU
        return self._plus_epoch(epoch - self.hp.moit_epochs)
