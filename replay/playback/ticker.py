"""The ticker: one task per running session that wakes at each transition to push and log it.

A polled document never waits for the ticker (it is computed from the anchor at request time);
the ticker exists so that push subscribers get each new document the moment it is current.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson

from replay.clock import SPIN_S, Clock
from replay.playback.anchor import State

log = logging.getLogger("imds_replay")


@dataclass(frozen=True, slots=True)
class Pushed:
    """A transition as the ticker saw it: what became current, and how late the wake-up was."""

    session: str
    body: bytes
    at: datetime
    lateness_s: float
    message: bytes
    """What push clients receive: {"document": {...}, "at": "<ISO time>"}."""


def push_message(body: bytes, at: datetime) -> bytes:
    """{"document": {...}, "at": "<ISO time>"} without parsing the document again."""
    return b'{"document":' + body + b',"at":' + orjson.dumps(at.isoformat()) + b"}"


def logging_on() -> bool:
    """Whether log_line writes anything: hot paths ask first, so that thousands of sessions
    build no fields (a dict per transition) that nobody logs."""
    return log.isEnabledFor(logging.INFO)


def log_line(**fields: object) -> None:
    """One JSON line on the imds_replay logger (built only when someone listens)."""
    if log.isEnabledFor(logging.INFO):
        log.info("%s", orjson.dumps(fields).decode())


class Ticking(Protocol):
    """What a ticker drives: a session's timeline, seen from its timer."""

    clock: Clock
    state: State
    subscribers: set[Callable[[Pushed], None]]

    def next_transition(self, after_s: float | None = None) -> float | None: ...
    def mono_of(self, pos: float) -> float: ...
    def prepare(self, pos: float) -> None: ...
    def announce(self, deadline: float | None = None, at_s: float | None = None) -> None: ...
    def finish(self) -> None: ...


class Ticker:
    """Runs a session's transitions on time while the session is running."""

    def __init__(self, session: Ticking, name: str) -> None:
        self.session = session
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def restart(self) -> None:
        """Cancel the current wait and, if the session runs, schedule its next transition."""
        self.stop()
        if self.session.state is not State.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started again by the server when its loop runs
        self._task = loop.create_task(self._run(), name=f"ticker:{self.name}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        session = self.session
        announced: float | None = None  # a position a hair short of it must not wake us again
        while session.state is State.running:
            nxt = session.next_transition(announced)
            if nxt is None:
                session.announce(None, announced)  # the end came while this ticker was late
                session.finish()
                return
            deadline = session.mono_of(nxt)
            session.prepare(nxt)
            if session.subscribers:  # somebody waits for this push: no wake-up latency
                await session.clock.sleep_until(deadline - SPIN_S)
                await session.clock.spin_until(deadline)
            else:
                await session.clock.sleep_until(deadline)
            session.announce(deadline, nxt)
            announced = nxt
