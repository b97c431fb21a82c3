"""The ticker at the exact deadline: every transition pushed, then it sleeps (no busy loop)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from replay.clock import FakeClock
from replay.playback.anchor import Start
from replay.playback.session import Session, SessionOptions
from tests.helpers import simple_trace


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)  # noqa: TID251 - yields to the loop; FakeClock time stands still


def exactly(clock: FakeClock, t: float) -> None:
    """Move the fake clock to t itself (adding t - now can land a hair short of it)."""
    clock.advance(t - clock.now())
    while clock.now() < t:
        clock.advance(math.nextafter(clock.now(), math.inf) - clock.now())


@pytest.mark.parametrize("speed", [0.37, 3.3, 7.3, 13, 60, 240, 1000])
@pytest.mark.parametrize("start", [1000.0, 12345.678, 98765.4321])
async def test_each_transition_is_pushed_at_its_deadline_and_the_ticker_then_sleeps(
    speed: float, start: float
) -> None:
    clock = FakeClock(start=start)
    trace = simple_trace()
    session = Session("s", trace, clock, SessionOptions(speed=speed, start=Start.now))
    pushed: list[Any] = []
    session.subscribers.add(pushed.append)
    asked = 0
    real_next = session.next_transition

    def counting(after_s: float | None = None) -> float | None:
        nonlocal asked
        asked += 1
        return real_next(after_s)

    session.next_transition = counting  # type: ignore[method-assign]
    session.start_ticker()
    await settle()
    try:
        for offset, snap in zip(trace.offsets[1:], trace.snapshots[1:], strict=True):
            exactly(clock, session.mono_of(offset))
            asked = 0
            await settle()
            assert f'"DocumentIncarnation":{snap.incarnation}' in pushed[-1].body.decode()
            assert asked <= 2, f"the ticker looked {asked} times without time moving"
        assert len(pushed) == len(trace.snapshots) - 1
    finally:
        session.stop()
