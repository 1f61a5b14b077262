"""The configuration of one trial, validated once at the edge with one-line errors.

``TrialConfig`` names the cell (method, dataset, noise, rate, seed) and how to run it. ``resolve`` turns it
into a :class:`ResolvedTrial`: the method class, its hyperparameters after the preset's recipe and the
user's overrides, the trial protocol (the recipe's, under the user's options), the dataset's options, how
the preset covered the cell (``recipe``), and a stable trial id (a hash of everything that changes the
result).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LnlError, unknown_keys
from .hparams import (
    Protocol,
    RecipeLookup,
    build_hparams,
    check_presets,
    check_ranges,
    check_waiting,
    lookup_recipe,
)
from .recipes import DEFAULT_DIR, recipe_path, tuned_summary, tuned_table
from .registry import DATASETS, METHODS, MODELS, NOISE


@dataclass(frozen=True)
class TrialConfig:
    """One trial: a method trained on one noisy dataset with one seed."""

    method: str = "ce"
    dataset: str = "digits"
    noise: str = "symmetric"  # a registered generator, optionally "name:variant" (cifar10n:worst)
    rate: float | None = None  # required for synthetic noise; None for real noise
    seed: int = 0
    preset: str = "auto"  # auto: "mini" for digits, "paper" otherwise; tuned: the file `lnlbench tune` wrote
    epochs: int | None = None  # overrides the preset's epochs
    hparams: dict[str, Any] = field(default_factory=dict)  # per-method overrides
    noise_options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)  # the dataset loader's (clothing1m: image_size, max_train)
    subset: int | None = None  # images per class kept from the training set (seeded by subset_seed)
    subset_seed: int = 0
    test_subset: int | None = None  # images per class kept from the test set (CPU-scale runs; None: all)
    augment: bool | None = None  # train-time crop/flip; None: the preset's choice (on, unless it says off)
    # The streaming data path (lnlbench.stream): batches decoded by DataLoader workers instead of the whole
    # set on the device. None: the dataset's choice (file-backed datasets such as Clothing1M in full stream);
    # True / False: asked (in the trial id). ``loader_workers``: the workers (None: the trial's CPUs).
    stream: bool | None = None
    loader_workers: int | None = None
    # Clean-labelled (golden) images per class carved out of the training set, seeded by the seed alone
    # (the same split for every method of the cell; see lnlbench.data.golden_split). A method that declares
    # ``uses_clean_data`` receives them as ``ctx.golden``; any other never sees them, unless ``golden_add``
    # puts them back into its training set with their clean labels (the fair-comparison row). None: the
    # recipe's protocol (a golden method's recipe sets it), else no golden set.
    golden_per_class: int | None = None
    golden_add: bool = False
    val_fraction: float = 0.0  # noisy validation split held out of the noisy train set
    recipes: str = DEFAULT_DIR  # where `preset: tuned` reads <dataset>/<method>.yaml (lnlbench tune writes)
    data_file: str | None = None  # an array file to use for the dataset
    data_root: str | None = None
    download: bool = False
    out_dir: str = "results/runs/trials"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (fp32 for every preset, see resolve_amp) | bf16 | fp16 | off
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    checkpoint_every: int = 1  # epochs between checkpoints (0: never)
    keep_checkpoint: bool = False  # keep the last checkpoint after a finished trial
    resume: bool = True  # continue from the trial's checkpoint if one exists
    eval_batch_size: int | None = None  # None: the device's choice (lnlbench.evalbatch: 1024 CUDA, 128 CPU)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise unknown_keys("trial option", unknown, names)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ResolvedTrial:
    config: TrialConfig
    method_cls: type
    hparams: Any
    preset: str
    noise_name: str
    noise_options: dict[str, Any]
    subset: int | None
    trial_id: str
    augment: bool = True
    test_subset: int | None = None
    data_options: dict[str, Any] = field(default_factory=dict)  # parsed and complete (with defaults)
    recipe: dict[str, Any] | None = None  # RecipeLookup.to_dict(): status "preset" | "default", missing key
    amp: str = "off"  # the precision the trial runs in: off (fp32) | bf16 | fp16
    golden_per_class: int | None = None  # the golden set's images per class (None: no golden set)
    golden_use: str | None = None  # "context" (ctx.golden) | "add" (in the train set) | "withheld"; None

    @property
    def uses_clean_data(self) -> bool:
        """The method trains on clean labels: it declares a golden set, or the trial adds one."""
        return self.golden_use in ("context", "add")

    @property
    def trial_dir(self) -> Path:
        return Path(self.config.out_dir) / self.trial_id


def resolve_amp(spec: str) -> str:
    """The precision a trial runs in: ``auto`` is fp32 (``off``) for every preset; bf16/fp16 only when asked.

    ``paper``: every official code trains in fp32, and bf16 coarsens the per-sample losses that DivideMix's
    GMM, Co-teaching's ranking and GCE's pruning sort. ``mini``: also fp32, so a CPU-scale recipe gives the
    same numbers on a GPU as on the CPUs its leaderboards come from (where ``auto`` was always fp32). The
    result records the precision as ``amp``; it enters the trial id only when it is not fp32.
    """
    return "off" if spec == "auto" else spec


def parse_noise(spec: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"cifar10n:worst"`` → ``("cifar10n", {"label_set": "worst"})``, validated against the registry."""
    name, _, variant = str(spec).partition(":")
    fn = NOISE.get(name)
    opts = dict(options)
    if variant:
        key = getattr(fn, "variant_option", None)
        if key is None:
            raise LnlError(f"noise '{name}' takes no variant (got '{spec}'); use plain '{name}'")
        if key in opts and opts[key] != variant:
            raise LnlError(f"noise variant '{variant}' conflicts with option {key}={opts[key]!r}")
        opts[key] = variant
    return name, opts


def _check_ranges(c: TrialConfig) -> None:
    if c.rate is not None and not (0.0 <= float(c.rate) < 1.0):
        raise LnlError(f"noise rate must be in [0, 1), got {c.rate}")
    if c.stream not in (None, True, False):
        raise LnlError(f"stream must be true, false or omitted (the dataset's choice), got {c.stream!r}")
    if c.loader_workers is not None and (isinstance(c.loader_workers, bool) or int(c.loader_workers) < 1):
        raise LnlError(f"loader_workers must be at least 1, got {c.loader_workers!r}")
    if not (0.0 <= c.val_fraction < 0.5):
        raise LnlError(f"val_fraction must be in [0, 0.5), got {c.val_fraction}")
    if c.epochs is not None and c.epochs < 1:
        raise LnlError(f"epochs must be at least 1, got {c.epochs}")
    if c.subset is not None and c.subset < 1:
        raise LnlError(f"subset (images per class) must be at least 1, got {c.subset}")
    if c.test_subset is not None and c.test_subset < 1:
        raise LnlError(f"test_subset (test images per class) must be at least 1, got {c.test_subset}")
    if c.amp not in ("auto", "bf16", "fp16", "off"):
        raise LnlError(f"amp must be auto, bf16, fp16 or off, got '{c.amp}'")
    if not isinstance(c.seed, int) or c.seed < 0:
        raise LnlError(f"seed must be a non-negative integer, got {c.seed!r}")
    if c.golden_per_class is not None and (type(c.golden_per_class) is not int or c.golden_per_class < 1):
        raise LnlError(f"golden_per_class (clean images per class) must be a positive integer, got "
                       f"{c.golden_per_class!r}")
    if c.eval_batch_size is not None and (type(c.eval_batch_size) is not int or c.eval_batch_size < 1):
        raise LnlError(f"eval_batch_size must be a positive integer, got {c.eval_batch_size!r}")


def _golden(config: TrialConfig, method_cls: type, lookup: RecipeLookup,
            subset: int | None) -> tuple[int | None, str | None]:
    """(golden images per class, how the method gets them): the user's option, else the recipe's protocol.

    A method that declares ``uses_clean_data`` gets them through its context and must have a number (its
    ``golden_default`` where neither says);
    ``golden_add`` is for the others. Asking for the whole of a class (``subset`` known here; the loaded
    class sizes are checked again in :func:`lnlbench.data.golden_split`) is an error.
    """
    n = config.golden_per_class if config.golden_per_class is not None else lookup.protocol.golden_per_class
    declared = bool(getattr(method_cls, "uses_clean_data", False))
    if n is None and declared:  # a cell the recipe does not cover: the method's default size
        n = getattr(method_cls, "golden_default", None)
    if declared and config.golden_add:
        raise LnlError(f"{config.method} takes its golden set through its context; drop golden_add")
    if n is None:
        if declared:
            raise LnlError(f"{config.method} trains on a golden (clean) set; pass --golden-per-class N "
                           "(clean images per class carved out of the training set)")
        if config.golden_add:
            raise LnlError("golden_add needs a golden set: pass --golden-per-class N as well")
        return None, None
    if subset is not None and n >= subset:
        raise LnlError(f"golden_per_class {n} takes every one of the {subset} training images per class "
                       f"(subset); ask for fewer than {subset}")
    return n, "context" if declared else "add" if config.golden_add else "withheld"


def _safe(text: str) -> str:
    """``text`` with every character but letters, digits and ``-=._`` replaced by ``_``: a trial id is one
    folder name, so an option value (a label file's path) can neither nest folders nor climb out (``/``)."""
    return "".join(ch if ch.isalnum() or ch in "-=._" else "_" for ch in text)


def _digest(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def parse_data_options(dataset: str, given: dict[str, Any]) -> Any:
    """The dataset's parsed options (its ``DatasetOptions``), or None for a loader that takes none."""
    cls = getattr(DATASETS.get(dataset), "options", None) if dataset in DATASETS else None
    if cls is None:
        if given:
            raise LnlError(f"dataset '{dataset}' takes no data options (got {', '.join(sorted(given))})")
        return None
    return cls.parse(dataset, dict(given))


def _check_pool(config: TrialConfig, preset: str, protocol: Protocol, options: Any) -> None:
    """A recipe that needs more training images than the loader's capped pool holds stops here."""
    need, cap = protocol.train_pool, None if options is None else options.train_cap()
    if need is None or cap is None or config.subset is not None:  # an explicit --subset is the user's choice
        return
    if need == "all" or need > cap:
        what = "the full training set" if need == "all" else f"{need:,} training images"
        raise LnlError(f"{config.method}'s '{preset}' recipe for {config.dataset} trains on {what} but the pool is "
                       f"capped at {cap:,} by the data option {options.cap_option}; pass --data-opt "
                       f"{options.cap_option}={'all' if need == 'all' else need} (memory permitting), or "
                       "--subset N to train on N images per class knowingly")


def _protocol(config: TrialConfig, lookup: RecipeLookup) -> tuple[int | None, int | None, bool]:
    """(subset, test_subset, augment): the user's option where given, else the recipe's protocol."""
    p = lookup.protocol
    subset = p.subset if config.subset is None else config.subset
    test_subset = p.test_subset if config.test_subset is None else config.test_subset
    augment = p.augment if config.augment is None else config.augment
    return subset, test_subset, True if augment is None else bool(augment)


def _lookup(config: TrialConfig, method_cls: type, preset: str,
            noise_name: str) -> tuple[RecipeLookup, dict[str, Any]]:
    """The preset's recipe for the cell, and for ``tuned`` the record of its search (``{"tuned": ...}``).

    ``tuned`` reads the recipe file ``lnlbench tune`` wrote: the base preset's recipe with the file's entry
    over it (lnlbench.recipes). A cell it was not tuned for is an error, never the defaults."""
    check_presets(config.method, method_cls.Hparams, method_cls.PRESETS)
    if preset != "tuned":
        return lookup_recipe(method_cls.PRESETS, preset, config.dataset, noise_name, config.rate), {}
    base_preset, table = tuned_table(config.recipes, config.method, config.dataset)
    check_presets(config.method, method_cls.Hparams, {"tuned": table})
    tuned = lookup_recipe({"tuned": table}, "tuned", config.dataset, noise_name, config.rate)
    if tuned.missing:
        path = recipe_path(config.recipes, config.dataset, config.method)
        raise LnlError(f"the tuned recipe {path} has no entry for {tuned.missing} (it holds "
                       f"{', '.join(table) or 'none'}); run `lnlbench tune` over that setting")
    base = lookup_recipe(method_cls.PRESETS, base_preset, config.dataset, noise_name, config.rate)
    merged = RecipeLookup("tuned", {**base.hparams, **tuned.hparams},
                          Protocol(**{**base.protocol.set_fields(), **tuned.protocol.set_fields()}),
                          tuple(f"{base_preset}:{k}" for k in base.applied) + tuned.applied, None)
    summary = tuned_summary(config.recipes, config.method, config.dataset, tuned.applied[-1])
    return merged, {"tuned": {**summary, "base_preset": base_preset}}


def resolve(config: TrialConfig) -> ResolvedTrial:
    """Validate a trial config and resolve its method, hyperparameters, protocol and trial id."""
    _check_ranges(config)
    method_cls = METHODS.get(config.method)
    check_waiting(config.method, getattr(method_cls, "WAITING", {}), config.dataset,
                  str(config.noise).partition(":")[0], config.rate)
    if config.data_file is None or config.dataset in DATASETS:  # an unknown name may name an array file
        DATASETS.get(config.dataset)
    data_opts = parse_data_options(config.dataset, config.data_options)
    noise_name, noise_opts = parse_noise(config.noise, config.noise_options)
    noise_fn = NOISE.get(noise_name)
    if getattr(noise_fn, "frozen", None) is not None:  # labels in a file: its path and hash enter the id
        noise_opts = noise_fn.frozen(noise_opts)
    if getattr(noise_fn, "fixed_rate", False):
        if config.rate not in (None, 0, 0.0):
            raise LnlError(f"noise '{noise_name}' is real noise whose label set fixes the rate; omit the rate")
    elif config.rate is None:
        raise LnlError(f"noise '{noise_name}' needs a rate, e.g. --rate 0.4")
    preset = config.preset
    if preset == "auto":
        preset = "mini" if config.dataset == "digits" else "paper"
    lookup, tuned = _lookup(config, method_cls, preset, noise_name)
    _check_pool(config, preset, lookup.protocol, data_opts)
    subset, test_subset, augment = _protocol(config, lookup)
    over = {**lookup.hparams, **config.hparams}
    if config.epochs is not None:
        over["epochs"] = config.epochs
    hp = build_hparams(method_cls.Hparams, over)
    check_ranges(hp)
    if isinstance(getattr(hp, "model", None), str):
        MODELS.get(hp.model)  # an unknown network fails here (and a grid's --dry-run), not inside the trial
    identity = {
        "method": config.method, "dataset": config.dataset, "noise": noise_name, "noise_options": noise_opts,
        "rate": config.rate, "seed": config.seed, "preset": preset, "hparams": dataclasses.asdict(hp),
        "subset": subset, "subset_seed": config.subset_seed, "val_fraction": config.val_fraction,
        "data_file": config.data_file,
    }
    if not augment:  # only when not the default, so existing trial ids stay as they were
        identity["augment"] = False
    if test_subset is not None:
        identity["test_subset"] = test_subset
    if config.stream is not None:  # only when asked, so existing trial ids stay as they were
        identity["stream"] = bool(config.stream)
    data_options = {} if data_opts is None else data_opts.to_dict()
    if data_options:  # only datasets with options (Clothing1M): every other trial id stays as it was
        identity["data_options"] = data_options
    amp = resolve_amp(config.amp)
    if amp != "off":  # only when not fp32, so the ids of fp32 trials stay as they were
        identity["amp"] = amp
    golden, golden_use = _golden(config, method_cls, lookup, subset)
    if golden is not None:  # only with a golden set, so every other trial id stays as it was
        identity["golden_per_class"] = golden
        if golden_use == "add":
            identity["golden_add"] = True
    rate = "na" if config.rate is None else f"{config.rate:g}"
    variant = getattr(noise_fn, "tag", None) and noise_fn.tag(noise_opts)  # a noise file: name@hash
    variant = variant or "-".join(f"{v}" for v in noise_opts.values())
    tag = _safe(f"{noise_name}{'-' + variant if variant else ''}")
    trial_id = f"{config.method}_{config.dataset}_{tag}_{rate}_s{config.seed}_{_digest(identity)[:8]}"
    return ResolvedTrial(config, method_cls, hp, preset, noise_name, noise_opts, subset, trial_id, augment,
                         test_subset, data_options, {**lookup.to_dict(), **tuned}, amp, golden, golden_use)
