"""What a trial takes from the cluster: workers, CPUs and (fractional) GPUs; fit and concurrency checks.

Tune does not count the resources Ray Train takes for its workers (Train makes its own placement group),
so the runner sizes ``max_concurrent_trials`` itself from these figures. No Ray here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lnlbench.errors import LnlError


@dataclass(frozen=True)
class Resources:
    """What one trial takes: ``num_workers`` Ray Train workers of ``cpus``/``gpus`` each."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | str = "auto"  # "auto": 1 where the cluster has GPUs, else 0 (CPU fallback)

    def gpus(self, cluster_gpus: float) -> float:
        """GPUs per worker on a cluster with ``cluster_gpus`` GPUs (0 on a CPU-only cluster)."""
        if cluster_gpus <= 0:
            return 0.0
        return 1.0 if self.gpus_per_worker == "auto" else float(self.gpus_per_worker)


def check_fit(res: Resources, nodes: list[dict[str, float]]) -> None:
    """One-line error unless a trial's workers fit on the cluster (``nodes``: each node's CPU/GPU)."""
    gpus = res.gpus(sum(n.get("GPU", 0.0) for n in nodes))
    need = f"{res.cpus_per_worker:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")
    if not any(n.get("CPU", 0) >= res.cpus_per_worker and n.get("GPU", 0) >= gpus for n in nodes):
        have = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes) or "nothing"
        raise LnlError(f"resources cannot fit: one worker needs {need} and no node has that (nodes: {have})")
    if _bundles(res, gpus, nodes) < res.num_workers:
        raise LnlError(f"resources cannot fit: a trial needs {res.num_workers} workers of {need} and the "
                       f"cluster holds {_bundles(res, gpus, nodes)}")


def _bundles(res: Resources, gpus: float, nodes: list[dict[str, float]]) -> int:
    """How many workers of ``res`` the cluster holds at once."""
    total = 0
    for n in nodes:
        k = math.floor(n.get("CPU", 0) / res.cpus_per_worker + 1e-9)
        if gpus:
            k = min(k, math.floor(n.get("GPU", 0) / gpus + 1e-9))
        total += k
    return total


def concurrency(res: Resources, nodes: list[dict[str, float]], n_trials: int) -> int:
    """How many trials run at once: Tune does not count Train's resources, so the runner must."""
    gpus = res.gpus(sum(n.get("GPU", 0.0) for n in nodes))
    return max(1, min(n_trials, _bundles(res, gpus, nodes) // res.num_workers))
