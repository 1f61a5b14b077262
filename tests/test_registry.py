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
