"""The registry of a server's sessions: limits, replacing and deleting, listeners, traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from replay.clock import FakeClock
from replay.core.imds import LATEST_VERSION
from replay.errors import ReplayError, TraceNotFoundError
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from replay.playback.ticker import Pushed
from tests.helpers import simple_trace

V = LATEST_VERSION


def test_the_registry_keeps_what_it_was_given(traces_dir: Path) -> None:
    clock = FakeClock()
    plain = SessionRegistry(traces_dir, clock)
    assert (plain.max_sessions, plain.rate_limiter, plain.token, plain.warm_up_s) == (
        100_000,
        None,
        None,
        0.0,
    )
    tuned = SessionRegistry(traces_dir, clock, rate_limit=3, token="t0k", warm_up_s=0.5)
    assert tuned.rate_limiter is not None and tuned.rate_limiter.limit == 3
    assert tuned.token == "t0k"
    session = tuned.create("a", tuned.trace("live-migration"), SessionOptions())
    assert session.warm_until == clock.now() + 0.5
    assert plain.create("a", plain.trace("live-migration"), SessionOptions()).warm_until is None
    idle = plain.sessions[DEFAULT]
    assert (idle.name, idle.trace.name, idle.schedules) == (DEFAULT, "(idle)", plain.schedules)
    assert session.schedules is tuned.schedules


def test_session_names_and_the_session_limit(traces_dir: Path) -> None:
    registry = SessionRegistry(traces_dir, FakeClock(), max_sessions=2)
    trace = registry.trace("spot-eviction")
    with pytest.raises(ReplayError) as bad:
        registry.create("no/slash", trace, SessionOptions())
    assert str(bad.value) == (
        "session name 'no/slash' must be 1-64 letters, digits, '.', '_' or '-'"
    )
    registry.create("a", trace, SessionOptions())
    with pytest.raises(ReplayError) as full:
        registry.create("b", trace, SessionOptions())
    assert str(full.value) == "too many sessions (limit 2); delete some first"
    registry.create("a", trace, SessionOptions(speed=2))  # replacing one is not one more
    registry.create(DEFAULT, trace, SessionOptions())
    assert sorted(registry.sessions) == ["a", DEFAULT]


def test_replacing_or_deleting_a_served_session_keeps_the_incarnation_growing(
    traces_dir: Path,
) -> None:
    clock = FakeClock()
    registry = SessionRegistry(traces_dir, clock)
    trace = registry.trace("spot-eviction")
    first = registry.create("a", trace, SessionOptions(start=Start.now))
    clock.advance(40)
    served = first.poll(V).incarnation
    second = registry.create("a", trace, SessionOptions(start=Start.now))
    assert second.current(V).incarnation == served + 1
    unserved = registry.create("a", trace, SessionOptions(start=Start.now))
    assert unserved.current(V).incarnation == trace.snapshots[0].incarnation
    default = registry.create(DEFAULT, trace, SessionOptions(start=Start.now))
    clock.advance(40)
    last = default.poll(V).incarnation
    assert registry.delete(DEFAULT) is True
    idle = registry.sessions[DEFAULT]
    assert (idle.trace.name, idle.current(V).incarnation) == ("(idle)", last + 1)


def test_delete_forgets_listeners_only_when_nobody_listens(traces_dir: Path) -> None:
    registry = SessionRegistry(traces_dir, FakeClock())
    trace = registry.trace("spot-eviction")
    assert registry.delete("nobody") is False
    registry.create("quiet", trace, SessionOptions())
    registry.create("heard", trace, SessionOptions())
    heard: list[Pushed] = []
    unsubscribe = registry.subscribe("heard", heard.append)
    assert registry.delete("quiet") is True and registry.delete("heard") is True
    assert "quiet" not in registry.listeners
    assert registry.listeners["heard"] == {heard.append}
    again = registry.create("heard", trace, SessionOptions(start=Start.virtual))
    again.step()
    assert len(heard) == 2  # its first document and the next: the subscription outlived
    unsubscribe()  # the session it was made on
    again.step()
    assert len(heard) == 2
    assert registry.delete("heard") and "heard" not in registry.listeners


def test_the_idle_default_session_pushes_to_its_subscribers(traces_dir: Path) -> None:
    registry = SessionRegistry(traces_dir, FakeClock())
    heard: list[Pushed] = []
    registry.subscribe(DEFAULT, heard.append)
    assert registry.sessions[DEFAULT].subscribers == {heard.append}
    registry.create(DEFAULT, registry.trace("spot-eviction"), SessionOptions(start=Start.virtual))
    registry.sessions[DEFAULT].step()
    assert len(heard) == 2  # the new trace's first document, then its next


def test_traces_by_name_only_and_the_names_listed(traces_dir: Path) -> None:
    registry = SessionRegistry(traces_dir, FakeClock())
    extra = replace(simple_trace(), name="from-a-path")
    registry.add_trace(extra)
    assert registry.trace("from-a-path") is extra
    names = registry.trace_names()
    assert names == sorted(names) and "from-a-path" in names and "live-migration" in names
    assert len(names) == 10
    for name, shown in (("live-migratoin", "; did you mean 'live-migration'?"), ("../x", "")):
        with pytest.raises(TraceNotFoundError) as bad:
            registry.trace(name)
        assert str(bad.value) == f"trace {name!r} not found{shown} (imds-replay traces)"
    (traces_dir / "live-migration.parquet").write_bytes(b"")
    with pytest.raises(TraceNotFoundError) as bad:
        registry.trace("live-migration.parquet")
    assert bad.value.name == "live-migration.parquet"
    assert bad.value.suggestions == ["live-migration"]


def test_a_subscription_may_come_before_its_session(traces_dir: Path) -> None:
    registry = SessionRegistry(traces_dir, FakeClock())
    heard: list[Pushed] = []
    registry.subscribe("later", heard.append)
    session = registry.create("later", registry.trace("spot-eviction"), SessionOptions())
    assert session.subscribers == {heard.append}
    session.step()
    assert len(heard) == 1
