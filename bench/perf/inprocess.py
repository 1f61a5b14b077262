"""Measurements 1-3 of ``lnlbench perf``, in this process: engine overhead, augmentation, method cost.

1. **engine overhead**: CE epochs through :func:`lnlbench.engine.run_trial` against a bare hand-written
   PyTorch loop on the same model, noisy labels on the device, batch size and batched augmentation. Epochs
   alternate (engine, bare, bare, engine, ...) so background load hits both alike; the ratio is the median
   of the per-pair ratios. Setup is not timed. The engine's per-epoch bookkeeping (test evaluation,
   checkpoint, result.json) is timed apart.
2. **augmentation**: the engine's on-device batched crop + flip + normalise
   (:class:`lnlbench.datasets.augment.Augmenter`) against torchvision's PIL transforms in a DataLoader with
   one worker per available core, on the same images and batch size.
3. **method cost**: a main-phase epoch of every registered method against CE, same data, network and
   device; each method keeps its ``paper`` CIFAR-10 recipe (batch size, optimiser, augmentation) except
   the network, with its own ``SMOKE`` overrides (which end warm-ups early). Methods are built with the
   public :func:`lnlbench.engine.build_trial` and their ``train_epoch`` timed directly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import ComputeFloor
from lnlbench.data import prepare
from lnlbench.datasets.augment import Augmenter
from lnlbench.datasets.cifar import CIFAR10
from lnlbench.distributed import modules_of
from lnlbench.engine import amp_dtype, build_trial, pick_device, run_trial
from lnlbench.registry import METHODS, MODELS

from .common import (
    TARGETS,
    Sizes,
    cores,
    host_values,
    median,
    smoke_overrides,
    synthetic_images,
    timed,
    trial_config,
)


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
def floor_seconds(floor: ComputeFloor, steps: float, n_train: int, batch_size: int, t: dict[str, float]) -> float:
    """Seconds of a method's epoch at its compute floor: ``steps`` × (one bare trained pass ``t["train"]`` +
    one bare no-grad pass ``t["forward"]``, of the floor's rows) + its whole-train-set forwards, each
    ⌈n_train / B⌉ no-grad passes of B rows (``t["eval"]``)."""
    return steps * (t["train"] + t["forward"]) + floor.epoch_forward * math.ceil(n_train / batch_size) * t["eval"]


def floor_ratio(epoch_s: float, floor_s: float) -> float | None:
    """A method's epoch as × its own compute floor (None where the floor is 0: no steps were counted)."""
    return epoch_s / floor_s if floor_s > 0 else None


class StepCounter:
    """Optimizer steps of the method's networks while active, whichever helper calls ``step``.

    A step counts when its optimizer holds a parameter of one of ``method``'s networks
    (:func:`lnlbench.distributed.modules_of`): the floor is per network step, so optimizers over other
    tensors (TSSD's meta-classifier MLP, fitted by its own Adam each epoch) are not counted; one that also
    holds other tensors (SOP's u and v as extra groups of the network's SGD) counts once per step. A
    non-network module among the method's attributes (SOP's ``SparseNoise``) stepped by an optimizer of its
    own would count too; no method does that. Without ``method``, every ``torch.optim`` step counts.
    """

    def __init__(self, method: Any = None):
        self.method = method

    def __enter__(self) -> StepCounter:
        self.steps = 0
        self._verdict: weakref.WeakKeyDictionary[torch.optim.Optimizer, bool] = weakref.WeakKeyDictionary()
        self._handle = register_optimizer_step_post_hook(self._count)
        return self

    def _network_params(self) -> set[int]:
        return {id(p) for m in modules_of(self.method) for p in m.parameters()}

    def _counts(self, opt: torch.optim.Optimizer) -> bool:
        if self.method is None:
            return True
        if opt not in self._verdict:  # once per optimizer; networks are read then (PES rebuilds layers)
            ids = self._network_params()
            self._verdict[opt] = any(id(p) in ids for g in opt.param_groups for p in g["params"])
        return self._verdict[opt]

    def _count(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        self.steps += int(self._counts(opt))

    def __exit__(self, *_: Any) -> None:
        self._handle.remove()


def bare_pass_times(trial: Any, floor: ComputeFloor, reps: int, cache: dict[tuple, dict[str, float]]) -> dict[str, float]:
    """Seconds of one bare forward+backward+SGD step over the floor's trained rows, one no-grad forward over
    its other rows and one over B rows, on a fresh copy of the trial's network and its augmented train images."""
    hp, ctx = trial.trial.hparams, trial.ctx
    (nt, nf), b = floor.rows(hp.batch_size), hp.batch_size
    key = (hp.model, json.dumps(hp.model_kwargs, sort_keys=True), nt, nf, b, str(trial.device))
    if key in cache:
        return cache[key]
    net = ctx.make_model(hp.model, **hp.model_kwargs)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator(device=trial.device).manual_seed(0)
    n = len(ctx.train)

    def batch(rows: int) -> torch.Tensor:
        return ctx.augment(ctx.train.x[torch.randint(0, n, (rows,), device=trial.device, generator=gen)])

    def train_pass(rows: int) -> None:
        net.train()
        x, y = batch(rows), ctx.train.y[:1].expand(rows)
        with ctx.autocast():
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def forward_pass(rows: int) -> None:
        with ctx.autocast():
            net(batch(rows))

    out = {}
    for name, fn, rows in (("train", train_pass, nt), ("forward", forward_pass, nf), ("eval", forward_pass, b)):
        if rows == 0:
            out[name] = 0.0
            continue
        if name == "eval":
            net.eval()
        fn(rows)  # first-call costs, untimed
        out[name] = median([timed(lambda f=fn, r=rows: f(r), trial.device) for _ in range(max(3, reps))])
    cache[key] = out
    return out


def method_cost(work: Path, sizes: Sizes, device: str, methods: list[str] | None = None) -> dict[str, Any]:
    """Seconds per post-warm-up epoch of each method, its ratio to CE and to its own compute floor (the bare
    passes its ``compute_floor`` declares under its hyperparameters and last timed epoch's logs, per network
    optimizer step counted in the timed epochs); methods interleave per round."""
    names = ["ce", *[m for m in (methods or METHODS.names()) if m != "ce"]]
    trials = {m: build_trial(trial_config(work, sizes, m, device, sizes.n_method, f"cost-{m}")) for m in names}
    times: dict[str, list[float]] = {m: [] for m in names}
    steps: dict[str, list[int]] = {m: [] for m in names}
    logs: dict[str, dict[str, Any]] = {}
    for epoch in range(sizes.method_reps + 1):  # epoch 0 (warm-up, first-call costs) is not timed
        for m in names[epoch % len(names):] + names[:epoch % len(names)]:  # each round starts elsewhere
            trial = trials[m]
            with StepCounter(trial.method) as count:
                dt = timed(lambda e=epoch, tr=trial, m=m: logs.__setitem__(m, host_values(tr.method.train_epoch(e))),
                           trial.device)
            if epoch:
                times[m].append(dt)
                steps[m].append(count.steps)
    ce, cache = median(times["ce"]), {}
    rows = []
    for m in names:
        trial, hp, s = trials[m], trials[m].trial.hparams, median(times[m])
        floor = METHODS.get(m).compute_floor(hp, logs[m])
        t = bare_pass_times(trial, floor, sizes.method_reps, cache)
        floor_s = median([floor_seconds(floor, k, len(trial.ctx.train), hp.batch_size, t) for k in steps[m]])
        rows.append({
            "method": m, "s_per_epoch": s, "ratio": s / ce, "batch_size": hp.batch_size,
            "timed_epochs": list(range(1, sizes.method_reps + 1)), "overrides": smoke_overrides(m), "note": _note(m),
            "floor": dataclasses.asdict(floor), "floor_s": floor_s, "floor_ratio": floor_ratio(s, floor_s),
            "floor_target": TARGETS["compute_floor"], "steps": median(steps[m]), "bare_pass_s": t,
            "logs": {k: v for k, v in logs[m].items() if isinstance(v, (int, float))}})
    return {"rows": rows, "n_train": sizes.n_method, "model": sizes.model, "model_kwargs": sizes.model_kwargs,
            "recipe": "each method's paper CIFAR-10 recipe, network replaced"}


def _note(method: str) -> str:
    """What the timed epochs ran with: the method's ``SMOKE`` overrides, if any."""
    over = smoke_overrides(method)
    return "SMOKE: " + ", ".join(f"{k}={v}" for k, v in over.items()) if over else ""
