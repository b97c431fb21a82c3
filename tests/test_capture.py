"""capture: a scripted local endpoint, polled on a FakeClock (no real sleeping)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from replay.clock import FakeClock
from replay.core.imds import LATEST_VERSION
from replay.recording.capture import capture, default_url
from replay.recording.capture_file import (
    HEARTBEAT_S,
    CaptureError,
    CaptureStats,
    format_status,
    iso_utc,
)
from replay.recording.ingest import capture_traces
from replay.recording.parse import parse_capture
from tests.helpers import event

Step = dict[str, Any] | tuple[str, Any]


def doc(incarnation: int, *events: dict[str, Any]) -> dict[str, Any]:
    return {"DocumentIncarnation": incarnation, "Events": list(events)}


class Endpoint:
    """Answers each GET with the next scripted step (the last one repeats); records POSTs.

    A step is a document, ("status", (code, body)), ("raw", bytes) or ("hang", document):
    a hanging step answers only once `release` is set.
    """

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.gets = 0
        self.posts: list[Any] = []
        self.post_status = 200
        self.hanging = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, request: web.Request) -> web.StreamResponse:
        assert request.headers.get("Metadata") == "true"
        self.gets += 1
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, dict):
            return web.json_response(step)
        kind, value = step
        if kind == "status":
            return web.Response(status=value[0], text=value[1])
        if kind == "raw":
            return web.Response(body=value, content_type="application/json")
        self.hanging.set()
        await self.release.wait()
        return web.json_response(value)

    async def post(self, request: web.Request) -> web.Response:
        assert request.headers.get("Metadata") == "true"
        self.posts.append(orjson.loads(await request.read()))
        return web.Response(status=self.post_status)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[list[Step]], Awaitable[tuple[Endpoint, str]]]]:
    servers: list[tuple[TestServer, Endpoint]] = []

    async def start(steps: list[Step]) -> tuple[Endpoint, str]:
        endpoint = Endpoint(steps)
        app = web.Application()
        app.router.add_get("/metadata/scheduledevents", endpoint.get)
        app.router.add_post("/metadata/scheduledevents", endpoint.post)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append((server, endpoint))
        url = str(server.make_url("/metadata/scheduledevents?api-version=2020-07-01"))
        return endpoint, url

    yield start
    for server, endpoint in servers:
        endpoint.release.set()
        await server.close()


class Run:
    """A capture task on a FakeClock, stepped one poll at a time."""

    def __init__(self, url: str, out: Path, clock: FakeClock, **options: Any) -> None:
        self.clock = clock
        self.polls: asyncio.Queue[int] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            capture(
                url,
                out,
                clock=clock,
                stop=self.stop,
                on_poll=lambda s: self.polls.put_nowait(s.polls),
                host="test-vm",
                **options,
            )
        )

    async def next_poll(self, after_s: float = 0.0) -> int:
        """Advance the clock by after_s and wait for the poll that wakes."""
        self.clock.advance(after_s)
        async with asyncio.timeout(10):
            return await self.polls.get()

    async def finish(self) -> CaptureStats:
        self.stop.set()
        async with asyncio.timeout(10):
            return await self.task


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def at(clock: FakeClock, offset_s: float) -> str:
    return iso_utc(clock.wall_at(1000.0 + offset_s))


SCHEDULED = event("E1", not_before_s=600)
STARTED = event("E1", status="Started")


async def test_records_each_change_once_on_an_absolute_schedule(serve: Any, tmp_path: Path) -> None:
    endpoint, url = await serve(
        [doc(1), doc(1), doc(2, SCHEDULED), doc(2, SCHEDULED), doc(3, STARTED), doc(4)]
    )
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=1.0)
    assert await run.next_poll() == 1
    for n in range(2, 7):
        assert await run.next_poll(1.0) == n
    stats = await run.finish()
    lines = lines_of(out)
    assert lines[0] == {
        "capture": {
            "format": 1,
            "url": url,
            "interval_s": 1.0,
            "host": "test-vm",
            "started_at": at(clock, 0),
            "approve": "none",
        }
    }
    assert [(line["t"], line["document"]) for line in lines[1:-1]] == [
        (at(clock, 0), doc(1)),
        (at(clock, 2), doc(2, SCHEDULED)),
        (at(clock, 4), doc(3, STARTED)),
        (at(clock, 5), doc(4)),
    ]
    assert lines[-1]["heartbeat"] == {
        "polls": 6,
        "documents": 4,
        "errors": 0,
        "missed": 0,
        "stopped": "signal",
    }
    assert (stats.events_seen, stats.events_completed, stats.stopped) == ({"E1"}, {"E1"}, "signal")
    assert endpoint.gets == 6


async def test_endpoint_trouble_is_recorded_and_the_schedule_kept(
    serve: Any, tmp_path: Path
) -> None:
    endpoint, url = await serve(
        [
            ("status", (410, "")),
            ("status", (410, "")),
            ("status", (500, "Internal Server Error")),
            ("raw", b'{"DocumentIncarnation": 1, "Events": ['),
            ("raw", b'{"DocumentIncarnation": 1, "Events": "none"}'),
            ("hang", doc(1)),
            doc(1),
        ]
    )
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=1.0, timeout_s=0.5)
    await run.next_poll()
    for _ in range(4):
        await run.next_poll(1.0)
    clock.advance(1.0)  # poll 6 hangs until its timeout on the capture's clock
    async with asyncio.timeout(10):
        await endpoint.hanging.wait()
    assert await run.next_poll(0.5) == 6
    assert await run.next_poll(0.5) == 7  # the next slot, not a burst of retries
    stats = await run.finish()
    body = [line for line in lines_of(out)[1:] if "heartbeat" not in line]
    assert [line["t"] for line in body] == [at(clock, s) for s in (0, 2, 3, 4, 5, 6)]
    errors = [line["error"] for line in body if "error" in line]
    assert errors[0] == "HTTP 410: (empty body)"  # repeated identical errors: one line
    assert errors[1] == "HTTP 500: Internal Server Error"
    assert errors[2].startswith("malformed JSON")
    assert errors[3].startswith("not a Scheduled Events document (Events is not a list")
    assert errors[4] == "timeout: no answer to GET within 0.5 s"
    assert body[-1]["document"] == doc(1)
    assert (stats.polls, stats.errors, stats.documents, stats.missed) == (7, 6, 1, 0)


async def test_a_refused_connection_is_an_error_line_and_the_capture_goes_on(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/metadata/scheduledevents"
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=1.0)
    await run.next_poll()
    await run.next_poll(1.0)
    await run.next_poll(1.0)
    stats = await run.finish()
    errors = [line for line in lines_of(out) if "error" in line]
    assert len(errors) == 1 and errors[0]["error"].startswith("cannot connect")
    assert (stats.polls, stats.errors) == (3, 3)


async def test_an_overrun_poll_skips_the_missed_slots_instead_of_bursting(
    serve: Any, tmp_path: Path
) -> None:
    endpoint, url = await serve([doc(1), ("hang", doc(2, SCHEDULED)), doc(2, SCHEDULED)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=1.0, timeout_s=10.0)
    await run.next_poll()
    clock.advance(1.0)
    async with asyncio.timeout(10):
        await endpoint.hanging.wait()
    clock.advance(2.5)  # the answer comes 2.5 s late: slots 2 and 3 have passed
    endpoint.release.set()
    async with asyncio.timeout(10):
        await run.polls.get()
    assert await run.next_poll(0.5) == 3  # slot 4
    stats = await run.finish()
    assert (endpoint.gets, stats.missed) == (3, 2)
    docs = [line["t"] for line in lines_of(out) if "document" in line]
    assert docs == [at(clock, 0), at(clock, 1)]


async def test_a_heartbeat_comes_at_least_every_minute(serve: Any, tmp_path: Path) -> None:
    _, url = await serve([doc(1)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=10.0)
    await run.next_poll()
    for _ in range(13):
        await run.next_poll(10.0)
    await run.finish()
    beats = [line for line in lines_of(out) if "heartbeat" in line]
    assert [b["t"] for b in beats[:-1]] == [at(clock, 60), at(clock, 120)]
    assert beats[0]["heartbeat"] == {"polls": 7, "documents": 1, "errors": 0, "missed": 0}


async def test_with_long_intervals_heartbeats_fall_between_polls(
    serve: Any, tmp_path: Path
) -> None:
    _, url = await serve([doc(1)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=150.0)
    await run.next_poll()
    await clock.run_for(HEARTBEAT_S * 2, step=HEARTBEAT_S)
    await run.next_poll(30.0)
    await run.finish()
    kinds = [(line["t"], next(k for k in line if k != "t")) for line in lines_of(out)[1:]]
    assert kinds == [
        (at(clock, 0), "document"),
        (at(clock, 60), "heartbeat"),
        (at(clock, 120), "heartbeat"),
        (at(clock, 150), "heartbeat"),  # the final one, as the capture stops
    ]


async def test_approve_user_approves_user_events_once(serve: Any, tmp_path: Path) -> None:
    user = event("U1", event_type="Reboot", source="User")
    platform = event("P1")
    endpoint, url = await serve([doc(1), doc(2, user, platform)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, interval_s=1.0, approve="user")
    await run.next_poll()
    endpoint.post_status = 503
    await run.next_poll(1.0)
    endpoint.post_status = 200
    await run.next_poll(1.0)
    await run.next_poll(1.0)
    stats = await run.finish()
    assert endpoint.posts == [{"StartRequests": [{"EventId": "U1"}]}] * 2  # retried once
    lines = lines_of(out)
    assert {"t": at(clock, 2), "approved": ["U1"]} in lines
    assert any(line.get("error", "").startswith("approving U1: HTTP 503") for line in lines)
    assert stats.approved == 1


async def test_approve_all_approves_every_scheduled_event(serve: Any, tmp_path: Path) -> None:
    user = event("U1", event_type="Reboot", source="User")
    endpoint, url = await serve([doc(2, user, event("P1"), event("S1", status="Started"))])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, approve="all")
    await run.next_poll()
    await run.finish()
    assert endpoint.posts == [{"StartRequests": [{"EventId": "U1"}, {"EventId": "P1"}]}]


async def test_stops_by_itself_after_n_events_completed(serve: Any, tmp_path: Path) -> None:
    _, url = await serve([doc(1), doc(2, SCHEDULED), doc(3, STARTED), doc(4)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, until_events=1)
    await run.next_poll()
    for _ in range(3):
        await run.next_poll(1.0)
    async with asyncio.timeout(10):
        stats = await run.task
    assert stats.stopped == "events"
    assert lines_of(out)[-1]["heartbeat"]["stopped"] == "events"


async def test_stops_at_the_duration(serve: Any, tmp_path: Path) -> None:
    endpoint, url = await serve([doc(1)])
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, duration_s=2.5)
    await run.next_poll()
    await run.next_poll(1.0)
    await run.next_poll(1.0)
    clock.advance(0.5)
    async with asyncio.timeout(10):
        stats = await run.task
    assert (stats.stopped, endpoint.gets) == ("duration", 3)
    assert lines_of(out)[-1]["t"] == at(clock, 2.5)


async def test_appending_continues_a_capture_and_drops_a_cut_last_line(
    serve: Any, tmp_path: Path
) -> None:
    _, url = await serve([doc(1)])
    out = tmp_path / "c.jsonl"
    for _ in range(2):
        clock = FakeClock()
        run = Run(url, out, clock)
        await run.next_poll()
        await run.finish()
        with out.open("ab") as fh:
            fh.write(b'{"t": "2025-07-01T00:00:01.000000Z", "docu')  # killed mid-write
    lines = out.read_bytes().splitlines()
    assert lines[-1].startswith(b'{"t": "2025')
    assert sum(line.startswith(b'{"capture"') for line in lines) == 1
    assert sum(b'"document"' in line for line in lines[:-1]) == 2  # each run records its start


async def test_refuses_to_append_to_a_file_that_is_not_a_capture(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    with pytest.raises(CaptureError, match="not a capture file"):
        await capture("http://127.0.0.1:9/", out, clock=FakeClock(), duration_s=0)
    assert out.read_text() == "my notes\n"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("interval_s", 0.0),
        ("duration_s", -1.0),
        ("until_events", 0),
        ("approve", "some"),
        ("url", "169.254.169.254/metadata"),
    ],
)
async def test_rejects_bad_options(tmp_path: Path, option: str, value: Any) -> None:
    options = {"url": "http://127.0.0.1:9/", "clock": FakeClock(), option: value}
    with pytest.raises(CaptureError, match=f"--{option.removesuffix('_s').replace('_', '-')}"):
        await capture(out=tmp_path / "c.jsonl", **options)
    assert not (tmp_path / "c.jsonl").exists()


async def test_a_captured_episode_ingests_into_its_timeline(serve: Any, tmp_path: Path) -> None:
    steps: list[Step] = [doc(1)] * 100 + [doc(2, SCHEDULED)] * 5 + [doc(3, STARTED)] * 3 + [doc(4)]
    _, url = await serve(steps)
    clock, out = FakeClock(), tmp_path / "c.jsonl"
    run = Run(url, out, clock, until_events=1, approve="all")
    await run.next_poll()
    for _ in range(len(steps) - 1):
        await run.next_poll(1.0)
    async with asyncio.timeout(10):
        await run.task
    (trace,) = capture_traces(parse_capture(out))
    assert trace.scenario == "host-maintenance"
    # It starts at the latest sign of the empty document 30 s or more before the event: the
    # heartbeat at 60 s (the capture records changes, not every poll).
    assert trace.started_at == clock.wall_at(1000.0 + 60)
    assert [s.offset_s for s in trace.snapshots] == [0.0, 40.0, 45.0, 48.0]
    assert [(a.offset_s, a.event_ids) for a in trace.approvals] == [(40.0, ("E1",))]


def test_status_line_names_polls_events_and_errors() -> None:
    stats = CaptureStats(polls=5, documents=2, errors=1, last_error="HTTP 410: gone")
    stats.events_seen.add("E1")
    stats.last_change_at = FakeClock().wall() + timedelta(seconds=3)
    assert format_status(stats) == (
        "polls 5 | documents 2 | events 1 seen, 0 completed | errors 1 | last change "
        "2025-07-01T00:00:03Z | last error: HTTP 410: gone"
    )


def test_the_capture_path_imports_neither_pandas_nor_pyarrow_nor_aiohttp(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}/"
    code = (
        "import sys; from typer.testing import CliRunner; from replay.cli import app;"
        f"r = CliRunner().invoke(app, ['capture', '--url', {url!r}, '--duration', '0',"
        f" '--out', {str(tmp_path / 'c.jsonl')!r}]); assert r.exit_code == 0, r.output;"
        "import replay.recording.capture;"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    url = f"http://127.0.0.1:{unused_port()}/"
    args = ["capture", "--url", url, "--interval", "0.05", "--out", str(out)]
    with subprocess.Popen(
        [sys.executable, "-m", "replay", *args], stderr=subprocess.PIPE, text=True
    ) as proc:
        watchdog = threading.Timer(20, proc.kill)
        watchdog.start()
        try:
            assert proc.stderr is not None
            assert "capturing into" in proc.stderr.readline()  # the handlers are in place
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            assert "stopped (signal)" in proc.stderr.read()
        finally:
            watchdog.cancel()
            proc.kill()
    assert lines_of(out)[-1]["heartbeat"]["stopped"] == "signal"


def test_the_default_url_is_imds() -> None:
    from typer.testing import CliRunner

    from replay.cli import app

    help_text = CliRunner().invoke(app, ["capture", "--help"]).output
    url = "http://169.254.169.254/metadata/scheduledevents?api-version=" + LATEST_VERSION
    assert default_url(LATEST_VERSION) == url
    assert "169.254.169.254" in help_text
