"""The one exception family: every user-facing failure is a ReplayError."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReplayError(Exception):
    """A problem the user can fix; the CLI prints its message on one line and exits 2."""


class TraceNotFoundError(ReplayError):
    """A trace name or path that does not exist."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"trace {name!r} not found{hint} (imds-replay traces)")
        self.name = name
        self.suggestions = close


class InvalidTraceError(ReplayError):
    """A trace that breaks the rules of a timeline; the message names where."""


class FormatVersionError(ReplayError):
    """A trace file written by a newer imds-replay."""


class SpeedError(ReplayError):
    """A speed that is not a positive factor."""
