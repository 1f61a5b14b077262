"""The trial engine: ``run_trial(config) -> result``, plain Python, no Ray.

One trial = one method trained on one noisy dataset with one seed. The engine builds the data (noise
generated once and cached), hands the method a :class:`MethodContext` that holds only the noisy labels,
runs the epochs, evaluates test accuracy after each with the method's ``predict``, scores the method's
sample selection against the true noise mask (which only the engine holds), checkpoints so a trial can
resume, and writes one versioned ``result.json`` (see :mod:`lnlbench.results`).

Inside a ``torch.distributed`` process group of several ranks (Ray Train with ``num_workers > 1``) the
trial trains data-parallel (see :mod:`lnlbench.distributed`); rank 0 evaluates and writes the trial folder.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnlbench.datasets.augment import Augmenter

from . import checkpoint, evalbatch
from .config import ResolvedTrial, TrialConfig, resolve, resolve_amp
from .contract import MethodContext, TrainSet
from .data import TrialData, intended_flip_rate, per_class, prepare
from .distributed import Dist, modules_of
from .errors import LnlError
from .files import writable_dir
from .metrics import score_selection, transition_error
from .registry import noise_label
from .results import (
    SCHEMA,
    DataFields,
    NoiseFields,
    TrialResult,
    cpu,
    git_commit,
    host,
    summarize,
    versions,
    write_json,
)
from .stream import StreamedImages, image_sets, loader_workers, streamed_workers
from .types import DatasetLoader

EpochHook = Callable[[int, dict[str, Any], Path], None]


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LnlError(f"device '{spec}' asked for but CUDA is not available; use --device cpu or auto")
    return dev


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision (``auto`` resolves as :func:`lnlbench.config.resolve_amp`: fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[resolve_amp(spec)]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Trial:
    """The state of one trial: :meth:`build` (data on the device, the method constructed), then :meth:`run`.

    :func:`run_trial` drives it; a measurement that times a method's epochs by itself (``lnlbench perf``)
    or a test builds one with :func:`build_trial` and calls ``trial.method.train_epoch``.
    """

    def __init__(self, trial: ResolvedTrial, on_epoch_end: EpochHook | None = None,
                 load: DatasetLoader | None = None):
        self.trial = trial
        self.load = load
        self.cfg = trial.config
        self.dir = trial.trial_dir
        self.on_epoch_end = on_epoch_end
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.started_at = _now()
        self.data: TrialData | None = None
        self.device = pick_device(self.cfg.device)
        self.dist = Dist()

    # -- setup -------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg, dev = self.cfg, self.device
        self.data = data = prepare(self.trial, self.load)
        info = data.info
        cl = dev.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        aug = self.trial.augment  # off: the training transform is normalisation only
        self.augmenter = Augmenter.build(info.mean, info.std, info.crop_padding if aug else 0,
                                         info.flip and aug, dev, cl, crop=info.crop_size, random_crop=aug)
        to_dev = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        images = image_sets(self.device, info.file_backed or bool(cfg.stream), loader_workers(cfg.loader_workers))
        train = TrainSet(x=images(info.x_train, data.train_idx), y=to_dev(data.noisy))
        golden = None  # clean labels enter a context only for a method that declares a golden set
        if self.trial.golden_use == "context":
            golden = TrainSet(x=images(info.x_train, data.golden_idx), y=to_dev(data.golden_y))
        self.x_val, self.y_val = images(info.x_train, data.val_idx), to_dev(data.val_noisy)
        self.x_test, self.y_test = images(info.x_test), to_dev(info.y_test)
        self.x_cval = self.y_cval = None  # the dataset's own clean validation set (Clothing1M), if any
        if info.x_val is not None:
            self.x_cval, self.y_cval = images(info.x_val), to_dev(info.y_val)
        self.extra_tests = {name: (images(x), to_dev(y)) for name, (x, y) in info.extra_tests.items()}
        torch.manual_seed(cfg.seed)  # model initialisation draws from the global generator
        # where the clean labels are unknown (Clothing1M) the transition says nothing: no flip-rate hint
        flip = intended_flip_rate(info.y_train, data.transition) if data.score_noise else None
        self.ctx = MethodContext(train=train, num_classes=info.num_classes, image_shape=info.image_shape,
                                 device=dev, seed=cfg.seed, augmenter=self.augmenter,
                                 amp_dtype=amp_dtype(self.trial.amp, dev), channels_last=cl,
                                 compile_models=cfg.compile, noise_rate_hint=cfg.rate, dist=self.dist,
                                 flip_rate_hint=flip, golden=golden, transition=self.true_transition(),
                                 eval_batch_override=cfg.eval_batch_size)
        self.method = self.trial.method_cls(self.trial.hparams, self.ctx)

    def true_transition(self) -> torch.Tensor | None:
        """The generator's matrix for a method that asks for it (a flagged oracle variant), else None."""
        if not self.trial.method_cls.uses_true_transition(self.trial.hparams):
            return None
        if not self.data.score_noise:
            raise LnlError(f"{self.cfg.method} as configured trains on the noise's true transition matrix, which "
                           f"'{self.cfg.dataset}' (no clean training labels) lacks; use --hp transition=estimate")
        return torch.as_tensor(self.data.transition, dtype=torch.float32, device=self.device)

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def _rank_rng(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "ctx_gen": self.ctx.generator.get_state(),
               "ctx_rng": json.dumps(self.ctx.rng.bit_generator.state)}
        if self.ctx.aug_generator is not self.ctx.generator:
            rng["aug_gen"] = self.ctx.aug_generator.get_state()
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    def save_checkpoint(self, epoch: int) -> None:
        ranks = self.dist.gather_objects(self._rank_rng())  # every rank's random state (collective)
        if not self.dist.is_main:
            return
        state = {"trial_id": self.trial.trial_id, "epoch": epoch, "method": self.method.state_dict(),
                 "history": json.dumps(self.history), "elapsed": self.elapsed, "rng": ranks[0]}
        if self.dist.active:
            state["rank_rng"] = ranks
        checkpoint.save(self.ckpt_path, state)

    def load_checkpoint(self) -> int:
        """Restore from the trial's checkpoint; returns the next epoch to run (0 without one)."""
        if not self.cfg.resume:
            return 0
        if self.dist.active:  # rank 0 reads its trial folder and sends the checkpoint's bytes to every rank
            payload = checkpoint.load_good(self.ckpt_path)[1] if self.dist.is_main else None
            payload = self.dist.broadcast_object(payload)
            state = None if payload is None else checkpoint.parse(payload, "cpu", self.ckpt_path)
        else:
            state = checkpoint.load_good(self.ckpt_path, self.device)[0]
        if state is None:
            return 0
        if state.get("trial_id") != self.trial.trial_id:
            raise LnlError(f"checkpoint {self.ckpt_path} belongs to another trial; delete it or its folder")
        self.method.load_state_dict(state["method"])
        self.history = json.loads(state["history"])
        self.elapsed = float(state["elapsed"])
        rng = state["rng"]
        ranks = state.get("rank_rng")
        if ranks is not None and len(ranks) == self.dist.world:
            rng = ranks[self.dist.rank]  # the same world size: each rank continues its own streams
        torch.set_rng_state(rng["torch"].cpu())
        self.ctx.generator.set_state(rng["ctx_gen"].cpu())
        self.ctx.rng.bit_generator.state = json.loads(rng["ctx_rng"])
        if "aug_gen" in rng and self.ctx.aug_generator is not self.ctx.generator:
            self.ctx.aug_generator.set_state(rng["aug_gen"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        return int(state["epoch"]) + 1

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        if len(y) == 0:
            return None
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        streamed = isinstance(x, StreamedImages)
        bs = evalbatch.eval_batch_size(self.device, self.cfg.eval_batch_size, streamed=streamed)
        parts = x.sequential(bs) if streamed else (x[s:s + bs] for s in range(0, len(y), bs))
        for s, xb in zip(range(0, len(y), bs), parts):
            with self.ctx.autocast():
                logits = self.method.predict(self.augmenter.normalize(xb))
            correct += (logits.argmax(1) == y[s:s + bs]).sum()
        return correct.item() / len(y)

    def epoch_record(self, epoch: int, logs: dict[str, Any], train_time: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"epoch": epoch, "lr": self.method.current_lr(), "train_time_s": train_time}
        if not self.dist.is_main:  # rank 0 evaluates; the other ranks go on to the next epoch
            return rec
        if self.dist.active:
            rec["world_size"] = self.dist.world
        rec["test_acc"] = self.accuracy(self.x_test, self.y_test)
        if len(self.y_val):
            rec["val_acc"] = self.accuracy(self.x_val, self.y_val)
        if self.y_cval is not None:
            rec["clean_val_acc"] = self.accuracy(self.x_cval, self.y_cval)
        for name, (x, y) in self.extra_tests.items():  # mini-WebVision's ImageNet validation: imagenet_acc
            rec[f"{name}_acc"] = self.accuracy(x, y)
        prob = self.method.clean_probability()
        if prob is not None and self.data.score_noise:
            rec["selection"] = score_selection(prob, self.data.is_noisy, self.method.selection_threshold)
        estimate = self.method.transition_estimate() if self.data.score_noise else None
        if estimate is not None:
            rec["transition_mae"] = transition_error(estimate, self.data.transition)
        sets = self.method.selection_sets() if self.data.score_noise else {}
        if sets:
            rec["selection_sets"] = {name: score_selection(mask.float(), self.data.is_noisy)
                                     for name, mask in sets.items()}
        for k, v in logs.items():
            rec[k] = float(v) if isinstance(v, (torch.Tensor, np.generic, int, float)) else v
        rec["eval_time_s"] = time.perf_counter() - t0
        return rec

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        for epoch in range(self.start(), self.trial.hparams.epochs):
            self.run_epoch(epoch)
        return self.finish()

    def start(self) -> int:
        """Build the trial and resume from its checkpoint; returns the first epoch to run.

        :meth:`run` is ``start``, :meth:`run_epoch` per epoch, :meth:`finish`; a caller that steps several
        trials in lockstep (``lnlbench tune`` with ``scope: dataset``) calls the three itself."""
        self.build()
        start = self.load_checkpoint()
        self.event("resume" if start else "start", epoch=start)
        self.write("running")
        return start

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train and evaluate one epoch, checkpoint, record it, call the epoch hook; returns its record."""
        t0 = time.perf_counter()
        self.ctx.begin_epoch()
        logs = self.method.train_epoch(epoch)
        check_finite(self.ctx, self.method, epoch, logs or {})
        if self.dist.active:  # ranks' batch-norm statistics, averaged
            self.dist.sync_buffers(modules_of(self.method))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        rec = self.epoch_record(epoch, logs or {}, train_time)
        self.history.append(rec)
        self.elapsed += time.perf_counter() - t0
        every = self.cfg.checkpoint_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == self.trial.hparams.epochs):
            self.save_checkpoint(epoch)
        self.write("running")
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, rec, self.ckpt_path)
        return rec

    def finish(self) -> dict[str, Any]:
        """Write the finished result and drop the checkpoint (unless kept).

        The ``end`` event goes first: a process killed between the two leaves a ``running`` result that a
        resume finishes from the last checkpoint, never an ``ok`` result whose log has no ``end``."""
        self.event("end", epoch=len(self.history))
        result = self.write("ok")
        if self.dist.is_main and not self.cfg.keep_checkpoint:
            checkpoint.remove(self.ckpt_path)
        return result

    def event(self, kind: str, **extra: Any) -> None:
        if not self.dist.is_main:
            return
        if self.dist.active:
            extra = {**extra, "world_size": self.dist.world}
        self.dir.mkdir(parents=True, exist_ok=True)
        line = {"event": kind, "time": _now(), "pid": os.getpid(), "host": host(), **extra}
        with open(self.dir / "events.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def scored_from(self) -> int:
        method = getattr(self, "method", None)  # None when the trial failed before its method was built
        return int(method.scored_from_epoch()) if method is not None else 0

    def write(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        t, d = self.trial, self.data
        if not self.dist.is_main:  # rank 0 writes the trial's record
            return {"schema": SCHEMA, "trial_id": t.trial_id, "status": status, "error": error,
                    "rank": self.dist.rank, "world_size": self.dist.world}
        dev_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        noise = NoiseFields(name=t.noise_name, options=t.noise_options, rate=t.config.rate,
                            **(d.noise.to_dict() if d else {}))
        data = None if d is None else DataFields(
            n_train=int(len(d.train_idx)), n_val=int(len(d.val_idx)), n_test=int(len(d.info.y_test)),
            num_classes=d.info.num_classes, image_shape=list(d.info.image_shape), subset=t.subset,
            source=d.info.source, test_subset=t.test_subset, augment=t.augment,
            n_clean_val=0 if d.info.y_val is None else int(len(d.info.y_val)),
            transition=np.round(d.transition, 6).tolist(),
            train_per_class=per_class(d.info.y_train, d.info.num_classes),
            test_per_class=per_class(d.info.y_test, d.info.num_classes),
            loader_workers=streamed_workers(getattr(getattr(self, "ctx", None), "train", None)),
            n_extra_test={k: int(len(y)) for k, (_, y) in d.info.extra_tests.items()} or None)
        result = TrialResult(
            trial_id=t.trial_id, status=status, error=error, config=t.config.to_dict(), method=t.config.method,
            dataset=t.config.dataset, noise=noise, noise_label=noise_label(t.noise_name, t.noise_options, t.config.rate),
            seed=t.config.seed, preset=t.preset, recipe=t.recipe, amp=t.amp,
            hparams=asdict(t.hparams), golden=golden_fields(t, d), method_flags=_method_flags(t),
            data=data, history=self.history, **summarize(self.history, self.scored_from()), wall_time_s=self.elapsed,
            device=str(self.device), device_name=dev_name, device_hours=self.elapsed / 3600.0,
            torch_threads=torch.get_num_threads(), cpu=cpu(), versions=versions(), git_commit=git_commit(), host=host(),
            started_at=self.started_at,
            finished_at=_now() if status != "running" else None).to_dict()
        write_json(self.dir / "result.json", result)
        return result


def golden_fields(t: ResolvedTrial, d: TrialData | None) -> dict[str, Any] | None:
    """result.json's ``golden``: images per class, how the method got them, how many in all."""
    if t.golden_per_class is None:
        return None
    return {"per_class": t.golden_per_class, "use": t.golden_use,
            "n": None if d is None else int(len(d.golden_idx))}


class NonFiniteError(RuntimeError):
    """Training diverged: a loss or a parameter is NaN or infinite (the trial fails, the grid goes on)."""


def check_finite(ctx: MethodContext, method: Any, epoch: int, logs: dict[str, Any]) -> None:
    """Fail the trial if this epoch's loss or the method's parameters are not finite.

    Checked once per epoch (two host syncs), never per step: :meth:`MethodContext.step` flags the first
    non-finite loss on the device; a method that steps by itself is caught by its logged loss or its
    parameters (then the step is unknown). The message names the epoch and the step.
    """
    step = ctx.first_nonfinite_step()
    where = f"epoch {epoch}, step {step} of {ctx.steps}" if step else f"epoch {epoch} (after {ctx.steps} steps)"
    hint = "training diverged; lower the learning rate (--hp lr=...) or check the data"
    if step is not None:
        raise NonFiniteError(f"non-finite loss at {where}: {hint}")
    for key, val in logs.items():
        if isinstance(val, torch.Tensor) and val.numel() != 1:
            continue
        if isinstance(val, (float, int, np.generic, torch.Tensor)) and not np.isfinite(float(val)):
            raise NonFiniteError(f"non-finite {key} ({float(val)}) logged at {where}: {hint}")
    params = [p.detach() for m in modules_of(method) for p in m.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise NonFiniteError(f"non-finite parameters after {where}: {hint}")


def build_trial(config: TrialConfig | dict[str, Any], load: DatasetLoader | None = None) -> Trial:
    """A trial built (data on its device, the method constructed, its folder made) but not run."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    trial = Trial(resolve(cfg), load=load)
    trial.build()
    trial.dir.mkdir(parents=True, exist_ok=True)
    return trial


def _method_flags(t: ResolvedTrial) -> dict[str, Any]:
    """What the tables flag about the method of a trial: extra clean data, the true transition matrix (an
    oracle), a reconstruction (and from what)."""
    cls = t.method_cls
    rebuilt = bool(cls.recipe_reconstructed(t.preset, t.config.dataset))
    oracle = bool(cls.uses_true_transition(t.hparams))
    return {"uses_clean_data": t.uses_clean_data, "uses_true_transition": oracle, "reconstructed": rebuilt,
            "reconstruction": cls.reconstruction if rebuilt else ""}


def run_trial(config: TrialConfig | dict[str, Any], *, raise_on_error: bool = False,
              on_epoch_end: EpochHook | None = None, load: DatasetLoader | None = None) -> dict[str, Any]:
    """Run one trial to the end (resuming from its checkpoint if one exists) and return its result.

    Configuration errors raise :class:`LnlError` before anything is written. An error during the trial
    is recorded in ``result.json`` as ``status: failed`` with the error; it is re-raised only with
    ``raise_on_error`` (the Ray runner does, so a worker failure can be retried from the checkpoint).
    ``load`` loads the dataset (default :func:`lnlbench.data.load_dataset`; the Ray worker passes one
    that reads datasets the driver put in the object store).
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    trial = resolve(cfg)
    note = trial.recipe and trial.recipe["status"] == "default" and trial.recipe["missing"]
    if note:  # the preset does not cover this cell: say so once, as result.json does
        print(f"lnlbench: note: {cfg.method}'s '{trial.preset}' recipe has no entry for {note}; using "
              f"{', '.join(trial.recipe['applied']) or 'no'} entries and the defaults", file=sys.stderr)
    tuned = (trial.recipe or {}).get("tuned") or {}
    if cfg.seed in (tuned.get("seeds") or []):  # a tuned recipe is judged on seeds its search did not use
        print(f"lnlbench: note: seed {cfg.seed} is one of the search seeds of {tuned.get('file')}; train tuned "
              "recipes with fresh seeds", file=sys.stderr)
    root = writable_dir(cfg.out_dir)  # a folder it cannot write is an error now, not in the failure handler
    if not trial.trial_dir.resolve().is_relative_to(root.resolve()):  # a symlinked trial folder
        raise LnlError(f"trial folder {trial.trial_dir} leads out of {root} (a symlink); remove the link")
    state = Trial(trial, on_epoch_end, load)
    try:
        return state.run()
    # An interrupt (KeyboardInterrupt, SystemExit) is not caught: result.json keeps "running" from the last
    # epoch, which ``lnlbench status`` reports as resumable, and the next run resumes from the checkpoint.
    except Exception as exc:  # the failure goes into the result; the grid goes on
        result = record_failure(state, exc)
        if raise_on_error:
            raise
        return result


def record_failure(state: Trial, exc: BaseException) -> dict[str, Any]:
    """Write a trial's failure (``status: failed`` with the error) into its result.json and return it."""
    tid = state.trial.trial_id
    err = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
    try:
        result = state.write("failed", err)
        state.event("failed", error=f"{type(exc).__name__}: {exc}")
    except OSError as again:  # e.g. the disk is still full: say so; the checkpoint is kept for a resume
        print(f"lnlbench: warning: trial {tid} failed ({type(exc).__name__}: {exc}) and its "
              f"failure could not be recorded ({again}); resume it once the cause is fixed", file=sys.stderr)
        result = {"schema": SCHEMA, "trial_id": tid, "status": "failed", "error": err}
    return result
