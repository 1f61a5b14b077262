"""``run_perf``: the six measurements of ``lnlbench perf`` in order, with the machine they ran on."""
from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lnlbench.engine import pick_device
from lnlbench.registry import METHODS
from lnlbench.results import cpu_capability, cpu_name, git_commit, host, versions

from . import trials
from .common import SCHEMA, Sizes, cores
from .inprocess import augmentation, engine_overhead, method_cost
from .streaming import streaming


# -- all of it -------------------------------------------------------------------------------------------
def machine_info(dev: torch.device) -> dict[str, Any]:
    return {"host": host(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_name(), "cpu_capability": cpu_capability(), "cpu_count": os.cpu_count(),
            "cpus_available": cores(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "load_average_start": list(os.getloadavg()), "versions": versions(), "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_perf(sizes: Sizes, device: str = "auto", skip_ray: bool = False, executors: list[str] | None = None,
             methods: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The six measurements (memory trials in fresh processes, grid trials in Ray's); every figure."""
    t0 = time.perf_counter()
    dev = pick_device(device)
    for m in methods or []:
        METHODS.get(m)  # an unknown name fails now, with the known ones, not minutes in
    out: dict[str, Any] = {"schema": SCHEMA, "mode": sizes.mode, "sizes": asdict(sizes),
                           "machine": machine_info(dev)}
    executors = executors or (["light"] if sizes.mode == "quick" else ["light", "train"])
    with tempfile.TemporaryDirectory(prefix="lnlbench-perf-") as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("engine_overhead", lambda: engine_overhead(work, sizes, device)),
            ("augmentation", lambda: augmentation(sizes, device)),
            ("method_cost", lambda: method_cost(work, sizes, device, methods)),
            ("grid_packing", lambda: {"skipped": "--skip-ray"} if skip_ray
             else trials.grid_packing(work, sizes, device, executors)),
            ("memory", lambda: trials.memory(work, sizes, device, methods)),
            ("streaming", lambda: streaming(work, sizes, device))]
        for i, (key, fn) in enumerate(steps, 1):
            log(f"perf: {i}/{len(steps)} {key.replace('_', ' ')} ...")
            t = time.perf_counter()
            out[key] = {**fn(), "measure_s": time.perf_counter() - t}
    out["machine"]["load_average_end"] = list(os.getloadavg())
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_compare_official(sizes: Sizes, repo: str, device: str = "auto", workers: int | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """``--compare-official``: the official DivideMix beside ours (:mod:`.official`), with the machine's facts."""
    from .official import compare_official

    t0 = time.perf_counter()
    out: dict[str, Any] = {"schema": SCHEMA, "mode": sizes.mode, "sizes": asdict(sizes),
                           "machine": machine_info(pick_device(device))}
    out["official"] = {**compare_official(repo, sizes, device, workers=workers, log=log),
                       "measure_s": time.perf_counter() - t0}
    out["machine"]["load_average_end"] = list(os.getloadavg())
    out["wall_s"] = time.perf_counter() - t0
    return out
