"""Polling a real Scheduled Events endpoint into a crash-safe capture file (capture_file).

Standard library only, Python 3.8 syntax: this module is also the body of the single-file
capture script (capture_script) that runs on a bare VM's python3. Requests run in a worker
thread (http.client, no proxies, as IMDS wants); a request given up on has its socket shut.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import re
import signal
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from replay.recording.capture_file import (
    CAPTURE_FORMAT,
    HEARTBEAT_S,
    ApprovePolicy,
    CaptureError,
    CaptureStats,
    CaptureWriter,
    dumps,
    iso_utc,
)
from replay.recording.capture_http import Http


class Clock(Protocol):
    """What a capture needs of a clock (replay.clock.SystemClock or FakeClock, or the
    script's own)."""

    def now(self) -> float: ...
    def wall(self) -> datetime: ...
    async def sleep_until(self, t: float) -> None: ...


IMDS_URL = "http://169.254.169.254/metadata/scheduledevents"
APPROVE_POLICIES = tuple(p.value for p in ApprovePolicy)


def default_url(api_version: str) -> str:
    """The Scheduled Events endpoint of IMDS, at an api-version."""
    return f"{IMDS_URL}?api-version={api_version}"


def default_out() -> Path:
    """capture-<host>.jsonl in the current directory."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "vm"
    return Path(f"capture-{host}.jsonl")


def to_approve(document: Mapping[str, Any], policy: str, done: set[str]) -> list[str]:
    """EventIds of Scheduled events the policy approves and this run has not yet approved."""
    if policy == "none":
        return []
    return [
        e["EventId"]
        for e in document["Events"]
        if e.get("EventStatus") == "Scheduled"
        and (policy == "all" or e.get("EventSource") == "User")
        and e.get("EventId") not in done
    ]


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:200] or "(empty body)"


def _shape_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return f"not a JSON object: {type(document).__name__}"
    incarnation = document.get("DocumentIncarnation")
    if isinstance(incarnation, bool) or not isinstance(incarnation, int):
        return "no integer DocumentIncarnation"
    events = document.get("Events")
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("EventId"), str) for e in events
    ):
        return "Events is not a list of events with EventIds"
    return None


class Poller:
    """The poll loop of one capture run, on an absolute schedule t0 + k * interval_s."""

    def __init__(
        self,
        session: Http,
        url: str,
        writer: CaptureWriter,
        *,
        clock: Clock,
        interval_s: float,
        duration_s: float | None,
        until_events: int | None,
        approve: str,
        timeout_s: float,
        on_poll: Callable[[CaptureStats], None] | None,
    ) -> None:
        self.session, self.url, self.writer, self.clock = session, url, writer, clock
        self.interval_s, self.duration_s, self.until_events = interval_s, duration_s, until_events
        self.approve, self.timeout_s, self.on_poll = approve, timeout_s, on_poll
        self.stats = CaptureStats()
        self._last_outcome: Any = None
        self._last_document: dict[str, Any] | None = None
        self._last_line_at = clock.now()
        self._present: set[str] = set()
        self._approved: set[str] = set()

    def write(self, line: dict[str, Any]) -> None:
        self.writer.write(line)
        self._last_line_at = self.clock.now()

    def heartbeat(self) -> None:
        self.write({"t": iso_utc(self.clock.wall()), "heartbeat": self.stats.heartbeat()})

    async def run(self) -> None:
        """Poll until the duration ends or enough events completed (a stop cancels the task)."""
        t0 = self.clock.now()
        end = t0 + self.duration_s if self.duration_s is not None else math.inf
        k = 0
        while True:
            deadline = t0 + k * self.interval_s
            # With intervals over HEARTBEAT_S a heartbeat falls between polls.
            while self._last_line_at + HEARTBEAT_S < min(deadline, end):
                await self.clock.sleep_until(self._last_line_at + HEARTBEAT_S)
                self.heartbeat()
            if deadline >= end:
                await self.clock.sleep_until(end)
                self.stats.stopped = "duration"
                return
            await self.clock.sleep_until(deadline)
            await self.poll_once()
            if self.clock.now() >= self._last_line_at + HEARTBEAT_S:
                self.heartbeat()
            if self.on_poll is not None:
                self.on_poll(self.stats)
            if self.until_events is not None and (
                len(self.stats.events_completed) >= self.until_events
            ):
                self.stats.stopped = "events"
                return
            # Skip slots already past instead of bursting to catch up.
            due = math.ceil((self.clock.now() - t0) / self.interval_s - 1e-9)
            self.stats.missed += max(0, due - (k + 1))
            k = max(k + 1, due)

    async def poll_once(self) -> None:
        """One GET: record the document if it changed, or the error; approve if asked."""
        self.stats.polls += 1
        started = iso_utc(self.clock.wall())
        outcome = await self._timed(self._fetch(), "GET")
        if isinstance(outcome, str):
            self.stats.errors += 1
            self.stats.last_error = outcome
            if outcome != self._last_outcome:
                self.write({"t": started, "error": outcome})
            self._last_outcome = outcome
            return
        if outcome != self._last_outcome:
            self.write({"t": started, "document": outcome})
            self.stats.documents += 1
        if self._last_document is not None and outcome != self._last_document:
            self.stats.last_change_at = self.clock.wall()
        self._last_outcome = self._last_document = outcome
        ids = {e["EventId"] for e in outcome["Events"]}
        self.stats.events_seen |= ids
        self.stats.events_completed |= self._present - ids
        self._present = ids
        wanted = to_approve(outcome, self.approve, self._approved)
        if wanted:
            await self._approve_events(wanted)

    async def _approve_events(self, event_ids: list[str]) -> None:
        sent_at = iso_utc(self.clock.wall())
        problem = await self._timed(self._post(event_ids), "POST")
        if problem is None:
            self._approved.update(event_ids)
            self.stats.approved += len(event_ids)
            self.write({"t": sent_at, "approved": event_ids})
        else:
            self.stats.errors += 1
            self.stats.last_error = f"approving {', '.join(event_ids)}: {problem}"
            self.write({"t": sent_at, "error": self.stats.last_error})
            self._last_outcome = None

    async def _timed(self, work: Any, what: str) -> Any:
        """Await work, giving up after timeout_s on the capture's clock."""
        task = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self.clock.sleep_until(self.clock.now() + self.timeout_s))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, timer):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
        if task.cancelled():
            return f"timeout: no answer to {what} within {self.timeout_s:g} s"
        return task.result()

    async def _fetch(self) -> dict[str, Any] | str:
        try:
            status, body = await self.session.request("GET")
        except ConnectionRefusedError as exc:
            return f"cannot connect: {exc.strerror or exc}"
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"HTTP {status}: {_snippet(body)}"
        try:
            document = json.loads(body)
        except ValueError as exc:
            return f"malformed JSON ({exc}): {_snippet(body)}"
        problem = _shape_problem(document)
        if problem:
            return f"not a Scheduled Events document ({problem}): {_snippet(body)}"
        result: dict[str, Any] = document
        return result

    async def _post(self, event_ids: list[str]) -> str | None:
        body = dumps({"StartRequests": [{"EventId": eid} for eid in event_ids]})
        try:
            status, answer = await self.session.request("POST", body)
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if status >= 300:
            return f"HTTP {status}: {_snippet(answer)}"
        return None


def _check_options(
    url: str, interval_s: float, duration_s: float | None, until_events: int | None, approve: str
) -> None:
    if not url.startswith(("http://", "https://")):
        raise CaptureError(f"--url must be an http:// or https:// URL, got {url!r}")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise CaptureError(f"--interval must be a positive number of seconds, got {interval_s}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise CaptureError(f"--duration must be seconds >= 0, got {duration_s}")
    if until_events is not None and until_events < 1:
        raise CaptureError(f"--until-events must be at least 1, got {until_events}")
    if approve not in APPROVE_POLICIES:
        raise CaptureError(f"--approve must be one of {', '.join(APPROVE_POLICIES)}")


async def capture(
    url: str,
    out: Path,
    *,
    clock: Clock,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    until_events: int | None = None,
    approve: str = "none",
    timeout_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_poll: Callable[[CaptureStats], None] | None = None,
    host: str | None = None,
) -> CaptureStats:
    """Poll url every interval_s seconds (on clock) into the capture file out until told to stop.

    Stops at duration_s, after until_events events completed (seen, then gone), or when stop
    is set. timeout_s (default: the interval, at least 2 s) bounds each request on the clock.
    """
    _check_options(url, interval_s, duration_s, until_events, approve)
    header = {
        "format": CAPTURE_FORMAT,
        "url": url,
        "interval_s": interval_s,
        "host": host if host is not None else socket.gethostname(),
        "started_at": iso_utc(clock.wall()),
        "approve": approve,
    }
    writer = CaptureWriter.open(out, header)
    timeout_s = timeout_s if timeout_s is not None else max(interval_s, 2.0)
    session = Http(url, timeout_s)
    try:
        poller = Poller(
            session,
            url,
            writer,
            clock=clock,
            interval_s=interval_s,
            duration_s=duration_s,
            until_events=until_events,
            approve=approve,
            timeout_s=timeout_s,
            on_poll=on_poll,
        )
        try:
            await _run_until_stopped(poller, stop)
        finally:
            session.close()
        poller.heartbeat()
        return poller.stats
    finally:
        writer.close()


async def _run_until_stopped(poller: Poller, stop: asyncio.Event | None) -> None:
    loop_task = asyncio.ensure_future(poller.run())
    stop_task = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        waiting = {loop_task} if stop_task is None else {loop_task, stop_task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not loop_task.done():
            poller.stats.stopped = "signal"
    finally:
        for task in (loop_task, stop_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if not loop_task.cancelled():
        loop_task.result()  # a bug in the loop keeps its traceback


def run_capture(
    url: str,
    out: Path,
    *,
    clock: Clock,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    until_events: int | None = None,
    approve: str = "none",
    on_poll: Callable[[CaptureStats], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> CaptureStats:
    """Run a capture on the real clock until its duration, its event count, SIGINT or SIGTERM.

    on_start() is called once the signal handlers are in place.
    """

    async def main() -> CaptureStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
        if on_start is not None:
            on_start()
        try:
            return await capture(
                url,
                out,
                clock=clock,
                interval_s=interval_s,
                duration_s=duration_s,
                until_events=until_events,
                approve=approve,
                stop=stop,
                on_poll=on_poll,
            )
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
