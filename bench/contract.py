"""The Method contract: what a method implements and what the engine hands it.

The engine owns the epoch loop, evaluation, checkpoints, reporting and timing; a method owns what happens
inside one training epoch. A method sees only a :class:`MethodContext`: the noisy training set on the
device, the dataset's shape facts, seeded random generators and a few helpers. Clean labels and the noise
mask never enter it.

A minimal method::

    @register_method("ce")
    class CE(Method):
        Hparams = TrainHparams

        def __init__(self, hp, ctx):
            super().__init__(hp, ctx)
            self.model = ctx.make_model(hp.model, **hp.model_kwargs)
            self.optimizer = make_sgd(self.model.parameters(), hp)

        def train_epoch(self, epoch):
            ...  # for idx in ctx.batches(hp.batch_size): x = ctx.augment(ctx.train.x[idx]) ...
            return {"loss": total / steps}
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from . import evalbatch
from .distributed import Dist, shard
from .hparams import TrainHparams, preset_overrides
from .stream import StreamedImages


@dataclass(frozen=True)
class TrainSet:
    """The noisy training set as methods see it: images on the device and their noisy labels.

    Under the streaming path ``x`` is a :class:`lnlbench.stream.StreamedImages`: indexed like the tensor
    (``x[idx]``, ``x[s:e]``) it gives the same uint8 device batch, decoded by DataLoader workers.
    """

    x: torch.Tensor | StreamedImages  # (N, C, H, W) uint8 on the trial's device (or streamed to it)
    y: torch.Tensor  # (N,) int64 noisy labels on the trial's device

    def __len__(self) -> int:
        return int(self.y.shape[0])


class MethodContext:
    """Everything a method may use: data facts, the noisy train set, RNGs and device helpers."""

    def __init__(self, *, train: TrainSet, num_classes: int, image_shape: tuple[int, int, int],
                 device: torch.device, seed: int, augmenter, amp_dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile_models: bool = False, noise_rate_hint: float | None = None,
                 dist: Dist | None = None, flip_rate_hint: float | None = None,
                 golden: TrainSet | None = None, transition: torch.Tensor | None = None,
                 eval_batch_override: int | None = None):
        self.train = train
        self._eval_batch_override = eval_batch_override  # the trial's eval_batch_size option
        # The golden (trusted) set with its CLEAN labels, disjoint from ``train``: only for a method that
        # declares ``uses_clean_data`` (its size is the trial's ``golden_per_class``); None for every other.
        self.golden = golden
        # The noise generator's intended class-transition matrix (C×C, row = clean class): only for a method
        # whose hyperparameters ask for it (``Method.uses_true_transition``, the known-T variants, flagged in
        # result.json and the tables); None for every other.
        self.transition = transition
        # Data-parallel ranks (see lnlbench.distributed); a single process is rank 0 of 1.
        self.dist = dist if dist is not None else Dist()
        self.num_classes = int(num_classes)
        self.image_shape = tuple(image_shape)
        self.device = device
        self.seed = int(seed)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3E7]))
        # Augmentation draws from the shared generator in one process (as always) and from a per-rank one
        # with several ranks, so ranks crop differently while their shared decisions stay identical.
        self.aug_generator = self.generator if not self.dist.active else torch.Generator(
            device=device).manual_seed(int(np.random.SeedSequence([seed, 0xA06, self.dist.rank]).generate_state(1)[0]))
        self._augmenter = augmenter
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.compile_models = compile_models
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
        # The nominal noise rate of the trial's configuration, for methods whose paper uses the known rate
        # (Co-teaching's forget rate). It is a leak of the protocol, never of which sample is noisy.
        self.noise_rate_hint = noise_rate_hint
        # The generator's intended overall flip rate 1 − Σ_c π_c T_cc (its transition matrix T, π the class
        # priors of the labels before noise), computed by the harness: protocol knowledge of the same kind
        # (asymmetric 0.4 on CIFAR-10 flips ≈ 20 %, symmetric 0.5 on 10 classes 45 %); None where unknown.
        self.flip_rate_hint = flip_rate_hint
        # Optimizer steps of the current epoch and the first whose loss was not finite (-1: none). The flag
        # stays on the device, so :meth:`step` adds no host sync; the engine reads it once per epoch.
        self.steps = 0
        self._first_nonfinite = torch.full((), -1, dtype=torch.long, device=device)

    def begin_epoch(self) -> None:
        """Reset the step count and the non-finite flag (the engine calls it before each epoch)."""
        self.steps = 0
        self._first_nonfinite.fill_(-1)

    def first_nonfinite_step(self) -> int | None:
        """The 1-based step of this epoch whose loss was first NaN/inf, or None (one host sync)."""
        step = int(self._first_nonfinite.item())
        return None if step < 0 else step

    # -- data --------------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The training transform (random crop with padding, flip, normalise) of a uint8 batch."""
        return self._augmenter(x, self.aug_generator)

    def crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """The training transform's crop and flip alone (uint8 in and out), for a method that augments further
        before normalising (UNICON's AutoAugment views); identity under ``augment: false`` protocols."""
        return self._augmenter.crop_flip(x, self.aug_generator)

    @property
    def augments(self) -> bool:
        """Whether the trial's training transform augments (off under ``augment: false`` protocols), so a
        method with its own augmentation (MOIT's colour jitter) follows the trial's protocol."""
        aug = self._augmenter
        return (aug is None or getattr(aug, "padding", 1) > 0 or bool(getattr(aug, "flip", True))
                or bool(getattr(aug, "crop", 0) and getattr(aug, "random_crop", False)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The test transform (normalise only) of a uint8 batch."""
        return self._augmenter.normalize(x)

    @property
    def eval_batch_size(self) -> int:
        """The batch of a no-grad pass over the train set (per-sample losses, kNN features): the device's
        choice from :func:`lnlbench.evalbatch.eval_batch_size`, or the trial's ``eval_batch_size``."""
        return evalbatch.eval_batch_size(self.device, self._eval_batch_override,
                                         streamed=isinstance(self.train.x, StreamedImages))

    def batches(self, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                n: int | None = None, over: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Index tensors (on the device) over the train set, over ``range(n)``, or over the train-set
        indices ``over`` (a subset: its batches are ``over[b]``), in random order.

        ``batch_size`` is the global batch: with several data-parallel ranks each rank gets its equal slice
        of every global batch (the same permutation on every rank), and a final partial batch is cut to a
        multiple of the world size so every rank takes the same number of steps. Over a streamed train set
        the DataLoader decodes the yielded batches ahead (``x[idx]`` of a yielded ``idx`` is ready).
        """
        if over is not None:
            n = len(over)
        batches = self._batches(batch_size, shuffle, drop_last, n)
        if over is not None:
            batches = (over[b] for b in batches)
        if (n in (None, len(self.train)) or over is not None) and isinstance(self.train.x, StreamedImages):
            return self.train.x.planned(list(batches))
        return batches

    def _batches(self, batch_size: int, shuffle: bool, drop_last: bool, n: int | None) -> Iterator[torch.Tensor]:
        n = len(self.train) if n is None else n
        world = self.dist.world
        if batch_size < world:
            raise ValueError(f"batch size {batch_size} is smaller than the {world} data-parallel ranks")
        order = (torch.randperm(n, device=self.device, generator=self.generator) if shuffle
                 else torch.arange(n, device=self.device))
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            batch = order[start:start + batch_size]
            if world > 1:
                if batch.shape[0] < world:
                    return
                batch = shard(batch, self.dist)
            yield batch

    # -- models and steps --------------------------------------------------------------------------
    def make_model(self, name: str, **kwargs: Any) -> nn.Module:
        """A registered model built for this dataset's shape, on the device."""
        from .registry import MODELS

        c, h, _ = self.image_shape
        model = MODELS.get(name)(num_classes=self.num_classes, in_channels=c, image_size=h, **kwargs)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.dist.broadcast_module_(model)
        if self.compile_models:
            model.compile()
        return model

    def autocast(self):
        """Mixed precision where configured (bf16/fp16 on CUDA), a no-op otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward and step, through the GradScaler when training in fp16.

        Also counts the step and flags (on the device, without a sync) the first with a non-finite loss."""
        self.steps += 1
        bad = ~torch.isfinite(loss.detach()).all()
        self._first_nonfinite.masked_fill_(bad & self._first_nonfinite.lt(0), self.steps)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.dist.sync_grads(optimizer)
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.dist.sync_grads(optimizer)  # scaled gradients: an inf on any rank reaches every rank
            self.scaler.step(optimizer)
            self.scaler.update()

    def sync_grads(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients over data-parallel ranks (for methods that step without :meth:`step`)."""
        self.dist.sync_grads(optimizer)

    def sync_rows(self, table: torch.Tensor, idx: torch.Tensor) -> None:
        """Share per-sample rows each rank updated for its own batch ``idx`` (no-op in one process)."""
        self.dist.sync_rows(table, idx)

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank takes rank 0's copy of ``tensor`` (in place); for whole-train-set decisions."""
        return self.dist.broadcast_(tensor)


@dataclass(frozen=True)
class ComputeFloor:
    """The bare network passes a method's algorithm needs, per optimizer step of its main phase.

    ``train``: rows forwarded with gradients, backpropagated and stepped (one SGD step), and ``forward``:
    rows forwarded without gradients, both in units of the method's batch size B and timed as one pass each
    (CE: 1 and 0; DivideMix: the 4B mixed rows and the 6B co-guessing/co-refinement rows); ``epoch_forward``:
    no-grad forwards over the whole train set per epoch (DivideMix's two divisions: 2). ``lnlbench perf``
    times these bare on the same network and batches and prints each method's epoch as × its own floor.
    Rows that depend on hyperparameters or on the size of a selected set: :meth:`Method.compute_floor`.
    """

    train: float = 1.0
    forward: float = 0.0
    epoch_forward: float = 0.0

    def __post_init__(self) -> None:
        if min(self.train, self.forward, self.epoch_forward) < 0 or self.train + self.forward <= 0:
            raise ValueError(f"a compute floor needs rows per step and no negative count: {self}")

    def rows(self, batch_size: int) -> tuple[int, int]:
        """(rows of the trained pass, rows of the no-grad pass) of one step at batch size ``batch_size``."""
        return round(self.train * batch_size), round(self.forward * batch_size)


class Method:
    """Base of every method: hyperparameters, presets and default checkpoint state.

    Subclasses set ``Hparams`` (a frozen dataclass extending :class:`TrainHparams`) and ``PRESETS``,
    and implement ``train_epoch`` and ``predict``. ``state_dict`` collects every attribute that has one
    (networks, optimisers, schedulers) plus the attributes named in ``STATE_ATTRS`` (tensors such as
    per-sample targets), so most methods need not write it.
    """

    Hparams: ClassVar[type] = TrainHparams
    PRESETS: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {"paper": {}, "mini": {}}
    # What ``lnlbench tune`` searches (lnlbench.search): hparam name -> ("choice", [...]) | ("uniform", lo, hi)
    # | ("loguniform", lo, hi) | ("randint", lo, hi_inclusive); plain data, the runner makes Ray's objects.
    # Empty: log-uniform lr and weight decay (search.SGD_SPACE).
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}
    STATE_ATTRS: ClassVar[tuple[str, ...]] = ()
    # Small hyperparameter overrides under which a few epochs reach the method's main phase (after warm-up,
    # ramps, first pruning); the contract tests and `lnlbench perf` apply them on top of the preset.
    SMOKE: ClassVar[dict[str, Any]] = {}
    # The passes one optimizer step of the main phase needs (default: one forward + backward of one net);
    # ``compute_floor`` refines it where hyperparameters or set sizes change them.
    COMPUTE_FLOOR: ClassVar[ComputeFloor] = ComputeFloor()
    # Preset keys ("dataset", "dataset/noise", "dataset/noise@rate") whose recipe cannot run yet, each with
    # the one line saying what is missing; asking for such a cell is that error (lnlbench.hparams).
    WAITING: ClassVar[dict[str, str]] = {}
    uses_clean_data: ClassVar[bool] = False  # trains on extra clean data (a golden set, ``ctx.golden``)
    # Golden images per class where neither the trial (golden_per_class) nor the recipe's protocol says
    golden_default: ClassVar[int | None] = None
    reconstructed: ClassVar[bool] = False  # implementation reconstructed without official code

    reconstruction: ClassVar[str] = ""  # from what and how far verified; every table's footnote says it

    @classmethod
    def recipe_reconstructed(cls, preset: str, dataset: str) -> bool:
        """Whether a trial of (preset, dataset) runs a reconstruction: the method's flag, unless only some of
        its recipes are reconstructed (MLNT: faithful on Clothing1M, reconstructed on CIFAR)."""
        return cls.reconstructed

    @classmethod
    def preset_hparams(cls, preset: str, dataset: str, noise: str, rate: float | None) -> dict[str, Any]:
        """The hyperparameters ``preset`` gives one (dataset, noise name, rate) cell: the defaults under the
        preset's entries, without a trial. The comparison tables read the ``paper`` preset's epochs and network
        from it (lnlbench.aggregate.budget), without importing the engine."""
        return {**dataclasses.asdict(cls.Hparams()),
                **preset_overrides(cls.PRESETS, preset, dataset, noise, rate)}

    display_name: ClassVar[str | None] = None  # the paper's spelling in tables ("ELR+"); None: the registry key
    selection_threshold: float = 0.5  # clean_probability above this counts as "selected clean"

    def __init__(self, hp: Any, ctx: MethodContext):
        self.hp = hp
        self.ctx = ctx

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; return scalars to log (tensors are fine: the engine syncs once)."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised float batch, networks in eval mode."""
        raise NotImplementedError

    def scored_from_epoch(self) -> int:
        """The first epoch whose predictions come from the network the method ends with: ``best`` and
        ``selected`` range over the epochs from it (``last`` is the final epochs' anyway). 0, except where a
        first stage only serves to estimate something with plain CE (Forward/Backward's separate CE network,
        T-Revision's estimate stage): that stage's test accuracy is CE's, not the method's, and the official
        code never reports it."""
        return 0

    def clean_probability(self) -> torch.Tensor | np.ndarray | None:
        """Per training sample, the method's probability that its label is clean (None: no selection)."""
        return None

    def selection_sets(self) -> dict[str, torch.Tensor]:
        """Extra named sets of training samples the method holds for clean (boolean masks over the train
        set), which the harness scores like ``clean_probability`` (precision, recall) into the history's
        ``selection_sets``; e.g. TSSD's certain set beside its distilled one. Empty: none."""
        return {}

    @classmethod
    def compute_floor(cls, hp: Any, logs: Mapping[str, Any] | None = None) -> ComputeFloor:
        """The floor of a main-phase step under these hyperparameters (``COMPUTE_FLOOR`` by default).

        Methods whose necessary passes depend on a hyperparameter (MLNT's M fast-weight passes) or on the
        size of a selected set (UNICON's unlabelled batch, ProMix's chosen rows) override it; ``logs`` are
        the timed epoch's logged scalars (``lnlbench perf`` passes them), None gives the method's stated
        default for the set sizes.
        """
        return cls.COMPUTE_FLOOR

    @classmethod
    def uses_true_transition(cls, hp: Any) -> bool:
        """Whether a trial with these hyperparameters trains on the noise generator's true transition
        matrix (``ctx.transition``; Forward/Backward with ``transition: known``): an oracle, flagged."""
        return False

    def transition_estimate(self) -> torch.Tensor | None:
        """The method's current estimate of the class-transition matrix (C×C, row = clean class, column =
        noisy class, rows sum to 1), which the harness scores against the generator's matrix; None: none."""
        return None

    def current_lr(self) -> float | None:
        opt = getattr(self, "optimizer", None)
        return float(opt.param_groups[0]["lr"]) if opt is not None else None

    def _stateful(self) -> dict[str, Any]:
        skip = {"ctx", "hp"}
        return {k: v for k, v in vars(self).items()
                if k not in skip and callable(getattr(v, "state_dict", None))}

    def state_dict(self) -> dict[str, Any]:
        state = {k: v.state_dict() for k, v in self._stateful().items()}
        for name in self.STATE_ATTRS:
            val = getattr(self, name)
            state[name] = val.detach().clone() if isinstance(val, torch.Tensor) else val
        if self.ctx.scaler is not None:
            state["_grad_scaler"] = self.ctx.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._stateful().items():
            v.load_state_dict(state[k])
        for name in self.STATE_ATTRS:
            val = state[name]
            cur = getattr(self, name)
            if isinstance(cur, torch.Tensor):
                cur.copy_(val.to(cur.device))
            else:
                setattr(self, name, val)
        if self.ctx.scaler is not None and "_grad_scaler" in state:
            self.ctx.scaler.load_state_dict(state["_grad_scaler"])
