"""Run a handler, unmodified, where http://169.254.169.254 is a replay, and report what it did.

`run_in_namespace` is the engine (async, on the server's event loop): the handler's IMDS
socket is served by a VM app pinned to one session (replay.server.vm), CMD runs in its own
namespaces (replay.testing.sandbox), and the run ends when CMD exits, `grace_s` after the
replay ends, at `timeout_s`, or when `interrupted` is set; then CMD gets SIGTERM and, 3 s
later, SIGKILL. `run_handler` is the same as one synchronous call with a server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from replay.clock import Clock, SystemClock
from replay.core.faults import FaultPlan
from replay.core.speed import parse_speed
from replay.errors import ReplayError
from replay.playback.anchor import Start, State
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import Session, SessionOptions
from replay.server.vm import make_vm_app
from replay.store.layout import default_traces_dir
from replay.testing.report import Expectation, RunReport, Tally, build_report
from replay.testing.sandbox import Sandbox, StdIO, check_command

RECHECK_S = 0.25
"""How often the end of a replay is re-predicted (the control API can pause or re-time it)."""
CLOSE_WITHIN_S = 10.0


@dataclass(frozen=True)
class Ending:
    """When a run stops CMD."""

    grace_s: float = 5.0
    """Wall seconds after the replay ends."""
    timeout_s: float | None = None
    """Wall seconds after CMD started."""


async def run_in_namespace(
    registry: SessionRegistry,
    session_name: str,
    command: Sequence[str],
    *,
    expect: Sequence[Expectation] = (),
    ending: Ending = Ending(),
    interrupted: asyncio.Event | None = None,
    stdin: StdIO = None,
    stdout: StdIO = None,
    stderr: StdIO = None,
    on_started: Callable[[], None] | None = None,
    sandbox: Sandbox | None = None,
) -> RunReport:
    """Run CMD against session_name (which must exist) and report; on the server's loop.

    sandbox: one spawned already for this command (its stdin, stdout, stderr are set then).
    """
    check_command(command)
    if session_name not in registry.sessions:
        raise ReplayError(f"no session {session_name!r} to run against")
    if sandbox is None:
        sandbox = Sandbox.spawn(command, stdin=stdin, stdout=stdout, stderr=stderr)
    tally = Tally()
    runner = web.AppRunner(
        make_vm_app(registry, session_name, tally),
        access_log=None,
        handle_signals=False,
    )
    try:
        await runner.setup()
        await web.SockSite(runner, await sandbox.ready()).start()
        await sandbox.start()
        if on_started is not None:
            on_started()
        ended_by = await _until_the_end(sandbox, registry, session_name, ending, interrupted)
        status = await sandbox.stop()
    finally:
        await sandbox.kill_all(CLOSE_WITHIN_S)  # whatever happened, nothing of CMD's outlives us
        await runner.cleanup()
    session = registry.sessions[session_name]
    return build_report(session, tally, expect, exit_code=status, ended_by=ended_by)


async def _until_the_end(
    sandbox: Sandbox,
    registry: SessionRegistry,
    name: str,
    ending: Ending,
    interrupted: asyncio.Event | None,
) -> str:
    """What ended the run: exit, grace, timeout or interrupt."""
    clock = registry.clock
    waits: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(asyncio.shield(sandbox.exited)): "exit",
        asyncio.ensure_future(_replay_over(registry, name, clock, ending.grace_s)): "grace",
    }
    if ending.timeout_s is not None:
        timeout = asyncio.ensure_future(clock.sleep_until(clock.now() + ending.timeout_s))
        waits[timeout] = "timeout"
    if interrupted is not None:
        waits[asyncio.ensure_future(interrupted.wait())] = "interrupt"
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in waits:
            future.cancel()
    for future, reason in waits.items():  # in the order above: an exit wins a tie
        if future in done:
            return reason
    raise AssertionError("asyncio.wait returned nothing done")


async def _replay_over(registry: SessionRegistry, name: str, clock: Clock, grace_s: float) -> None:
    """Return grace_s wall seconds after the session's replay has reached its end."""
    while True:
        session = registry.sessions.get(name)
        if session is None or _at_end(session):
            break
        target = math.inf
        if session.state is State.running and not session.looping:
            target = session.mono_of(session.duration_s)
        await clock.sleep_until(min(target, clock.now() + RECHECK_S))
    await clock.sleep_until(clock.now() + grace_s)


def _at_end(session: Session) -> bool:
    if session.state is State.finished:
        return True
    if session.looping or session.state is State.waiting:
        return False
    return session.position() >= session.duration_s


@dataclass(frozen=True)
class ReplaySpec:
    """What a run replays: a trace and the session options `serve` takes."""

    trace: str
    speed: float | str = 60.0
    """A factor, or as users write it: "60x", "dev", "200%"."""
    loop: bool = False
    resources: tuple[str, ...] | None = None
    start: Start = Start.first_request
    approval_delay_s: float = 0.0
    recorded_approvals: bool = False
    faults: FaultPlan | None = None

    def create(self, registry: SessionRegistry, name: str = DEFAULT) -> Session:
        """Create (or replace) the session `name` playing this replay."""
        options = SessionOptions(
            speed=parse_speed(self.speed),
            loop=self.loop,
            resources=self.resources,
            start=self.start,
            approval_delay_s=self.approval_delay_s,
            recorded_approvals=self.recorded_approvals,
        )
        session = registry.create(name, registry.trace(self.trace), options)
        session.faults = self.faults
        return session


def run_handler(
    command: Sequence[str],
    replay: ReplaySpec,
    *,
    expect: Sequence[str | Expectation] = (),
    ending: Ending = Ending(),
    input: bytes | str | None = None,
    stdout: StdIO = None,
    stderr: StdIO = None,
    traces_dir: Path | None = None,
) -> RunReport:
    """Run a command under a replay of its own (no port opened) and return the report.

    input: what CMD reads on stdin (none by default).
    """
    expectations = [e if isinstance(e, Expectation) else Expectation.parse(e) for e in expect]
    clock = SystemClock()
    registry = SessionRegistry(traces_dir or default_traces_dir(), clock)

    async def main() -> RunReport:
        replay.create(registry)
        registry.start_all()
        try:
            with stdin_of(input) as stdin:
                return await run_in_namespace(
                    registry,
                    DEFAULT,
                    command,
                    expect=expectations,
                    ending=ending,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                )
        finally:
            registry.stop_all()

    return asyncio.run(main())


@contextlib.contextmanager
def stdin_of(data: bytes | str | None) -> Iterator[int]:
    """CMD's stdin for `input`: a pipe fed by a thread, or /dev/null when there is none."""
    if data is None:
        yield subprocess.DEVNULL
        return
    payload = data.encode() if isinstance(data, str) else data
    read, write = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(write, "wb") as pipe:
            pipe.write(payload)

    threading.Thread(target=feed, name="imds-replay-stdin", daemon=True).start()
    try:
        yield read
    finally:
        os.close(read)
