"""SOP: sparse over-parameterisation of the label noise (Liu, Zhu, Qu, You, "Robust Training under Label Noise by
Over-parameterization", ICML 2022; official code ``github.com/shengliu66/SOP`` at 4d991ce, files
``model/loss.py`` (``overparametrization_loss``), ``trainer/trainer.py``, ``train.py``, ``config_cifar100.json``
and ``README.md`` read).

Each training sample i gets a noise term s_i = u_i²·y_i − v_i²·(1 − y_i) (y_i the one-hot noisy label, u_i a
scalar, v_i ∈ R^C, both initialised N(0, 1e-8²)), trained jointly with the network by plain SGD at their own
learning rates (``lr_u``, ``lr_v``; momentum 0, no weight decay, no schedule). With U = clamp(u_i²·y_i, 0, 1) and
V = clamp(v_i²·(1 − y_i), 0, 1) per batch row (``overparametrization_loss.forward``):

    p̂ = clamp(normalise₁(clamp(softmax(z) + U − sg(V), min=ε)), ε, 1)     ε = 1e-4, sg: stop-gradient
    L = −⟨y, log p̂⟩ + ‖onehot(argmax z) + U − V − y‖² / B                  (batch means)

The cross-entropy trains the network and u; the squared term (against the network's hard prediction, which
is no gradient) trains u and v. Implicit regularisation of the over-parameterised s = u² − v² under small
steps keeps s sparse, so the noise is absorbed by s on the few mislabelled samples instead of by the network.

SOP+ (``methods/sop_plus.py``) adds two views and two regularisers (:func:`consistency_loss`,
:func:`balance_loss`), as the official config does with ``ratio_consistency`` 0.9 and ``ratio_balance`` 0.1.

Recipes (``PRESETS``). The repository ships one config (``config_cifar100.json``, the SOP+ CIFAR-100 run); its
README refers to the paper's Table A.1 for the others, which we could not read here, so the per-dataset
learning rates of u and v below other than CIFAR-100's are recalled from that table [R]:
- ``paper`` CIFAR-100 symmetric (config): SGD lr 0.02, momentum 0.9, weight decay 1e-3, batch 128, 300 epochs,
  cosine to 2e-4 (``CosineAnnealingLR(T_max=300)`` stepped per epoch), lr_u 1, lr_v 10, init std 1e-8.
- ``paper`` CIFAR-100 asymmetric: the README's command, lr_u 0.1 (the README: 0.1 in the code, 1 in the
  paper), lr_v 100.
- ``paper`` CIFAR-10: the same schedule with weight decay 5e-4 [R], lr_u 10, lr_v 10 (asymmetric: lr_v 100) [R].
- ``paper`` CIFAR-N: the CIFAR-10 / CIFAR-100 symmetric recipes (the paper's CIFAR-N table, no own config).
- Network: ``sop`` (paper Table 1, against ELR and the loss-based methods) ResNet-34 [R]; ``sop_plus`` (Table
  2, against DivideMix) PreAct ResNet-18, as the config.
- ``mini``: CE's ``mini`` recipe (same net, optimiser, schedule) with the CIFAR-10 lr_u 10, lr_v 10.

Deviations:
- The official loader holds out 10 % of CIFAR as a noisy validation split inside the 50k; splits are the
  harness's (``val_fraction``).
- ``clean_probability`` (ours, for the harness's selection score; the official code has none) is
  1 − clamp(u_i², 0, 1): u_i² is the mass the noise term adds to the given label to explain it away.
- u, v are one module (``SparseNoise``) and their SGD groups sit in the network's optimiser with their own lr,
  momentum 0 and no weight decay (the official code uses a second SGD: the same update); ``set_lr`` schedules
  the network's group only, as the official code schedules only the network's optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lnlbench.contract import Method, MethodContext
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd
from lnlbench.registry import register_method

EPS = 1e-4  # the official clamp floor (loss.py ``eps``)


@dataclass(frozen=True)
class SOPHparams(TrainHparams):
    """SOP's recipe (shengliu66/SOP config_cifar100.json with SOP's network and no regularisers)."""

    model: str = "resnet34"
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.02
    weight_decay: float = 1e-3
    schedule: str = "cosine"
    eta_min: float = 2e-4
    lr_u: float = 1.0  # plain SGD step of the per-sample scalar u (no momentum, no decay, no schedule)
    lr_v: float = 10.0  # ... and of the per-sample vector v
    init_std: float = 1e-8  # u, v ~ N(0, init_std²)
    ratio_consistency: float = 0.0  # SOP+: weight of the two-view consistency term (0: one view)
    ratio_balance: float = 0.0  # SOP+: weight of the class-balance term

    POSITIVE: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr", "lr_u", "lr_v")


_SCHED = {"batch_size": 128, "lr": 0.02, "momentum": 0.9, "schedule": "cosine", "eta_min": 2e-4, "epochs": 300}
_C10 = _SCHED | {"weight_decay": 5e-4, "lr_u": 10.0, "lr_v": 10.0}
_C100 = _SCHED | {"weight_decay": 1e-3, "lr_u": 1.0, "lr_v": 10.0}


def sop_paper(model: str, **extra) -> dict[str, dict]:
    """The ``paper`` table of SOP and SOP+ (they differ in network and the SOP+ terms)."""
    return {
        "cifar10": _C10 | {"model": model, **extra},
        "cifar10/asymmetric": {"lr_v": 100.0},
        "cifar10/cifar10n": {},
        "cifar100": _C100 | {"model": model, **extra},
        "cifar100/asymmetric": {"lr_u": 0.1, "lr_v": 100.0},
        "cifar100/cifar100n": {},
    }


def sop_mini(**extra) -> dict:
    """The ``mini`` table: CE's mini recipes with the CIFAR-10 learning rates of u and v."""
    return {"digits": DIGITS_MLP | {"lr_u": 10.0, "lr_v": 10.0, **extra},
            "cifar10": MINI_CIFAR.with_hparams(lr_u=10.0, lr_v=10.0, **extra)}


PRESETS = {"paper": sop_paper("resnet34"), "mini": sop_mini()}
SEARCH_SPACE = {"lr_u": ("loguniform", 0.1, 100.0), "lr_v": ("loguniform", 1.0, 1000.0)}


class SparseNoise(nn.Module):
    """The per-sample over-parameterised noise: u (N, 1) and v (N, C), both N(0, std²) at the start."""

    def __init__(self, n: int, num_classes: int, std: float, generator: torch.Generator, device: torch.device):
        super().__init__()
        self.u = nn.Parameter(torch.randn(n, 1, generator=generator, device=device) * std)
        self.v = nn.Parameter(torch.randn(n, num_classes, generator=generator, device=device) * std)

    def terms(self, idx: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U = clamp(u²·y, 0, 1) and V = clamp(v²·(1 − y), 0, 1) of the batch rows ``idx``."""
        return noise_terms(self.u[idx], self.v[idx], onehot)


def noise_terms(u: torch.Tensor, v: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U = clamp(u²·y, 0, 1) on the label, V = clamp(v²·(1 − y), 0, 1) off it (loss.py)."""
    return (u ** 2 * onehot).clamp(0.0, 1.0), (v ** 2 * (1.0 - onehot)).clamp(0.0, 1.0)


def adjusted_prediction(logits: torch.Tensor, u_term: torch.Tensor, v_term: torch.Tensor,
                        eps: float = EPS) -> torch.Tensor:
    """p̂ = clamp(normalise₁(clamp(softmax(z) + U − sg(V), min=ε)), ε, 1): the prediction plus the noise term."""
    p = torch.clamp(F.softmax(logits.float(), dim=1) + u_term - v_term.detach(), min=eps)
    return F.normalize(p, p=1, dim=1, eps=eps).clamp(eps, 1.0)


def sop_loss(logits: torch.Tensor, onehot: torch.Tensor, u_term: torch.Tensor, v_term: torch.Tensor,
             eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, p̂): −⟨y, log p̂⟩ (batch mean) + ‖onehot(argmax z) + U − V − y‖² / B."""
    pred = adjusted_prediction(logits, u_term, v_term, eps)
    ce = -(onehot * torch.log(pred)).sum(1).mean()
    hard = F.one_hot(logits.detach().argmax(1), onehot.shape[1]).to(onehot.dtype)
    mse = ((hard + u_term - v_term - onehot) ** 2).sum() / onehot.shape[0]
    return ce + mse, pred


def balance_loss(pred: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SOP+'s class balance: −(1/C)·Σ_c log p̄_c, p̄ the batch mean of p̂ clamped to [ε, 1] (loss.py)."""
    avg = pred.mean(0).clamp(eps, 1.0)
    return -(torch.log(avg) / avg.shape[0]).sum()


def consistency_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> torch.Tensor:
    """SOP+'s consistency: batch mean of KL(sg(softmax(z_weak)) ‖ softmax(z_strong)) (loss.py)."""
    target = F.softmax(logits_weak.float(), dim=1).detach()
    return F.kl_div(F.log_softmax(logits_strong.float(), dim=1), target, reduction="none").sum(1).mean()


def sop_optimizer(model: nn.Module, noise: SparseNoise, hp: SOPHparams) -> torch.optim.SGD:
    """The network's SGD (group 0, scheduled) with u and v as plain-SGD groups at lr_u and lr_v."""
    opt = make_sgd(model.parameters(), hp)
    for param, lr in ((noise.u, hp.lr_u), (noise.v, hp.lr_v)):
        opt.add_param_group({"params": [param], "lr": lr, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False})
    return opt


class SOPBase(Method):
    """The shared SOP machinery: network, noise module, optimiser and the one- or two-view epoch."""

    Hparams = SOPHparams
    STATE_ATTRS = ()

    def __init__(self, hp: SOPHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.noise = SparseNoise(len(ctx.train), ctx.num_classes, hp.init_std, ctx.generator, ctx.device)
        ctx.dist.broadcast_module_(self.noise)
        self.optimizer = sop_optimizer(self.model, self.noise, hp)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """The batch the network sees: the trial's augmented view (SOP+ adds its strong view)."""
        return self.ctx.augment(x)

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        self.optimizer.param_groups[0]["lr"] = lr_at(epoch, hp)  # u and v keep their constant lr
        self.model.train()
        total = torch.zeros(3, device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size):
            y = ctx.train.y[idx]
            with ctx.autocast():
                out = self.model(self.views(ctx.train.x[idx]))
            logits = out[: idx.shape[0]]
            onehot = F.one_hot(y, ctx.num_classes).float()
            u_term, v_term = self.noise.terms(idx, onehot)
            loss, pred = sop_loss(logits, onehot, u_term, v_term)
            extra = torch.zeros(2, device=ctx.device)
            if hp.ratio_balance > 0:
                extra[0] = balance_loss(pred)
            if hp.ratio_consistency > 0:
                extra[1] = consistency_loss(logits, out[idx.shape[0]:])
            loss = loss + hp.ratio_balance * extra[0] + hp.ratio_consistency * extra[1]
            ctx.step(loss, self.optimizer)
            total += torch.cat([loss.detach()[None], extra.detach()])
            steps += 1
        total = total / max(1, steps)
        return {"loss": total[0], "balance": total[1], "consistency": total[2],
                "noise_mass": (self.noise.u.detach() ** 2).clamp(0, 1).mean()}

    def clean_probability(self) -> torch.Tensor:
        """1 − clamp(u², 0, 1): how little of its label the noise term had to supply (ours, see the module)."""
        return 1.0 - (self.noise.u.detach()[:, 0] ** 2).clamp(0.0, 1.0)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)


@register_method("sop")
class SOP(SOPBase):
    """Cross-entropy through a sparse over-parameterised per-sample noise term u²y − v²(1 − y) (Liu et al. 2022)."""

    display_name = "SOP"
    PRESETS = PRESETS
    SEARCH_SPACE = SEARCH_SPACE
