"""Registries of methods, noise generators, datasets and models.

Registration is by decorator (``@register_method("ce")``) for code in this repository, and by Python entry
points for outside packages, so a plugin needs no change here::

    # the plugin's pyproject.toml
    [project.entry-points."lnlbench.methods"]
    mymethod = "my_package.my_module:MyMethod"

An entry point may point at the registered object itself (it is registered under the entry point's name
unless its module already registered it) or at a module whose import registers it. A plugin that fails to
load (or a name two installed distributions both claim) is reported once on stderr and left out; every
other entry works, and only asking for that name is an error, which says why.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import LnlError, unknown_name

T = TypeVar("T")

# Modules whose import registers the built-in entries of each kind.
_BUILTIN_MODULES = {
    "method": ("lnlbench.methods",),
    "noise": ("lnlbench.datasets.noise", "lnlbench.datasets.real_noise", "lnlbench.datasets.noise_file"),
    "dataset": ("lnlbench.datasets",),
    "model": ("lnlbench.models",),
}


def _describe(obj: Any) -> str:
    """First line of the object's docstring: the one-line description `lnlbench list` prints."""
    doc = getattr(obj, "__doc__", None) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return line.strip()


class Registry(Generic[T]):
    """A name → object map with clear errors, lazily filled from built-ins and entry points."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._broken: dict[str, str] = {}  # plugins left out: name → why (the error when one is asked for)

    def register(self, name: str, obj: T) -> T:
        name = str(name)
        if not name or name != name.strip():
            raise LnlError(f"invalid {self.kind} name {name!r}")
        old = self._entries.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise LnlError(f"duplicate {self.kind} name '{name}': already registered by {_qualname(old)}")
        self._entries[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)
        return wrap

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the imports below re-enter through the decorators
        for mod in _BUILTIN_MODULES[self.kind]:
            importlib.import_module(mod)
        by_name: dict[str, list[Any]] = {}
        for ep in importlib.metadata.entry_points(group=self.group):
            by_name.setdefault(ep.name, []).append(ep)
        for name, eps in by_name.items():
            dists = sorted({_dist_name(ep) for ep in eps})
            if len(dists) > 1:  # two distributions claim one name: neither is chosen silently
                self._leave_out(name, f"is provided by two distributions ({' and '.join(dists)}); "
                                      "uninstall one of them")
                continue
            self._load_plugin(eps[0])

    def _load_plugin(self, ep: Any) -> None:
        """Load one entry point; a broken plugin is reported once, left out, and an error only when asked for."""
        try:
            obj = ep.load()
            if not hasattr(obj, "__path__") and not hasattr(obj, "__file__") and ep.name not in self._entries:
                self.register(ep.name, obj)  # the entry point names the object itself
        except Exception as exc:  # a broken plugin must not break the registry
            first = (str(exc).splitlines() or [""])[0]
            self._leave_out(ep.name, f"({ep.value}, from {_dist_name(ep)}) failed to load: "
                                     f"{type(exc).__name__}: {first}")

    def _leave_out(self, name: str, why: str) -> None:
        self._broken[name] = why
        print(f"lnlbench: warning: {self.kind} plugin '{name}' {why}; it is left out", file=sys.stderr)

    def get(self, name: str) -> T:
        self._load()
        if name in self._entries:
            return self._entries[name]
        if name in self._broken:
            raise LnlError(f"{self.kind} plugin '{name}' {self._broken[name]}")
        raise unknown_name(self.kind, name, self._entries)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) for every entry, sorted by name."""
        return [(n, _describe(self.get(n))) for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register temporary plugins)."""
        self._entries.pop(name, None)


def _dist_name(ep: Any) -> str:
    """The distribution (installed package) an entry point comes from, for messages."""
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) or (dist.metadata["Name"] if dist is not None else None)
    return f"distribution '{name}'" if name else "an unknown distribution"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


METHODS: Registry[Any] = Registry("method", "lnlbench.methods")
NOISE: Registry[Any] = Registry("noise", "lnlbench.noise")
DATASETS: Registry[Any] = Registry("dataset", "lnlbench.datasets")
MODELS: Registry[Any] = Registry("model", "lnlbench.models")
REGISTRIES = {"methods": METHODS, "noise": NOISE, "datasets": DATASETS, "models": MODELS}


def register_method(name: str):
    """Register a :class:`lnlbench.Method` subclass under ``name`` (the paper's short name, lower case)."""
    return METHODS.decorator(name)


def register_noise(name: str, variant_option: str | None = None, fixed_rate: bool = False,
                   default_variant: str | None = None, aliases: Mapping[str, str] | None = None,
                   frozen: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   tag: Callable[[Mapping[str, Any]], str | None] | None = None):
    """Register a noise generator ``(labels, num_classes, rate, rng, info) -> NoisyLabels``.

    ``variant_option`` names the option that the short spec ``name:variant`` sets
    (``cifar10n:worst`` → ``options={"label_set": "worst"}``). ``fixed_rate`` marks real noise whose
    label set fixes the rate (a trial then takes no rate). ``default_variant`` is the variant a trial gets
    when it names none, and ``aliases`` maps other spellings of a variant to its canonical one
    (``rand1`` → ``random1``): declared here once, they decide the canonical label of
    :func:`noise_label` that results record and tables group by.

    ``frozen`` marks a generator that reads labels frozen in a file (``file``): the file is its own
    record, so the harness caches no copy; the function completes the options once at resolve time (the
    absolute path, the labels' hash), which then enter the trial id. ``tag(options)`` is the variant label
    such a generator shows instead of its options (``name@hash``), or None to fall back.
    """
    def wrap(fn):
        fn.frozen = frozen
        fn.tag = tag
        fn.variant_option = variant_option
        fn.fixed_rate = fixed_rate
        fn.default_variant = default_variant
        fn.variant_aliases = dict(aliases or {})
        return NOISE.register(name, fn)
    return wrap


def noise_label(name: str, options: Mapping[str, Any] | None = None, rate: float | None = None) -> str:
    """The canonical noise label: ``symmetric``, ``asymmetric:elr``, ``cifar10n:worst``, ``none``.

    The generator's registry name plus its variant (from ``name:variant`` or the variant option), with the
    registered default variant and aliases applied; any synthetic noise at rate 0 is the clean setting
    ``none``. A name that is not registered (an uninstalled plugin, a published-only setting) is kept as
    written, without default or aliases.
    """
    base, _, variant = str(name).strip().lower().partition(":")
    fn = NOISE.get(base) if base in NOISE else None
    key = getattr(fn, "variant_option", None)
    if not variant and options and key in options:
        variant = str(options[key]).lower()
    tagged = getattr(fn, "tag", None) and fn.tag(options or {})
    if tagged:
        return f"{base}:{tagged}"
    variant = getattr(fn, "variant_aliases", {}).get(variant, variant)
    variant = variant or getattr(fn, "default_variant", None) or ""
    if rate is not None and float(rate) == 0.0 and not getattr(fn, "fixed_rate", False):
        return "none"
    return f"{base}:{variant}" if variant else base


def register_dataset(name: str, options: type | None = None):
    """Register a dataset loader ``(spec: DataSpec) -> DatasetInfo``.

    ``options`` is the loader's :class:`lnlbench.types.DatasetOptions` subclass: the data options a
    trial may pass (``--data-opt``), which enter the trial id. A loader without it takes none.
    """
    def wrap(fn):
        fn.options = options
        return DATASETS.register(name, fn)
    return wrap


def register_model(name: str):
    """Register a model builder ``(num_classes, in_channels, image_size, **kwargs) -> nn.Module``."""
    return MODELS.decorator(name)
