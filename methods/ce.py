"""CE: standard cross-entropy training on the noisy labels, the baseline of every LNL table.

Recipes (``PRESETS``):
- ``paper`` CIFAR-10/100: PreAct ResNet-18, SGD lr 0.02, momentum 0.9, weight decay 5e-4, batch 128,
  300 epochs, lr ×0.1 at epoch 150 — the standard training DivideMix's code runs (its warm-up loop, with
  the same optimiser and schedule), which is how DivideMix's Table 1 "Cross-Entropy" row is made.
- ``paper`` CIFAR-N (cifar10n / cifar100n noise): ResNet-34, SGD lr 0.1 for 60 epochs then 0.01 for 40,
  momentum 0.9, weight decay 5e-4, batch 128 (UCSC-REAL/cifar-10-100n ``main.py``; reported as best).
- ``paper`` Tiny-ImageNet: PreAct ResNet-18, SGD lr 0.005, weight decay 5e-4, batch 64, lr ÷10 at 200 of
  300 epochs (UNICON's ``Train_TinyImageNet.py`` optimiser, without its semi-supervised parts).
- ``paper`` Clothing1M: ImageNet-pretrained ResNet-50, SGD lr 0.0008, momentum 0.9, weight decay 1e-3,
  batch 32, 3 epochs, lr ÷10 after epoch 2 (MLNT's ``baseline.py``, which is also MLNT's mentor network).
  Its epochs run over the full noisy training set (protocol ``train_pool="all"``): under the loader's
  default 64,000-image pool it stops with an error naming ``--data-opt max_train`` instead of shrinking.
- ``mini`` (CPU scale): digits with a 2-hidden-layer MLP, long enough at a constant lr that CE memorises
  the noise (``lnlbench.hparams.DIGITS_MLP``; see ../shared/reference/cpu-calibration.md); CIFAR-10:
  ``lnlbench.hparams.MINI_CIFAR`` (the 3-stage small ResNet on 300 images per class without augmentation,
  constant lr 0.05, 25 epochs, a fixed 2,000-image test subset), where CE memorises the noise.

Deviations: none in the loss or the loop. The CIFAR recipe's epoch count is DivideMix's (300); other
papers train CE for 120–200 epochs with their own schedules — pass ``--epochs``/hyperparameters to match.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lnlbench.contract import Method, MethodContext
from lnlbench.hparams import (
    CIFAR_N_CE,
    DIGITS_MLP,
    MINI_CIFAR,
    MINI_TINY,
    Recipe,
    TrainHparams,
    lr_at,
    make_sgd,
    set_lr,
)
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE

_CIFAR = dict(model="preact_resnet18", epochs=300, batch_size=128, lr=0.02, weight_decay=5e-4,
              schedule="step", milestones=(150,))
PRESETS = {
    "paper": {
        "cifar10": _CIFAR, "cifar100": _CIFAR,
        "cifar10/cifar10n": CIFAR_N_CE, "cifar100/cifar100n": CIFAR_N_CE,
        "tiny_imagenet": dict(model="preact_resnet18", epochs=300, batch_size=64, lr=0.005,
                              weight_decay=5e-4, schedule="step", milestones=(200,)),
        "clothing1m": Recipe(  # baseline.py epochs run over the whole noisy training set
            dict(model="resnet50", model_kwargs={"pretrained": True}, epochs=3, batch_size=32, lr=0.0008,
                 weight_decay=1e-3, schedule="step", milestones=(2,)), protocol=dict(train_pool="all")),
    },
    "mini": {
        "digits": DIGITS_MLP,
        "cifar10": MINI_CIFAR,
        "tiny_imagenet": MINI_TINY,
    },
}


@register_method("ce")
class CE(Method):
    """Cross-entropy on the noisy labels (the standard baseline)."""

    display_name = "CE"

    Hparams = TrainHparams
    PRESETS = PRESETS
    # No published search: log-uniform lr and weight decay around the CIFAR recipes (lnlbench.search).
    SEARCH_SPACE = dict(SGD_SPACE)

    def __init__(self, hp: TrainHparams, ctx: MethodContext):
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
            with ctx.autocast():
                loss = F.cross_entropy(self.model(x), ctx.train.y[idx])
            ctx.step(loss, self.optimizer)
            total += loss.detach()
            steps += 1
        return {"loss": total / max(1, steps)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
