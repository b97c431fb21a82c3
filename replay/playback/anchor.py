"""The anchor: one frozen mapping from the replay clock to trace time and wall time.

`position = pos + (now - mono) * speed` while running. Pause, resume, seek, speed changes and
loops make a new anchor; nothing accumulates sleeps, so nothing drifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

VIRTUAL_EPOCH = datetime(2025, 7, 1, tzinfo=UTC)
"""Wall time of offset 0 in virtual time when a trace does not know its own."""


class Start(StrEnum):
    """When a session's trace time starts to run."""

    first_request = "first-request"
    """The replay clock starts at the first IMDS request, as the real service enables itself."""
    now = "now"
    virtual = "virtual"
    """Trace time moves only when told to (seek, step, advance)."""


class State(StrEnum):
    """Where a session's trace time is: not started, running, held, or past its end."""

    waiting = "waiting"
    running = "running"
    paused = "paused"
    virtual = "virtual"
    finished = "finished"


@dataclass(frozen=True, slots=True)
class Anchor:
    """Trace position `pos` (trace seconds) was reached at monotonic `mono`, wall time `wall`."""

    mono: float
    wall: datetime
    pos: float
    speed: float
    running: bool

    def position(self, now: float) -> float:
        """Trace seconds at monotonic instant now (the anchor's own while time stands still)."""
        return self.pos + (now - self.mono) * self.speed if self.running else self.pos

    def wall_of(self, pos: float) -> datetime:
        """The wall time at which the replay reaches a position (trace seconds)."""
        return self.wall + timedelta(seconds=(pos - self.pos) / self.speed)

    def mono_of(self, pos: float) -> float:
        """The monotonic instant at which a running replay reaches a position."""
        return self.mono + (pos - self.pos) / self.speed

    def wall_of_mono(self, t: float) -> datetime:
        """The wall time of a monotonic instant."""
        return self.wall + timedelta(seconds=t - self.mono)
