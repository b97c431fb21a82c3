"""The sessions of one server, and the traces they play (loaded once, shared)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from replay.clock import Clock
from replay.core.faults import RateLimiter
from replay.core.imds import LATEST_VERSION
from replay.core.timeline import Trace
from replay.errors import ReplayError, TraceNotFoundError
from replay.playback.rounds import ScheduleCache
from replay.playback.session import IDLE_TRACE, Session, SessionOptions
from replay.playback.ticker import Pushed
from replay.store.dataset import load_trace, scan
from replay.store.layout import check_name

DEFAULT = "default"
SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SessionRegistry:
    """Named sessions; `default` always exists (idle until given a trace)."""

    def __init__(
        self,
        traces_dir: Path,
        clock: Clock,
        *,
        max_sessions: int = 100_000,
        rate_limit: int | None = None,
        warm_up_s: float = 0.0,
        token: str | None = None,
    ) -> None:
        self.traces_dir = traces_dir
        self.clock = clock
        self.max_sessions = max_sessions
        self.rate_limiter = RateLimiter(rate_limit) if rate_limit else None
        """IMDS requests per second per client address; more get 429 (off when None)."""
        self.warm_up_s = warm_up_s
        """Wall seconds at a session's start during which IMDS answers slowly."""
        self.token = token
        """When set, the control API, page and streams need it (the IMDS routes never do)."""
        self.schedules = ScheduleCache()
        """Schedules shared by this registry's sessions; the app clears it when it closes."""
        self._traces: dict[str, Trace] = {}
        self.listeners: dict[str, set[Callable[[Pushed], None]]] = {}
        """Push subscribers by session name: they outlive a session replaced under that name."""
        self.sessions: dict[str, Session] = {}
        self._idle(DEFAULT, SessionOptions())

    def _idle(self, name: str, options: SessionOptions) -> None:
        listeners = self.listeners.setdefault(name, set())
        self.sessions[name] = Session(
            name, IDLE_TRACE, self.clock, options, listeners, self.schedules
        )

    def add_trace(self, trace: Trace) -> None:
        """Make a trace available by name (e.g. one read from a path on the command line)."""
        self._traces[trace.name] = trace

    def trace(self, name: str) -> Trace:
        """A trace by name only: control clients never reach files outside the dataset."""
        if name in self._traces:
            return self._traces[name]
        try:
            check_name(name)
        except ReplayError:
            raise TraceNotFoundError(name, self.trace_names()) from None
        if name.endswith(".parquet"):
            # load_trace reads a name ending in .parquet as a path (from the server's cwd).
            raise TraceNotFoundError(name, self.trace_names())
        trace = load_trace(self.traces_dir, name)
        self._traces[name] = trace
        return trace

    def trace_names(self) -> list[str]:
        good, _ = scan(self.traces_dir, validate_all=False)
        return sorted({t.name for t in good} | set(self._traces))

    def subscribe(self, name: str, listener: Callable[[Pushed], None]) -> Callable[[], None]:
        """Receive every new document of a session name; returns the unsubscribe function."""
        listeners = self.listeners.setdefault(name, set())
        listeners.add(listener)
        return lambda: listeners.discard(listener)

    def get(self, name: str) -> Session | None:
        return self.sessions.get(name)

    def create(self, name: str, trace: Trace, options: SessionOptions) -> Session:
        """Start a session; replacing a served one keeps DocumentIncarnation growing on its path."""
        if not SESSION_NAME_RE.fullmatch(name):
            raise ReplayError(
                f"session name {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        old = self.sessions.get(name)
        if old is None and len(self.sessions) >= self.max_sessions:
            raise ReplayError(f"too many sessions (limit {self.max_sessions}); delete some first")
        if old is not None:
            old.stop()
            if options.first_incarnation is None and old.documents:
                follow = old.current(LATEST_VERSION).incarnation + 1
                options = replace(options, first_incarnation=follow)
        listeners = self.listeners.setdefault(name, set())
        session = Session(name, trace, self.clock, options, listeners, self.schedules)
        if self.warm_up_s > 0:
            session.warm_until = self.clock.now() + self.warm_up_s
        self.sessions[name] = session
        session.start_ticker()
        return session

    def delete(self, name: str) -> bool:
        """Remove a session; the default one goes back to idle instead. False if unknown."""
        session = self.sessions.pop(name, None)
        if session is None:
            return False
        session.stop()
        if name == DEFAULT:
            follow = session.current(LATEST_VERSION).incarnation + 1
            self._idle(DEFAULT, SessionOptions(first_incarnation=follow))
        elif not self.listeners.get(name):
            self.listeners.pop(name, None)
        return True

    def start_all(self) -> None:
        """Once the server listens: `now` sessions start their clocks, tickers run."""
        for session in self.sessions.values():
            session.rebase()
            session.start_ticker()

    def stop_all(self) -> None:
        for session in self.sessions.values():
            session.stop()
