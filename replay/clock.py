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
from collections.abc import Callable
from dataclasses import dataclass, field
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
        self._timers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, weakref.ref[_Timerfd]
        ] = weakref.WeakKeyDictionary()
        """Each loop's timer, held weakly: the loop itself keeps it (its reader callback)."""

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
        timer = self._timer(loop) if self._precise else None
        if timer is not None:
            await timer.wait(t)
            return
        # loop.time() is time.monotonic(), so a call_at deadline lands on t itself
        while (left := t - loop.time()) > SHORT_WAIT_S:
            await _at(loop, t - SHORT_WAIT_S / 2 - left / 500)
        while loop.time() < t:  # asyncio runs a timer up to its clock's resolution early
            await _at(loop, t)

    def _timer(self, loop: asyncio.AbstractEventLoop) -> _Timerfd | None:
        """loop's timerfd, made on first use; None when the OS refuses one."""
        ref = self._timers.get(loop)
        timer = None if ref is None else ref()
        if timer is None:
            try:
                timer = _Timerfd(loop)
            except OSError:  # e.g. a sandbox that refuses timerfds: asyncio's timers then
                self._precise = False
                return None
            self._timers[loop] = weakref.ref(timer)
        return timer

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


# -- Linux timerfd: os.timerfd_* from Python 3.13; before that, libc through ctypes
_TimerfdCreate = Callable[[], int]
"""Make a non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC (what time.monotonic reads)."""
_TimerfdSet = Callable[[int, int], None]
"""Arm fd to fire once at an absolute CLOCK_MONOTONIC instant in nanoseconds (0 disarms)."""

_timerfd_create: _TimerfdCreate | None = None
_timerfd_settime_ns: _TimerfdSet | None = None

if sys.version_info >= (3, 13) and sys.platform == "linux" and hasattr(os, "timerfd_create"):

    def _os_timerfd_create() -> int:
        return os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)

    def _os_timerfd_settime_ns(fd: int, at_ns: int) -> None:
        os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME, initial=at_ns)

    _timerfd_create, _timerfd_settime_ns = _os_timerfd_create, _os_timerfd_settime_ns

elif sys.platform == "linux":

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1

    def _libc() -> Any:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        settime.restype = ctypes.c_int
        return create, settime

    def _failed(what: str) -> OSError:
        errno = ctypes.get_errno()
        return OSError(errno, f"{what}: {os.strerror(errno)}")

    if (_functions := _libc()) is not None:
        _c_create, _c_settime = _functions

        def _c_timerfd_create() -> int:
            fd: int = _c_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise _failed("timerfd_create")
            return fd

        def _c_timerfd_settime_ns(fd: int, at_ns: int) -> None:
            sec, nsec = divmod(at_ns, 1_000_000_000)
            spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
            if _c_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
                raise _failed("timerfd_settime")

        _timerfd_create, _timerfd_settime_ns = _c_timerfd_create, _c_timerfd_settime_ns


def _ns_not_before(t: float) -> int:
    """Monotonic instant t in whole nanoseconds, rounded up (a timer never fires before t)."""
    sec = math.floor(t)
    return max(sec * 1_000_000_000 + math.ceil((t - sec) * 1e9), 1)  # 0 would disarm


@dataclass(order=True, slots=True)
class _Sleeper:
    at: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)
    queued: bool = field(default=True, compare=False)
    """Still in the heap."""
    stale: bool = field(default=False, compare=False)
    """Cancelled while in the heap, and counted in _Timerfd.stale."""


class _Timerfd:
    """One timerfd on one event loop, armed for the earliest of its sleepers' deadlines.

    The loop keeps this alive through its reader callback and SystemClock holds it only
    weakly, so nothing outside the loop leads back to it (its pending futures do, from
    inside): a closed loop and its timer are collected together, and the fd is closed with
    the timer. A cancelled sleeper that held the next deadline leaves the heap at once and
    the timer is re-armed for the one after (or disarmed); deeper in the heap, cancelled
    sleepers go as soon as they make up half of it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        assert _timerfd_create is not None
        fd = _timerfd_create()
        self._fd = fd
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        self._armed_for = math.inf
        self.stale = 0
        """Cancelled sleepers still in the heap."""
        weakref.finalize(self, os.close, fd)
        try:
            loop.add_reader(fd, self._fire)
        except BaseException:
            os.close(fd)
            raise

    @property
    def heap_size(self) -> int:
        """Sleepers in the heap, cancelled ones not yet dropped included."""
        return len(self._sleepers)

    async def wait(self, t: float) -> None:
        """Return at t. A cancelled wait leaves the heap here, not through a done-callback on
        its future: 10,000 sleeping sessions would otherwise keep 50,000 more objects (the
        callback, its bound method, a context copy and the list holding them) for the garbage
        collector to walk."""
        sleeper = _Sleeper(t, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._sleepers, sleeper)
        if t < self._armed_for:
            self._arm(t)
        try:
            await sleeper.future
        except asyncio.CancelledError:
            self._cancelled(sleeper)
            raise

    def _arm(self, t: float) -> None:
        assert _timerfd_settime_ns is not None
        _timerfd_settime_ns(self._fd, 0 if t == math.inf else _ns_not_before(t))
        self._armed_for = t

    def _pop(self) -> _Sleeper:
        sleeper = heapq.heappop(self._sleepers)
        sleeper.queued = False
        if sleeper.stale:
            self.stale -= 1
        return sleeper

    def _cancelled(self, sleeper: _Sleeper) -> None:
        if not (sleeper.queued and sleeper.future.cancelled()):
            return  # woken by _fire (and cancelled after), or dropped already
        sleeper.stale = True
        self.stale += 1
        sleepers = self._sleepers
        while sleepers and sleepers[0].future.done():
            self._pop()
        if 2 * self.stale >= len(sleepers) > 0:
            for dropped in sleepers:
                dropped.queued = not dropped.stale
            self._sleepers = sleepers = [s for s in sleepers if not s.stale]
            heapq.heapify(sleepers)
            self.stale = 0
        next_at = sleepers[0].at if sleepers else math.inf
        if next_at != self._armed_for:
            self._arm(next_at)

    def _fire(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        now = time.monotonic()
        sleepers = self._sleepers
        while sleepers and (sleepers[0].at <= now or sleepers[0].future.done()):
            future = self._pop().future
            if not future.done():
                future.set_result(None)
        self._armed_for = math.inf
        if sleepers:
            self._arm(sleepers[0].at)


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
