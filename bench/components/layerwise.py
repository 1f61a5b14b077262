"""Layer-wise training: a network's ordered stages, re-initialising the last ones, training only some (PES).

PES (Bai et al., NeurIPS 2021; ``tmllab/PES`` ``networks/ResNet.py`` ``renew_layers`` and ``noisy_refine``)
re-initialises the last stages of a network and the final linear layer, fixes every other parameter, and
trains the new ones for a few epochs. ``stages(model)`` names the stages of the registered models (ResNet
``layer1..layer4``, the small ResNet's blocks, an MLP's hidden layers); ``renew_`` copies a freshly built
copy's weights (and batch-norm statistics) into the last ``k`` stages and the head, the same as the
official code's new modules; ``train_only_`` sets which parameters get gradients.
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..errors import LnlError


def stages(model: nn.Module) -> list[nn.Module]:
    """The model's stages before its head, input side first (an LnlModel, or one wrapped as ``.backbone``)."""
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # CIFAR ResNets, torchvision's trunk
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    if isinstance(getattr(model, "stages", None), nn.Sequential):  # cnn_small: one block per stage
        return list(model.stages)
    if isinstance(getattr(model, "body", None), nn.Sequential):  # mlp: its hidden Linear layers
        return [m for m in model.body if any(True for _ in m.parameters())]
    inner = getattr(model, "backbone", None)
    if isinstance(inner, nn.Module):
        return stages(inner)
    raise LnlError(f"layer-wise training needs a model with named stages (resnet18/34/50, preact_resnet18, "
                   f"cnn_small, mlp); {type(model).__name__} has none")


def renewed_modules(model: nn.Module, last_stages: int) -> list[nn.Module]:
    """The last ``last_stages`` stages and the head: what ``renew_layers(last_stages)`` replaces."""
    found = stages(model)
    if not 0 <= last_stages <= len(found):
        raise LnlError(f"cannot re-initialise the last {last_stages} stages of a model with {len(found)}")
    return found[len(found) - last_stages:] + [model.head]


def renew_(model: nn.Module, fresh: nn.Module, last_stages: int) -> list[nn.Module]:
    """Give the last ``last_stages`` stages and the head of ``model`` the weights and buffers of ``fresh``
    (a newly built model of the same architecture); returns ``model``'s renewed modules."""
    mine, new = renewed_modules(model, last_stages), renewed_modules(fresh, last_stages)
    for dst, src in zip(mine, new):
        dst.load_state_dict(src.state_dict())
    return mine


def train_only_(model: nn.Module, modules: Iterable[nn.Module]) -> None:
    """requires_grad on the parameters of ``modules`` only; every other parameter of ``model`` is fixed."""
    for p in model.parameters():
        p.requires_grad_(False)
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)


def fix_(model: nn.Module, modules: Iterable[nn.Module]) -> None:
    """Every parameter of ``model`` trains except those of ``modules``."""
    fixed = {id(p) for m in modules for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in fixed)
