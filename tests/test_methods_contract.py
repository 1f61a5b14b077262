"""Contract tests over EVERY registered method: a new method is tested here for free.

Each runs a few CPU epochs on a small digits subset with its ``mini`` preset and its ``SMOKE`` overrides
(which bring warm-ups, ramps and first pruning passes within those epochs): finite losses, test accuracy in
range, the main phase reached, the same seed gives the same result, and a resumed trial's next epoch equals
the uninterrupted one (the ``smoke_trial`` fixture in conftest.py). Every preset of every method builds, and
no method can reach the clean labels or the noise mask.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import Method
from lnlbench.data import TrialData
from lnlbench.engine import Trial
from lnlbench.errors import LnlError
from lnlbench.hparams import build_hparams, lookup_recipe, preset_overrides
from lnlbench.registry import DATASETS, METHODS, MODELS, NOISE
from lnlbench.types import DatasetInfo


def _hist(res):
    return res["history"]


def _is_loss_correction(res: dict) -> bool:
    """Forward/Backward: the CE stage without an estimate, then the corrected stage with one scored."""
    first, rest = _hist(res)[0], _hist(res)[1:]
    return (first["stage"] == "ce" and "transition_mae" not in first and first["holdout_ce"] > 0
            and all(r["stage"] == "corrected" and 0 <= r["transition_mae"] < 1 for r in rest))


# What a smoke run of a method with SMOKE overrides must show: its main phase was reached (and, before it,
# the warm-up phase where the method has one). Keyed by registry name; every method with SMOKE needs one.
MAIN_PHASE: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "dividemix": ("warm-up in epoch 0, then co-divide (selection scored) and MixMatch (lx logged)",
                  lambda res: "selection" not in _hist(res)[0] and "lx" not in _hist(res)[0]
                  and all(r.get("selection") is not None and "lx" in r for r in _hist(res)[1:])),
    "gce": ("plain L_q in epoch 0, then pruned samples (selection scored, 0 < kept fraction < 1)",
            lambda res: "selection" not in _hist(res)[0] and _hist(res)[0]["kept_fraction"] == 1
            and all("selection" in r and 0 < r["kept_fraction"] < 1 for r in _hist(res)[1:])),
    "coteaching": ("R(T) ramping in epoch 0, then the full forget rate τ > 0, and Adam's lr decay",
                   lambda res: _hist(res)[0]["forget_rate"] < _hist(res)[0]["tau"]
                   and all(r["forget_rate"] == r["tau"] > 0 for r in _hist(res)[1:])
                   and _hist(res)[-1]["lr"] < res["hparams"]["lr"]),
    "coteaching_plus": ("Co-teaching in epoch 0, then the disagreement phase with the full forget rate τ > 0",
                        lambda res: _hist(res)[0]["phase"] == "coteaching"
                        and _hist(res)[0]["forget_rate"] < _hist(res)[0]["tau"]
                        and all(r["phase"] == "coteaching+" and r["forget_rate"] == r["tau"] > 0
                                and "disagreement" in r for r in _hist(res)[1:])),
    "jocor": ("R(T) ramping in epoch 0, then the full forget rate τ > 0 on the joint loss, co-regularised",
              lambda res: _hist(res)[0]["forget_rate"] < _hist(res)[0]["tau"]
              and all(r["forget_rate"] == r["tau"] > 0 and r["co_reg"] > 0 for r in _hist(res)[1:])
              and _hist(res)[-1]["lr"] < res["hparams"]["lr"]),
    "peer_loss": ("plain (stable) CE with α = 0 in epoch 0, then the peer term with α > 0 and lr / (1 + α)",
                  lambda res: _hist(res)[0]["alpha"] == 0 and _hist(res)[0]["peer"] == 0
                  and all(r["alpha"] > 0 and r["peer"] > 0
                          and r["lr"] == pytest.approx(res["hparams"]["lr"] / (1 + r["alpha"]))
                          for r in _hist(res)[1:])),
    "car": ("one-hot targets in epoch 0, then target estimation (targets_updated) with τ scored as selection",
            lambda res: not _hist(res)[0]["targets_updated"]
            and all(r["targets_updated"] and r.get("selection") is not None for r in _hist(res)[1:])),
    "car_aux": ("as car, with the auxiliary reverse-CE term (β > 0, rce logged)",
                lambda res: res["hparams"]["beta"] > 0 and not _hist(res)[0]["targets_updated"]
                and all(r["targets_updated"] and r["rce"] > 0 for r in _hist(res)[1:])),
    "moit": ("mixup CE without memory in epoch 0, then the cross-batch memory and the semi-supervised loss, "
             "with the kNN detection scored every epoch",
             lambda res: _hist(res)[0]["phase"] == "mixup-ce" and _hist(res)[0]["memory"] == 0
             and all(r["phase"] == "ssl" and r["memory"] == 1 and r.get("selection") is not None
                     for r in _hist(res)[1:])),
    "moit_plus": ("the MOIT stage (memory, semi-supervised loss), then MOIT+ on the detected-clean samples",
                  lambda res: [r["stage"] for r in _hist(res)] == ["moit", "moit", "moit+"]
                  and _hist(res)[1]["phase"] == "ssl" and 0 < _hist(res)[2]["plus_samples"]),
    "mlnt": ("the CE start in epoch 0, then MLNT: meta-steps on synthetic neighbour labels (meta_loss logged)",
             lambda res: _hist(res)[0]["phase"] == "pretrain" and "meta_loss" not in _hist(res)[0]
             and all(r["phase"] == "mlnt" and r["meta_fraction"] > 0 and r["meta_loss"] > 0
                     for r in _hist(res)[1:])),
    "tssd": ("warm-up in epoch 0, then PSD + MSP (distilled, certain, mined sets scored), MixMatch (lx logged)",
             lambda res: "selection" not in _hist(res)[0] and "lx" not in _hist(res)[0]
             and all(r.get("selection") is not None and "lx" in r and r["certain_clean"] > 0
                     and set(r.get("selection_sets", {})) == {"certain", "mined"} for r in _hist(res)[1:])),
    "disc": ("two-view CE in epoch 0, then the clean / hard / purified losses on the sets (clean scored)",
             lambda res: _hist(res)[0]["phase"] == "warmup"
             and all(r["phase"] == "disc" and r.get("selection") is not None and r["clean_fraction"] > 0
                     for r in _hist(res)[1:])),
    "pes": ("CE in epoch 0, the layer-wise refinement in epoch 1, then CE on the confident set (selection scored)",
            lambda res: [r["phase"] for r in _hist(res)] == ["ce", "refine", "confident"]
            and "selection" not in _hist(res)[1] and _hist(res)[2].get("selection") is not None
            and 0 < _hist(res)[2]["confident_fraction"] < 1),
    "pes_semi": ("CE in epoch 0, then the head refinement and MixMatch on the confident/unconfident split",
                 lambda res: [r["phase"] for r in _hist(res)] == ["ce", "mixmatch", "mixmatch"]
                 and "refine_loss" in _hist(res)[1] and all(r.get("selection") is not None and r["lx"] > 0
                                                            for r in _hist(res)[1:])),
    "unicon": ("warm-up in epoch 0, then the JSD uniform selection (scored), MixMatch and the contrastive loss",
               lambda res: "selection" not in _hist(res)[0] and "lx" not in _hist(res)[0]
               and all(r.get("selection") is not None and r["lx"] > 0 and r["lcon"] > 0
                       and 0 < r["labeled_fraction"] < 1 for r in _hist(res)[1:])),
    "promix": ("CE warm-up in epoch 0, then CSS + MHCS selection (scored) and the debiased two-head losses",
               lambda res: "selection" not in _hist(res)[0] and "rho" not in _hist(res)[0]
               and all(r.get("selection") is not None and 0 < r["chosen_fraction"] < 1 and r["loss"] > 0
                       for r in _hist(res)[1:])),
    "forward": ("CE in epoch 0 (held-out CE logged), then T estimated (transition_mae scored) and the corrected "
                "network trained", lambda res: _is_loss_correction(res)),
    "backward": ("as forward, with the backward-corrected loss", lambda res: _is_loss_correction(res)),
    "t_revision": ("one epoch per stage: CE, then importance reweighting with the anchor estimate T̂ scored, then "
                   "the revision of T̂ + ΔT (ΔT moved off zero, scored)",
                   lambda res: [r["stage"] for r in _hist(res)] == ["estimate", "reweight", "revision"]
                   and "transition_mae" not in _hist(res)[0]
                   and all(0 <= r["transition_mae"] < 1 for r in _hist(res)[1:]) and _hist(res)[2]["slack_abs"] > 0),
    "elr_plus": ("the EMA decay at ema_alpha (its ramp done)",
                 lambda res: all(r["ema_decay"] == pytest.approx(res["hparams"]["ema_alpha"])
                                 for r in _hist(res))),
}


@pytest.mark.parametrize("method", METHODS.names())
def test_method_has_mini_preset_and_docstring(method):
    cls = METHODS.get(method)
    assert "digits" in cls.PRESETS.get("mini", {}), f"{method} needs a mini preset for digits"
    assert "paper" in cls.PRESETS, f"{method} needs a paper preset"
    module = __import__(cls.__module__, fromlist=["_"])
    assert module.__doc__ and "eviation" in module.__doc__, f"{method}'s module docstring must list deviations"


def test_every_smoke_override_says_what_it_reaches():
    with_smoke = {m for m in METHODS.names() if getattr(METHODS.get(m), "SMOKE", {})}
    assert with_smoke == set(MAIN_PHASE), "add the method's main-phase check to MAIN_PHASE (or drop its SMOKE)"
    for m in with_smoke:
        build_hparams(METHODS.get(m).Hparams, METHODS.get(m).SMOKE)  # the overrides name real fields


@pytest.mark.parametrize("method", METHODS.names())
def test_method_contract(smoke_trial, method):
    a = smoke_trial(method)
    for rec in a["history"]:
        assert 0.0 <= rec["test_acc"] <= 1.0
        for key, val in rec.items():
            if isinstance(val, float):
                assert math.isfinite(val), f"{method}: {key} is not finite at epoch {rec['epoch']}"
    if method in MAIN_PHASE:
        what, reached = MAIN_PHASE[method]
        assert reached(a), f"{method}'s smoke run did not reach its main phase ({what}): {a['history']}"


# -- presets ---------------------------------------------------------------------------------------
def _parse_key(key: str) -> tuple[str, str | None, str | None]:
    """``dataset``, ``dataset/noise`` or ``dataset/noise@rate`` → (dataset, noise, rate text)."""
    dataset, _, rest = key.partition("/")
    noise, _, rate = rest.partition("@")
    return dataset, noise or None, rate or None


def _missing(cls: type, preset: str, key: str) -> list[str]:
    """What of the cell ``key`` is not registered (or can never match a trial), without resolving it."""
    dataset, noise, rate = _parse_key(key)
    problems = [] if dataset in DATASETS else [f"dataset '{dataset}'"]
    if noise is not None and noise not in NOISE:
        problems.append(f"noise '{noise}'")
    if rate is not None:
        try:
            if f"{float(rate):g}" != rate:  # preset lookups format the trial's rate with :g
                problems.append(f"rate '{rate}' (write it as {float(rate):g})")
        except ValueError:
            problems.append(f"rate '{rate}'")
    over = preset_overrides(cls.PRESETS, preset, dataset, noise or "symmetric", None if rate is None else
                            float(rate))
    model = over.get("model", cls.Hparams.model)
    if model not in MODELS:
        problems.append(f"model '{model}'")
    return problems


def _cells():
    for method in METHODS.names():
        cls = METHODS.get(method)
        for preset, table in cls.PRESETS.items():
            for key in table:
                yield pytest.param(method, preset, key, id=f"{method}-{preset}-{key}")


@pytest.mark.parametrize(("method", "preset", "key"), list(_cells()))
def test_every_preset_builds(tmp_path, method, preset, key):
    """Each preset key names registered parts and its hyperparameters build; or it is marked as waiting."""
    cls = METHODS.get(method)
    waiting = getattr(cls, "WAITING", {})
    problems = _missing(cls, preset, key)
    if key in waiting:
        assert problems, f"{method}: '{key}' is marked as waiting but nothing is missing; drop its WAITING entry"
    else:
        assert not problems, (f"{method}'s {preset} preset '{key}' names unregistered {', '.join(problems)}; "
                              f"register them or mark the key in {method}'s WAITING")
    dataset, noise, rate = _parse_key(key)
    noise = noise or ("given" if dataset in ("clothing1m", "webvision") else "symmetric")
    fixed = getattr(NOISE.get(noise), "fixed_rate", False) if noise in NOISE else False
    rate = None if fixed else (float(rate) if rate else 0.4)
    lookup = lookup_recipe(cls.PRESETS, preset, dataset, noise, rate)
    pool = lookup.protocol.train_pool  # a recipe that needs a bigger pool than the loader's cap asks for it
    data_options = {"max_train": pool} if pool is not None and dataset == "clothing1m" else {}
    cfg = TrialConfig(method=method, dataset=dataset, noise=noise, rate=rate, preset=preset,
                      data_options=data_options, out_dir=str(tmp_path))
    if key in waiting:
        with pytest.raises(LnlError, match="cannot run yet") as err:
            resolve(cfg)
        assert "\n" not in str(err.value) and waiting[key] in str(err.value)
        return
    trial = resolve(cfg)
    hp = trial.hparams
    assert hp.model in MODELS
    for name, val in lookup.hparams.items():  # every preset value arrives (none swallowed on the way)
        want = tuple(val) if isinstance(val, list) else val
        assert getattr(hp, name) == want, f"{method} {preset} '{key}': {name} is {getattr(hp, name)!r}"
    for name, val in lookup.protocol.set_fields().items():  # and so does the trial protocol
        if name != "train_pool":
            assert getattr(trial, name) == val, f"{method} {preset} '{key}': protocol {name} is lost"


def test_asking_for_a_waiting_cell_names_what_is_missing(tmp_path, monkeypatch):
    # nothing waits since mini-WebVision landed: a cell marked for the test shows the mechanism
    monkeypatch.setattr(METHODS.get("dividemix"), "WAITING", {"webvision": "model 'x' is not registered yet"})
    with pytest.raises(LnlError, match="webvision.*cannot run yet.*not registered yet") as err:
        resolve(TrialConfig(method="dividemix", dataset="webvision", noise="given", out_dir=str(tmp_path)))
    assert "\n" not in str(err.value) and "model 'x'" in str(err.value)


# -- no leaks --------------------------------------------------------------------------------------
def _walk(obj, seen, depth=0):
    """Yield every object reachable from a method's attributes (modules, tensors, containers)."""
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, torch.nn.Module):
        return  # parameters are the method's own
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    elif hasattr(obj, "__dataclass_fields__"):
        children = [getattr(obj, f) for f in obj.__dataclass_fields__]
    else:
        children = []
    for child in children:
        yield from _walk(child, seen, depth + 1)


def _assert_no_truth(trial: Trial) -> None:
    """No clean label of the train set (nor of the whole dataset), nor the noise mask, is reachable; the
    golden set's clean labels are, only for a method that declares ``uses_clean_data``."""
    clean, golden, everything = trial.data.clean, trial.data.golden_y, trial.data.info.y_train
    declared = trial.trial.method_cls.uses_clean_data
    if declared:
        assert np.array_equal(trial.ctx.golden.y.cpu().numpy(), golden)
        assert np.intersect1d(trial.data.golden_idx, trial.data.train_idx).size == 0
    else:
        assert trial.ctx.golden is None, "a method that does not declare uses_clean_data got a golden set"
    for obj in _walk(trial.method, set()):
        assert not isinstance(obj, (DatasetInfo, TrialData)), "the method can reach the dataset's truth"
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        if not isinstance(arr, np.ndarray):
            continue
        if arr.shape == clean.shape:
            assert not np.array_equal(arr, clean), "a clean-label array is reachable from the method"
            assert not np.array_equal(arr.astype(bool), trial.data.is_noisy), "the noise mask is reachable"
        if arr.shape == everything.shape:
            assert not np.array_equal(arr, everything), "the dataset's clean labels are reachable"
        if not declared and len(golden) and arr.shape == golden.shape:
            assert not np.array_equal(arr, golden), "the golden clean labels reach an undeclaring method"


@pytest.mark.parametrize("golden", [None, 5])
@pytest.mark.parametrize("method", METHODS.names())
def test_method_cannot_reach_clean_labels(tmp_path, method, golden):
    """Neither at setup nor after its smoke epochs (main phase: divisions, weights, targets) can a method
    reach the clean labels or the noise mask; in a cell with a golden set (``golden`` per class), only a
    method that declares ``uses_clean_data`` holds it, and only its clean labels."""
    cls = METHODS.get(method)
    if golden is None and cls.uses_clean_data:
        golden = 10  # a golden method always has one (its recipe's)
    cfg = TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.6, seed=0, epochs=3, subset=16,
                      preset="mini", hparams={**getattr(cls, "SMOKE", {}), "batch_size": 32},
                      out_dir=str(tmp_path / "runs"), golden_per_class=golden)
    trial = Trial(resolve(cfg), None)
    trial.build()
    assert (trial.data.noisy != trial.data.clean).mean() > 0.3
    assert isinstance(trial.method, Method)
    _assert_no_truth(trial)
    for epoch in range(cfg.epochs):
        trial.method.train_epoch(epoch)
    _assert_no_truth(trial)
