"""Contract tests that loop over every registered noise generator, then what is specific to each protocol.

A generator with no entry in ``BUILDERS`` fails every contract test, so a new one cannot slip by untested.
Realized noise is compared with the intended transition by a chi-square goodness-of-fit test per clean
class at alpha = 1e-6 (cells expecting fewer than 5 draws are pooled; cells the matrix forbids must be empty).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from lnlbench.datasets.noise import CIFAR10_ASYM, CIFAR10_CLASSES, CIFAR100_CLASSES
from lnlbench.datasets.real_noise import load_label_file
from lnlbench.errors import LnlError
from lnlbench.registry import NOISE
from lnlbench.types import NoiseInfo, NoisyLabels

N = 50_000
ALPHA = 1e-6
SHARED_CIFAR_N = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-n"


@dataclasses.dataclass
class Case:
    """One way to call a generator: its inputs and what the protocol promises."""

    name: str
    labels: np.ndarray
    num_classes: int
    info: NoiseInfo
    rate: float = 0.4
    random: bool = True  # the labels depend on the seed
    fixed: bool = False  # the labels fix the noise (real noise): only rate 0 is allowed
    exact: Callable[[Case, NoisyLabels], None] | None = None  # checks an exact count the protocol promises

    def run(self, seed: int = 0, rate: float | None = None, **info_changes) -> NoisyLabels:
        info = dataclasses.replace(self.info, **info_changes)
        rate = self.rate if rate is None else rate
        return NOISE.get(self.name)(self.labels.copy(), self.num_classes, rate, np.random.default_rng(seed), info)


def balanced(num_classes: int, n: int = N, seed: int = 123) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), n // num_classes)
    return np.random.default_rng(seed).permutation(y).astype(np.int64)


def c10_info(**kw) -> NoiseInfo:
    return NoiseInfo(dataset="cifar10", classes=CIFAR10_CLASSES, **kw)


def c100_info(labels: np.ndarray, **kw) -> NoiseInfo:
    fine_to_coarse = np.random.default_rng(7).permutation(100) // 5  # any grouping into 20 superclasses
    return NoiseInfo(dataset="cifar100", classes=CIFAR100_CLASSES, coarse_labels=fine_to_coarse[labels], **kw)


# ---------------------------------------------------------------- exact-count checks

def exact_symmetric(case: Case, out: NoisyLabels) -> None:
    """int(r*N) chosen, each relabelled uniformly over C: noisy ~ Binomial(k, (C-1)/C), never above k."""
    k, c = int(case.rate * len(case.labels)), case.num_classes
    noisy = int(out.is_noisy.sum())
    assert noisy <= k
    assert stats.binomtest(noisy, k, (c - 1) / c).pvalue > ALPHA


def exact_exclusive(case: Case, out: NoisyLabels) -> None:
    assert int(out.is_noisy.sum()) == int(case.rate * len(case.labels))


def exact_dividemix_asym(case: Case, out: NoisyLabels) -> None:
    """int(r*N) chosen over the whole set; only mapped classes change: noisy ~ Hypergeom(N, mapped, k)."""
    n, k = len(case.labels), int(case.rate * len(case.labels))
    mapped = int(np.isin(case.labels, [CIFAR10_CLASSES.index(s) for s in CIFAR10_ASYM]).sum())
    noisy = int(out.is_noisy.sum())
    dist = stats.hypergeom(n, mapped, k)
    assert noisy <= k and 2 * min(dist.cdf(noisy), dist.sf(noisy - 1)) > ALPHA


def exact_elr_asym(case: Case, out: NoisyLabels) -> None:
    """ELR flips exactly ceil(r*|pool|) of each mapped class's current pool, in class order, nothing else.

    Truck, bird and deer meet no earlier relabelling: exactly ceil(r*|class|). The dog pool holds the
    ceil(r*|cat|) cats already relabelled dog, so exactly ceil(r*(|dog| + that)) labels leave it.
    """
    n_c = lambda name: int((case.labels == CIFAR10_CLASSES.index(name)).sum())
    for c in range(case.num_classes):
        in_c = case.labels == c
        name = CIFAR10_CLASSES[c]
        if name in ("truck", "bird", "deer"):
            assert int(out.is_noisy[in_c].sum()) == int(np.ceil(case.rate * in_c.sum())), name
        elif name not in ("cat", "dog"):
            assert int(out.is_noisy[in_c].sum()) == 0, name
    cat, dog = CIFAR10_CLASSES.index("cat"), CIFAR10_CLASSES.index("dog")
    cats_to_dog = int(np.ceil(case.rate * n_c("cat")))
    left_dog_pool = int(np.ceil(case.rate * (n_c("dog") + cats_to_dog)))
    dogs_now_cat = int(((case.labels == dog) & (out.labels == cat)).sum())
    cats_back = cats_to_dog - int(((case.labels == cat) & (out.labels == dog)).sum())
    assert dogs_now_cat + cats_back == left_dog_pool


def exact_from_file(key: str, arrays: dict[str, np.ndarray], index: np.ndarray) -> Callable:
    def check(case: Case, out: NoisyLabels) -> None:
        np.testing.assert_array_equal(out.labels, arrays[key][index])
    return check


# ---------------------------------------------------------------- per-generator fixtures

def write_cifar_n(folder: Path, file: str, keys: tuple[str, ...], num_classes: int, n: int = 3000) -> dict:
    """A small CIFAR-N-like file: clean labels and, per key, 20% flipped to a random other class."""
    rng = np.random.default_rng(11)
    clean = balanced(num_classes, n, seed=5)
    arrays = {"clean_label": clean}
    for key in keys:
        flip = rng.random(n) < 0.2
        arrays[key] = np.where(flip, (clean + rng.integers(1, num_classes, n)) % num_classes, clean)
    folder.mkdir(parents=True, exist_ok=True)
    if file.endswith(".pt"):
        torch.save(arrays, folder / file)
    else:
        np.savez(folder / file, **{k: v.astype(np.uint8) for k, v in arrays.items()})
    return arrays


def real_case(name: str, tmp: Path, file: str, keys: tuple[str, ...], key: str, c: int, **opts) -> Case:
    arrays = write_cifar_n(tmp / "cifar-n", file, keys, c)
    index = np.random.default_rng(3).permutation(len(arrays["clean_label"]))[:2000]  # a shuffled subset
    info = NoiseInfo(dataset=name, data_root=tmp, train_index=index, options=opts)
    return Case(name, arrays["clean_label"][index], c, info, rate=0.0, random=False, fixed=True,
                exact=exact_from_file(key, arrays, index))


C10_KEYS = ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")


def file_cases(tmp: Path) -> dict[str, Case]:
    """Labels frozen in a file: an exported .npz (checked against the clean labels) and a plain .npy."""
    from lnlbench.datasets.noise_file import clean_fingerprint, write_noise_file

    clean, rng = balanced(10, 2000), np.random.default_rng(4)
    noisy = np.where(rng.random(len(clean)) < 0.2, rng.integers(0, 10, len(clean)), clean)
    index = np.random.default_rng(3).permutation(5000)[:2000]
    write_noise_file(tmp / "frozen.npz", noisy, np.eye(10), {
        "dataset": "cifar10", "clean_fingerprint": clean_fingerprint(clean, index)})
    np.save(tmp / "plain.npy", noisy)

    def exact(case: Case, out: NoisyLabels) -> None:
        np.testing.assert_array_equal(out.labels, noisy)

    return {kind: Case("file", clean, 10, c10_info(train_index=index, options={"path": str(tmp / name)}),
                       rate=0.0, random=False, fixed=True, exact=exact)
            for kind, name in (("exported", "frozen.npz"), ("plain", "plain.npy"))}


def build_asymmetric(tmp: Path) -> dict[str, Case]:
    y10, y100 = balanced(10), balanced(100)
    return {
        "dividemix": Case("asymmetric", y10, 10, c10_info(), exact=exact_dividemix_asym),
        "elr": Case("asymmetric", y10, 10, c10_info(options={"convention": "elr"}), exact=exact_elr_asym),
        "moit": Case("asymmetric", y10, 10, c10_info(options={"convention": "moit"})),
        "elr-c100": Case("asymmetric", y100, 100, c100_info(y100, options={"convention": "elr"})),
        "moit-c100": Case("asymmetric", y100, 100, c100_info(y100, options={"convention": "moit"})),
    }


BUILDERS: dict[str, Callable[[Path], dict[str, Case]]] = {
    "symmetric": lambda tmp: {
        "c10": Case("symmetric", balanced(10), 10, c10_info(), exact=exact_symmetric),
        "c1000": Case("symmetric", balanced(1000), 1000, NoiseInfo(), exact=exact_symmetric)},
    "symmetric_exclusive": lambda tmp: {
        "c10": Case("symmetric_exclusive", balanced(10), 10, c10_info(), exact=exact_exclusive)},
    "pairflip": lambda tmp: {
        "c10": Case("pairflip", balanced(10), 10, c10_info(), rate=0.45),
        "c7": Case("pairflip", balanced(7), 7, NoiseInfo(dataset="other"), rate=0.2)},
    "asymmetric": build_asymmetric,
    "instance": lambda tmp: {
        "c10": Case("instance", balanced(10), 10, NoiseInfo(images=np.random.default_rng(1).integers(
            0, 256, (N, 4, 4, 3), dtype=np.uint8)), rate=0.3)},
    "cifar10n": lambda tmp: {
        "worst": real_case("cifar10n", tmp, "CIFAR-10_human.pt", C10_KEYS, "worse_label", 10),
        "rand2": real_case("cifar10n", tmp, "CIFAR-10_human.pt", C10_KEYS, "random_label2", 10,
                           label_set="rand2")},
    "cifar100n": lambda tmp: {
        "noisy": real_case("cifar100n", tmp, "cifar100n_labels.npz", ("noisy_label",), "noisy_label", 100)},
    "file": file_cases,
    "given": lambda tmp: {
        "given": Case("given", balanced(10, 2000), 10, NoiseInfo(given_noisy=balanced(10, 2000, seed=9)),
                      rate=0.0, random=False, fixed=True)},
}


def cases(name: str, tmp: Path) -> dict[str, Case]:
    if name not in BUILDERS:
        pytest.fail(f"no test fixture for noise generator '{name}'; add one to BUILDERS in tests/test_noise.py")
    return BUILDERS[name](tmp)


def assert_rows_match(clean: np.ndarray, noisy: np.ndarray, transition: np.ndarray, label: str) -> None:
    """Per clean class, a chi-square goodness-of-fit of the drawn labels against the intended row."""
    c = transition.shape[0]
    counts = np.zeros((c, c))
    np.add.at(counts, (clean, noisy), 1)
    for k in np.unique(clean):
        obs, exp = counts[k], counts[k].sum() * transition[k]
        assert obs[exp == 0].sum() == 0, f"{label}: class {k} drew labels its row forbids"
        big, small = exp >= 5, (exp > 0) & (exp < 5)
        o, e = np.append(obs[big], obs[small].sum()), np.append(exp[big], exp[small].sum())
        keep = e > 0
        if keep.sum() < 2:
            continue  # one possible outcome: already checked exactly above
        pvalue = stats.chisquare(o[keep], e[keep]).pvalue
        assert pvalue > ALPHA, f"{label}: class {k} p={pvalue:.2e} obs={o[keep]} exp={e[keep].round(1)}"


# ---------------------------------------------------------------- contract tests over every generator

NAMES = NOISE.names()


@pytest.mark.parametrize("name", NAMES)
def test_output_types_and_ranges(name, tmp_path):
    for cid, case in cases(name, tmp_path).items():
        out = case.run()
        assert out.labels.dtype == np.int64 and out.labels.shape == case.labels.shape, cid
        assert out.labels.min() >= 0 and out.labels.max() < case.num_classes, cid
        np.testing.assert_array_equal(out.is_noisy, out.labels != case.labels)
        t = out.transition
        assert t.dtype == np.float64 and t.shape == (case.num_classes,) * 2, cid
        assert (t >= 0).all() and np.allclose(t.sum(axis=1), 1.0), cid


@pytest.mark.parametrize("name", NAMES)
def test_seed_determinism(name, tmp_path):
    for cid, case in cases(name, tmp_path).items():
        a, b, other = case.run(seed=1), case.run(seed=1), case.run(seed=2)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert np.array_equal(a.labels, other.labels) != case.random, cid


@pytest.mark.parametrize("name", NAMES)
def test_exact_counts(name, tmp_path):
    for case in cases(name, tmp_path).values():
        if case.exact is not None:
            for seed in (0, 1):
                case.exact(case, case.run(seed=seed))


@pytest.mark.parametrize("name", NAMES)
def test_realized_transition_matches_intended(name, tmp_path):
    for cid, case in cases(name, tmp_path).items():
        out = case.run()
        assert out.is_noisy.any(), f"{cid}: no noise at rate {case.rate}"
        assert_rows_match(case.labels, out.labels, out.transition, f"{name}/{cid}")


@pytest.mark.parametrize("name", NAMES)
def test_rate_zero_and_invalid_rates(name, tmp_path):
    for cid, case in cases(name, tmp_path).items():
        if not case.fixed:
            out = case.run(rate=0.0)
            assert not out.is_noisy.any() and np.allclose(out.transition, np.eye(case.num_classes)), cid
        else:
            with pytest.raises(LnlError, match="use rate 0"):
                case.run(rate=0.2)
        for bad in (1.0, -0.1, float("nan")):
            with pytest.raises(LnlError, match=r"noise rate must be in \[0, 1\)"):
                case.run(rate=bad)


@pytest.mark.parametrize("name", NAMES)
def test_bad_labels_and_unknown_options(name, tmp_path):
    case = next(iter(cases(name, tmp_path).values()))
    with pytest.raises(LnlError, match=r"unknown option .no_such_option.*; known: "):
        case.run(options={**case.info.options, "no_such_option": 1})
    bad = dataclasses.replace(case, labels=np.append(case.labels[:-1], case.num_classes))
    with pytest.raises(LnlError, match="labels must lie in"):
        bad.run()


# ---------------------------------------------------------------- asymmetric specifics

def test_asymmetric_maps_by_class_name():
    order = np.random.default_rng(0).permutation(10)
    classes = tuple(CIFAR10_CLASSES[i] for i in order)  # same names, another index order
    y = balanced(10)
    for conv in ("dividemix", "elr", "moit"):
        out = NOISE.get("asymmetric")(y, 10, 0.4, np.random.default_rng(0),
                                      NoiseInfo(classes=classes, options={"convention": conv}))
        src = [classes[i] for i in y[out.is_noisy]]
        dst = [classes[i] for i in out.labels[out.is_noisy]]
        assert all(CIFAR10_ASYM[s] == d for s, d in zip(src, dst)), conv
        assert {classes[i] for i in np.unique(y[out.is_noisy])} == set(CIFAR10_ASYM), conv


def test_asymmetric_cifar100_maps():
    y = balanced(100)
    built = build_asymmetric(Path("."))
    elr, moit = built["elr-c100"], built["moit-c100"]
    out = elr.run()
    src, dst = y[out.is_noisy], out.labels[out.is_noisy]
    np.testing.assert_array_equal(dst, 5 * (src // 5) + (src % 5 + 1) % 5)
    out = moit.run()
    coarse = moit.info.coarse_labels
    src, dst = y[out.is_noisy], out.labels[out.is_noisy]
    for s, d in set(zip(src.tolist(), dst.tolist())):
        group = np.unique(y[coarse == coarse[y == s][0]])
        assert d == group[(np.searchsorted(group, s) + 1) % len(group)]


def test_asymmetric_errors():
    y, run = balanced(10, 1000), NOISE.get("asymmetric")
    rng = np.random.default_rng(0)
    with pytest.raises(LnlError, match="no class mapping for dataset 'digits'.*pairflip"):
        run(y, 10, 0.4, rng, NoiseInfo(dataset="digits", classes=tuple("0123456789")))
    with pytest.raises(LnlError, match="convention must be one of"):
        run(y, 10, 0.4, rng, c10_info(options={"convention": "coteaching"}))
    y100 = balanced(100, 1000)
    with pytest.raises(LnlError, match="DivideMix defines no CIFAR-100.*asymmetric:moit"):
        run(y100, 100, 0.4, rng, c100_info(y100))
    with pytest.raises(LnlError, match="coarse_labels"):
        run(y100, 100, 0.4, rng, NoiseInfo(classes=CIFAR100_CLASSES, options={"convention": "moit"}))


# ---------------------------------------------------------------- instance specifics

def test_instance_needs_images_and_hits_the_rate():
    case = BUILDERS["instance"](Path("."))["c10"]
    with pytest.raises(LnlError, match="needs the training images"):
        case.run(images=None)
    out = case.run()
    assert abs(out.realized_rate - case.rate) < 0.01  # mean of the truncated normal ≈ r for r = 0.3
    assert np.allclose(np.diag(out.transition).mean(), 1 - out.realized_rate, atol=0.01)
    with pytest.raises(LnlError, match="norm_std"):
        case.run(options={"norm_std": 0})


# ---------------------------------------------------------------- real-noise specifics

def test_cifar_n_file_errors(tmp_path):
    case = BUILDERS["cifar10n"](tmp_path)["worst"]
    with pytest.raises(LnlError, match=r"expected .*cifar-n/CIFAR-10_human\.pt.*UCSC-REAL/cifar-10-100n"):
        case.run(data_root=tmp_path / "elsewhere")
    with pytest.raises(LnlError, match="label file not found"):
        case.run(options={"label_file": str(tmp_path / "nope.pt")})
    with pytest.raises(LnlError, match="image order does not match the CIFAR-N file"):
        case.run(train_index=case.info.train_index[::-1].copy())
    with pytest.raises(LnlError, match="label_set must be one of"):
        case.run(options={"label_set": "clean"})


def test_cifar_n_aliases_and_npz_copy(tmp_path):
    case = BUILDERS["cifar10n"](tmp_path)["worst"]
    a = case.run(options={"label_set": "rand1"})
    np.testing.assert_array_equal(a.labels, case.run(options={"label_set": "random1"}).labels)
    arrays = load_label_file(tmp_path / "cifar-n" / "CIFAR-10_human.pt")
    np.savez(tmp_path / "copy.npz", **arrays)
    b = case.run(options={"label_set": "random1", "label_file": str(tmp_path / "copy.npz")})
    np.testing.assert_array_equal(a.labels, b.labels)


class NotALabel:
    """A custom class: loading it would need arbitrary pickle."""


class RunsOnLoad:
    """Unpickles as a call to ``open(path, "w")``: a plain torch.load would create the file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pt_loader_takes_arrays_and_lists_but_refuses_pickle(tmp_path):
    ok = {"clean_label": np.arange(5), "noisy_coarse_label": [1, 2, 3], "small": np.arange(3, dtype=np.uint8)}
    torch.save(ok, tmp_path / "ok.pt")
    loaded = load_label_file(tmp_path / "ok.pt")
    assert loaded["noisy_coarse_label"].tolist() == [1, 2, 3] and loaded["small"].dtype == np.int64
    torch.save({"clean_label": NotALabel()}, tmp_path / "evil.pt")
    with pytest.raises(LnlError, match="refusing to load .*NotALabel.*arbitrary pickle"):
        load_label_file(tmp_path / "evil.pt")
    marker = tmp_path / "pickle_ran"
    torch.save({"clean_label": RunsOnLoad(str(marker))}, tmp_path / "sneaky.pt")
    with pytest.raises(LnlError, match="refusing to load"):
        load_label_file(tmp_path / "sneaky.pt")
    assert not marker.exists()  # the pickled call was never made
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(LnlError, match="cannot read label file"):
        load_label_file(tmp_path / "junk.pt")


def test_given_needs_labels():
    case = BUILDERS["given"](Path("."))["given"]
    with pytest.raises(LnlError, match="needs noisy labels shipped with the dataset"):
        case.run(given_noisy=None)


def test_real_cifar_n_rates():
    """On the published files (when this machine has them): the rates the CIFAR-N paper reports."""
    if not all((SHARED_CIFAR_N / f).is_file() for f in ("CIFAR-10_human.pt", "CIFAR-100_human.pt")):
        pytest.skip(f"shared CIFAR-N files not present in {SHARED_CIFAR_N}")
    root = SHARED_CIFAR_N.parent
    c10 = load_label_file(SHARED_CIFAR_N / "CIFAR-10_human.pt")["clean_label"]
    expected = {"aggre": 9.01, "worst": 40.21, "random1": 17.23}
    for label_set, pct in expected.items():
        out = NOISE.get("cifar10n")(c10, 10, 0.0, np.random.default_rng(0),
                                    NoiseInfo(data_root=root, options={"label_set": label_set}))
        assert round(100 * out.realized_rate, 2) == pct, label_set
    c100 = load_label_file(SHARED_CIFAR_N / "CIFAR-100_human.pt")["clean_label"]
    out = NOISE.get("cifar100n")(c100, 100, 0.0, np.random.default_rng(0), NoiseInfo(data_root=root))
    assert round(100 * out.realized_rate, 2) == 40.20


def official_elr_cifar10_asym(labels: np.ndarray, rate: float, rs: np.random.RandomState) -> np.ndarray:
    """A direct transcription of the official loop's logic (ELR ``CIFAR10_train.asymmetric_noise``):
    for i in 0..9, shuffle the indices whose current label is i and relabel those at j < rate*len."""
    y = labels.copy()
    flip = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    for i in range(10):
        indices = np.where(y == i)[0]
        rs.shuffle(indices)
        for j, idx in enumerate(indices):
            if j < rate * len(indices) and i in flip:
                y[idx] = flip[i]
    return y


def test_asymmetric_elr_reproduces_the_official_cascade():
    """Per-class realized rates of asymmetric:elr at 0.4 match a simulation of the official loop on 50k
    balanced labels (cat ≈ 0.24, overall ≈ 0.184), within a binomial tolerance, and the returned
    transition is the cascade's expected one."""
    y, rate = balanced(10), 0.4
    ours = NOISE.get("asymmetric")(y, 10, rate, np.random.default_rng(0), c10_info(options={"convention": "elr"}))
    theirs = official_elr_cifar10_asym(y, rate, np.random.RandomState(0))
    n = N // 10
    for c in range(10):
        a, b = ours.is_noisy[y == c].mean(), (theirs != y)[y == c].mean()
        p = max(a, b, 1e-3)
        assert abs(a - b) <= 5 * np.sqrt(2 * p * (1 - p) / n), (CIFAR10_CLASSES[c], a, b)
        for k in range(10):  # the same destination classes too
            fa, fb = (ours.labels[y == c] == k).mean(), (theirs[y == c] == k).mean()
            assert abs(fa - fb) <= 5 * np.sqrt(2 * max(fa, fb, 1e-3) / n), (c, k)
    cat = CIFAR10_CLASSES.index("cat")
    assert abs(ours.is_noisy[y == cat].mean() - (rate - rate ** 2)) < 0.015  # 0.24, not 0.40
    assert abs(ours.is_noisy.mean() - (5 * rate - rate ** 2) / 10) < 0.003  # 0.184, not 0.20
    assert ours.transition[cat, cat] == pytest.approx(1 - (rate - rate ** 2))
    realized = np.array([[(ours.labels[y == c] == k).mean() for k in range(10)] for c in range(10)])
    np.testing.assert_allclose(realized, ours.transition, atol=0.015)
