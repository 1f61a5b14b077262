"""Fast weights: one functional SGD step per label set, and the forward pass at the stepped weights.

Meta-learning methods (MLNT) take a virtual gradient step θ′_m = θ − lr·∇θ L_m for each of M losses L_m
and evaluate the network at θ′_m. Here that is done without copying modules: ``torch.func.functional_call``
runs the module with substituted weights, and

- the M gradients are one batched vector-Jacobian product through the *existing* forward graph
  (``autograd.grad(..., is_grads_batched=True)``) when the losses are cross-entropies of the same logits
  (∂CE_m/∂logits = (softmax − onehot(y_m)) / B), so the base forward is never recomputed;
- the M fast forwards are one ``torch.func.vmap`` call over the stacked weights (or a loop, same values);
- batch norm uses the batch statistics and updates no running statistics: its running buffers are passed
  as ``None`` (``nn.BatchNorm`` then normalises with batch statistics in train and eval mode alike and
  skips the running update), so the virtual passes never corrupt the network's evaluation statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batch_stat_buffers(model: nn.Module) -> dict[str, None]:
    """{name: None} for every batch-norm running buffer: functional passes use batch statistics, update nothing."""
    out: dict[str, None] = {}
    for prefix, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for b in _BN_BUFFERS:
                if getattr(mod, b, None) is not None:
                    out[f"{prefix}.{b}" if prefix else b] = None
    return out


def batch_stat_forward(model: nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None
                       ) -> torch.Tensor:
    """model(x) at ``params`` (default: its own) with batch-statistics batch norm and no buffer update."""
    return functional_call(model, (params or {}, batch_stat_buffers(model)), (x,), strict=False)


def ce_label_set_grads(logits: torch.Tensor, params: list[torch.Tensor], labels: torch.Tensor,
                       create_graph: bool = False, batched: bool = True) -> list[torch.Tensor]:
    """∇θ CE(logits, labels[m]) (batch mean) for each of the M label sets: tensors of shape (M, *p.shape).

    ``logits`` must still hold its graph (retained). ``batched``: one vectorised backward with the analytic
    cotangents (softmax − onehot)/B; otherwise M ordinary backward passes (the official loop). With
    ``create_graph`` the gradients stay differentiable in θ (exact second-order meta-gradients).
    """
    logits = logits.float()
    if not batched:
        per_set = [torch.autograd.grad(F.cross_entropy(logits, y), params, retain_graph=True,
                                       create_graph=create_graph) for y in labels]
        return [torch.stack(g) for g in zip(*per_set)]
    cot = (F.softmax(logits, 1).unsqueeze(0) - F.one_hot(labels, logits.shape[1]).to(logits.dtype))
    cot = cot / logits.shape[0]
    if not create_graph:
        cot = cot.detach()
    return list(torch.autograd.grad(logits, params, grad_outputs=cot, retain_graph=True,
                                    create_graph=create_graph, is_grads_batched=True))


def fast_forward(model: nn.Module, names: list[str], params: list[torch.Tensor], grads: list[torch.Tensor],
                 lr: float, x: torch.Tensor, use_vmap: bool = True, chunk: int = 0) -> torch.Tensor:
    """Logits (M, B, C) of ``model`` at θ′_m = θ − lr·grads[m] on the same batch ``x``.

    ``use_vmap``: one vectorised call (``chunk`` sets at a time, 0 = all); otherwise a loop over m.
    Gradients of the result flow to θ (and through ``grads`` when they carry a graph).
    """
    stat_free = batch_stat_buffers(model)

    def run(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (weights, stat_free), (x,), strict=False)

    fast = {n: p - lr * g for n, p, g in zip(names, params, grads)}  # (M, *shape) each
    if use_vmap:
        return vmap(run, chunk_size=chunk or None)(fast)
    m = grads[0].shape[0]
    return torch.stack([run({n: w[i] for n, w in fast.items()}) for i in range(m)])
