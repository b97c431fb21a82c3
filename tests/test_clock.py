"""The clocks: SystemClock wakes sleepers in deadline order and never early."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import random
import weakref
from pathlib import Path

import pytest

import replay.clock
from replay.clock import FakeClock, SystemClock

needs_timerfd = pytest.mark.skipif(
    replay.clock._timerfd_create is None or not Path("/proc/self/fdinfo").is_dir(),
    reason="Linux timerfds, seen through /proc",
)


def timerfds() -> set[int]:
    """The timerfds this process has open."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[timerfd]":
                found.add(int(name))
    return found


def fires_in(fd: int) -> float:
    """Seconds until timerfd fd fires, as the kernel has it armed; 0.0 when disarmed."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("it_value:"):
            sec, nsec = line.split("(")[1].rstrip(")").split(",")
            return int(sec) + int(nsec) / 1e9
    raise AssertionError(f"fd {fd} is not a timerfd")


def heap_size(clock: SystemClock) -> int:
    """Sleepers in the running loop's timer heap (reads SystemClock's internals)."""
    timer = clock._timers[asyncio.get_running_loop()]()
    assert timer is not None
    return len(timer._sleepers)


@pytest.mark.parametrize("precise", [True, False], ids=["timerfd", "asyncio-timers"])
async def test_system_sleepers_wake_in_deadline_order_and_never_early(precise: bool) -> None:
    clock = SystemClock(precise=precise)
    start = clock.now() + 0.05  # every sleeper is waiting long before the first deadline
    deadlines = [start + random.uniform(0, 0.03) for _ in range(40)]
    woke: list[tuple[float, float]] = []

    async def sleeper(t: float) -> None:
        await clock.sleep_until(t)
        woke.append((t, clock.now()))

    await asyncio.gather(*(sleeper(t) for t in deadlines))
    assert [t for t, _ in woke] == sorted(deadlines)
    assert all(at >= t for t, at in woke)


async def test_a_cancelled_sleeper_does_not_hold_up_the_others() -> None:
    clock = SystemClock()
    first = asyncio.ensure_future(clock.sleep_until(clock.now() + 0.001))
    later = clock.now() + 0.005
    await clock.sleep_until(0)  # a past deadline: one turn of the loop, so first is waiting
    first.cancel()
    await clock.sleep_until(later)
    assert clock.now() >= later
    assert first.cancelled()


async def test_a_past_deadline_returns_at_once() -> None:
    clock = SystemClock()
    await clock.sleep_until(clock.now() - 1)
    fake = FakeClock()
    await fake.sleep_until(fake.now())
    assert fake.now() == 1000.0


async def test_spinning_waiters_never_return_early() -> None:
    clock = SystemClock()
    deadlines = [clock.now() + 0.002 * k for k in range(1, 6)]

    async def spinner(t: float) -> float:
        await clock.spin_until(t)
        return clock.now()

    woke = await asyncio.gather(*(spinner(t) for t in deadlines))
    assert all(at >= t for at, t in zip(woke, deadlines, strict=True))


async def test_a_refused_timerfd_falls_back_to_asyncio_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> int:
        raise PermissionError(errno.EPERM, "timerfd_create: Operation not permitted")

    monkeypatch.setattr(replay.clock, "_timerfd_create", refuse)
    clock = SystemClock()
    t = clock.now() + 0.002
    await clock.sleep_until(t)
    assert clock.now() >= t


@needs_timerfd
def test_a_loop_that_slept_is_collected_after_close_and_its_timerfd_closed() -> None:
    clock = SystemClock()
    before = timerfds()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def nap() -> set[int]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await clock.sleep_until(clock.now() + 0.001)
        return timerfds() - before

    made = asyncio.run(nap())
    assert len(made) == 1  # the loop's timerfd
    gc.collect()
    assert loops[0]() is None, "the closed loop is still alive"
    assert not made & timerfds(), "the closed loop's timerfd is still open"


@needs_timerfd
async def test_cancelled_sleeps_leave_the_heap_and_the_timer_at_once() -> None:
    clock = SystemClock()
    before = timerfds()
    now = clock.now()
    soon = asyncio.ensure_future(clock.sleep_until(now + 1000))
    later = asyncio.ensure_future(clock.sleep_until(now + 2000))
    behind = [asyncio.ensure_future(clock.sleep_until(now + 3000 + k)) for k in range(100)]
    await clock.sleep_until(0)  # one turn of the loop: every sleeper is waiting
    (fd,) = timerfds() - before
    assert 990 < fires_in(fd) <= 1000
    assert heap_size(clock) == 102

    soon.cancel()
    await asyncio.gather(soon, return_exceptions=True)
    await clock.sleep_until(0)
    assert 1990 < fires_in(fd) <= 2000  # re-armed for the next deadline, not 1000 s away
    assert heap_size(clock) == 101

    for task in behind:
        task.cancel()
    await asyncio.gather(*behind, return_exceptions=True)
    await clock.sleep_until(0)
    assert heap_size(clock) == 1  # only the sleeper still waiting
    assert 1990 < fires_in(fd) <= 2000

    later.cancel()
    await asyncio.gather(later, return_exceptions=True)
    await clock.sleep_until(0)
    assert heap_size(clock) == 0
    assert fires_in(fd) == 0.0  # disarmed: no wake-up an hour from now for nobody
