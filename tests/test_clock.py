"""The clocks: SystemClock wakes sleepers in deadline order and never early."""

from __future__ import annotations

import asyncio
import random

import pytest

from replay.clock import FakeClock, SystemClock


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
    import replay.clock

    monkeypatch.setattr(replay.clock, "_timerfd_create", lambda clock_id, flags: -1)
    clock = SystemClock()
    t = clock.now() + 0.002
    await clock.sleep_until(t)
    assert clock.now() >= t
