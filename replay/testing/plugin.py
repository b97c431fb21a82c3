"""The `imds_replay` pytest fixture: a replay for each test, on a free local port.

Installing imds-replay registers this plugin (entry point `pytest11`). The server runs in a
background thread with its own event loop, so synchronous code (requests, urllib) and async
tests can both call it. By default each test gets a server of its own; with the ini option
`imds_replay_server = shared` one server serves the whole run and each test gets a fresh,
isolated session on it (its own URL prefix, clock and approvals), which costs a test far less.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from replay.clock import SystemClock
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import IDLE_TRACE, SessionOptions
from replay.server.app import make_app
from replay.store.layout import default_traces_dir
from replay.testing.client import ReplayClient
from replay.testing.fleet import FleetClient, FleetSource, FleetVm
from replay.testing.report import Expectation, RunReport
from replay.testing.run import Ending, ReplaySpec, run_in_namespace, stdin_of
from replay.testing.sandbox import StdIO

T = TypeVar("T")
SERVER_MODES = ("per-test", "shared")


class Replay:
    """One replay session on a running server: what the `imds_replay` fixture gives a test."""

    def __init__(self, server: ReplayServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def url(self) -> str:
        """The base URL that replaces http://169.254.169.254 in the code under test."""
        prefix = "" if self.name == DEFAULT else f"/s/{self.name}"
        return self.server.base_url + prefix

    def start(
        self,
        trace: str,
        speed: float | str = 60,
        resources: Sequence[str] | None = None,
        virtual: bool = False,
    ) -> dict[str, Any]:
        """Play a trace on this session; with virtual=True time moves only on advance()."""
        return self.server.client.start(
            trace,
            session=self.name,
            speed=speed,
            resources=resources,
            start="virtual" if virtual else "now",
        )

    def advance(self, seconds: float | None = None) -> dict[str, Any]:
        """Move trace time forward by seconds, or to the next transition when none are given."""
        return self.server.client.advance(seconds, session=self.name)

    @property
    def approvals(self) -> list[str]:
        """The EventIds the code under test approved, in order."""
        return [a["event_id"] for a in self.status()["approvals"]]

    @property
    def documents(self) -> list[dict[str, Any]]:
        """The documents served so far, in order (each distinct state once)."""
        return self.server.client.documents(self.name)

    def status(self) -> dict[str, Any]:
        return self.server.client.status(self.name)

    @property
    def fleet(self) -> FleetClient:
        """The server's fleet: start it, move its time, list approvals (one fleet per server)."""
        return self.server.fleet_client

    def start_fleet(
        self, fleet: FleetSource, speed: float | str = 60, virtual: bool = False, **options: Any
    ) -> dict[str, Any]:
        """Play a fleet (a fleet file's path, its TOML text, or its tables) on this server; each
        VM is then reachable by name with vm(name)."""
        start = "virtual" if virtual else "now"
        return self.fleet.start(fleet, speed=speed, start=start, **options)

    def vm(self, name: str) -> FleetVm:
        """A VM of the fleet: `.url` for the code under test, `.poll()`, `.approve(...)`."""
        return self.fleet.vm(name)

    def run(
        self,
        command: Sequence[str],
        trace: str | ReplaySpec | None = None,
        *,
        speed: float | str = 60,
        expect: Sequence[str] = (),
        grace_s: float = 5.0,
        timeout_s: float | None = None,
        input: bytes | str | None = None,
        stdout: StdIO = None,
        stderr: StdIO = None,
    ) -> RunReport:
        """Run a command, unmodified, where http://169.254.169.254 is this session's replay.

        trace: a trace name (played at `speed` from CMD's first request) or a ReplaySpec;
        without, the session plays what start() gave it. Returns the report (RunReport).
        Needs Linux user and network namespaces (NamespaceUnavailable says why otherwise).
        """
        expectations = [Expectation.parse(e) for e in expect]
        spec = ReplaySpec(trace, speed=speed) if isinstance(trace, str) else trace
        registry = self.server.registry

        async def go() -> RunReport:
            if spec is not None:
                spec.create(registry, self.name)
            with stdin_of(input) as stdin:
                return await run_in_namespace(
                    registry,
                    self.name,
                    command,
                    expect=expectations,
                    ending=Ending(grace_s, timeout_s),
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                )

        return self.server.call_async(go(), timeout_s=None)


class ReplayServer(Replay):
    """A running replay server; as a Replay it is its default session."""

    def __init__(self, traces_dir: Path | None = None) -> None:
        super().__init__(self, DEFAULT)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="imds-replay", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._names = itertools.count(1)
        self.registry = SessionRegistry(traces_dir or default_traces_dir(), SystemClock())
        self.base_url = ""
        self.client = ReplayClient()
        self.fleet_client = FleetClient()
        """The server's fleet (one per server): start it, move its time, list approvals."""

    def call_async(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        """Call fn on the server's loop (where the registry may be touched) and return."""

        async def wrapped() -> T:
            return fn()

        return self.call_async(wrapped())

    def open(self) -> ReplayServer:
        self._thread.start()
        registry = self.registry

        async def start() -> int:
            runner = web.AppRunner(make_app(registry, clock=registry.clock), access_log=None)
            self._runner = runner
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port: int = runner.addresses[0][1]
            return port

        self.base_url = f"http://127.0.0.1:{self.call_async(start())}"
        self.client = ReplayClient(self.base_url)
        self.fleet_client = FleetClient(self.base_url)
        return self

    def fresh(self) -> Replay:
        """A new idle session of its own on this server (its own URL, clock, approvals)."""
        name = f"test-{next(self._names)}"
        self.call(lambda: self.registry.create(name, IDLE_TRACE, SessionOptions()))
        return Replay(self, name)

    def discard(self, replay: Replay) -> None:
        """Delete a session made by fresh()."""
        self.call(lambda: self.registry.delete(replay.name))

    def close(self) -> None:
        if self._runner is not None:
            self.call_async(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "imds_replay_server",
        "per-test: a replay server for each test (default); shared: one server for the run "
        "and a fresh session per test",
        default="per-test",
    )


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getini("imds_replay_server")
    if mode not in SERVER_MODES:
        raise pytest.UsageError(
            f"imds_replay_server = {mode!r}: use one of {', '.join(SERVER_MODES)}"
        )


@pytest.fixture(scope="session")
def imds_replay_server() -> Iterator[ReplayServer]:
    """One replay server for the whole test run (what `imds_replay_server = shared` uses)."""
    server = ReplayServer().open()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imds_replay(request: pytest.FixtureRequest) -> Iterator[Replay]:
    """A replay for this test; use `imds_replay.url` in place of the IMDS address."""
    if request.config.getini("imds_replay_server") == "shared":
        shared: ReplayServer = request.getfixturevalue("imds_replay_server")
        replay = shared.fresh()
        try:
            yield replay
        finally:
            shared.discard(replay)
        return
    server = ReplayServer().open()
    try:
        yield server
    finally:
        server.close()
