"""Measurements 4 and 5 of ``lnlbench perf``, which run whole trials outside this process.

4. **grid packing**: N equal CE trials (synthetic CIFAR, the perf network) on k slots through the Ray runner
   (:func:`lnlbench.runner.ray_runner.run_grid`): wall time ÷ ideal (Σ trial time ÷ k), where a trial's time
   is its engine epochs (``result.json`` ``wall_time_s``); everything else (actor or Train worker start,
   data, Tune) is the executor's overhead per trial. The trials' epochs are calibrated to last about
   ``Sizes.grid_trial_s`` on this machine.
5. **memory**: peak host RSS and peak device memory of one short trial per method, each in a fresh Python
   process (so peaks do not mix), the way a grid runs trials.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lnlbench.config import TrialConfig
from lnlbench.engine import pick_device, run_trial
from lnlbench.registry import METHODS

from .common import TARGETS, Sizes, cores, trial_config


# -- 4. grid packing -------------------------------------------------------------------------------------
def calibrate_epochs(cfg: TrialConfig, target_s: float, threads: int) -> tuple[int, float]:
    """Epochs of the grid's trial that last about ``target_s`` here with ``threads`` threads, and s/epoch.

    From the last of two epochs run in this process; trials that share the machine run slower than that,
    so the figures use the trials' measured times, never this estimate.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = run_trial(cfg)
    finally:
        torch.set_num_threads(old)
    if res["status"] != "ok":
        raise RuntimeError(f"the grid-packing calibration trial failed: {res['error']}")
    last = res["history"][-1]
    per_epoch = last["train_time_s"] + last["eval_time_s"]
    return max(2, round(target_s / per_epoch)), per_epoch


def grid_packing(work: Path, sizes: Sizes, device: str, executors: list[str]) -> dict[str, Any]:
    """N equal CE trials on k slots through :func:`lnlbench.runner.ray_runner.run_grid`, per executor."""
    try:
        from lnlbench.runner.ray_runner import private_ray, run_grid
    except ImportError:
        return {"skipped": "ray is not installed"}
    from lnlbench.runner.spec import parse_spec

    dev = pick_device(device)
    k, n = sizes.grid_slots, sizes.grid_trials
    cpus = max(1, cores() // k)
    hp = {"batch_size": sizes.batch_size, "schedule": "constant"}
    cfg = trial_config(work, sizes, "ce", device, sizes.n_method, "calibrate", hp, epochs=2)
    epochs, per_epoch = calibrate_epochs(cfg, sizes.grid_trial_s, cpus)
    out: dict[str, Any] = {"slots": k, "trials": n, "epochs": epochs, "calibrated_s_per_epoch": per_epoch,
                           "n_train": sizes.n_method, "model": sizes.model, "model_kwargs": sizes.model_kwargs,
                           "aimed_trial_s": sizes.grid_trial_s, "cpus_per_trial": cpus, "executors": {}}
    with private_ray(num_cpus=max(cores(), k * cpus)) as ray_start_s:
        if ray_start_s is not None:  # None: a Ray that was already running is used
            out["ray_start_s"] = ray_start_s
        for ex in executors:
            spec = parse_spec({
                "name": f"perf-{ex}", "datasets": ["cifar10"], "methods": ["ce"], "preset": "paper",
                "noise": [{"name": "symmetric", "rates": [0.4]}], "seeds": list(range(n)), "epochs": epochs,
                "overrides": {"ce": cfg.hparams}, "executor": ex,
                "trial": {"data_file": cfg.data_file, "data_root": cfg.data_root, "device": device},
                "storage": str(work / f"grid-{ex}"), "max_failures": 0, "max_concurrent": k,
                "resources": {"cpus_per_worker": cpus, "gpus_per_worker": 1 / k if dev.type == "cuda" else 0}})
            outcome = run_grid(spec, quiet=True)
            results = [json.loads(p.read_text()) for p in Path(spec.storage, "trials").glob("*/result.json")]
            trial_s = [r["wall_time_s"] for r in results if r.get("status") == "ok"]
            ideal = sum(trial_s) / k
            out["executors"][ex] = {
                "wall_s": outcome.wall_s, "ideal_s": ideal, "ratio": outcome.wall_s / ideal if ideal else None,
                "target": TARGETS["grid_packing"], "mean_trial_s": sum(trial_s) / max(1, len(trial_s)),
                "overhead_per_trial_s": (outcome.wall_s * k - sum(trial_s)) / max(1, len(trial_s)),
                "done": len(trial_s), "counts": outcome.counts}
    return out


# -- 5. memory -------------------------------------------------------------------------------------------
MARKER = "lnlbench-perf-memory: "


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB.

    Linux: VmRSS and VmHWM, whose peak belongs to this program only. getrusage's ``ru_maxrss`` (the
    fallback elsewhere) survives exec, so a child started by fork + exec of a large parent would report
    the parent's size.
    """
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return float(status["VmRSS"].split()[0]) / 1024, float(status["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 1024)
        return peak, peak


def memory_main() -> None:
    """The child process: a trial config (JSON) on stdin, one marked JSON line of peaks on stdout."""
    cfg = json.loads(sys.stdin.read())
    METHODS.names()  # registries imported before the start figure, as they are in any trial process
    start, _ = _rss_mib()
    dev = pick_device(cfg["device"])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    res = run_trial(cfg)
    _, peak = _rss_mib()
    mib = lambda b: round(b / 2 ** 20, 1)
    cuda = dev.type == "cuda"
    print(MARKER + json.dumps({
        "status": res["status"], "start_rss_mib": start, "peak_rss_mib": peak,
        "trial_s": time.perf_counter() - t0, "epochs": res.get("epochs_done"),
        "peak_device_mib": mib(torch.cuda.max_memory_allocated(dev)) if cuda else None,
        "peak_device_reserved_mib": mib(torch.cuda.max_memory_reserved(dev)) if cuda else None,
        "error": (res.get("error") or {}).get("message")}), flush=True)


# Epochs of a memory trial: the 3 under which every method's SMOKE overrides reach its main phase (the contract
# tests' length; T-Revision's one epoch per stage needs all 3)
MEMORY_EPOCHS = 3


def memory(work: Path, sizes: Sizes, device: str, methods: list[str] | None = None) -> dict[str, Any]:
    """Peak RSS / device memory of a short trial (:data:`MEMORY_EPOCHS`) of each method, each in a fresh
    Python process."""
    names = ["ce", *[m for m in (methods or METHODS.names()) if m != "ce"]]
    code = "from lnlbench.perf.trials import memory_main; memory_main()"
    rows = []
    for m in names:
        cfg = trial_config(work, sizes, m, device, sizes.n_memory, f"mem-{m}", epochs=MEMORY_EPOCHS).to_dict()
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(cfg), capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
        if lines:
            row = json.loads(lines[-1][len(MARKER):])
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"status": "failed", "error": f"exit code {proc.returncode}: {tail}"}
        rows.append({"method": m, **row})
    return {"rows": rows, "n_train": sizes.n_memory, "epochs": MEMORY_EPOCHS}
