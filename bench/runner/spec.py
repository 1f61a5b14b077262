"""Grid specs: a YAML file → a validated :class:`GridSpec` → the list of its :class:`Cell` s.

A grid is the cross product datasets × methods × noise settings (each with its rates) × seeds. Every
cell is resolved through :func:`lnlbench.config.resolve`, so a grid that loads has only valid trials, and
each cell carries its stable trial id (a hash of its resolved config). Errors are one line
(:class:`LnlError`) and name the file and the fix. No Ray here: ``--dry-run`` and ``status`` need none.

The YAML (every key but ``name``, ``datasets``, ``methods``, ``noise`` and ``seeds`` is optional)::

    name: cifar10-sym
    datasets: [cifar10]
    methods: all                       # or a list; "all" = every registered method
    noise:
      - {name: symmetric, rates: [0.2, 0.5]}
      - {name: cifar10n, variants: [aggre, worst], datasets: [cifar10]}   # real noise: no rates
    seeds: [0, 1, 2]
    preset: auto                       # paper | mini | auto
    epochs: null                       # override the preset's epochs
    subset: null                       # images per class
    trial: {val_fraction: 0.1}         # any other TrialConfig option; {golden_per_class: 10}: every
                                       #   method of a cell gets the same golden split (carved out)
    golden_add: [ce]                   # these methods also run once with the golden set added to their
                                       #   training data with its clean labels (the fair-comparison row)
    overrides: {ce: {lr: 0.01}}        # per-method hyperparameters
    resources: {num_workers: 1, cpus_per_worker: 1, gpus_per_worker: auto}   # 0.25: 4 trials per GPU
    storage: results/runs/cifar10-sym  # the run folder: a path (made absolute) or a URI (s3://, gs://)
    max_concurrent: null               # default: as many trials as the cluster's resources hold
    executor: train                    # train (Tune → Ray Train TorchTrainer) | light (a plain Tune function)
    max_failures: 1                    # retries of a failing trial, each from its last checkpoint
    share_data: true                   # put each dataset in the Ray object store once
    require_recipe: false              # true: leave out, with a note, the cells whose method's preset has
                                       #   no recipe (else they run on the defaults, recipe status "default")
    recipes: results/recipes           # where preset: tuned reads (and lnlbench tune writes) recipe files
    scope: cell                        # lnlbench tune: cell (a search per noise setting) | dataset (one per
                                       #   method and dataset over all its settings)
    tune: {budget: 12}                 # lnlbench tune's search (lnlbench.runner.tune_spec)
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lnlbench.config import TrialConfig, parse_noise, resolve
from lnlbench.errors import LnlError, unknown_keys
from lnlbench.files import absolute, writable_dir
from lnlbench.registry import DATASETS, METHODS, NOISE

from .resources import Resources
from .tune_settings import check_tune

EXECUTORS = ("train", "light")
_REQUIRED = ("name", "datasets", "methods", "noise", "seeds")
_FROM_GRID = ("method", "dataset", "noise", "rate", "seed", "preset", "epochs", "subset", "hparams",
              "noise_options", "out_dir", "golden_add", "recipes")


@dataclass(frozen=True)
class NoiseSetting:
    """One noise family of the grid: a generator (``name`` or ``name:variant``) and its rates."""

    name: str
    rates: tuple[float | None, ...]
    datasets: tuple[str, ...] = ()  # only these datasets (empty: every dataset of the grid)
    options: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ()  # "cifar10n" with variants (aggre, worst) → cifar10n:aggre, cifar10n:worst


@dataclass(frozen=True)
class GridSpec:
    """A validated grid; :func:`expand` lists its cells."""

    name: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    noise: tuple[NoiseSetting, ...]
    seeds: tuple[int, ...]
    storage: str  # absolute path or URI of the run folder
    preset: str = "auto"
    epochs: int | None = None
    subset: int | None = None
    trial: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    executor: str = "train"
    max_failures: int = 1
    share_data: bool = True
    golden_add: tuple[str, ...] = ()  # methods that get a second cell trained on the golden set too
    require_recipe: bool = False  # leave out (with a note) the cells a method's preset has no recipe for
    recipes: str = "results/recipes"  # absolute path of the tuned recipes (preset: tuned; lnlbench tune)
    scope: str = "cell"  # lnlbench tune: "cell" | "dataset"
    tune: dict[str, Any] = field(default_factory=dict)  # lnlbench tune's settings (validated: tune_spec)

    @property
    def is_remote(self) -> bool:
        """True for a URI storage (s3://, gs://, ...) that the engine cannot write to as a folder."""
        return "://" in self.storage

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-able data (saved in the run folder so ``resume`` can reload it)."""
        d = dataclasses.asdict(self)
        d["noise"] = [{**n, "rates": list(n["rates"])} for n in d["noise"]]
        for key in ("datasets", "methods", "seeds", "golden_add"):
            d[key] = list(d[key])
        for n in d["noise"]:
            n["datasets"], n["variants"] = list(n["datasets"]), list(n["variants"])
            if n["rates"] == [None]:
                del n["rates"]
        return d


@dataclass(frozen=True)
class Cell:
    """One trial of the grid: its id and the TrialConfig (as a dict) that ``run_trial`` takes."""

    trial_id: str
    config: dict[str, Any]

    @property
    def label(self) -> str:
        c = self.config
        rate = "" if c["rate"] is None else f"@{c['rate']:g}"
        golden = " +golden" if c.get("golden_add") else ""
        return f"{c['method']}{golden} {c['dataset']} {c['noise']}{rate} s{c['seed']}"


# -- loading -----------------------------------------------------------------------------------------
def load_spec(path: str | Path, base: Path | None = None) -> GridSpec:
    """Read and validate a grid YAML file; a relative ``storage`` is taken from ``base`` (default: cwd)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LnlError(f"grid file {path} does not exist") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LnlError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise LnlError(f"{path}: a grid file is a YAML mapping with keys {', '.join(_REQUIRED)}")
    try:
        return parse_spec(raw, base)
    except LnlError as exc:
        raise LnlError(f"{path}: {exc}") from None


def parse_spec(raw: dict[str, Any], base: Path | None = None) -> GridSpec:
    """Validate a grid given as a mapping (the parsed YAML)."""
    names = {f.name for f in dataclasses.fields(GridSpec)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise unknown_keys("grid key", unknown, names)
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "", [])]
    if missing:
        raise LnlError(f"the grid needs {', '.join(missing)} (seeds: a non-empty list such as [0, 1, 2])")
    name = str(raw["name"])
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise LnlError(f"grid name '{name}' must be letters, digits, '-', '_' or '.' (it names folders)")
    spec = GridSpec(
        name=name, datasets=_names(raw["datasets"], DATASETS, "datasets"), methods=parse_methods(raw["methods"]),
        noise=tuple(_noise(n) for n in _as_list(raw["noise"], "noise")), seeds=_seeds(raw["seeds"]),
        storage=resolve_storage(raw.get("storage") or f"results/runs/{name}", base),
        preset=str(raw.get("preset", "auto")), epochs=raw.get("epochs"), subset=raw.get("subset"),
        trial=_mapping(raw.get("trial"), "trial"), overrides=_overrides(raw.get("overrides")),
        resources=_resources(raw.get("resources")), max_concurrent=_opt_int(raw, "max_concurrent", 1),
        executor=str(raw.get("executor", "train")), max_failures=_opt_int(raw, "max_failures", 0) or 0,
        share_data=bool(raw.get("share_data", True)),
        golden_add=_golden_add(raw.get("golden_add")), require_recipe=raw.get("require_recipe", False),
        recipes=resolve_storage(raw.get("recipes") or "results/recipes", base),
        scope=str(raw.get("scope", "cell")), tune=_mapping(raw.get("tune"), "tune"))
    if not isinstance(spec.require_recipe, bool):
        raise LnlError(f"require_recipe must be true or false, got {spec.require_recipe!r}")
    check_tune(spec.scope, spec.tune, spec.trial)  # lnlbench tune's keys: every grid command checks them
    if spec.executor not in EXECUTORS:
        raise LnlError(f"executor must be one of {', '.join(EXECUTORS)}, got '{spec.executor}'")
    if spec.resources.num_workers > 1 and spec.executor != "train":
        raise LnlError(f"resources.num_workers {spec.resources.num_workers} trains data-parallel through Ray "
                       "Train; use executor: train (or num_workers: 1)")
    strays = [m for m in spec.golden_add if m not in spec.methods]
    if strays:
        raise LnlError(f"golden_add: {', '.join(strays)} not among the grid's methods; add them to methods:")
    taken = sorted(set(spec.trial) & set(_FROM_GRID))
    if taken:
        raise LnlError(f"trial: {', '.join(taken)} are set by the grid itself (use its own keys)")
    return spec


def _golden_add(value: Any) -> tuple[str, ...]:
    """The methods that also run with the golden set added to their training data (none by default)."""
    return () if value in (None, []) else _names(value, METHODS, "golden_add")


def _as_list(value: Any, key: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise LnlError(f"{key} must be a non-empty list")
    return items


def _no_repeats(values: Any, key: str) -> None:
    """One rule for every axis of a grid (seeds, methods, datasets, rates, variants): a repeat is an error."""
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise LnlError(f"{key} lists {v!r} twice; give each value once")
        seen.add(v)


def _names(value: Any, registry: Any, key: str) -> tuple[str, ...]:
    names = tuple(str(v) for v in _as_list(value, key))
    _no_repeats(names, key)
    for n in names:
        registry.get(n)  # unknown → one-line error with the known names
    return names


def parse_methods(value: Any) -> tuple[str, ...]:
    """A grid's ``methods``: ``all`` means every registered method (the registry, never a hard-coded list);
    otherwise a list of registered names (an unknown one is a one-line error naming the known ones)."""
    if value == "all" or value == ["all"]:
        return tuple(METHODS.names())
    return _names(value, METHODS, "methods")


def _noise(item: Any) -> NoiseSetting:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise LnlError(f"each noise entry needs a name, e.g. {{name: symmetric, rates: [0.2]}}; got {item!r}")
    extra = sorted(set(item) - {"name", "rates", "variants", "datasets", "options", "path"})
    if extra:
        raise LnlError(f"noise '{item['name']}': unknown key(s) {', '.join(extra)}; "
                       "known: name, rates, variants, datasets, options, path")
    name = str(item["name"])
    base, _ = parse_noise(name, dict(item.get("options") or {}))  # unknown noise → known names
    if getattr(NOISE.get(base), "frozen", None) is not None or "path" in item:
        item = _frozen_entry(item, base)
        name = base
    fixed = getattr(NOISE.get(base), "fixed_rate", False)
    rates = item.get("rates")
    if fixed and rates not in (None, []):
        raise LnlError(f"noise '{name}' is real noise whose label set fixes the rate; give no rates")
    if not fixed and not rates:
        raise LnlError(f"noise '{name}' needs rates, e.g. rates: [0.2, 0.5]")
    checked: tuple[float | None, ...] = (None,)
    if not fixed:
        checked = tuple(_rate(name, r) for r in _as_list(rates, "rates"))
        _no_repeats(checked, f"noise '{name}' rates")
    variants = item.get("variants")
    datasets = tuple(_names(item["datasets"], DATASETS, "datasets")) if item.get("datasets") else ()
    opts = _mapping(item.get("options"), f"noise '{name}' options")
    if variants:
        if ":" in name:
            raise LnlError(f"noise '{name}': give either name:variant or variants, not both")
        _no_repeats([str(v) for v in _as_list(variants, "variants")], f"noise '{name}' variants")
        for v in _as_list(variants, "variants"):
            parse_noise(f"{name}:{v}", opts)
        return NoiseSetting(name, checked, datasets, opts, tuple(str(v) for v in variants))
    return NoiseSetting(name, checked, datasets, opts)


def _frozen_entry(item: dict[str, Any], base: str) -> dict[str, Any]:
    """A noise-file entry (``file:PATH``, ``{name: file, path: PATH}`` or ``variants: [PATH, ...]``) with
    absolute paths, so a Ray worker whose folder differs reads the same file."""
    if getattr(NOISE.get(base), "frozen", None) is None:
        raise LnlError(f"noise '{item['name']}': path is for labels frozen in a file (name: file)")
    opts = dict(_mapping(item.get("options"), f"noise '{base}' options"))
    given = [p for p in (str(item["name"]).partition(":")[2], item.get("path"), opts.get("path")) if p]
    if item.get("variants"):
        if given:
            raise LnlError(f"noise '{base}': give the files either as variants or as one path, not both")
        return {**item, "name": base, "variants": [_abspath(v) for v in _as_list(item["variants"], "variants")]}
    if len(given) != 1:
        raise LnlError(f"noise '{base}' needs one path: {{name: file, path: PATH}} or file:PATH")
    rest = {k: v for k, v in item.items() if k != "path"}
    return {**rest, "name": base, "options": {**opts, "path": _abspath(given[0])}}


def _abspath(path: Any) -> str:
    return os.path.abspath(Path(str(path)).expanduser())


def _rate(name: str, r: Any) -> float:
    try:
        rate = float(r)
    except (TypeError, ValueError):
        raise LnlError(f"noise '{name}': rate {r!r} is not a number") from None
    if not 0.0 <= rate < 1.0:
        raise LnlError(f"noise '{name}': rate {r} is out of range; rates are in [0, 1)")
    return rate


def _seeds(value: Any) -> tuple[int, ...]:
    seeds = value if isinstance(value, list) else [value]
    if not seeds:
        raise LnlError("seeds is an empty list; give at least one seed, e.g. seeds: [0, 1, 2]")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise LnlError(f"seeds must be non-negative integers, got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise LnlError(f"seeds has duplicates: {value!r}; give each value once")
    return tuple(seeds)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LnlError(f"{key} must be a mapping, got {value!r}")
    return dict(value)


def _overrides(value: Any) -> dict[str, dict[str, Any]]:
    out = _mapping(value, "overrides")
    for method, hp in out.items():
        METHODS.get(method)
        out[method] = _mapping(hp, f"overrides.{method}")
    return out


def _opt_int(raw: dict[str, Any], key: str, low: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise LnlError(f"{key} must be an integer ≥ {low}, got {value!r}")
    return value


def _resources(value: Any) -> Resources:
    raw = _mapping(value, "resources")
    known = {f.name for f in dataclasses.fields(Resources)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LnlError(f"resources: {unknown_keys('key', unknown, known)}")
    res = Resources(**raw)
    if not isinstance(res.num_workers, int) or res.num_workers < 1:
        raise LnlError(f"resources.num_workers must be an integer ≥ 1, got {res.num_workers!r}")
    if not isinstance(res.cpus_per_worker, (int, float)) or res.cpus_per_worker <= 0:
        raise LnlError(f"resources.cpus_per_worker must be > 0, got {res.cpus_per_worker!r}")
    gpus = res.gpus_per_worker
    if gpus != "auto":
        if not isinstance(gpus, (int, float)) or gpus < 0:
            raise LnlError(f"resources.gpus_per_worker must be 'auto' or a number ≥ 0, got {gpus!r}")
        if gpus > 1 and not float(gpus).is_integer():
            raise LnlError(f"resources.gpus_per_worker {gpus} cannot fit: a worker takes a fraction of one "
                           "GPU (≤ 1) or whole GPUs")
    return res


def resolve_storage(storage: str, base: Path | None = None) -> str:
    """A URI stays as it is; ``file://`` and paths become absolute paths (Ray needs absolute ones)."""
    s = str(storage)
    if s.startswith("file://"):
        s = s[len("file://"):]
    elif "://" in s:
        return s.rstrip("/")
    p = Path(s).expanduser()
    return str(absolute(p if p.is_absolute() else (base or Path.cwd()) / p))


# -- expansion ---------------------------------------------------------------------------------------
def noise_names(setting: NoiseSetting) -> list[tuple[str, dict[str, Any]]]:
    """The (noise spec, options) pairs a setting stands for (one per variant)."""
    if setting.variants:
        return [(f"{setting.name}:{v}", setting.options) for v in setting.variants]
    return [(setting.name, setting.options)]


def expand(spec: GridSpec, out_dir: str | None = None) -> list[Cell]:
    """Every cell of the grid, validated by :func:`resolve`, in a stable order; a repeated cell is an error."""
    out = out_dir or trials_dir(spec)
    cells: dict[str, Cell] = {}
    skipped: dict[tuple[str, str, str, str], int] = {}  # (method, dataset, preset, missing key) -> cells
    for dataset in spec.datasets:
        for method, add in [(m, False) for m in spec.methods] + [(m, True) for m in spec.golden_add]:
            for setting in spec.noise:
                if setting.datasets and dataset not in setting.datasets:
                    continue
                for noise, opts in noise_names(setting):
                    for rate in setting.rates:
                        for seed in spec.seeds:
                            cfg = TrialConfig.from_dict({
                                **spec.trial, "method": method, "dataset": dataset, "noise": noise,
                                "rate": rate, "seed": seed, "preset": spec.preset, "epochs": spec.epochs,
                                "subset": spec.subset, "hparams": dict(spec.overrides.get(method, {})),
                                "noise_options": dict(opts), "out_dir": out, "golden_add": add,
                                "recipes": spec.recipes})
                            try:
                                trial = resolve(cfg)
                            except LnlError as exc:
                                raise LnlError(f"{method} on {dataset} with {noise}: {exc}") from None
                            tid, recipe = trial.trial_id, trial.recipe or {}
                            if spec.require_recipe and recipe.get("status") == "default":
                                key = (method, dataset, trial.preset, str(recipe.get("missing")))
                                skipped[key] = skipped.get(key, 0) + 1
                                continue
                            cell = Cell(tid, cfg.to_dict())
                            if tid in cells:  # two noise entries that cover one setting
                                raise LnlError(f"the grid lists the cell '{cell.label}' twice (trial {tid}); "
                                               "remove the repeated noise entry or rate")
                            cells[tid] = cell
    for (method, dataset, preset, missing), n in skipped.items():
        print(f"lnlbench: note: require_recipe: {n} cell(s) of {method} on {dataset} left out: its "
              f"'{preset}' preset has no recipe '{missing}'", file=sys.stderr)
    if not cells:
        raise LnlError("the grid has no cells (does every noise entry's datasets: list match a dataset? "
                       "does a method have a recipe, with require_recipe?)")
    return list(cells.values())


def trials_dir(spec: GridSpec) -> str:
    """Where the engine writes the trial folders: ``<run folder>/trials`` (local staging for a URI)."""
    if spec.is_remote:
        root = Path(os.environ.get("LNLBENCH_STAGING", Path.home() / ".cache" / "lnlbench" / "staging"))
        return str(root / spec.name / "trials")
    return str(Path(spec.storage) / "trials")


def check_writable(storage: str) -> None:
    """A local run folder must be creatable and writable, a URI reachable with its bucket (both with a
    probe file), before any trial starts."""
    if "://" in storage:
        from .storage import check_reachable

        check_reachable(storage)
        return
    writable_dir(storage, "storage path")
