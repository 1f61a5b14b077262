"""Synthetic label-noise generators, each following one paper's official code.

Every generator is ``(labels, num_classes, rate, rng, info) -> NoisyLabels``, draws only from ``rng``, and
returns the transition matrix it *meant* next to the labels it drew. "Symmetric r" and "asymmetric r" mean
different things in different papers (methods.md §0), so each convention is its own name or option:

- ``symmetric``: DivideMix (``dataloader_cifar.py``), also ELR and UNICON. Exactly ``int(r*N)`` indices are
  chosen without replacement and each gets a label drawn uniformly from all C classes, the true one
  included, so the realized rate is about r(C-1)/C. Intended T = (1-r)I + r/C.
- ``symmetric_exclusive``: MOIT (``cifar10/dataset/cifar10_dataset.py`` ``random_in_noise``: ``_num =
  int(len(targets) * noise_ratio)``, a truncation). Exactly ``int(r*N)`` indices flip to a uniformly drawn
  *other* class. Intended T: 1-r on the diagonal, r/(C-1) elsewhere (Co-teaching's matrix; Co-teaching
  samples it per sample, so its count is not exact).
- ``asymmetric`` (option ``convention``): the CIFAR-10 map truck→automobile, bird→airplane, deer→horse,
  cat↔dog, looked up by class name; on CIFAR-100 a next-class map. How samples are picked:
  ``dividemix`` (default): exactly ``int(r*N)`` indices over the whole set get the map (unmapped classes
  stay, so the overall rate is about r/2 on CIFAR-10); DivideMix defines no CIFAR-100 version (issue #13).
  ``elr`` (``ELR/data_loader/cifar10.py`` ``asymmetric_noise``, and ELR_plus's copy): for class index
  i = 0..9 in turn, the samples whose *current* label is i are shuffled and those at position
  ``j < r*|pool|`` get the map, i.e. exactly ``ceil(r*|pool|)``. The pool is read from labels already
  changed, so at dog (5) it holds the cats (3) relabelled dog a moment before, and a share of them goes
  back to cat: the dog pool is (1 + r)·n, r of it flips, r/(1 + r) of that are the relabelled cats, so
  r²·n cats return and cat ends r − r² noisy (24 % at r = 0.4); dog, truck, bird and deer r (40 %);
  overall (5r − r²)/10 on balanced CIFAR-10, ≈ 18.4 % at r = 0.4 (not 20 %). The returned transition
  is this cascade's expected matrix (:func:`_cascade_matrix`). CIFAR-100 (``cifar100.py``): blocks of 5 consecutive
  indices, next index with wrap, per-sample multinomial.
  ``moit`` (``real_in_noise``): each sample of a mapped class flips independently with probability r; on
  CIFAR-100 the map is the next sorted fine class present inside each *true* superclass.
- ``pairflip``: Co-teaching (``data/utils.py`` ``noisify_pairflip``): c → (c+1) mod C with probability r,
  drawn per sample from the row of the transition matrix (``multiclass_noisify``).
- ``instance``: Xia et al. 2020 (``xiaoboxia/Part-dependent-label-noise`` ``tools.py``
  ``get_instance_noisy_label``), see :func:`instance`.

Deviation shared by all: the official code seeds the global numpy RNG (``RandomState(0)``, seed 42, ...);
here every draw comes from the caller's ``rng``, so the labels follow the same law, not the same bits.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from lnlbench.errors import LnlError, unknown_keys
from lnlbench.registry import register_noise
from lnlbench.types import NoiseInfo, NoisyLabels

from .cifar import CIFAR10_CLASSES

# source class → target class (methods.md §0.2; DivideMix's dict {9:1, 2:0, 4:7, 3:5, 5:3}).
CIFAR10_ASYM = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
    "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
ASYM_CONVENTIONS = ("dividemix", "elr", "moit")


# ---------------------------------------------------------------- shared helpers (also used by real_noise)

def validate_inputs(labels: np.ndarray, num_classes: int, rate: float) -> np.ndarray:
    """Check the common arguments; return the clean labels as a 1-D int64 array."""
    try:
        rate_f = float(rate)
    except (TypeError, ValueError):
        rate_f = float("nan")
    if not (0.0 <= rate_f < 1.0):  # also rejects NaN
        raise LnlError(f"noise rate must be in [0, 1), got {rate}")
    if int(num_classes) < 1:
        raise LnlError(f"num_classes must be at least 1, got {num_classes}")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise LnlError(f"labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise LnlError(f"labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}; "
                       f"check num_classes or the dataset's labels")
    return y


def read_options(noise: str, info: NoiseInfo, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``info.options``; an unknown key is an error naming the allowed ones."""
    given = dict(info.options or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise LnlError(f"noise '{noise}': {unknown_keys('option', unknown, defaults)}")
    return {**defaults, **given}


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised counts of (clean, noisy) pairs; a class with no samples gets an identity row."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1.0)
    return _normalise_rows(counts)


def sample_rows(clean: np.ndarray, transition: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per sample drawn from ``transition[clean[i]]`` (a vectorised per-sample multinomial)."""
    u = rng.random(len(clean))
    cdf = np.cumsum(transition, axis=1)
    return _inverse_cdf(cdf[clean], u)


def noisy_result(clean: np.ndarray, noisy: np.ndarray, transition: np.ndarray) -> NoisyLabels:
    """Package labels and the intended matrix (int64 labels, float64 rows summing to 1)."""
    noisy = np.asarray(noisy, dtype=np.int64)
    return NoisyLabels(labels=noisy, is_noisy=noisy != clean, transition=np.asarray(transition, np.float64))


def _normalise_rows(m: np.ndarray) -> np.ndarray:
    sums = m.sum(axis=1, keepdims=True)
    out = np.where(sums > 0, m / np.where(sums > 0, sums, 1.0), 0.0)
    empty = np.flatnonzero(sums[:, 0] == 0)
    out[empty, empty] = 1.0
    return out


def _inverse_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index j with cdf[j-1] <= u < cdf[j] per row; the last column is forced to 1 against rounding."""
    cdf = cdf / cdf[:, -1:]
    cdf[:, -1] = 1.0
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)


def _symmetric_matrix(num_classes: int, rate: float, exclusive: bool) -> np.ndarray:
    if exclusive:
        off = rate / (num_classes - 1) if num_classes > 1 else 0.0
        return np.full((num_classes, num_classes), off) + np.eye(num_classes) * (1.0 - rate - off)
    return np.eye(num_classes) * (1.0 - rate) + rate / num_classes


def _map_matrix(target: np.ndarray, rate: float) -> np.ndarray:
    """Identity, except each mapped class c keeps 1-r and sends r to ``target[c]``."""
    t = np.eye(len(target))
    src = np.flatnonzero(target != np.arange(len(target)))
    t[src, src] = 1.0 - rate
    t[src, target[src]] = rate
    return t


# ---------------------------------------------------------------- symmetric and pair flip

@register_noise("symmetric")
def symmetric(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
              info: NoiseInfo) -> NoisyLabels:
    """Symmetric noise, DivideMix/ELR/UNICON convention: int(r*N) samples relabelled uniformly over all C."""
    clean = validate_inputs(labels, num_classes, rate)
    read_options("symmetric", info, {})
    noisy = clean.copy()
    chosen = rng.choice(len(clean), size=int(rate * len(clean)), replace=False)
    noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return noisy_result(clean, noisy, _symmetric_matrix(num_classes, rate, exclusive=False))


@register_noise("symmetric_exclusive")
def symmetric_exclusive(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
                        info: NoiseInfo) -> NoisyLabels:
    """Symmetric noise, MOIT convention: exactly int(r*N) samples flipped to a uniformly drawn other class."""
    clean = validate_inputs(labels, num_classes, rate)
    read_options("symmetric_exclusive", info, {})
    if num_classes < 2 and rate > 0:
        raise LnlError("symmetric_exclusive noise needs at least 2 classes; use rate 0 for one class")
    noisy = clean.copy()
    chosen = rng.choice(len(clean), size=int(rate * len(clean)), replace=False)
    # An offset uniform in 1..C-1 gives a uniform draw over the other classes, as MOIT's redraw loop does.
    noisy[chosen] = (clean[chosen] + rng.integers(1, max(num_classes, 2), size=len(chosen))) % num_classes
    return noisy_result(clean, noisy, _symmetric_matrix(num_classes, rate, exclusive=True))


@register_noise("pairflip")
def pairflip(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
             info: NoiseInfo) -> NoisyLabels:
    """Pair flip, Co-teaching convention: c → (c+1) mod C with probability r, drawn per sample."""
    clean = validate_inputs(labels, num_classes, rate)
    read_options("pairflip", info, {})
    target = (np.arange(num_classes) + 1) % num_classes
    t = _map_matrix(target, rate)
    return noisy_result(clean, sample_rows(clean, t, rng), t)


# ---------------------------------------------------------------- asymmetric (class-dependent)

def _class_positions(info: NoiseInfo, num_classes: int) -> tuple[str, dict[str, int]]:
    """Which known dataset the class names are ("cifar10"/"cifar100"), and each name's label index."""
    names = [str(c).strip().lower() for c in info.classes]
    pos = {n: i for i, n in enumerate(names)}
    for family, known in (("cifar10", CIFAR10_CLASSES), ("cifar100", CIFAR100_CLASSES)):
        if len(names) == num_classes == len(known) and set(names) == set(known):
            return family, pos
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "none given"
    raise LnlError(f"asymmetric noise has no class mapping for dataset '{info.dataset}' "
                   f"({num_classes} classes: {shown}); it needs CIFAR-10 or CIFAR-100 class names; "
                   f"use pairflip or symmetric noise instead")


def _cifar100_block_map(pos: dict[str, int]) -> np.ndarray:
    """ELR: standard index i → next index inside its block of 5 consecutive indices (wrapping)."""
    target = np.arange(100)
    for i, name in enumerate(CIFAR100_CLASSES):
        target[pos[name]] = pos[CIFAR100_CLASSES[5 * (i // 5) + (i + 1) % 5]]
    return target


def _superclass_map(clean: np.ndarray, coarse: np.ndarray | None, num_classes: int) -> np.ndarray:
    """MOIT: each fine class present → the next sorted fine class present in its true superclass."""
    if coarse is None:
        raise LnlError("asymmetric:moit on CIFAR-100 needs each sample's superclass (info.coarse_labels); "
                       "load CIFAR-100 with its coarse labels or use asymmetric:elr")
    coarse = np.asarray(coarse, dtype=np.int64)
    if coarse.shape != clean.shape:
        raise LnlError(f"coarse_labels has shape {coarse.shape} but labels {clean.shape}; pass one per sample")
    pairs = np.unique(np.stack([clean, coarse], axis=1), axis=0)  # sorted by fine label
    if len(np.unique(pairs[:, 0])) != len(pairs):
        raise LnlError("coarse_labels give one fine class two superclasses; pass CIFAR-100's coarse labels")
    target = np.arange(num_classes)
    for sup in np.unique(pairs[:, 1]):
        fine = pairs[pairs[:, 1] == sup, 0]  # ascending, like MOIT's np.unique
        target[fine] = np.roll(fine, -1)
    return target


def _asym_target(clean: np.ndarray, num_classes: int, info: NoiseInfo,
                 convention: str) -> tuple[str, np.ndarray]:
    """The dataset family and ``target[c]`` for each class (``target[c] == c``: never flipped)."""
    family, pos = _class_positions(info, num_classes)
    if family == "cifar10":
        target = np.arange(num_classes)
        for src, dst in CIFAR10_ASYM.items():
            target[pos[src]] = pos[dst]
        return family, target
    if convention == "dividemix":
        raise LnlError("DivideMix defines no CIFAR-100 asymmetric noise (author, DivideMix issue #13); "
                       "use asymmetric:moit (true superclasses) or asymmetric:elr (index blocks of 5)")
    if convention == "elr":
        return family, _cifar100_block_map(pos)
    return family, _superclass_map(clean, info.coarse_labels, num_classes)


def _flip_cascade(clean: np.ndarray, target: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """ELR CIFAR-10: class by class (0..C-1), ceil(r*pool) of the samples *currently* labelled c get target[c].

    The pool of class c is read from the labels as changed so far, as the official loop does, so a sample
    relabelled into c by an earlier class can be drawn again (cat → dog → cat).
    """
    noisy = clean.copy()
    for c in range(len(target)):
        if target[c] == c:
            continue
        pool = np.flatnonzero(noisy == c)
        k = min(len(pool), math.ceil(rate * len(pool)))
        noisy[rng.choice(pool, size=k, replace=False)] = target[c]
    return noisy


def _cascade_matrix(target: np.ndarray, rate: float) -> np.ndarray:
    """The expected transition of :func:`_flip_cascade` (the pool shuffle takes r of every clean class in it)."""
    t = np.eye(len(target))
    for c in range(len(target)):
        if target[c] != c:
            moved = rate * t[:, c]
            t[:, target[c]] += moved
            t[:, c] -= moved
    return t


@register_noise("asymmetric", variant_option="convention", default_variant="dividemix")
def asymmetric(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
               info: NoiseInfo) -> NoisyLabels:
    """Class-dependent CIFAR noise (truck→automobile, ...); option convention = dividemix | elr | moit."""
    clean = validate_inputs(labels, num_classes, rate)
    convention = str(read_options("asymmetric", info, {"convention": asymmetric.default_variant})["convention"]).lower()
    if convention not in ASYM_CONVENTIONS:
        raise LnlError(f"asymmetric convention must be one of {', '.join(ASYM_CONVENTIONS)}, got '{convention}'")
    family, target = _asym_target(clean, num_classes, info, convention)
    cascade = convention == "elr" and family == "cifar10"
    t = _cascade_matrix(target, rate) if cascade else _map_matrix(target, rate)
    if convention == "dividemix":
        noisy = clean.copy()
        chosen = rng.choice(len(clean), size=int(rate * len(clean)), replace=False)
        noisy[chosen] = target[clean[chosen]]
    elif cascade:
        noisy = _flip_cascade(clean, target, rate, rng)
    else:  # ELR CIFAR-100 and MOIT: one multinomial draw per sample from its row
        noisy = sample_rows(clean, t, rng)
    return noisy_result(clean, noisy, t)


# ---------------------------------------------------------------- instance-dependent (Xia et al. 2020)

def _flat_pixels(images: np.ndarray) -> np.ndarray:
    """(n, H, W, C) → (n, C*H*W) float32 raw pixels in channel-first order, the layout of the official
    ``train_images.npy`` (CIFAR python batches); the official code casts with ``.float()``, no scaling."""
    x = images.transpose(0, 3, 1, 2) if images.ndim == 4 else images
    return np.ascontiguousarray(x).reshape(len(images), -1).astype(np.float32)


def _instance_rows(x: np.ndarray, w: np.ndarray, q: np.ndarray, c: int) -> np.ndarray:
    """Per-sample rows for clean class c: q·softmax(x·W[c]) with the true class masked out, plus 1-q on c."""
    logits = (x @ w).astype(np.float64)
    logits[:, c] = -np.inf
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p *= (q / p.sum(axis=1))[:, None]
    p[:, c] += 1.0 - q
    return p


@register_noise("instance")
def instance(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
             info: NoiseInfo) -> NoisyLabels:
    """Instance-dependent (part-dependent) noise of Xia et al. 2020, the IDN-r generator; option norm_std.

    Follows ``tools.get_instance_noisy_label``: flip rates q_i ~ N(r, norm_std²) truncated to [0, 1];
    W ~ N(0, 1) of shape (C, d, C) with d = H·W·C; for sample i of class y, row = q_i·softmax(x_i·W[y])
    with y masked to -inf, plus 1-q_i on y; the label is drawn from that row. x_i is the raw 0-255 pixel
    vector as float32 in channel-first order, as in the official code (no normalisation), so the softmax is
    nearly one-hot. Vectorised per class and drawn by inverse CDF instead of a per-sample loop.
    The transition returned is the mean of the per-sample rows of each clean class.
    Deviation: rate 0 returns the clean labels; the official truncated normal at n = 0 would still flip
    about 8% (mean of |N(0, 0.1²)|), which no paper uses as "0% noise".
    """
    clean = validate_inputs(labels, num_classes, rate)
    norm_std = float(read_options("instance", info, {"norm_std": 0.1})["norm_std"])
    if not norm_std > 0:
        raise LnlError(f"instance noise option norm_std must be > 0, got {norm_std}")
    images = info.images
    if images is None or len(images) != len(clean) or np.ndim(images) < 2:
        raise LnlError("instance noise needs the training images (info.images, one per label, N×H×W×C); "
                       "pass the dataset's x_train")
    if rate == 0:
        return noisy_result(clean, clean.copy(), np.eye(num_classes))
    q = stats.truncnorm((0 - rate) / norm_std, (1 - rate) / norm_std, loc=rate, scale=norm_std).rvs(
        len(clean), random_state=rng)
    d = int(np.prod(np.shape(images)[1:]))
    w = rng.standard_normal((num_classes, d, num_classes), dtype=np.float32)
    u = rng.random(len(clean))
    noisy, mean_rows = clean.copy(), np.eye(num_classes)
    for c in np.unique(clean):
        idx = np.flatnonzero(clean == c)
        rows = _instance_rows(_flat_pixels(np.asarray(images)[idx]), w[c], q[idx], int(c))
        noisy[idx] = _inverse_cdf(np.cumsum(rows, axis=1), u[idx])
        mean_rows[c] = rows.mean(axis=0)
    return noisy_result(clean, noisy, mean_rows)
