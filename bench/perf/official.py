"""``lnlbench perf --compare-official DIR``: our DivideMix beside the official code, on identical noisy labels.

The user passes a checkout of github.com/LiJunnan1992/DivideMix (never vendored: nothing of it is in this
repository). :func:`check_official` refuses any other folder in one line. Both sides train the same network
on the same synthetic CIFAR-shaped images and the same noisy labels (ours, from our generator, written in the
official ``noise_file`` json format), with the same batch, lr, α, λ_u and threshold (the official defaults,
which are our ``paper`` recipe). The official loop runs in a child process (:mod:`.official_runner`, whose
docstring lists every patch), ours in this process through :func:`lnlbench.engine.build_trial` and the
method's ``train_epoch`` — the path figure 3 (method cost) times.

Figures per side: seconds per warm-up epoch; per DivideMix epoch, and inside it the division step (per-sample
loss pass and GMM, separately) and the MixMatch loop; seconds per MixMatch iteration. The labelled sets the
two GMMs pick differ (different seeds, different runs), so the loop is compared per iteration as well as per
epoch, and the epoch once more at equal labelled-set sizes (ours projected to the official iteration count).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.errors import LnlError

from .common import Sizes, host_values, median, timed, trial_config

REPO_URL = "https://github.com/LiJunnan1992/DivideMix"
# file -> what it must contain (the functions and classes the runner wraps or patches)
MARKERS = {
    "Train_cifar.py": ("def warmup(", "def eval_train(", "def train(", "GaussianMixture", "create_model",
                       "cifar_dataloader(", "for epoch in range("),
    "dataloader_cifar.py": ("class cifar_dataset", "class cifar_dataloader", "noise_file"),
    "PreResNet.py": ("def ResNet18(",),
}


def check_official(path: str | Path) -> Path:
    """``path`` as a checkout of the official DivideMix code, or an :class:`LnlError` of one line naming the fix."""
    p = Path(path)
    fix = f"pass a clone of {REPO_URL} (git clone {REPO_URL})"
    if not p.is_dir():
        raise LnlError(f"--compare-official {path}: no such folder; {fix}")
    missing = [f for f in MARKERS if not (p / f).is_file()]
    if missing:
        raise LnlError(f"--compare-official {path}: not the official DivideMix code (no {', '.join(missing)}); {fix}")
    for name, marks in MARKERS.items():
        text = (p / name).read_text(errors="replace")
        lacking = [m for m in marks if m not in text]
        if lacking:
            raise LnlError(f"--compare-official {path}: {name} is not the official one (it lacks {lacking[0]!r}); "
                           f"{fix}")
    return p


# -- the official data format ----------------------------------------------------------------------------
def noise_file_path(folder: Path, rate: float, mode: str = "sym") -> Path:
    """Where Train_cifar.py looks for its noise file: ``'%s/%.1f_%s.json' % (data_path, r, noise_mode)``."""
    return folder / f"{rate:.1f}_{mode}.json"


def write_noise_file(folder: Path, labels: np.ndarray, rate: float, mode: str = "sym") -> Path:
    """The noisy labels as the official ``noise_file``: a json list of ints, one per training image in order."""
    path = noise_file_path(folder, rate, mode)
    path.write_text(json.dumps([int(v) for v in np.asarray(labels).ravel()]))
    return path


def write_cifar_batches(folder: Path, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Images (N, 3, 32, 32) uint8 and clean labels in the CIFAR-10 python format the official loader unpickles:
    ``data_batch_1..5`` and ``test_batch``, each a dict with ``data`` (n, 3072) and ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = zip(np.array_split(np.asarray(x), 5), np.array_split(np.asarray(y), 5))
    for i, (xb, yb) in enumerate(parts, 1):
        batch = {"data": xb.reshape(len(xb), -1), "labels": yb.tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.asarray(x_test).reshape(len(x_test), -1),
                                                     "labels": np.asarray(y_test).tolist()}))


# -- the arithmetic --------------------------------------------------------------------------------------
def summarise(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures from its per-epoch records (``epoch_s``, ``phase``, and per call lists ``warmup``,
    ``eval_train``, ``gmm``, ``train``, ``iterations``, ``labeled``): medians over the timed epochs, the first
    epoch of each phase dropped when the phase has more than one (first-call costs); the iterations per epoch
    are their mean and the seconds per iteration the loop's total ÷ the iterations' total."""
    def timed_of(phase: str) -> list[dict[str, Any]]:
        rows = [e for e in epochs if e["phase"] == phase]
        return rows[1:] if len(rows) > 1 else rows

    warm, dmx = timed_of("warmup"), timed_of("dividemix")
    out: dict[str, Any] = {"warmup_epoch_s": median([e["epoch_s"] for e in warm]) if warm else None}
    if dmx:
        per = [{"epoch": e["epoch_s"], "division": sum(e.get("eval_train", [])), "gmm": sum(e.get("gmm", [])),
                "mixmatch": sum(e.get("train", [])), "iterations": sum(e.get("iterations", []))} for e in dmx]
        for p in per:
            p["loss_pass"] = p["division"] - p["gmm"]
            p["other"] = p["epoch"] - p["division"] - p["mixmatch"]
        out.update({f"{k}_s": median([p[k] for p in per]) for k in ("division", "loss_pass", "gmm", "mixmatch",
                                                                     "other")})
        out["dividemix_epoch_s"] = median([p["epoch"] for p in per])
        # pooled over the timed epochs: the iteration counts differ from epoch to epoch
        out["iterations"] = sum(p["iterations"] for p in per) / len(per)
        out["mixmatch_iteration_s"] = sum(p["mixmatch"] for p in per) / max(1, sum(p["iterations"] for p in per))
        out["labeled"] = [e.get("labeled", []) for e in dmx]
    return out


RATIO_KEYS = ("warmup_epoch_s", "dividemix_epoch_s", "division_s", "loss_pass_s", "gmm_s", "mixmatch_s",
              "mixmatch_iteration_s")


def ratios(ours: dict[str, Any], official: dict[str, Any]) -> dict[str, float | None]:
    """Ours ÷ official per figure (below 1: ours is faster), and the DivideMix epoch at equal labelled-set sizes:
    our division and other costs plus our seconds per iteration × the official iteration count."""
    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    out = {k[:-2]: div(ours.get(k), official.get(k)) for k in RATIO_KEYS}
    if ours.get("dividemix_epoch_s") is not None and official.get("dividemix_epoch_s"):
        equal = ours["division_s"] + ours["other_s"] + ours["mixmatch_iteration_s"] * official["iterations"]
        out["dividemix_epoch_equal_labeled"] = equal / official["dividemix_epoch_s"]
    return out


# -- the two sides ---------------------------------------------------------------------------------------
def measure_ours(trial: Any, warm_up: int, epochs: int) -> list[dict[str, Any]]:
    """Per-epoch records of our DivideMix (the trial's ``train_epoch``; ``_divide``, the GMM and
    ``_train_net`` timed inside it, in this process only)."""
    from lnlbench.methods import dividemix as dmx

    m, dev, rec = trial.method, trial.device, {}

    def timer(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            box: list[Any] = []
            rec.setdefault(name, []).append(timed(lambda: box.append(fn(*args, **kwargs)), dev))
            if name == "train":
                n = int(box[0][2])
                rec.setdefault("labeled", []).append(n)
                rec.setdefault("iterations", []).append(-(-n // m.hp.batch_size))
            return box[0]
        return wrapped

    gmm = dmx.gmm_clean_probability
    m._divide, m._train_net = timer("eval_train", m._divide), timer("train", m._train_net)
    dmx.gmm_clean_probability = timer("gmm", gmm)
    out = []
    try:
        for epoch in range(warm_up + epochs):
            rec.clear()
            dt = timed(lambda e=epoch: host_values(m.train_epoch(e)), dev)
            out.append({"epoch": epoch, "phase": "warmup" if epoch < warm_up else "dividemix", "epoch_s": dt,
                        **{k: list(v) for k, v in rec.items()}})
    finally:
        dmx.gmm_clean_probability = gmm
        del m._divide, m._train_net
    return out


def run_official(repo: Path, work: Path, trial: Any, device: str, warm_up: int, epochs: int,
                 workers: int | None) -> dict[str, Any]:
    """The official loop in a child process on the trial's images and noisy labels; its per-epoch records."""
    data, x_test = work / "official-data", trial.data.info.x_test
    x = trial.ctx.train.x.cpu().numpy()
    write_cifar_batches(data, x, trial.data.clean, np.transpose(x_test, (0, 3, 1, 2)), trial.data.info.y_test)
    write_noise_file(data, trial.ctx.train.y.cpu().numpy(), trial.trial.config.rate)
    hp = trial.trial.hparams
    cfg = {"repo": str(repo), "data": str(data), "work": str(work), "out": str(work / "official.json"),
           "device": str(trial.device), "model": hp.model, "model_kwargs": dict(hp.model_kwargs), "n": len(x),
           "n_test": len(x_test), "rate": trial.trial.config.rate, "batch_size": hp.batch_size, "lr": hp.lr,
           "warm_up": warm_up, "epochs": epochs, "workers": workers}
    (work / "official-config.json").write_text(json.dumps(cfg))
    log = work / "official.log"
    with open(log, "w") as fh:
        cmd = [sys.executable, "-m", "lnlbench.perf.official_runner", str(work / "official-config.json")]
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode:
        tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1][-300:]
        raise RuntimeError(f"the official DivideMix run failed (exit {proc.returncode}): {tail}")
    return json.loads((work / "official.json").read_text())


def compare_official(repo: str | Path, sizes: Sizes, device: str, warm_up: int = 2, epochs: int = 3,
                     workers: int | None = None, log: Any = print) -> dict[str, Any]:
    """Both sides on ``sizes.n_official`` images; their figures and ratios (see the module docstring)."""
    from lnlbench.engine import build_trial

    from .official_runner import PATCHES

    repo = check_official(repo)
    with tempfile.TemporaryDirectory(prefix="lnlbench-official-") as tmp:
        work = Path(tmp)
        n = sizes.n_official
        trial = build_trial(trial_config(work, sizes, "dividemix", device, n, "official-ours", {"warm_up": warm_up}))
        patches = PATCHES.format(model=sizes.model, n=n, warm_up=warm_up) + (
            f"; loader workers {workers} (official 5)" if workers is not None else "")
        log(f"perf: official DivideMix from {repo}, patched: {patches}")
        t = time.perf_counter()
        official = run_official(repo, work, trial, device, warm_up, epochs, workers)
        official_s = time.perf_counter() - t
        ours = measure_ours(trial, warm_up, epochs)
    o, f = summarise(ours), summarise(official["epochs"])
    return {"ours": o, "official": f, "ratios": ratios(o, f), "patches": patches, "repo": str(repo), "n_train": n,
            "model": sizes.model, "model_kwargs": sizes.model_kwargs, "batch_size": trial.trial.hparams.batch_size,
            "warm_up": warm_up, "epochs": epochs, "official_workers": official["workers"],
            "official_run_s": official_s, "samples": {"ours": ours, "official": official["epochs"]}}
