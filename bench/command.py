"""One ``lnlbench`` sub-command as a plain declaration: name, help, its arguments and what it runs.

Each CLI module (``lnlbench.cli``, ``lnlbench.runner.cli``, ``lnlbench.aggregate.cli``) lists its
commands in a ``COMMANDS`` tuple; ``lnlbench.cli`` imports those tuples at the top and builds the parser
from them. Nothing registers itself on import. This module imports nothing of lnlbench, so the
aggregator and the runner declare commands without importing the CLI (or torch).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """``lnlbench NAME``: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
