"""``lnlbench perf``: five performance figures, each a ratio of two things measured side by side in one process.

1. **engine overhead**: CE epochs through the engine's trial path (``_Trial``, the object ``run_trial``
   drives: ``MethodContext.batches/augment/step``) against a bare hand-written PyTorch loop on the same model,
   noisy labels on the device, batch size and batched augmentation. Epochs alternate (engine, bare, bare,
   engine, ...) so background load hits both alike; the ratio is the median of the per-pair ratios. Setup
   is not timed. The engine's per-epoch bookkeeping (test evaluation, checkpoint, result.json) is timed apart.
2. **augmentation**: the engine's on-device batched crop + flip + normalise
   (:class:`lnlbench.datasets.augment.Augmenter`) against torchvision's PIL transforms in a DataLoader with
   one worker per available core, on the same images and batch size.
3. **method cost**: a post-warm-up epoch of every registered method against CE, same data, network and
   device; each method keeps its ``paper`` CIFAR-10 recipe (batch size, optimiser, augmentation) except
   the network (:data:`STEADY` ends warm-ups early).
4. **grid packing**: N equal trials on k slots through the Ray runner: wall time ÷ (Σ trial time ÷ k), and
   the executor's overhead per trial (everything but the engine's epochs: actor start, data, Tune).
5. **memory**: peak host RSS and peak device memory of one short trial per method, each trial in a fresh
   process (so peaks do not mix).

4 and 5 live in :mod:`lnlbench.perf_trials`, the text report in :mod:`lnlbench.perf_report`.

Data are synthetic CIFAR-shaped uint8 images (a colour template per class plus noise; nothing is
downloaded) written to a temporary folder and served as ``cifar10`` from an array file.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lnlbench.datasets.augment import Augmenter
from lnlbench.datasets.cifar import CIFAR10, CIFAR10_CLASSES

from .config import TrialConfig, resolve
from .data import prepare
from .engine import _Trial, amp_dtype, pick_device, run_trial
from .registry import METHODS, MODELS
from .results import git_commit, host, versions

SCHEMA = "lnlbench.perf/1"
TARGETS = {"engine_overhead": 1.10, "augmentation": 20.0, "grid_packing": 1.15}

# Hyperparameter overrides that make the timed epochs a method's main phase, and what is timed (formatted
# with the timed epoch's logs and n = the number of training images).
STEADY: dict[str, tuple[dict[str, Any], str]] = {
    "dividemix": ({"warm_up": 1}, "warm_up=1: co-divide + MixMatch, labeled sets {labeled_1}+{labeled_2} of 2×{n}"),
    "coteaching": ({"num_gradual": 1}, "num_gradual=1: full forget rate; paper recipe: no augmentation"),
    "gce": ({}, "L_q epoch; + a no-grad truncation pass 1 epoch in 10 from epoch 40"),
    "moit": ({"xbm_begin": 0, "start_correction": 1, "k_val": 50},
             "memory + semi-supervised loss on, 3 forwards per sample + kNN detection (k 50) each epoch"),
    "moit_plus": ({"xbm_begin": 0, "start_correction": 1, "k_val": 50},
                  "its MOIT stage (as moit); the MOIT+ stage is a mixup epoch over the clean set"),
}


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: :data:`QUICK`, :data:`FULL` (tests use smaller ones)."""

    mode: str
    model: str = "cnn_small"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": [8, 16, 32]})
    n_train: int = 512  # engine overhead: training images
    n_test: int = 256
    batch_size: int = 128
    pairs: int = 2  # timed engine/bare epoch pairs, after one untimed pair
    n_aug: int = 2048
    aug_reps: int = 2
    n_method: int = 256  # method cost: training images
    method_reps: int = 1  # timed epochs per method, after one untimed epoch
    grid_trials: int = 4
    grid_slots: int = 2
    grid_trial_s: float = 3.0  # aimed length of each grid trial (calibrated epochs)
    n_memory: int = 256


QUICK = Sizes("quick", pairs=4, n_aug=4096, aug_reps=3, n_method=512, method_reps=3, grid_trial_s=2.0)
FULL = Sizes("full", n_train=10000, n_test=2000, pairs=4, n_aug=10000, aug_reps=3, n_method=2000,
             method_reps=2, grid_trials=4, grid_trial_s=30.0, n_memory=2000)


# -- data, trials, timing --------------------------------------------------------------------------------
def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images, 60 % a fixed random template of their class + 40 % noise, and labels."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (10, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = 0.6 * templates[y] + 0.4 * rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float32)
    return x.astype(np.uint8), y


def synthetic_cifar(path: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10-shaped array file (see ``datasets/arrayfile.py``) of synthetic images."""
    if not path.exists():
        x, y = synthetic_images(n_train + n_test, seed=n_train)
        np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                 classes=np.array(CIFAR10_CLASSES))
    return path


def trial_config(work: Path, sizes: Sizes, method: str, device: str, n_train: int, tag: str,
                 hparams: dict[str, Any] | None = None, epochs: int | None = None) -> TrialConfig:
    """``method``'s paper CIFAR-10 recipe on synthetic data with the perf network, 40 % symmetric noise."""
    data = synthetic_cifar(work / f"cifar_{n_train}.npz", n_train, sizes.n_test)
    hp = {"model": sizes.model, "model_kwargs": dict(sizes.model_kwargs), **STEADY.get(method, ({}, ""))[0],
          **(hparams or {})}
    return TrialConfig(method=method, dataset="cifar10", data_file=str(data), data_root=str(work / "data"),
                       noise="symmetric", rate=0.4, seed=0, preset="paper", epochs=epochs, hparams=hp,
                       out_dir=str(work / "trials" / tag), device=device)


def build_trial(cfg: TrialConfig) -> _Trial:
    """The engine's trial object, built (data on the device, method constructed) but not run."""
    trial = _Trial(resolve(cfg), None)
    trial.build()
    trial.dir.mkdir(parents=True, exist_ok=True)
    return trial


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device synchronised on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def host_values(logs: dict[str, Any] | None) -> dict[str, Any]:
    """A method's epoch logs as plain numbers (the one host sync per epoch the engine also does)."""
    return {k: float(v) if isinstance(v, (torch.Tensor, np.generic)) else v for k, v in (logs or {}).items()}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- 1. engine overhead ----------------------------------------------------------------------------------
class BareLoop:
    """The hand-written reference: a textbook PyTorch epoch on the trial's data, network and augmentation.

    It rebuilds what the engine builds (the same cached noisy labels on the device, the dataset's
    augmentation, the registered network) from public pieces, without going through the engine.
    """

    def __init__(self, cfg: TrialConfig):
        resolved = resolve(cfg)
        hp, data = resolved.hparams, prepare(resolved)
        info, dev = data.info, pick_device(cfg.device)
        cl = dev.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        aug = resolved.augment  # as the engine: off means normalisation only
        self.augment = Augmenter.build(info.mean, info.std, info.crop_padding if aug else 0, info.flip and aug,
                                       dev, cl)
        x = torch.from_numpy(info.x_train).permute(0, 3, 1, 2).contiguous()
        self.x, self.y = x[data.train_idx].to(dev), torch.from_numpy(data.noisy).to(dev)
        self.x_test = torch.from_numpy(info.x_test).permute(0, 3, 1, 2).contiguous().to(dev)
        self.y_test = torch.from_numpy(info.y_test).to(dev)
        c, h, _ = info.image_shape
        model = MODELS.get(hp.model)(num_classes=info.num_classes, in_channels=c, image_size=h, **hp.model_kwargs)
        self.model = model.to(dev, memory_format=torch.channels_last if cl else torch.preserve_format)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=hp.lr, momentum=hp.momentum,
                                   weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        self.batch_size, self.device, self.amp = hp.batch_size, dev, amp_dtype(cfg.amp, dev)
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed)

    def epoch(self) -> float:
        self.model.train()
        total = torch.zeros((), device=self.device)
        order = torch.randperm(len(self.y), device=self.device, generator=self.gen)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            x = self.augment(self.x[idx], self.gen)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                loss = F.cross_entropy(self.model(x), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
        return float(total)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        bs = 1024 if self.device.type == "cuda" else 128  # the engine's default evaluation batch
        for s in range(0, len(self.y_test), bs):
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                logits = self.model(self.augment.normalize(self.x_test[s:s + bs]))
            correct += (logits.argmax(1) == self.y_test[s:s + bs]).sum()
        return correct.item() / len(self.y_test)


def engine_overhead(work: Path, sizes: Sizes, device: str) -> dict[str, Any]:
    """CE epochs through ``run_trial`` interleaved with bare-loop epochs run from its epoch hook.

    Order E0 B0 | E1 B1 | B2 E2 | E3 B3 | B4 E4 ... (pair 0 warms both sides up and is dropped). The engine's
    training time is its own ``train_time_s``; its bookkeeping is ``eval_time_s`` (test evaluation) and the
    rest of the time between two hook calls (checkpoint, result.json).
    """
    cfg = trial_config(work, sizes, "ce", device, sizes.n_train, "engine",
                       {"batch_size": sizes.batch_size, "schedule": "constant"}, epochs=sizes.pairs + 1)
    bare, dev, p = BareLoop(cfg), pick_device(device), sizes.pairs
    t: dict[str, list[float]] = {k: [] for k in ("engine", "eval", "save", "bare", "bare_eval")}
    last_end = [0.0]

    def hook(epoch: int, rec: dict[str, Any], ckpt: Path) -> None:
        if epoch:
            t["save"].append(time.perf_counter() - last_end[0] - rec["train_time_s"] - rec["eval_time_s"])
        t["engine"].append(rec["train_time_s"])
        t["eval"].append(rec["eval_time_s"])
        # B_e right after E_e (pair 0 and odd pairs), and B_{e+1} now when pair e+1 runs bare first (even)
        for _ in range(int(epoch == 0 or epoch % 2 == 1) + int((epoch + 1) % 2 == 0 and epoch < p)):
            t["bare"].append(timed(bare.epoch, dev))
            t["bare_eval"].append(timed(bare.evaluate, dev))
        last_end[0] = time.perf_counter()

    res = run_trial(cfg, on_epoch_end=hook)
    if res["status"] != "ok":
        raise RuntimeError(f"the engine-overhead trial failed: {res['error']}")
    t = {k: v if k == "save" else v[1:] for k, v in t.items()}  # drop pair 0
    full = [e + v + s for e, v, s in zip(t["engine"], t["eval"], t["save"])]
    return {
        "ratio": median([e / b for e, b in zip(t["engine"], t["bare"])]), "target": TARGETS["engine_overhead"],
        "engine_s": median(t["engine"]), "bare_s": median(t["bare"]),
        "full_epoch_ratio": median([f / (b + v) for f, b, v in zip(full, t["bare"], t["bare_eval"])]),
        "eval_s": median(t["eval"]), "bare_eval_s": median(t["bare_eval"]), "save_s": median(t["save"]),
        "pairs": p, "samples": t, "n_train": sizes.n_train, "n_test": sizes.n_test,
        "batch_size": sizes.batch_size, "model": sizes.model, "model_kwargs": sizes.model_kwargs,
        "steps_per_epoch": math.ceil(sizes.n_train / sizes.batch_size)}


# -- 2. augmentation -------------------------------------------------------------------------------------
class PilImages(torch.utils.data.Dataset):
    """torchvision's CIFAR10 ``__getitem__``: a PIL image from the uint8 array, then the transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Callable):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def augmentation(sizes: Sizes, device: str) -> dict[str, Any]:
    """Images per second of the on-device batched transform vs torchvision's PIL transforms + DataLoader."""
    import torchvision.transforms as T

    dev = pick_device(device)
    x, y = synthetic_images(sizes.n_aug, seed=7)
    n, bs, workers = len(y), sizes.batch_size, cores()
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(CIFAR10.mean, CIFAR10.std)])
    loader = torch.utils.data.DataLoader(PilImages(x, y, tf), batch_size=bs, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, pin_memory=dev.type == "cuda")
    augment = Augmenter.build(CIFAR10.mean, CIFAR10.std, 4, True, dev, channels_last=dev.type == "cuda")
    x_dev = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)

    def on_device() -> None:
        order = torch.randperm(n, device=dev, generator=gen)
        for s in range(0, n, bs):
            augment(x_dev[order[s:s + bs]], gen)

    def pil() -> None:
        for xb, _ in loader:
            xb.to(dev, non_blocking=True)  # from pinned memory on CUDA

    t: dict[str, list[float]] = {"device": [], "pil": []}
    for rep in range(sizes.aug_reps + 1):  # rep 0 starts the loader's workers and is dropped
        for name, fn in (("device", on_device), ("pil", pil))[::1 if rep % 2 == 0 else -1]:
            t[name].append(timed(fn, dev))
    first_pil = t["pil"][0]
    t = {k: v[1:] for k, v in t.items()}
    dev_ips, pil_ips = n / median(t["device"]), n / median(t["pil"])
    threads = torch.get_num_threads() if dev.type == "cpu" else 1
    return {"ratio": dev_ips / pil_ips, "target": TARGETS["augmentation"], "device_img_s": dev_ips,
            "pil_img_s": pil_ips, "per_core_ratio": (dev_ips / threads) / (pil_ips / max(1, workers)),
            "torch_threads": threads, "device": str(dev), "pil_first_epoch_s": first_pil, "num_workers": workers, "n_images": n,
            "batch_size": bs, "reps": sizes.aug_reps, "samples": t}


# -- 3. method cost --------------------------------------------------------------------------------------
def method_cost(work: Path, sizes: Sizes, device: str, methods: list[str] | None = None) -> dict[str, Any]:
    """Seconds per post-warm-up epoch of each method and its ratio to CE; methods interleave per round."""
    names = ["ce", *[m for m in (methods or METHODS.names()) if m != "ce"]]
    trials = {m: build_trial(trial_config(work, sizes, m, device, sizes.n_method, f"cost-{m}")) for m in names}
    times: dict[str, list[float]] = {m: [] for m in names}
    logs: dict[str, dict[str, Any]] = {}
    for epoch in range(sizes.method_reps + 1):  # epoch 0 (warm-up, first-call costs) is not timed
        for m in names[epoch % len(names):] + names[:epoch % len(names)]:  # each round starts elsewhere
            trial = trials[m]
            dt = timed(lambda e=epoch, tr=trial, m=m: logs.__setitem__(m, host_values(tr.method.train_epoch(e))),
                       trial.device)
            if epoch:
                times[m].append(dt)
    ce = median(times["ce"])
    rows = [{"method": m, "s_per_epoch": median(times[m]), "ratio": median(times[m]) / ce,
             "batch_size": trials[m].trial.hparams.batch_size, "timed_epochs": list(range(1, sizes.method_reps + 1)),
             "overrides": STEADY.get(m, ({}, ""))[0], "note": _note(m, logs[m], sizes.n_method),
             "logs": {k: v for k, v in logs[m].items() if isinstance(v, (int, float))}} for m in names]
    return {"rows": rows, "n_train": sizes.n_method, "model": sizes.model, "model_kwargs": sizes.model_kwargs,
            "recipe": "each method's paper CIFAR-10 recipe, network replaced"}


def _note(method: str, logs: dict[str, Any], n: int) -> str:
    try:
        return STEADY.get(method, ({}, ""))[1].format(n=n, **logs)
    except (KeyError, IndexError, ValueError):
        return STEADY[method][1]


# -- all of it -------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(dev: torch.device) -> dict[str, Any]:
    return {"host": host(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "cpus_available": cores(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "load_average_start": list(os.getloadavg()), "versions": versions(), "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_perf(sizes: Sizes, device: str = "auto", skip_ray: bool = False, executors: list[str] | None = None,
             methods: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The five measurements (memory trials in fresh processes, grid trials in Ray's); every figure."""
    from . import perf_trials  # it imports this module

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
             else perf_trials.grid_packing(work, sizes, device, executors)),
            ("memory", lambda: perf_trials.memory(work, sizes, device, methods))]
        for i, (key, fn) in enumerate(steps, 1):
            log(f"perf: {i}/5 {key.replace('_', ' ')} ...")
            t = time.perf_counter()
            out[key] = {**fn(), "measure_s": time.perf_counter() - t}
    out["machine"]["load_average_end"] = list(os.getloadavg())
    out["wall_s"] = time.perf_counter() - t0
    return out
