"""SOP+: SOP with two views, a consistency and a class-balance regulariser (Liu, Zhu, Qu, You, ICML 2022;
official code ``github.com/shengliu66/SOP`` at 4d991ce: ``model/loss.py``, ``trainer/trainer.py``,
``data_loader/data_loaders.py``, ``data_loader/augmentations.py``, ``data_loader/augmentation_archive.py``,
``config_cifar100.json`` read).

Each batch is seen twice in one forward pass: the trial's view (crop + flip) and a strong view (AutoAugment's
CIFAR-10 policy, then crop + flip, normalisation and a 16-pixel Cutout, as the official
``transform_train_aug``). The SOP loss (``methods/sop.py``) runs on the first view's logits; SOP+ adds

    λ_C · KL(sg(softmax(z_weak)) ‖ softmax(z_strong))  +  λ_B · (−(1/C)·Σ_c log p̄_c)

(λ_C = ``ratio_consistency`` 0.9, λ_B = ``ratio_balance`` 0.1; p̄ the batch mean of SOP's adjusted
prediction p̂), pulling the strong view towards the weak one and the predicted class mix towards uniform.

Recipes (``PRESETS``): SOP's table (``methods/sop.py``: CIFAR-100 from the official config, the CIFAR-10 learning
rates of u and v recalled from the paper's Table A.1 [R]) with PreAct ResNet-18 (the config's ``arch``) and
the two regularisers; ``mini``: CE's mini recipes with the same regularisers.

Deviations:
- The official CIFAR-100 strong view normalises with CIFAR-10's mean and std (``data_loaders.py``); ours uses the
  dataset's, as the weak view does.
- The strong ops are the batched tensor versions of PIL's (``lnlbench.components.autoaugment``: equal to PIL's
  up to one grey level on a few pixels).
- Under a protocol without augmentation (``augment: false``, the ``mini`` CIFAR protocol) the strong view is the
  trial's plain view, as every method's own augmentation follows the trial's protocol (MOIT's too): the
  consistency term is then near zero and SOP+ is SOP with the balance term.
- Cutout is ``cutout_frac`` of the image side (0.5: the config's 16 pixels on 32).
- ``clean_probability``, data splits and the optimiser as SOP's (``methods/sop.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lnlbench.components.autoaugment import autoaugment_cifar10, cutout_centered
from lnlbench.contract import ComputeFloor
from lnlbench.methods.sop import SEARCH_SPACE, SOPBase, SOPHparams, sop_mini, sop_paper
from lnlbench.registry import register_method


@dataclass(frozen=True)
class SOPPlusHparams(SOPHparams):
    """SOP+'s recipe (shengliu66/SOP config_cifar100.json)."""

    model: str = "preact_resnet18"
    ratio_consistency: float = 0.9
    ratio_balance: float = 0.1
    cutout_frac: float = 0.5  # Cutout side as a fraction of the image side (16 of 32 in the config)


_PLUS = {"ratio_consistency": 0.9, "ratio_balance": 0.1}
PRESETS = {"paper": sop_paper("preact_resnet18", **_PLUS), "mini": sop_mini(**_PLUS)}


@register_method("sop_plus")
class SOPPlus(SOPBase):
    """SOP with a strong second view: consistency and class-balance regularisers (Liu et al. 2022)."""

    display_name = "SOP+"
    COMPUTE_FLOOR = ComputeFloor(train=2)  # weak and strong views in one forward+backward
    Hparams = SOPPlusHparams
    PRESETS = PRESETS
    SEARCH_SPACE = SEARCH_SPACE | {"ratio_consistency": ("uniform", 0.0, 1.0),
                                   "ratio_balance": ("uniform", 0.0, 0.5)}

    @classmethod
    def compute_floor(cls, hp: SOPPlusHparams, logs: dict | None = None) -> ComputeFloor:
        """Two views per step while the consistency term is on, SOP's one view without it (``views``)."""
        return cls.COMPUTE_FLOOR if hp.ratio_consistency > 0 else ComputeFloor(train=1)

    def strong_view(self, x: torch.Tensor) -> torch.Tensor:
        """AutoAugment CIFAR-10 → the trial's crop + flip + normalisation → Cutout (0 on the normalised image)."""
        ctx = self.ctx
        if not ctx.augments:
            return ctx.augment(x)
        out = ctx.augment(autoaugment_cifar10(x, ctx.aug_generator))
        length = int(round(self.hp.cutout_frac * x.shape[-1]))
        return cutout_centered(out, length, 0.0, ctx.aug_generator) if length > 0 else out

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """Weak and strong views of the batch, concatenated for one forward pass (trainer.py)."""
        if self.hp.ratio_consistency <= 0:
            return self.ctx.augment(x)
        return torch.cat([self.ctx.augment(x), self.strong_view(x)])
