"""The versioned ``result.json`` of a trial: its schema (:class:`TrialResult`), summary figures, provenance.

The aggregator reads these files and nothing else. Schema ``lnlbench.result/1`` is the dataclass
:class:`TrialResult` (with :class:`NoiseFields` and :class:`DataFields`): the written JSON has exactly
its fields (``tests/test_engine.py`` asserts so). ``history`` is one dict per epoch: ``epoch, lr,
train_time_s, eval_time_s, test_acc, val_acc?, clean_val_acc?, selection? {precision, recall, auc,
selected_fraction}, selection_sets? {name: the same, per extra set the method names}, world_size?`` and
the method's own scalars. ``recipe`` is ``{status ("preset" | "default"), missing (the preset key the
cell lacks, or null), preset, applied [keys], tuned? (preset ``tuned`` only: the recipe file, its entry, scope,
search budget, trials run, search seeds and objective; see lnlbench.recipes)}``.
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write

SCHEMA = "lnlbench.result/1"
LAST_K = 10  # "last" accuracy = mean over the last K epochs (DivideMix's convention)


@dataclass
class NoiseFields:
    """``noise``: the asked generator and the labels it produced (the cached file and its hash)."""

    name: str
    options: dict[str, Any]
    rate: float | None
    file: str | None = None  # absent until the data are built (a trial that failed before)
    sha256: str | None = None
    realized_rate: float | None = None
    generated: bool | None = None  # True if this trial generated the noise file, False if reused
    clean_fingerprint: str | None = None  # hash of the clean labels and original indices the noise is for


@dataclass
class DataFields:
    """``data``: the sizes and provenance of the trial's data (null if the trial failed before building them)."""

    n_train: int
    n_val: int
    n_test: int
    num_classes: int
    image_shape: list[int]
    subset: int | None
    source: str | None  # where the images came from (a file, a torchvision folder)
    test_subset: int | None
    augment: bool
    n_clean_val: int
    transition: list[list[float]]  # the noise transition matrix the generator meant (rounded to 1e-6)
    # images per class actually used (train part before the validation split, and test): a subset larger
    # than a class keeps all of that class, and these say so where ``subset`` only says what was asked
    train_per_class: list[int] | None = None
    test_per_class: list[int] | None = None
    # the streaming data path: DataLoader workers (0: the set was held on the device); sizes of the further
    # test sets (mini-WebVision's ImageNet validation), by name
    loader_workers: int = 0
    n_extra_test: dict[str, int] | None = None


@dataclass
class TrialResult:
    """One trial's ``result.json``; :meth:`to_dict` is what is written.

    ``last_acc`` is the mean test accuracy of the last :data:`LAST_K` epochs (of all if fewer);
    ``selected_acc`` the test accuracy at ``selected_epoch``, the epoch of best validation accuracy (the
    dataset's clean validation set, ``clean_val_acc``, where it has one (Clothing1M), else the noisy
    split's ``val_acc``; both null without either). ``amp`` is the precision actually used; ``recipe``
    says whether the method's preset had an entry for this setting; ``noise_label`` is the canonical
    noise label the aggregator groups by.
    """

    trial_id: str
    status: str  # "running" | "ok" | "failed"
    error: dict[str, Any] | None  # {type, message, traceback}
    config: dict[str, Any]  # the TrialConfig
    method: str
    dataset: str
    noise: NoiseFields
    seed: int
    preset: str
    hparams: dict[str, Any]
    method_flags: dict[str, Any]  # {uses_clean_data, uses_true_transition, reconstructed, reconstruction}
    data: DataFields | None
    history: list[dict[str, Any]]
    best_acc: float | None
    best_epoch: int | None
    last_acc: float | None
    final_acc: float | None
    selected_acc: float | None
    selected_epoch: int | None
    epochs_done: int
    wall_time_s: float
    device: str
    device_name: str
    device_hours: float
    versions: dict[str, str | None]
    git_commit: str | None
    host: str
    started_at: str
    finished_at: str | None
    amp: str = "off"  # "off" | "bf16" | "fp16"
    # CPU threads torch used: a CPU reduction's order, hence float results' last bits, depend on it
    torch_threads: int | None = None
    # The CPU model and torch's CPU kernel capability ("AVX2", "AVX512", ...): float results differ across
    # CPUs (vector widths change reduction orders), so two runs of one trial id compare only on the same one
    cpu: str | None = None
    recipe: dict[str, Any] | None = None  # {"status": "preset" | "default", "missing": str | None, ...}
    noise_label: str | None = None
    # The golden (clean-labelled) set: {per_class, use ("context" | "add" | "withheld"), n}; None without
    # one. ``method_flags.uses_clean_data`` is true when the method trained on it ("context" or "add").
    golden: dict[str, Any] | None = None
    # The mean absolute error of the method's transition-matrix estimate against the noise generator's
    # matrix at the last epoch that scored one (history ``transition_mae``); None for other methods.
    transition_mae: float | None = None
    # The first epoch ``best``/``selected`` range over (the method's ``scored_from_epoch``; 0 for most)
    scored_from_epoch: int = 0
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, **{k: v for k, v in asdict(self).items() if k != "schema"}}


def summarize(history: list[dict[str, Any]], scored_from: int = 0) -> dict[str, Any]:
    """best/last/final/selected accuracy (and the last transition-estimate error) from the history.

    ``best`` and ``selected`` range over the epochs from ``scored_from`` (the method's
    ``scored_from_epoch``: a discarded first-stage network's epochs are not the method's); None while the
    trial has not reached it."""
    out: dict[str, Any] = {"best_acc": None, "best_epoch": None, "last_acc": None, "final_acc": None,
                           "selected_acc": None, "selected_epoch": None, "epochs_done": len(history),
                           "transition_mae": None, "scored_from_epoch": scored_from}
    if not history:
        return out
    acc = np.array([h["test_acc"] for h in history], dtype=float)
    out.update(last_acc=float(acc[-LAST_K:].mean()), final_acc=float(acc[-1]),
               transition_mae=next((h["transition_mae"] for h in reversed(history) if "transition_mae" in h), None))
    scored = [i for i, h in enumerate(history) if h["epoch"] >= scored_from]
    if not scored:
        return out
    best = scored[int(np.argmax(acc[scored]))]
    out.update(best_acc=float(acc[best]), best_epoch=int(history[best]["epoch"]))
    # Model selection: the dataset's clean validation set where it has one (Clothing1M), else the noisy
    # validation split held out of the training set; the first epoch of the best accuracy.
    val = [history[i].get("clean_val_acc") for i in scored]
    if any(v is None for v in val):
        val = [history[i].get("val_acc") for i in scored]
    if all(v is not None for v in val):
        sel = scored[int(np.argmax(np.array(val, dtype=float)))]
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


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_capability() -> str:
    """torch's CPU kernel capability ("AVX2", "AVX512", ...; "?" where torch cannot say)."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError, RuntimeError):
        return "?"


def cpu() -> str:
    """``"<model> [<torch's CPU capability>]"``, e.g. ``"Intel(R) Xeon(R) Processor [AVX512]"``."""
    return f"{cpu_name()} [{cpu_capability()}]"


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
