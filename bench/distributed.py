"""Data-parallel training across the ranks of a ``torch.distributed`` process group (Ray Train's workers).

The engine detects an initialised process group with more than one rank (Ray Train's ``TorchTrainer``
with ``num_workers > 1`` sets one up: gloo on CPU, NCCL on GPU) and then trains the trial data-parallel:

- **Batches.** ``hp.batch_size`` stays the *global* batch of the paper's recipe. Every rank draws the same
  permutation (the shared generator ``ctx.generator``) and takes its 1/world slice of each global batch; a
  final batch is cut to a multiple of the world size, so every rank takes the same number of steps.
- **Gradients.** ``MethodContext.step`` (and :func:`lnlbench.components.clipped_step`) average the
  gradients over ranks between backward and the optimiser step, in one flat all-reduce per dtype, as DDP
  does (without DDP's overlap of communication with backward: methods keep plain modules, so
  ``forward_features``/``head`` calls, two networks and EMA copies need no wrapper).
- **Randomness.** ``ctx.generator`` and ``ctx.rng`` are identical on every rank (same seed, same draws), so
  the decisions a method makes from them (mixup pairs and λ, GMM seeds, shuffles) agree; augmentation
  draws from a per-rank generator so ranks see differently cropped images.
- **Per-sample state.** A method that updates rows of a per-sample table from a batch (ELR's targets,
  Co-teaching's loss record) calls ``ctx.sync_rows(table, idx)``; one whose epoch-level decision comes from
  the whole training set (DivideMix's division, GCE's pruning) calls ``ctx.broadcast_(tensor)`` so every
  rank uses rank 0's copy. With one rank all of these are no-ops.
- **Batch norm.** Each rank normalises with its own batch statistics (like DDP without SyncBatchNorm);
  the running statistics are averaged over ranks at the end of every epoch, before evaluation.
- **Results.** Rank 0 evaluates, checkpoints and writes the trial folder; the checkpoint holds every rank's
  random state, and on resume rank 0 sends the checkpoint to the other ranks (no shared disk needed).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed
from torch import nn


def _flat_groups(tensors: Iterable[torch.Tensor]) -> dict[tuple[torch.dtype, torch.device], list[torch.Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return groups


class Dist:
    """This process's place in the process group (rank 0 of 1 when there is none)."""

    def __init__(self) -> None:
        dist = torch.distributed
        self.active = bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world={self.world})"

    # -- tensors -----------------------------------------------------------------------------------
    @torch.no_grad()
    def all_reduce_mean_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Replace each tensor by its mean over ranks, one flat all-reduce per (dtype, device)."""
        if not self.active:
            return
        for (dtype, _), group in _flat_groups(tensors).items():
            if not (dtype.is_floating_point or dtype.is_complex):
                continue
            flat = torch.cat([t.reshape(-1) for t in group])
            torch.distributed.all_reduce(flat)
            flat /= self.world
            offset = 0
            for t in group:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n

    def sync_grads(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of the optimiser's parameters over ranks (after backward, before step)."""
        if self.active:
            self.all_reduce_mean_(p.grad for g in optimizer.param_groups for p in g["params"]
                                  if p.grad is not None)

    @torch.no_grad()
    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` on every rank with rank ``src``'s copy (in place; returns it)."""
        if self.active:
            torch.distributed.broadcast(tensor, src)
        return tensor

    @torch.no_grad()
    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` along dim 0 (sizes may differ), in rank order."""
        if not self.active:
            return tensor
        dev = tensor.device
        n = torch.tensor([tensor.shape[0]], device=dev, dtype=torch.long)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        torch.distributed.all_gather(sizes, n)
        sizes_ = [int(s) for s in sizes]
        most = max(sizes_)
        pad = tensor.new_zeros((most - tensor.shape[0], *tensor.shape[1:]))
        parts = [tensor.new_empty((most, *tensor.shape[1:])) for _ in range(self.world)]
        torch.distributed.all_gather(parts, torch.cat([tensor, pad]).contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes_)])

    @torch.no_grad()
    def sync_rows(self, table: torch.Tensor, idx: torch.Tensor) -> None:
        """After each rank wrote ``table[idx]`` for its own ``idx``, give every rank all ranks' rows."""
        if not self.active:
            return
        all_idx = self.all_gather_cat(idx)
        table[all_idx] = self.all_gather_cat(table[idx])

    def sync_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Average floating-point buffers (batch-norm running statistics) over ranks."""
        if self.active:
            self.all_reduce_mean_(b for m in modules for b in m.buffers())

    def broadcast_module_(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's (a guard on identical initialisation)."""
        if self.active:
            for t in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(t.data, 0)

    # -- objects -----------------------------------------------------------------------------------
    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        box = [obj if self.rank == src else None]
        torch.distributed.broadcast_object_list(box, src)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def shard(batch: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's slice of a global batch of indices, cut to a multiple of the world size."""
    if not dist.active:
        return batch
    per = batch.shape[0] // dist.world
    return batch[dist.rank * per:(dist.rank + 1) * per]


def modules_of(obj: Any) -> list[nn.Module]:
    """The networks a method holds: its ``nn.Module`` attributes and the ``.model`` of helpers (EMA)."""
    found: list[nn.Module] = []
    for v in vars(obj).values():
        if isinstance(v, nn.Module):
            found.append(v)
        elif isinstance(getattr(v, "model", None), nn.Module):
            found.append(v.model)
        elif isinstance(v, (list, tuple)):
            found.extend(x for x in v if isinstance(x, nn.Module))
    return found
