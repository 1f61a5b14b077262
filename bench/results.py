"""The versioned ``result.json`` of a trial: schema, summary figures, provenance, atomic writing.

The aggregator reads these files and nothing else. Schema ``lnlbench.result/1``::

    schema, trial_id, status ("running" | "ok" | "failed"), error ({type, message, traceback} | null),
    config (the TrialConfig), method, dataset, noise {name, options, rate, file, sha256, realized_rate,
    generated}, seed, preset, hparams, method_flags {uses_clean_data, reconstructed},
    data {n_train, n_val, n_test, num_classes, image_shape, subset, test_subset, augment, n_clean_val},
    history [{epoch, lr, train_time_s, eval_time_s, test_acc, val_acc?, clean_val_acc?, selection? {precision, recall,
             auc, selected_fraction}, <method's own scalars>}],
    best_acc, best_epoch, last_acc (mean test accuracy of the last 10 epochs, or of all if fewer),
    final_acc, selected_acc (test accuracy at the epoch of best validation accuracy: the dataset's clean
    validation set, ``clean_val_acc``, where it has one (Clothing1M), else the noisy split's ``val_acc``;
    null without either), epochs_done, wall_time_s, device, device_name, device_hours, versions, git_commit,
    host, started_at, finished_at, attempts
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write

SCHEMA = "lnlbench.result/1"
LAST_K = 10  # "last" accuracy = mean over the last K epochs (DivideMix's convention)


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """best/last/final/selected accuracy from the per-epoch history."""
    if not history:
        return {"best_acc": None, "best_epoch": None, "last_acc": None, "final_acc": None,
                "selected_acc": None, "epochs_done": 0}
    acc = np.array([h["test_acc"] for h in history], dtype=float)
    best = int(np.argmax(acc))
    out = {"best_acc": float(acc[best]), "best_epoch": int(history[best]["epoch"]),
           "last_acc": float(acc[-LAST_K:].mean()), "final_acc": float(acc[-1]),
           "selected_acc": None, "epochs_done": len(history)}
    # Model selection: the dataset's clean validation set where it has one (Clothing1M), else the noisy
    # validation split held out of the training set; the first epoch of the best accuracy.
    val = [h.get("clean_val_acc") for h in history]
    if any(v is None for v in val):
        val = [h.get("val_acc") for h in history]
    if all(v is not None for v in val):
        sel = int(np.argmax(np.array(val, dtype=float)))
        out["selected_acc"] = float(acc[sel])
        out["selected_epoch"] = int(history[sel]["epoch"])
    return out


@lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("lnlbench", "torch", "torchvision", "numpy", "scikit-learn", "scipy", "ray"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the lnlbench source tree, with ``-dirty`` if it has uncommitted changes."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def host() -> str:
    return socket.gethostname()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    atomic_write(path, json.dumps(payload, indent=1, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, tuple, set)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    return str(obj)


def read_result(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)
