"""The one error type users see: a one-line message that names the fix.

Anything raised as :class:`LnlError` is printed by the CLI as ``lnlbench: error: <message>`` with no
traceback. Errors from deep inside a library are wrapped at the edge into one of these where the cause is
the user's input (a missing file, an unknown name, a bad rate).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class LnlError(ValueError):
    """A user-facing error with a one-line message."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> LnlError:
    """The error for an unknown registry name: lists the known names and the closest match."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    listing = ", ".join(known) if known else "(none registered)"
    return LnlError(f"unknown {kind} '{name}'{hint} known {kind}s: {listing}")


def unknown_keys(what: str, unknown: Iterable[str], known: Iterable[str]) -> LnlError:
    """The error for unknown option keys: names each, with its closest known key, and lists the known ones.

    ``unknown_keys("trial option", ["subsett"], fields)`` → ``unknown trial option 'subsett' (did you mean
    'subset'?); known: ...``. Used wherever a dict of user keys meets a fixed set (configs, presets, specs).
    """
    known = sorted(str(k) for k in known)
    parts = []
    for key in sorted(str(k) for k in unknown):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    plural = "s" if len(parts) > 1 else ""
    return LnlError(f"unknown {what}{plural} {', '.join(parts)}; known: {', '.join(known) or '(none)'}")
