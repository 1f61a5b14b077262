"""Extra heads beside a backbone's classifier, on its pooled (penultimate) features.

Several methods add a small head next to the classifier and train both through the shared trunk: CAR's
1-unit confidence (indicator) branch, MOIT's projection head. :class:`AuxHeadNet` wraps any registered
model that exposes ``forward_features``/``head`` (``lnlbench.models.LnlModel``): its ``forward`` is the
backbone's own (logits only, so evaluation and ``predict`` never see the extra head), and
``forward_with_aux`` returns the logits and the extra head's output from one pass.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LnlError


def model_has_features(name: str) -> bool:
    """Before any model is built: False only when the registered builder ``name`` is known (from its return
    annotation) to return a class without a real ``forward_features``; :func:`require_features` checks the
    built model."""
    import typing

    from lnlbench.models.base import LnlModel
    from lnlbench.registry import MODELS

    try:
        cls = typing.get_type_hints(MODELS.get(name)).get("return")
    except (NameError, TypeError):
        return True
    if not isinstance(cls, type):
        return True
    fn = getattr(cls, "forward_features", None)
    return callable(fn) and fn is not LnlModel.forward_features


def require_features(model: nn.Module, method: str, model_name: str) -> None:
    """A one-line error unless ``model`` exposes ``forward_features``, ``feature_dim`` and ``head``."""
    if all(hasattr(model, a) for a in ("forward_features", "feature_dim", "head")):
        return
    from ..registry import MODELS

    have = [n for n in MODELS.names() if getattr(MODELS.get(n), "__module__", "").startswith("lnlbench.models")]
    raise LnlError(f"{method} needs a backbone with forward_features/feature_dim/head for its extra head; "
                   f"model '{model_name}' has none: use one of {', '.join(have)} (any lnlbench.models.LnlModel)")


class AuxHeadNet(nn.Module):
    """A backbone plus ``aux``, a linear head of ``aux_dim`` outputs on the same pooled features."""

    def __init__(self, backbone: nn.Module, aux_dim: int):
        super().__init__()
        self.backbone = backbone
        self.aux = nn.Linear(int(backbone.feature_dim), int(aux_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, aux output) from one pass through the trunk."""
        feats = self.backbone.forward_features(x)
        return self.backbone.head(feats), self.aux(feats)
