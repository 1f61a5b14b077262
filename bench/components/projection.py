"""A classifier with a projection head beside it, a cross-batch memory of embeddings (MOIT), SimCLR's loss.

``ProjectionNet(backbone, dim)`` wraps any registered model that exposes ``forward_features`` and
``head`` (:class:`lnlbench.models.LnlModel`): ``forward(x)`` is the backbone's logits (so evaluation and
``predict`` need nothing special) and ``forward_both(x)`` also returns the L2-normalised ``dim``-d
projection of the pooled features, as MOIT's PreAct ResNet-18 (``linear2`` classifier, ``linear``
projection) does. ``CrossBatchMemory`` is XBM's FIFO queue of (embedding, label) rows with MOIT's write
rule (``utils_labelNoise/xbm_memory.py``). ``simclr_loss`` is the unsupervised contrastive (NT-Xent) loss of
two views, as UNICON's ``Contrastive_loss.py`` ``SupConLoss`` computes it without labels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lnlbench.errors import LnlError


class ProjectionNet(nn.Module):
    """Backbone logits plus a linear projection head (pooled features → ``dim``, L2-normalised)."""

    def __init__(self, backbone: nn.Module, dim: int = 128, method: str = "this method", batchnorm: bool = False):
        super().__init__()
        if not (callable(getattr(backbone, "forward_features", None)) and isinstance(
                getattr(backbone, "head", None), nn.Linear) and hasattr(backbone, "feature_dim")):
            raise LnlError(f"{method} needs a model with forward_features/head/feature_dim "
                           f"(an lnlbench LnlModel); {type(backbone).__name__} has none")
        self.backbone = backbone
        # UNICON's head is Linear → BatchNorm1d (PreResNet_cifar.py ``bnl``); MOIT's the Linear alone
        self.projection = (nn.Sequential(nn.Linear(backbone.feature_dim, dim), nn.BatchNorm1d(dim)) if batchnorm
                           else nn.Linear(backbone.feature_dim, dim))

    @property
    def classifier(self) -> nn.Linear:
        return self.backbone.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, unit-norm embedding) from one pass through the backbone."""
        feats = self.backbone.forward_features(x)
        return self.backbone.head(feats), F.normalize(self.projection(feats).float(), dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.backbone.forward_features(x)).float(), dim=1)


class CrossBatchMemory:
    """A fixed-size FIFO of (embedding, label) rows, written a batch at a time (XBM, as MOIT uses it).

    Rows are written at ``ptr`` and ``ptr`` advances; a batch that would run past the end is written over
    the LAST rows instead and ``ptr`` returns to 0 (the official write rule, so after a wrap the newest
    batch sits at the end). Until the queue is full only the rows written so far are returned.
    ``last_slice`` is where the most recent batch lies in :meth:`get`'s rows.
    """

    def __init__(self, size: int, dim: int, device: torch.device):
        self.feats = torch.zeros(size, dim, device=device)
        self.labels = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.full = False
        self.last_slice = slice(0, 0)

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        q = int(labels.shape[0])
        if q > self.size:
            raise LnlError(f"cross-batch memory of {self.size} rows cannot hold a batch of {q}; "
                           "raise xbm_per_class or lower batch_size")
        if self.ptr + q > self.size:
            start, self.ptr, self.full = self.size - q, 0, True
        else:
            start = self.ptr
            self.ptr += q
            self.full = self.full or self.ptr == self.size
        self.feats[start:start + q] = feats.detach().float()
        self.labels[start:start + q] = labels
        self.last_slice = slice(start, start + q)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full:
            return self.feats, self.labels
        return self.feats[:self.ptr], self.labels[:self.ptr]

    def state_dict(self) -> dict:
        return {"feats": self.feats.clone(), "labels": self.labels.clone(), "ptr": self.ptr, "full": self.full,
                "last": (self.last_slice.start, self.last_slice.stop)}

    def load_state_dict(self, state: dict) -> None:
        self.feats.copy_(state["feats"].to(self.feats.device))
        self.labels.copy_(state["labels"].to(self.labels.device))
        self.ptr, self.full = int(state["ptr"]), bool(state["full"])
        self.last_slice = slice(*(int(v) for v in state["last"]))


def simclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """NT-Xent over 2B unit embeddings: each row's positive is the other view of its image, its negatives
    every other row but itself; −log softmax of the positive, averaged over the 2B anchors.

    ``SupConLoss(temperature=τ, base_temperature=τ)(stack([z1, z2], 1))`` with no labels (UNICON: τ = 0.05;
    its τ / base_τ factor is 1 then). ``z1``, ``z2``: (B, d), already L2-normalised.
    """
    z = torch.cat([z1, z2]).float()
    n = z1.shape[0]
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, pos)
