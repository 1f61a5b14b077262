"""Shared fixtures: every test runs offline with its own data root and output folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """Noise caches and dataset caches go to a per-test folder, never to ~/.cache."""
    monkeypatch.setenv("LNLBENCH_DATA", str(tmp_path / "data"))
    yield
