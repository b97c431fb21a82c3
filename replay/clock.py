"""The only module that reads real time. Everything else takes a Clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> datetime:
        """Aware UTC wall time, consistent with now()."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return once now() >= t (monotonic seconds)."""
        ...


class SystemClock:
    """Real time: monotonic for scheduling, wall time pinned to it so the two never disagree."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = datetime.now(UTC)

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=time.monotonic() - self._mono0)

    def wall_at(self, t: float) -> datetime:
        """The wall time of monotonic instant t."""
        return self._wall0 + timedelta(seconds=t - self._mono0)

    async def sleep_until(self, t: float) -> None:
        # loop.time() is time.monotonic(), so a call_at deadline lands on t itself.
        loop = asyncio.get_running_loop()
        if t <= loop.time():
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = loop.create_future()
        handle = loop.call_at(t, _resolve, future)
        try:
            await future
        finally:
            handle.cancel()

    async def sleep(self, seconds: float) -> None:
        """Sleep for a span of real seconds."""
        await self.sleep_until(self.now() + seconds)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._now = start
        self._start = start
        self._wall0 = wall or datetime(2025, 7, 1, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime:
        return self.wall_at(self._now)

    def wall_at(self, t: float) -> datetime:
        return self._wall0 + timedelta(seconds=t - self._start)

    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), future))
        await future

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def run_for(self, seconds: float, step: float = 0.001) -> None:
        """Advance in small steps, letting woken tasks run between them."""
        end = self._now + seconds
        while self._now < end:
            self.advance(min(step, end - self._now))
            for _ in range(5):
                await asyncio.sleep(0)
