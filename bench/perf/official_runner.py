"""The child process of ``lnlbench perf --compare-official``: the official DivideMix loop, patched and timed.

Run as ``python -m lnlbench.perf.official_runner CONFIG.json`` (written by :mod:`.official`). It imports the
user's checkout of github.com/LiJunnan1992/DivideMix from its folder (``sys.path``) and never writes to it.
What it changes, all in this process's memory (:data:`PATCHES` is the text ``lnlbench perf`` prints):

- device calls: ``torch.Tensor.cuda`` / ``nn.Module.cuda`` move to the measured device (``torch.cuda.set_device``
  is a no-op off CUDA);
- network factory: ``PreResNet.ResNet18`` builds our registered network (``cnn_small`` or the given model);
- dataset size: the literals 50000 / 10000 (CIFAR-10's train / test sizes) in ``Train_cifar.py`` and
  ``dataloader_cifar.py`` become N / the test size, parsed and compiled from the files' source; the data
  folder holds our images in the CIFAR python-pickle format and our noisy labels as the official
  ``noise_file`` json, so the official loader reads them and injects nothing;
- schedule: ``warm_up`` (10 for CIFAR-10) becomes the measured warm-up epochs; the official ``test()`` is
  not run (neither side's timing includes evaluation);
- compatibility only: ``DataLoader`` iterators get the ``.next()`` the 2019 code calls (removed from torch),
  and ``torchnet.meter.AUCMeter`` (used for a log line) is a small stand-in where torchnet is not installed.

The official loop body (``for epoch in range(num_epochs + 1): ...``) runs unchanged, one epoch at a time;
``warmup``, ``eval_train``, ``train`` and the GMM's ``fit``/``predict_proba`` are wrapped with timers by name.
"""
from __future__ import annotations

import ast
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PATCHES = ("device calls (.cuda() -> device), network factory (-> our {model} or the given model), dataset size "
           "(subset {n} images, identical noisy labels written from our generator in the official noise_file json "
           "format); schedule: warm_up {warm_up}, test() not run; compat: DataLoader iterator .next(), "
           "torchnet AUCMeter stand-in if torchnet is absent")


class _Literals(ast.NodeTransformer):
    """Replaces integer literals (the dataset sizes) by others."""

    def __init__(self, swap: dict[int, int]):
        self.swap = swap

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is int and node.value in self.swap:
            return ast.copy_location(ast.Constant(self.swap[node.value]), node)
        return node


def patched_tree(path: Path, swap: dict[int, int]) -> ast.Module:
    return ast.fix_missing_locations(_Literals(swap).visit(ast.parse(path.read_text(), str(path))))


def split_main_loop(tree: ast.Module) -> tuple[ast.Module, ast.For]:
    """(everything before it, the final ``for epoch in ...`` loop) of Train_cifar.py."""
    for i in range(len(tree.body) - 1, -1, -1):
        node = tree.body[i]
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == "epoch":
            return ast.Module(body=tree.body[:i], type_ignores=[]), node
    raise SystemExit("Train_cifar.py: no top-level `for epoch in ...` loop")


class _AUCMeter:
    """torchnet.meter.AUCMeter's interface (reset/add/value), by sklearn's ROC AUC."""

    def reset(self) -> None:
        self.p, self.t = [], []

    def add(self, p: Any, t: Any) -> None:
        self.p.append(np.asarray(p, float).ravel())
        self.t.append(np.asarray(t).ravel())

    def value(self) -> tuple[float, None, None]:
        from sklearn.metrics import roc_auc_score

        t, p = np.concatenate(self.t), np.concatenate(self.p)
        return (float(roc_auc_score(t, p)) if 0 < t.sum() < len(t) else float("nan")), None, None


def install_patches(cfg: dict[str, Any], device: torch.device) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)
    nn.Module.cuda = lambda self, *a, **k: self.to(device)
    if device.type != "cuda":
        torch.cuda.set_device = lambda *a, **k: None
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    if not hasattr(_BaseDataLoaderIter, "next"):
        _BaseDataLoaderIter.next = _BaseDataLoaderIter.__next__
    try:
        import torchnet.meter  # noqa: F401
    except ImportError:
        meter = types.ModuleType("torchnet.meter")
        meter.AUCMeter = _AUCMeter
        sys.modules["torchnet"], sys.modules["torchnet.meter"] = types.ModuleType("torchnet"), meter

    import PreResNet  # the user's file, found through sys.path

    from lnlbench.registry import MODELS

    def factory(num_classes: int = 10) -> nn.Module:
        return MODELS.get(cfg["model"])(num_classes=num_classes, in_channels=3, image_size=32, **cfg["model_kwargs"])

    PreResNet.ResNet18 = factory  # before Train_cifar's `from PreResNet import *`


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    repo, device = Path(cfg["repo"]).resolve(), torch.device(cfg["device"])
    sys.path.insert(0, str(repo))
    install_patches(cfg, device)
    swap = {50000: cfg["n"], 10000: cfg["n_test"]}
    loader_mod = types.ModuleType("dataloader_cifar")
    loader_mod.__file__ = str(repo / "dataloader_cifar.py")
    exec(compile(patched_tree(repo / "dataloader_cifar.py", swap), loader_mod.__file__, "exec"), loader_mod.__dict__)
    sys.modules["dataloader_cifar"] = loader_mod
    prefix, loop = split_main_loop(patched_tree(repo / "Train_cifar.py", swap))
    sys.argv = ["Train_cifar.py", "--dataset", "cifar10", "--data_path", cfg["data"], "--r", str(cfg["rate"]),
                "--noise_mode", "sym", "--batch_size", str(cfg["batch_size"]), "--lr", str(cfg["lr"]),
                "--num_epochs", str(cfg["warm_up"] + cfg["epochs"])]
    os.chdir(cfg["work"])
    Path("checkpoint").mkdir(exist_ok=True)
    ns: dict[str, Any] = {"__name__": "__main__", "__file__": str(repo / "Train_cifar.py")}
    exec(compile(prefix, ns["__file__"], "exec"), ns)
    ns["warm_up"] = cfg["warm_up"]
    if cfg.get("workers") is not None:
        ns["loader"].num_workers = cfg["workers"]
    rec: dict[str, list[Any]] = {}

    def timer(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            _sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            rec.setdefault(name, []).append(time.perf_counter() - t0)
            if name == "train":  # (epoch, net, net2, optimizer, labeled_trainloader, unlabeled_trainloader)
                rec.setdefault("iterations", []).append(len(args[4]))
                rec.setdefault("labeled", []).append(len(args[4].dataset))
            return out
        return wrapped

    for name in ("warmup", "eval_train", "train"):
        ns[name] = timer(name, ns[name])
    gmm = ns["GaussianMixture"]
    gmm.fit, gmm.predict_proba = timer("gmm", gmm.fit), timer("gmm", gmm.predict_proba)
    ns["test"] = lambda *a, **k: None
    body = compile(ast.Module(body=loop.body, type_ignores=[]), ns["__file__"], "exec")
    epochs = []
    for epoch in range(cfg["warm_up"] + cfg["epochs"]):
        rec.clear()
        ns["epoch"] = epoch
        _sync(device)
        t0 = time.perf_counter()
        exec(body, ns)
        _sync(device)
        epochs.append({"epoch": epoch, "phase": "warmup" if epoch < cfg["warm_up"] else "dividemix",
                       "epoch_s": time.perf_counter() - t0, **{k: list(v) for k, v in rec.items()}})
    Path(cfg["out"]).write_text(json.dumps({"epochs": epochs, "workers": ns["loader"].num_workers,
                                            "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main(sys.argv[1])
