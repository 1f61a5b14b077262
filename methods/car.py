"""CAR: Confidence Adaptive Regularization (Lu, Bo, He, "Confidence Adaptive Regularization for Deep Learning
with Noisy Labels", arXiv 2108.08212) — **reconstructed**, flagged in the registry and in every table.

Neither CAR's code nor its full text is available (../shared/reference/car-tssd-mlnt.md §1.1). What we
implement is the de facto reference: ``MacLLL/NAL`` (Noise Attention Learning, NeurIPS 2022, the same three
authors, HEAD 6f04fa3; ``loss.py`` class ``NAL``, ``resnet.py``, ``train_cifar.py``, ``train_clothing1m.py``
read), whose options match CAR's abstract one for one (indicator branch → ``c_linear``, auxiliary
regularisation → ``beta``, target estimation → ``es``/``m``, confidence threshold → ``delta``). The paper's
equations were not verified.

Which part comes from where:
- **Indicator (confidence) branch** (``resnet.py``: ``c_linear = Linear(512, 1)`` beside the classifier on
  the pooled feature, one shared trunk, no stop-gradient): :class:`lnlbench.components.AuxHeadNet` with one
  output; τ = clamp(sigmoid(c), 1e-12, 1 − 1e-12). ``predict`` uses the classifier only.
- **Loss** (``loss.py``), per batch, with p = clamp(softmax(z), 1e-12, 1 − 1e-12) and the target t
  (clamped one-hot of the noisy label, floor 1e-4, before ``es``; the estimated soft label after):
  q = clamp(τ·p + (1 − τ)·t, 1e-7, 1); L = mean(−Σ t log q) + λ·mean(−log τ) + β·mean(−Σ q log t)
  (:func:`car_loss`). A wrong label can lower its CE by τ → 0 (q → t) and pays λ·(−log τ); the gradient that
  reaches the logits is scaled by τ.
- **Target estimation** (``loss.py``): an (N, C) table, one-hot at the start; from (1-based) epoch ``es`` on,
  and only in epochs with ``epoch % 10 == 0`` (``update_every``), each batch first updates its own rows
  t ← m·t + (1 − m)·softmax(z).detach() for samples with τ > δ, then clamps to [1e-4, 1], and the loss uses
  the updated rows (:func:`update_targets`). Those epochs are the last of each
  ``CosineAnnealingWarmRestarts(T_0=10)`` cycle (lr at its minimum): the schedule and the update belong
  together, so the ``paper`` recipe keeps both.
- **Recipe** (``train_cifar.py``): ResNet-34 (CIFAR stem), batch 64, SGD lr 0.02, momentum 0.9, weight
  decay 1e-3, CAWR(T_0 10, eta_min 1e-3) stepped per epoch, λ 10, es 60, m 0.9, β 0 (δ 0), 500 epochs;
  crop/flip augmentation. The same values for CIFAR-10 and CIFAR-100 and for every noise: the per-setting
  λ/es/m are "in the Appendix" of the NeurIPS paper, which we could not read, so ``paper`` is the
  released default for every cell. ``car_aux`` is the β = 0.1 variant (the value the released real-world
  scripts use for the auxiliary term).
- ``mini`` (CPU scale; no paper uses it): the shared CPU protocols (digits MLP; ``MINI_CIFAR``) with CAR's
  λ 10 and m 0.9, target estimation from epoch 20 of 100 (digits, every 10) and 5 of 25 (CIFAR-10, every
  5) — es scaled to the end of early learning, as 60 of 500 is with ten-epoch cycles.
- ``clean_probability()``: τ per sample from its last training forward pass of the epoch (a per-sample
  table), so the harness scores the indicator branch as a clean/noisy detector (threshold 0.5).

Deviations (from ``MacLLL/NAL``):
- The target table starts at the clamped one-hot (floor 1e-4) instead of the exact one-hot that the first
  update clamps. With ``es % update_every == 0`` (the released 60 and 10) the two are identical; with other
  values the official loss meets log(0) in the reverse-CE term before the first update, ours does not.
- The NAL code's seed is 345 and its noise is the DivideMix convention (``symmetric``, ``asymmetric``);
  here seeds and the noise file are the harness's, as for every method.
- The official ``--es`` has no ``type=int`` (only the default works from its command line); not carried.
- Clothing1M / WebVision recipes (ImageNet-pretrained ResNet-50 instead of the released
  ``pretrained=False``; λ 50, β 0.1; 128k class-balanced subset): not yet a preset (see the issue tracker).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import AuxHeadNet, require_features
from lnlbench.contract import Method, MethodContext
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, as_recipe, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE

RECONSTRUCTION = "reconstructed from MacLLL/NAL; the paper's equations were not verified"


@dataclass(frozen=True)
class CARHparams(TrainHparams):
    """CAR's CIFAR recipe (MacLLL/NAL train_cifar.py defaults)."""

    model: str = "resnet34"
    epochs: int = 500
    batch_size: int = 64
    lr: float = 0.02
    weight_decay: float = 1e-3
    schedule: str = "cosine_restarts"  # CosineAnnealingWarmRestarts(T_0=restart_period, eta_min)
    restart_period: int = 10
    eta_min: float = 1e-3
    lam: float = 10.0  # λ, weight of the confidence penalty −log τ
    beta: float = 0.0  # β, weight of the auxiliary reverse-CE term (0.1: car_aux)
    es: int = 60  # 1-based epoch from which targets are estimated and used
    update_every: int = 10  # targets change only in epochs with epoch % update_every == 0
    target_momentum: float = 0.9  # m
    delta: float = 0.0  # δ: only samples with τ > δ update their target
    label_floor: float = 1e-4  # targets are clamped to [label_floor, 1] ("A = −4")


PRESETS = {
    "paper": {"cifar10": {}, "cifar100": {}},  # the class defaults (train_cifar.py), every noise
    "mini": {"digits": DIGITS_MLP | {"es": 20, "update_every": 10},
             "cifar10": MINI_CIFAR.with_hparams(es=5, update_every=5)},
}


def _with_beta(entry, beta: float):
    """A preset entry with β set (CAR+aux), a Recipe or a plain dict alike."""
    recipe = as_recipe(entry)
    return recipe.with_hparams(beta=beta)


def confidence(conf_logit: torch.Tensor) -> torch.Tensor:
    """τ = clamp(sigmoid(c), 1e-12, 1 − 1e-12), per sample."""
    return torch.sigmoid(conf_logit.float()).clamp(1e-12, 1.0 - 1e-12)


def car_loss(logits: torch.Tensor, conf_logit: torch.Tensor, target: torch.Tensor, lam: float,
             beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = CE(t, q) + λ·mean(−log τ) + β·RCE(q, t) with q = clamp(τ·p + (1 − τ)·t, 1e-7, 1) (NAL.forward)."""
    tau = confidence(conf_logit)[:, None]
    p = F.softmax(logits.float(), dim=1).clamp(1e-12, 1.0 - 1e-12)
    q = (tau * p + (1.0 - tau) * target).clamp(1e-7, 1.0)
    ce = -(target * torch.log(q)).sum(dim=1).mean()
    penalty = -torch.log(tau).mean()
    rce = -(q * torch.log(target)).sum(dim=1).mean()
    loss = ce + lam * penalty + beta * rce
    return loss, {"ce": ce.detach(), "penalty": penalty.detach(), "rce": rce.detach()}


def clamped_one_hot(labels: torch.Tensor, num_classes: int, floor: float) -> torch.Tensor:
    """One-hot rows with every entry raised to ``floor`` (not renormalised, as the official code)."""
    return F.one_hot(labels, num_classes).float().clamp(floor, 1.0)


def update_targets(table: torch.Tensor, idx: torch.Tensor, probs: torch.Tensor, tau: torch.Tensor,
                   momentum: float, delta: float, floor: float) -> None:
    """In place: rows ``idx`` with τ > δ become clamp(m·t + (1 − m)·p, floor, 1); the others stay."""
    keep = tau > delta
    rows = idx[keep]
    table[rows] = (momentum * table[rows] + (1.0 - momentum) * probs[keep].float()).clamp(floor, 1.0)


def is_target_epoch(epoch: int, es: int, every: int) -> bool:
    """Whether (0-based) ``epoch`` updates targets: official epoch j = epoch + 1, j ≥ es and j % every == 0."""
    j = epoch + 1
    return j >= es and j % max(1, every) == 0


@register_method("car")
class CAR(Method):
    """Confidence-adaptive regularisation: a confidence branch mixes prediction and target (Lu et al. 2021)."""

    Hparams = CARHparams
    PRESETS = PRESETS
    # CAR (MacLLL/NAL README and paper's sensitivity study): λ ∈ {0.5, 10, 50}, es ∈ {20, 60, 100};
    # lr/wd: ours (SGD_SPACE). CARAux inherits it.
    SEARCH_SPACE = {**SGD_SPACE, "lam": ("choice", [0.5, 10.0, 50.0]), "es": ("choice", [20, 60, 100])}
    STATE_ATTRS = ("targets", "conf_logit")
    SMOKE = {"es": 2, "update_every": 1}  # targets estimated from the second epoch, every epoch
    display_name = "CAR"
    reconstructed = True
    reconstruction = RECONSTRUCTION

    def __init__(self, hp: CARHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        backbone = ctx.make_model(hp.model, **hp.model_kwargs)
        require_features(backbone, "car", hp.model)
        self.net = AuxHeadNet(backbone, 1).to(ctx.device)
        ctx.dist.broadcast_module_(self.net)  # the new head starts alike on every data-parallel rank
        self.optimizer = make_sgd(self.net.parameters(), hp)
        self.targets = clamped_one_hot(ctx.train.y, ctx.num_classes, hp.label_floor)
        # the confidence logit c per sample (τ = sigmoid(c)); kept as the logit because τ rounds to 1.0 in
        # float32 once c > 17, which would tie every confident sample and blind the detector's AUC
        self.conf_logit = torch.zeros(len(ctx.train), device=ctx.device)

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        set_lr(self.optimizer, lr_at(epoch, hp))
        update = is_target_epoch(epoch, hp.es, hp.update_every)
        self.net.train()
        total = torch.zeros(4, device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size):
            x = ctx.augment(ctx.train.x[idx])
            with ctx.autocast():
                logits, conf = self.net.forward_with_aux(x)
            conf = conf.float().squeeze(1)
            tau = confidence(conf).detach()
            if update:  # before the loss, which then uses the updated rows (loss.py)
                update_targets(self.targets, idx, F.softmax(logits.detach().float(), dim=1), tau,
                               hp.target_momentum, hp.delta, hp.label_floor)
                ctx.sync_rows(self.targets, idx)
            loss, parts = car_loss(logits, conf, self.targets[idx], hp.lam, hp.beta)
            ctx.step(loss, self.optimizer)
            self.conf_logit[idx] = conf.detach()
            ctx.sync_rows(self.conf_logit, idx)
            total += torch.stack([loss.detach(), parts["ce"], parts["penalty"], parts["rce"]])
            steps += 1
        total = total / max(1, steps)
        relabelled = (self.targets.argmax(dim=1) != ctx.train.y).float().mean()
        return {"loss": total[0], "ce": total[1], "penalty": total[2], "rce": total[3],
                "mean_tau": confidence(self.conf_logit).mean(), "targets_updated": update, "relabelled": relabelled}

    def clean_probability(self) -> torch.Tensor:
        """τ per sample from its last forward pass (the indicator branch as a clean/noisy detector)."""
        return torch.sigmoid(self.conf_logit.double())  # float64: ranks stay apart up to c ≈ 36

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net(x)  # the classifier only; the confidence branch is not used at test time


@register_method("car_aux")
class CARAux(CAR):
    """CAR with the auxiliary reverse-CE term, β = 0.1 (the released real-world scripts' value)."""

    PRESETS = {name: {key: _with_beta(entry, 0.1) for key, entry in table.items()}
               for name, table in PRESETS.items()}
    display_name = "CAR+aux"
