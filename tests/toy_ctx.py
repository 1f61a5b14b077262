"""A tiny separable 4-class image set with a quarter of its labels wrong, as a method context: the unit
tests of two-network SSL methods (UNICON, ProMix) build their method on it."""
from __future__ import annotations

import torch

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter

# The small MLP recipe those unit tests train with; each test adds its method's own keys.
TOY_HP = {"model": "mlp", "model_kwargs": {"hidden": (16, 16)}, "batch_size": 16, "lr": 0.05,
          "schedule": "constant", "warm_up": 1}


def toy_context(n: int = 96) -> MethodContext:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = (torch.randint(0, 100, (n, 1, 8, 8), generator=g) + 50 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    y[:n // 4] = (y[:n // 4] + 1) % 4  # a quarter of the labels wrong
    torch.manual_seed(0)
    return MethodContext(train=TrainSet(x=x, y=y), num_classes=4, image_shape=(1, 8, 8),
                         device=torch.device("cpu"), seed=0,
                         augmenter=Augmenter.build((0.5,), (0.25,), 1, False, "cpu"))
