"""The only module that reads real time. Everything else takes a Clock."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import math
import os
import sys
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


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

    async def spin_until(self, t: float) -> None:
        """Return once now() >= t, staying awake: for the last moments before a deadline."""
        ...


class SystemClock:
    """Real time: monotonic for scheduling, wall time pinned to it so the two never disagree.

    sleep_until wakes within tens of microseconds of its deadline on Linux (a timerfd on the
    running loop; precise=False or another OS: asyncio's timers, which epoll rounds up to the
    next whole millisecond and Linux lets fire up to timeout/1000 late, so long waits end with
    a short second one).
    """

    def __init__(self, *, precise: bool = True) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = datetime.now(UTC)
        self._precise = precise and _timerfd_create is not None
        self._spinning = False
        self._timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timerfd] = (
            weakref.WeakKeyDictionary()
        )

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=time.monotonic() - self._mono0)

    def wall_at(self, t: float) -> datetime:
        """The wall time of monotonic instant t."""
        return self._wall0 + timedelta(seconds=t - self._mono0)

    async def sleep_until(self, t: float) -> None:
        loop = asyncio.get_running_loop()
        if t <= loop.time():
            await asyncio.sleep(0)
            return
        timer = self._timers.get(loop) if self._precise else None
        if timer is None and self._precise:
            try:
                timer = self._timers[loop] = _Timerfd(loop)
            except OSError:  # e.g. a sandbox that refuses timerfds: asyncio's timers then
                self._precise = False
        if timer is not None:
            await timer.wait(t)
            return
        # loop.time() is time.monotonic(), so a call_at deadline lands on t itself
        while (left := t - loop.time()) > SHORT_WAIT_S:
            await _at(loop, t - SHORT_WAIT_S / 2 - left / 500)
        while loop.time() < t:  # asyncio runs a timer up to its clock's resolution early
            await _at(loop, t)

    async def spin_until(self, t: float) -> None:
        """Yield to the loop (which goes on serving I/O) until t, without ever sleeping.

        A sleeping CPU takes 0.2-1 ms to wake on the project's virtual machines, more than
        the whole budget of a push; spinning through the last SPIN_S before a deadline costs
        at most that much CPU time per deadline. One waiter spins at a time; others sleep
        (thousands of sessions with subscribers would otherwise keep the loop spinning).
        """
        if self._spinning:
            await self.sleep_until(t)
            return
        self._spinning = True
        try:
            while time.monotonic() < t:
                await asyncio.sleep(0)
        finally:
            self._spinning = False

    async def sleep(self, seconds: float) -> None:
        """Sleep for a span of real seconds."""
        await self.sleep_until(self.now() + seconds)


SPIN_S = 0.001
"""How long before a deadline a waiter that must not be late stops sleeping and spins."""

SHORT_WAIT_S = 0.05
"""Without a timerfd, waits longer than this wake early first, then wait the rest."""


async def _at(loop: asyncio.AbstractEventLoop, t: float) -> None:
    future: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(t, _resolve, future)
    try:
        await future
    finally:
        handle.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- Linux timerfd (os.timerfd_create arrives in Python 3.13; until then, libc through ctypes)
class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1  # what time.monotonic() reads on Linux
_TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = os.O_NONBLOCK, os.O_CLOEXEC, 1


def _libc_function(name: str) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_timerfd_create = _libc_function("timerfd_create")
_timerfd_settime = _libc_function("timerfd_settime")


class _Timerfd:
    """One timerfd on one event loop, armed for the earliest of its sleepers' deadlines."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = _timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._loop = loop
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._armed_for = math.inf
        loop.add_reader(fd, self._fire)
        weakref.finalize(loop, os.close, fd)

    def wait(self, t: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), future))
        if t < self._armed_for:
            self._arm(t)
        return future

    def _arm(self, t: float) -> None:
        sec = math.floor(t)
        nsec = math.ceil((t - sec) * 1e9)  # never before t
        if nsec >= 1_000_000_000:
            sec, nsec = sec + 1, nsec - 1_000_000_000
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, max(nsec, 1)))
        if _timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed_for = t

    def _fire(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        now = time.monotonic()
        sleepers = self._sleepers
        while sleepers and (sleepers[0][0] <= now or sleepers[0][2].done()):
            future = heapq.heappop(sleepers)[2]
            if not future.done():
                future.set_result(None)
        self._armed_for = math.inf
        if sleepers:
            self._arm(sleepers[0][0])


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

    async def spin_until(self, t: float) -> None:
        await self.sleep_until(t)

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
