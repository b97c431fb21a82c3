"""The `imds_replay` pytest fixture: a replay server on a free local port, per test.

Installing imds-replay registers this plugin (entry point `pytest11`). The server runs in a
background thread with its own event loop, so synchronous code (requests, urllib) and async
tests can both call it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from replay.clock import SystemClock
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app
from replay.store.dataset import default_traces_dir
from replay.testing.client import ReplayClient
from replay.testing.fleet import FleetClient, FleetSource, FleetVm


class ReplayServer:
    """A running replay server; `url` replaces http://169.254.169.254 in the code under test."""

    def __init__(self, traces_dir: Path | None = None) -> None:
        self._traces_dir = traces_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="imds-replay", daemon=True
        )
        self._runner: Any = None
        self.url = ""
        self.client = ReplayClient()
        self.fleet = FleetClient()

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def open(self) -> ReplayServer:
        self._thread.start()
        clock = SystemClock()
        registry = SessionRegistry(self._traces_dir or default_traces_dir(), clock)

        async def start() -> int:
            self._runner = web.AppRunner(make_app(registry, clock=clock), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port: int = self._runner.addresses[0][1]
            return port

        self.url = f"http://127.0.0.1:{self._run(start())}"
        self.client = ReplayClient(self.url)
        self.fleet = FleetClient(self.url)
        return self

    def close(self) -> None:
        if self._runner is not None:
            self._run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def start(
        self,
        trace: str,
        speed: float | str = 60,
        resources: Sequence[str] | None = None,
        virtual: bool = False,
    ) -> dict[str, Any]:
        """Play a trace on the default session; with virtual=True time moves only on advance()."""
        return self.client.start(
            trace, speed=speed, resources=resources, start="virtual" if virtual else "now"
        )

    def advance(self, seconds: float | None = None) -> dict[str, Any]:
        """Move trace time forward by seconds, or to the next transition when none are given."""
        return self.client.advance(seconds)

    @property
    def approvals(self) -> list[str]:
        """The EventIds the code under test approved, in order."""
        return [a["event_id"] for a in self.client.status()["approvals"]]

    @property
    def documents(self) -> list[dict[str, Any]]:
        """The documents served so far, in order (each distinct state once)."""
        return self.client.documents()

    def status(self) -> dict[str, Any]:
        return self.client.status()

    def start_fleet(
        self, fleet: FleetSource, speed: float | str = 60, virtual: bool = False, **options: Any
    ) -> dict[str, Any]:
        """Play a fleet (a fleet file's path, its TOML text, or its tables); each VM is
        reached with vm(name). Options: loop, approval_delay_s, recorded_approvals, rate_limit."""
        start = "virtual" if virtual else "now"
        return self.fleet.start(fleet, speed=speed, start=start, **options)

    def vm(self, name: str) -> FleetVm:
        """A VM of the fleet: `.url` for the code under test, `.poll()`, `.approve(...)`."""
        return self.fleet.vm(name)


@pytest.fixture
def imds_replay() -> Iterator[ReplayServer]:
    """A replay server for this test; use `imds_replay.url` in place of the IMDS address."""
    server = ReplayServer().open()
    try:
        yield server
    finally:
        server.close()
