"""GCE: Generalized Cross Entropy, L_q and truncated L_q (Zhang & Sabuncu — NeurIPS 2018, arXiv 1805.07836).

L_q(p, y) = (1 − p_y^q) / q: CE as q → 0, MAE at q = 1; q = 0.7. Truncated L_q drops the samples the
model finds unlikely: every ``prune_every`` epochs from ``start_prune`` on, a pass over the training set sets
a per-sample weight w_i = 1 if L_q(p_i) < L_q(k) (i.e. p_y > k, k = 0.5) and 0 otherwise, and training
minimises mean_i w_i·(L_q(p_i) − L_q(k)) — the constant L_q(k) changes the logged value, not the gradient.

Reference: ``AlanChou/Truncated-Loss`` (an unofficial PyTorch implementation; its README says the
hyperparameters are the paper's) — ``TruncatedLoss.py`` (loss, weights, ``update_weight``) and
``main.py`` (recipe, pruning schedule ``(epoch+1) >= start_prune and (epoch+1) % 10 == 0``, before that
epoch's training, with the network in eval mode on the training loader, i.e. augmented images).
The reference always truncates (weights start at 1, so plain L_q runs until ``start_prune``);
``truncated=False`` gives plain L_q throughout.

Recipes (``PRESETS``):
- ``paper`` CIFAR-10: ResNet-34, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 128, 120 epochs,
  lr ×0.1 at 40 and 80, ``start_prune`` 40 (README command lines).
- ``paper`` CIFAR-100: the same with 150 epochs, milestones 80 and 120, ``start_prune`` 80.
- ``paper`` CIFAR-N (cifar10n / cifar100n noise): no published GCE recipe; the CIFAR-N CE recipe (ResNet-34,
  lr 0.1, 100 epochs, ÷10 at 60, wd 5e-4), pruning from the first lr decay (60) as the reference does.
- ``mini``: CE's ``mini`` recipe (same net, optimiser, schedule) with q = 0.7, k = 0.5; digits prunes every
  10 epochs from 40 (of 100, as the paper's 40 of 120); CIFAR-10 (``MINI_CIFAR``, 25 epochs) every 4 from 8,
  i.e. before 1-based epochs 8, 12, 16, 20 and 24.

Deviations:
- Pruning uses the current network (the state after the previous epoch). The reference loads the
  best-test-accuracy checkpoint (its README: a validation-selected model in the paper, the test set in
  the repo). A method never sees test accuracy, and the contract gives it no validation split, so the
  noise-blind choice is the current model.
- The reference's pruning epoch trains a re-loaded copy of the network that its optimiser does not hold
  (``net = now['current_net']`` inside ``train``), so its gradient steps of that epoch are lost; we
  train normally in pruning epochs.
- p_y^q is computed as exp(q·log p_y) (same value; finite gradient when p_y underflows to 0).
- From the paper (as in the reference): the loss is the batch mean, not the sum over the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import per_sample_loss
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.hparams import CIFAR_N_CE, DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE


@dataclass(frozen=True)
class GCEHparams(TrainHparams):
    """GCE's CIFAR-10 recipe (Truncated-Loss main.py); q, k and the pruning schedule."""

    model: str = "resnet34"
    epochs: int = 120
    lr: float = 0.01
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (40, 80)
    q: float = 0.7
    k: float = 0.5
    truncated: bool = True
    start_prune: int = 40  # update before each 1-based epoch e ≥ start_prune with e % prune_every == 0
    prune_every: int = 10


_CIFAR_N = CIFAR_N_CE | {"start_prune": 60}
PRESETS = {
    "paper": {
        "cifar10": {"model": "resnet34", "epochs": 120, "lr": 0.01, "weight_decay": 1e-4,
                    "milestones": (40, 80), "start_prune": 40},
        "cifar100": {"model": "resnet34", "epochs": 150, "lr": 0.01, "weight_decay": 1e-4,
                     "milestones": (80, 120), "start_prune": 80},
        "cifar10/cifar10n": _CIFAR_N,
        "cifar100/cifar100n": _CIFAR_N,
    },
    "mini": {
        "digits": DIGITS_MLP | {"start_prune": 40, "prune_every": 10},
        "cifar10": MINI_CIFAR.with_hparams(start_prune=8, prune_every=4),
    },
}


def lq_from_log_py(log_py: torch.Tensor, q: float) -> torch.Tensor:
    """L_q = (1 − p_y^q) / q from log p_y, per sample."""
    return (1.0 - torch.exp(q * log_py)) / q


def lq_loss(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample L_q of a batch of logits against integer labels."""
    log_py = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return lq_from_log_py(log_py, q)


def gce_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, q: float, k: float,
             truncated: bool = True) -> torch.Tensor:
    """Batch mean of w·(L_q − L_q(k)) (TruncatedLoss.forward), or of L_q when not truncated."""
    lq = lq_loss(logits, y, q)
    if not truncated:
        return lq.mean()
    return (weight * (lq - (1.0 - k ** q) / q)).mean()


def truncation_weights(log_py: torch.Tensor, q: float, k: float) -> torch.Tensor:
    """1 where L_q(p_y) < L_q(k) (p_y > k), else 0: TruncatedLoss.update_weight."""
    return (lq_from_log_py(log_py, q) < (1.0 - k ** q) / q).float()


def is_prune_epoch(epoch: int, start_prune: int, prune_every: int) -> bool:
    """The reference's test before 0-based epoch e trains: e+1 ≥ start_prune and (e+1) % prune_every == 0."""
    return epoch + 1 >= start_prune and (epoch + 1) % max(1, prune_every) == 0


@register_method("gce")
class GCE(Method):
    """Generalized cross-entropy L_q with the truncated variant's periodic pruning (Zhang & Sabuncu 2018)."""

    display_name = "GCE"

    Hparams = GCEHparams
    PRESETS = PRESETS
    # q = 0.7, k = 0.5: AlanChou/Truncated-Loss TruncatedLoss.py L9 `__init__(self, q=0.7, k=0.5, ...)`
    # @fef5908 [code] (unofficial; its README says the paper's values); q ∈ (0, 1] (CE at q → 0, MAE at
    # q = 1) is the paper's range [R]. A q or k grid searched or listed by the paper: [gap] (its experiment
    # section could not be read; the reference repo has no grid). So the q grid (0.1 … 0.9 in steps of 0.2,
    # around 0.7), the k grid around 0.5 and lr/wd (SGD_SPACE) are our choice.
    SEARCH_SPACE = {**SGD_SPACE, "q": ("choice", [0.1, 0.3, 0.5, 0.7, 0.9]), "k": ("choice", [0.3, 0.5, 0.7])}
    STATE_ATTRS = ("weight", "prunes")
    # plain L_q in epoch 0, a pruning pass before every later one; k = 1/C on 10 classes, so the barely
    # trained smoke network splits the set (at the paper's 0.5 it prunes every sample)
    SMOKE = {"start_prune": 2, "prune_every": 1, "k": 0.1}

    @classmethod
    def compute_floor(cls, hp: GCEHparams, logs=None) -> ComputeFloor:
        """One trained pass per step, plus the truncation's eval pass over the train set every
        ``prune_every`` epochs (the reference's schedule), as a per-epoch average."""
        return ComputeFloor(train=1, epoch_forward=1.0 / max(1, hp.prune_every) if hp.truncated else 0.0)

    def __init__(self, hp: GCEHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer = make_sgd(self.model.parameters(), hp)
        self.weight = torch.ones(len(ctx.train), device=ctx.device)
        self.prunes = 0  # weight updates done so far (clean_probability is None before the first)

    @torch.no_grad()
    def update_weights(self) -> None:
        """One eval-mode pass over the (augmented) training set with the current net; w_i = [p_y > k]."""
        ctx, hp = self.ctx, self.hp
        self.model.eval()
        ce = per_sample_loss(self.model, ctx.train.x, ctx.train.y, ctx.augment, ctx.eval_batch_size,
                             ctx.autocast)
        self.weight.copy_(truncation_weights(-ce, hp.q, hp.k))
        ctx.broadcast_(self.weight)  # data-parallel ranks prune alike (rank 0's augmented pass)
        self.prunes += 1

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        if hp.truncated and is_prune_epoch(epoch, hp.start_prune, hp.prune_every):
            self.update_weights()
        set_lr(self.optimizer, lr_at(epoch, hp))
        self.model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size):
            x = ctx.augment(ctx.train.x[idx])
            with ctx.autocast():
                logits = self.model(x)
            loss = gce_loss(logits, ctx.train.y[idx], self.weight[idx], hp.q, hp.k, hp.truncated)
            ctx.step(loss, self.optimizer)
            total += loss.detach()
            steps += 1
        return {"loss": total / max(1, steps), "kept_fraction": self.weight.mean()}

    def clean_probability(self) -> torch.Tensor | None:
        """The truncation weights (1 kept, 0 pruned) once the first pruning pass has run."""
        return self.weight if self.prunes > 0 else None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
