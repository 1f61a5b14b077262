"""Registries: decorators, duplicate names, unknown names with suggestions, entry-point plugins."""
from __future__ import annotations

import importlib.metadata

import pytest

from lnlbench.errors import LnlError
from lnlbench.registry import DATASETS, METHODS, MODELS, NOISE, Registry


def test_builtins_are_registered():
    assert "ce" in METHODS.names()
    assert "digits" in DATASETS.names()
    assert {"symmetric", "symmetric_exclusive", "asymmetric", "pairflip", "instance",
            "cifar10n", "cifar100n"} <= set(NOISE.names())
    assert {"preact_resnet18", "resnet34", "resnet50", "mlp"} <= set(MODELS.names())


def test_every_entry_has_a_one_line_description():
    for reg in (METHODS, NOISE, DATASETS, MODELS):
        for name, desc in reg.describe():
            assert desc and "\n" not in desc, f"{reg.kind} {name} has no one-line docstring"


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(LnlError) as err:
        METHODS.get("cee")
    msg = str(err.value)
    assert "\n" not in msg and "did you mean 'ce'" in msg and "known methods: " in msg


def test_duplicate_name_is_an_error():
    reg = Registry("method", "lnlbench.test.none")
    reg._loaded = True
    reg.register("a", object())
    with pytest.raises(LnlError, match="duplicate method name 'a'"):
        reg.register("a", object())


def test_entry_point_plugin_registers(monkeypatch):
    class Plugin:
        """A plugin method from another package."""

    ep = importlib.metadata.EntryPoint(name="plugin_x", value="some.module:Plugin", group="lnlbench.methods")
    monkeypatch.setattr(importlib.metadata.EntryPoint, "load", lambda self: Plugin)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == "lnlbench.methods" else real(group=group))
    reg = Registry("method", "lnlbench.methods")
    assert reg.get("plugin_x") is Plugin


def _fake_eps(monkeypatch, eps, group="lnlbench.methods"):
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, _g=group: list(eps) if group == _g else real(group=group))


def _ep(name, value, dist, load):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, value=value, dist=SimpleNamespace(name=dist), load=load)


def _broken_load():
    raise ImportError("No module named 'torch_geometric'")


def test_broken_plugin_is_left_out_and_reported_once(monkeypatch, capsys):
    class Good:
        """A working plugin."""

    _fake_eps(monkeypatch, [_ep("bad_plugin", "bad.mod:M", "bad-dist", _broken_load),
                            _ep("good_plugin", "good.mod:G", "good-dist", lambda: Good)])
    reg = Registry("method", "lnlbench.methods")
    assert reg.get("good_plugin") is Good and "bad_plugin" not in reg.names()
    reg.describe()
    err = capsys.readouterr().err
    assert err.count("bad_plugin") == 1 and "left out" in err and "bad-dist" in err
    with pytest.raises(LnlError) as exc:
        reg.get("bad_plugin")
    msg = str(exc.value)
    assert "\n" not in msg and "failed to load" in msg and "torch_geometric" in msg and "bad-dist" in msg


def test_broken_plugin_does_not_break_the_cli(monkeypatch, capsys):
    from lnlbench.cli import main
    from lnlbench.registry import METHODS

    _fake_eps(monkeypatch, [_ep("bad_plugin", "bad.mod:M", "bad-dist", _broken_load)])
    monkeypatch.setattr(METHODS, "_loaded", False)
    monkeypatch.setattr(METHODS, "_broken", {})
    assert main(["list", "methods"]) == 0
    out, err = capsys.readouterr()
    assert "ce " in out and "bad_plugin" not in out and "bad_plugin" in err
    assert main(["run", "/nonexistent-grid.yaml", "--dry-run"]) == 2  # other commands still reach their own errors
    assert "does not exist" in capsys.readouterr().err


def test_two_distributions_with_one_name(monkeypatch):
    class A:
        """A."""

    class B:
        """B."""

    _fake_eps(monkeypatch, [_ep("twin", "a.mod:A", "dist-a", lambda: A), _ep("twin", "b.mod:B", "dist-b", lambda: B)])
    reg = Registry("method", "lnlbench.methods")
    assert "twin" not in reg.names()
    with pytest.raises(LnlError, match="dist-a.*dist-b"):
        reg.get("twin")
