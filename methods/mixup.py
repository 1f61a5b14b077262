"""Mixup: training on convex combinations of pairs of examples and their labels (Zhang, Cisse, Dauphin,
Lopez-Paz — ICLR 2018, arXiv 1710.09412).

Per batch: λ ~ Beta(α, α), a random permutation j of the batch, x̃ = λ·x + (1 − λ)·x_j, and the loss
λ·CE(f(x̃), y) + (1 − λ)·CE(f(x̃), y_j) — written here as the soft cross-entropy against the mixed one-hot
targets λ·e_y + (1 − λ)·e_{y_j}, which is the same number (CE is linear in the target).

Official code: ``facebookresearch/mixup-cifar10`` ``train.py`` (``mixup_data``, ``mixup_criterion``,
``adjust_learning_rate``) and ``models/resnet.py``. One λ per batch, drawn with numpy; the permutation with
torch; both here from the trial's seeded generators (``ctx.rng``, ``ctx.generator``).

Recipes (``PRESETS``):
- ``paper`` CIFAR-10 / CIFAR-100: PreAct ResNet-18, SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128,
  200 epochs, α = 1 (``train.py`` defaults; the README's example command). The lr is divided by 10 "at
  100 and 150", but ``adjust_learning_rate(optimizer, epoch)`` runs after epoch ``epoch`` trains, so the
  smaller rates start at 0-based epochs 101 and 151: milestones (101, 151) here. The repo is CIFAR-10
  only; the paper trains CIFAR-100 with the same recipe [recalled, not checked].
- ``paper`` CIFAR-N (cifar10n / cifar100n noise): no published Mixup recipe; the CIFAR-N CE recipe
  (ResNet-34, lr 0.1, 100 epochs, ÷10 at 60, wd 5e-4) with α = 1.
- ``mini``: CE's ``mini`` recipe (same net, optimiser and schedule) with α = 1.

Deviations:
- None in the loss or the loop. The network ``preact_resnet18`` has mixup-cifar10's ``ResNet18`` layout
  (conv-BN-ReLU stem, PreAct blocks [2, 2, 2, 2], no final BN) with adaptive instead of fixed 4×4 pooling.
- The mixup paper's corrupted-label experiment (its §3.4) tried α ∈ {1, 2, 8, 32} and dropout [recalled,
  not checked]; LNL tables (DivideMix Table 1, MOIT "M") do not state their α. We keep the official
  code's α = 1; pass ``--hp alpha=...`` to change it.
- Noise is the benchmark's generator; the official repo trains on clean CIFAR-10. (Normalisation is not a
  deviation: the benchmark's CIFAR-10 mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010) are
  mixup-cifar10's own ``transforms.Normalize``; CIFAR-100, absent from the repo, uses its own statistics.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import mixup, soft_cross_entropy
from lnlbench.contract import Method, MethodContext
from lnlbench.hparams import CIFAR_N_CE, DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE


@dataclass(frozen=True)
class MixupHparams(TrainHparams):
    """mixup-cifar10's recipe; ``alpha`` is the Beta(α, α) parameter of λ (α ≤ 0: no mixing, plain CE)."""

    model: str = "preact_resnet18"
    epochs: int = 200
    lr: float = 0.1
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (101, 151)
    alpha: float = 1.0


_CIFAR = {"model": "preact_resnet18", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4,
          "schedule": "step", "milestones": (101, 151), "alpha": 1.0}
PRESETS = {
    "paper": {
        "cifar10": _CIFAR, "cifar100": _CIFAR,
        "cifar10/cifar10n": CIFAR_N_CE, "cifar100/cifar100n": CIFAR_N_CE,
    },
    "mini": {
        "digits": DIGITS_MLP | {"alpha": 1.0},
        "cifar10": MINI_CIFAR.with_hparams(alpha=1.0),
    },
}


@register_method("mixup")
class Mixup(Method):
    """Mixup of inputs and one-hot noisy labels, one λ ~ Beta(α, α) per batch (Zhang et al. 2018)."""

    display_name = "Mixup"

    Hparams = MixupHparams
    PRESETS = PRESETS
    # mixup (Zhang et al., ICLR 2018) §3.4 / Table 2, corrupted labels: α ∈ {1, 2, 8, 32}; lr/wd: ours (SGD_SPACE).
    SEARCH_SPACE = {**SGD_SPACE, "alpha": ("choice", [1.0, 2.0, 8.0, 32.0])}

    def __init__(self, hp: MixupHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer = make_sgd(self.model.parameters(), hp)

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        set_lr(self.optimizer, lr_at(epoch, hp))
        self.model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size):
            x = ctx.augment(ctx.train.x[idx])
            targets = F.one_hot(ctx.train.y[idx], ctx.num_classes).float()
            x, targets, _, _ = mixup(x, targets, hp.alpha, ctx.rng, ctx.generator)
            with ctx.autocast():
                logits = self.model(x)
            loss = soft_cross_entropy(logits, targets)
            ctx.step(loss, self.optimizer)
            total += loss.detach()
            steps += 1
        return {"loss": total / max(1, steps)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
