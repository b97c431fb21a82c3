"""Trace time on one anchor: the control verbs every replay shares (a session, a fleet).

`Anchored` keeps the anchor (replay.playback.anchor) and state, and implements pause, resume,
rebase, set_speed, seek, step, advance, next_transition and finish once. What differs stays
with the replay, as four small hooks:

- `_forget()`: drop what was computed from the old anchor (rendered documents, shortcuts);
- `_next_offset(rnd, off)`: the next change of document after an offset of a round;
- `virtual_start`: the wall time of offset 0 in virtual time (None: VIRTUAL_EPOCH);
- `served_any`: whether an IMDS client was served yet (rebase leaves a served replay alone).

A replay sets clock, speed, duration_s, looping and ticker, then calls `start_anchor(start)`;
re-anchoring restarts its ticker and announces (pushes) what became current.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from replay.clock import Clock
from replay.errors import ReplayError
from replay.playback.anchor import VIRTUAL_EPOCH, Anchor, Start, State
from replay.playback.ticker import Ticker

MAX_ADVANCE_S = 1e9
"""The longest move forward in one advance (trace seconds, about 31 years)."""


class Anchored:
    """A replay whose trace time runs on one anchor, moved by the control verbs."""

    noun = "trace"
    """What an offset is outside of, in seek's error."""
    clock: Clock
    speed: float
    duration_s: float
    looping: bool
    ticker: Ticker
    anchor: Anchor
    state: State
    start_mode: Start

    # -- the hooks ---------------------------------------------------------------------------
    def _forget(self) -> None:
        """Drop what was computed from the old anchor."""

    def _next_offset(self, rnd: int, off: float) -> float | None:
        """Offset (in round rnd) of the next change of document after off, if any."""
        raise NotImplementedError

    @property
    def virtual_start(self) -> datetime | None:
        """Wall time of offset 0 in virtual time (the trace's own, if it knows it)."""
        return None

    @property
    def served_any(self) -> bool:
        """Whether an IMDS client has been served."""
        return False

    # -- the anchor --------------------------------------------------------------------------
    def start_anchor(self, start: Start) -> None:
        """The first anchor: waiting for a request, running now, or virtual."""
        self.start_mode = start
        self.anchor = Anchor(self.clock.now(), self.clock.wall(), 0.0, self.speed, False)
        self.state = State.waiting
        if start is Start.now:
            self._set_anchor(0.0, State.running)
        elif start is Start.virtual:
            self._set_anchor(0.0, State.virtual)

    def _set_anchor(self, pos: float, state: State) -> None:
        now = self.clock.now()
        if state is State.virtual:
            # Virtual time is the trace's own: NotBefore shows as captured, the same every run.
            wall = (self.virtual_start or VIRTUAL_EPOCH) + timedelta(seconds=pos / self.speed)
        else:
            wall = self.clock.wall()
        self.anchor = Anchor(now, wall, pos, self.speed, state is State.running)
        self.state = state
        self._forget()
        self.ticker.restart()
        self.announce()

    def announce(self, deadline: float | None = None, at_s: float | None = None) -> None:
        """Push and log what became current (the replay's own)."""
        raise NotImplementedError

    def position(self, now: float | None = None) -> float:
        """Trace seconds since the start, across loop rounds."""
        pos = self.anchor.position(self.clock.now() if now is None else now)
        return pos if self.looping else min(pos, self.duration_s)

    def split(self, pos: float) -> tuple[int, float]:
        """(round, offset in the round) of a position."""
        if not self.looping:
            return 0, min(pos, self.duration_s)
        rnd = int(pos // self.duration_s)
        return rnd, pos - rnd * self.duration_s

    def wall_of(self, pos: float) -> datetime:
        """The wall time at which the replay reaches a position (trace seconds)."""
        return self.anchor.wall_of(pos)

    def mono_of(self, pos: float) -> float:
        """The monotonic instant at which a running replay reaches a position."""
        return self.anchor.mono_of(pos)

    def until(self, offsets: Sequence[float], rnd: int, index: int) -> float:
        """Monotonic instant at which transition index (of a round's offsets) stops being
        current: what a poll path's shortcut may be kept until."""
        if self.state is not State.running:
            return math.inf  # only re-anchoring moves a stopped replay, and that forgets
        nxt = offsets[index + 1] if index + 1 < len(offsets) else None
        if self.looping:
            nxt = self.duration_s if nxt is None else min(nxt, self.duration_s)
        elif nxt is None:
            return math.inf
        return self.mono_of(rnd * self.duration_s + nxt)

    # -- the verbs ---------------------------------------------------------------------------
    def touch(self) -> None:
        """An IMDS request arrived: a replay waiting for its first request starts now."""
        if self.state is State.waiting:
            self._set_anchor(0.0, State.running)

    def pause(self) -> None:
        if self.state is State.running:
            self._set_anchor(self.position(), State.paused)

    def resume(self) -> None:
        """Let trace time run again; a finished replay starts over from the beginning."""
        if self.state is State.finished:
            self._set_anchor(0.0, State.running)
        elif self.state in (State.paused, State.virtual, State.waiting):
            self._set_anchor(self.anchor.pos, State.running)

    def rebase(self) -> None:
        """Start a `now` replay's clock again if nobody has polled it yet (server start-up)."""
        if self.start_mode is Start.now and self.state is State.running and not self.served_any:
            self._set_anchor(0.0, State.running)

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ReplayError(f"speed must be positive, got {speed}")
        pos = self.position()
        self.speed = speed
        self._set_anchor(pos, self.state)

    def seek(self, offset_s: float) -> None:
        """Move to an offset (trace seconds) of the current round."""
        if not 0 <= offset_s <= self.duration_s:
            raise ReplayError(
                f"offset {offset_s:g} s is outside the {self.noun} (0 to {self.duration_s:g} s)"
            )
        rnd, _ = self.split(self.position())
        moving = self.state in (State.waiting, State.finished)
        self._set_anchor(rnd * self.duration_s + offset_s, State.running if moving else self.state)

    def next_transition(self, after_s: float | None = None) -> float | None:
        """Position (trace seconds, across rounds) of the next change of document."""
        pos = self.position()
        rnd, off = self.split(pos if after_s is None else max(pos, after_s))
        nxt = self._next_offset(rnd, off)
        if nxt is not None and nxt <= self.duration_s:
            return rnd * self.duration_s + nxt
        # An approval near the end can schedule a change past it: the replay ends first.
        if self.looping:
            later = self._next_offset(rnd + 1, 0.0)
            return (rnd + 1) * self.duration_s + later if later is not None else None
        return None

    def step(self) -> float | None:
        """Jump to the next transition; a waiting replay becomes paused there."""
        nxt = self.next_transition()
        if nxt is None:
            return None
        self._set_anchor(nxt, State.paused if self.state is State.waiting else self.state)
        return nxt

    def advance(self, seconds: float | None = None) -> float:
        """Move trace time forward by seconds, or to the next transition; return the position."""
        if seconds is None:
            return self.step() or self.position()
        if not 0 <= seconds <= MAX_ADVANCE_S:
            # Far beyond, positions lose their precision and incarnations their 64 bits.
            raise ReplayError(f"advance takes 0 to {MAX_ADVANCE_S:g} trace seconds at a time")
        pos = self.position() + seconds
        if not self.looping:
            pos = min(pos, self.duration_s)
        self._set_anchor(pos, State.paused if self.state is State.waiting else self.state)
        return pos

    # -- what the ticker drives --------------------------------------------------------------
    def start_ticker(self) -> None:
        """Start the transition timer (called once the event loop runs)."""
        if not self.ticker.running:
            self.ticker.restart()

    def stop(self) -> None:
        self.ticker.stop()

    def finish(self) -> None:
        """The replay reached its end: hold the last document."""
        self.state = State.finished
        end = self.duration_s
        self.anchor = Anchor(self.clock.now(), self.wall_of(end), end, self.speed, False)
