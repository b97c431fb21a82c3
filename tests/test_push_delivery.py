"""Push delivery without a network: retries, backoff and reports, on an injected clock.

`_post` and `_send_ws` take the HTTP session and the WebSocket as arguments; here they are
stand-ins that answer with given statuses or fail, and the clock records every backoff wait.
"""

from __future__ import annotations

import aiohttp
import pytest

from replay.clock import FakeClock
from replay.errors import ReplayError
from replay.playback.push import PushReport, _post, _send_ws, check_target


class JumpingClock(FakeClock):
    """A FakeClock whose sleeps move time to their deadline at once, and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def sleep_until(self, t: float) -> None:
        self.waits.append(t - self.now())
        self.advance(max(t - self.now(), 0))


class Answer:
    def __init__(self, status: int) -> None:
        self.status = status

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Receiver:
    """Stands in for aiohttp.ClientSession: answers POSTs with statuses (or raises them)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> Answer:
        self.posts.append((url, data, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Answer(answer)


async def deliver(receiver: Receiver, attempts: int = 5) -> tuple[PushReport, JumpingClock]:
    report, clock = PushReport(delivered=1, failed=1), JumpingClock()  # a document in
    await _post(receiver, "http://h/hook", b"{}", report, clock, attempts, 0.5)  # type: ignore[arg-type]
    return report, clock


@pytest.mark.parametrize("status", [200, 204, 299])
async def test_a_2xx_answer_delivers_at_once_as_json(status: int) -> None:
    receiver = Receiver(status)
    report, clock = await deliver(receiver)
    assert (report.delivered, report.failed, report.retries, clock.waits) == (2, 1, 0, [])
    assert receiver.posts == [("http://h/hook", b"{}", {"Content-Type": "application/json"})]


async def test_failures_are_retried_with_doubling_backoff_then_reported() -> None:
    receiver = Receiver(300, 500, 429, 408, 503)
    report, clock = await deliver(receiver)
    assert clock.waits == [0.5, 1.0, 2.0, 4.0]
    assert (report.delivered, report.failed, report.retries) == (1, 2, 4)
    assert report.errors == ["http://h/hook: HTTP 503"]


@pytest.mark.parametrize("status", [400, 404, 422, 499])
async def test_a_refusal_is_not_retried(status: int) -> None:
    receiver = Receiver(status, 204)
    report, clock = await deliver(receiver)
    assert (report.delivered, report.failed, report.retries, clock.waits) == (1, 2, 0, [])
    assert report.errors == [f"http://h/hook: HTTP {status}"]


async def test_a_connection_error_is_retried_and_named() -> None:
    receiver = Receiver(aiohttp.ClientConnectionError("refused"), TimeoutError("slow"))
    report, _ = await deliver(receiver, attempts=2)
    assert (report.delivered, report.failed, report.retries) == (1, 2, 1)
    assert report.errors == ["http://h/hook: TimeoutError: slow"]
    receiver = Receiver(aiohttp.ClientConnectionError("refused"), 204)
    report, clock = await deliver(receiver, attempts=2)
    assert (report.delivered, report.failed, report.retries, clock.waits) == (2, 1, 1, [0.5])


class GoneSocket:
    async def send_str(self, text: str) -> None:
        raise ConnectionResetError("reset by peer")


async def test_a_websocket_that_went_away_fails_the_push() -> None:
    report = PushReport(delivered=2, failed=1)
    with pytest.raises(ReplayError) as bad:
        await _send_ws(GoneSocket(), b"{}", report)  # type: ignore[arg-type]
    assert str(bad.value) == "the WebSocket server went away: reset by peer"
    assert (report.delivered, report.failed, report.errors) == (2, 2, ["websocket: reset by peer"])


@pytest.mark.parametrize(
    ("url", "kind"),
    [("ws://h/x", "ws"), ("WSS://h/x", "ws"), ("http://h/x", "http"), ("https://h", "http")],
)
def test_push_targets_by_scheme(url: str, kind: str) -> None:
    assert check_target(url) == kind


def test_a_target_of_another_scheme_is_refused_by_name() -> None:
    with pytest.raises(ReplayError) as bad:
        check_target("ftp://h")
    assert str(bad.value) == "--to 'ftp://h': use a ws://, wss://, http:// or https:// URL"
