"""Display names and the meaning of each noise name, for table headers, footnotes and matching.

Nothing here lists methods: rows are whatever methods the result files name. Datasets and noise names have
pretty forms and footnotes here; an unknown name falls back to itself, so a new dataset or noise generator
needs no change to show up (it only lacks a nice header and a convention footnote until one is added).

The *noise label* of a trial is the generator's registry name, plus its variant (``asymmetric:elr``,
``cifar10n:worst``) — the same spelling as ``lnlbench trial --noise``. Variant defaults and aliases are
declared once, where each generator is registered (``register_noise(..., default_variant=, aliases=)``), so
that ``asymmetric`` and ``asymmetric:dividemix`` are one column; results record the label
(``noise_label`` in result.json). Any synthetic noise at rate 0 is the clean-label setting ``none``.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

DATASET_NAMES = {
    "digits": "Digits", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny_imagenet": "Tiny-ImageNet",
    "clothing1m": "Clothing1M", "mini_webvision": "mini-WebVision",
    "mini_webvision_ilsvrc12": "mini-WebVision (ILSVRC12 val)", "mini_imagenet_red": "mini-ImageNet (red)",
}

# short header, footnote text; the footnote says which convention the column follows (methods.md §0)
NOISE_INFO: dict[str, tuple[str, str]] = {
    "none": ("clean", "no label noise (rate 0)"),
    "symmetric": ("sym", ("symmetric noise, the true class may be drawn (DivideMix/ELR convention: "
                          "int(rN) labels redrawn over all C classes, actual noise ≈ r(C−1)/C)")),
    "symmetric_exclusive": ("sym-x", ("symmetric noise, the true class excluded (MOIT/Co-teaching "
                                      "convention: a flip always changes the label)")),
    "pairflip": ("pair", "pair flip c → c+1 with probability r (Co-teaching convention)"),
    "asymmetric:dividemix": ("asym", ("class-dependent CIFAR noise, DivideMix convention (int(rN) indices "
                                      "over the whole set; overall noise ≈ r/2 on CIFAR-10)")),
    "asymmetric:elr": ("asym-elr", ("class-dependent CIFAR noise, ELR convention (class by class on the "
                                    "labels as changed so far: cat ends r − r² noisy, ≈ 18.4 % overall at r = 0.4)")),
    "asymmetric:moit": ("asym-moit", ("class-dependent CIFAR noise, MOIT convention (each sample of a mapped "
                                      "class flips with probability r)")),
    "instance": ("idn", "instance-dependent noise (Xia et al. 2020, IDN-r)"),
    "cifar10n:worst": ("C10N-worst", "CIFAR-10N human labels, 'worst' set (≈40% noise)"),
    "cifar10n:aggre": ("C10N-aggre", "CIFAR-10N human labels, 'aggre' set (≈9% noise)"),
    "cifar10n:random1": ("C10N-rand1", "CIFAR-10N human labels, 'random1' set (≈17% noise)"),
    "cifar10n:random2": ("C10N-rand2", "CIFAR-10N human labels, 'random2' set (≈18% noise)"),
    "cifar10n:random3": ("C10N-rand3", "CIFAR-10N human labels, 'random3' set (≈18% noise)"),
    "cifar100n:noisy": ("C100N", "CIFAR-100N human labels (≈40% noise)"),
    "given": ("real", "the noisy labels shipped with the dataset"),
}
NOISE_ORDER = ["none", "symmetric", "symmetric_exclusive", "pairflip", "asymmetric", "instance"]

def noise_label(name: str, options: Mapping[str, Any] | None = None, rate: float | None = None) -> str:
    """The canonical noise label (``symmetric``, ``asymmetric:elr``, ``cifar10n:worst``, ``none``): the
    registry's :func:`lnlbench.registry.noise_label`, which applies each generator's registered default
    variant and aliases. Loading the noise registry imports numpy and scipy only, never torch."""
    from lnlbench.registry import noise_label as canonical

    return canonical(name, options, rate)


def variant_option(name: str) -> str | None:
    """The option that names a noise generator's variant (``convention``, ``label_set``), if it has one."""
    from lnlbench.registry import NOISE

    base = str(name).split(":")[0]
    return getattr(NOISE.get(base), "variant_option", None) if base in NOISE else None


def noise_short(label: str) -> str:
    """The short header form of a noise label (``sym``, ``sym-x``, ``asym``); unknown labels as they are."""
    return NOISE_INFO.get(label, (label, ""))[0]


def noise_footnote(label: str) -> str:
    """``sym-x = symmetric noise, the true class excluded (...)``; an unknown label gets a plain entry."""
    if label.startswith("file:") and label not in NOISE_INFO:  # `file:<name>@<hash>` (a frozen noise file)
        return f"{label} = the noisy labels frozen in noise file {label[5:]} (name@SHA-256 prefix)"
    short, text = NOISE_INFO.get(label, (label, f"noise generator '{label}'"))
    return f"{short} = {text}"


def noise_sort_key(label: str) -> tuple[int, str]:
    """Order noise columns as papers do: clean, symmetric, exclusive, pair flip, asymmetric, then the rest."""
    base = label.split(":")[0]
    return (NOISE_ORDER.index(base) if base in NOISE_ORDER else len(NOISE_ORDER), label)


def dataset_name(name: str) -> str:
    """``cifar10`` → ``CIFAR-10``; unknown names as they are."""
    return DATASET_NAMES.get(name, name)


def rate_text(rate: float | None) -> str:
    """``0.4`` → ``40%``; a real-noise column (no rate) → ``real``."""
    if rate is None or math.isnan(rate):
        return "real"
    return f"{100 * float(rate):g}%"


def match_key(name: Any) -> str:
    """A spelling-proof key for matching names across files: ``ELR+``/``elr_plus`` → ``elrplus``,
    ``Co-teaching`` → ``coteaching``, ``CIFAR-10`` → ``cifar10``."""
    text = str(name).strip().lower().replace("+", "plus")
    return re.sub(r"[^a-z0-9:]", "", text)


@functools.lru_cache(maxsize=None)
def _method_display(key: str) -> str:
    try:  # the method registry imports torch; without it (an analysis-only install) names stay keys
        from lnlbench.registry import METHODS

        known = key in METHODS
    except ImportError:
        return key
    return (getattr(METHODS.get(key), "display_name", None) or key) if known else key


def method_name(label: str, base: str | None = None) -> str:
    """A table row's method name: the method class's ``display_name`` (``elr_plus`` → ``ELR+``), declared
    once in its method file, plus the variant suffix of ``label`` (``ELR+ [lr=0.1]``). ``base`` is the
    registry key when ``label`` carries a variant; an unregistered name stays as it is."""
    base = base or label
    if not label.startswith(base):
        return label
    return _method_display(base) + label[len(base):]


# model registry key -> the network name papers print (matched spelling-proof, see match_key)
NETWORK_NAMES = {"cnn9": "9-layer CNN", "sce_cnn": "8-layer CNN", "preact_resnet18": "PreAct ResNet-18",
                 "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                 "cnn_small": "small CNN (CPU scale)", "mlp": "MLP (CPU scale)"}


def network_name(model: str | None) -> str:
    """``preact_resnet18`` → ``PreAct ResNet-18``; unknown models as they are; None → ``?``."""
    return "?" if not model else NETWORK_NAMES.get(str(model), str(model))


def same_network(model: str | None, network: str | None) -> bool:
    """Whether our model is the published network (``ResNet-50 (ImageNet-pretrained)`` = ``resnet50``)."""
    if not model or not network:
        return False
    theirs = match_key(str(network).split("(")[0])
    return theirs in (match_key(model), match_key(network_name(model)))
