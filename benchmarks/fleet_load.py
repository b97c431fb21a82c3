"""The fleet benchmark's load generator: VMs polling IMDS, each from its own 127.x.y.z address.

Imported by fleet_scale.py, which runs `generate` in child processes. One child plays a slice
of the VMs on one asyncio loop with raw protocols (no HTTP client library: its own cost would
hide the server's). Every VM polls once a second at its own phase (VM i of n at i/n of each
second), open loop, except that a poll due while the VM still waits for its previous answer
is counted as an overrun and skipped (a handler or a curl loop waits too). Latency runs from
sending the request (keep-alive) or from starting to connect (new connection per poll) to the
last byte of the answer.

Bounded: a child stops polling at its window's end, waits at most DRAIN_S for answers in
flight, and returns; the parent kills it if it has not returned by then.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

REQUEST = (
    b"GET /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\n"
    b"Host: 169.254.169.254\r\nMetadata: true\r\n%s\r\n"
)
KEEP = REQUEST % b""
CLOSE = REQUEST % b"Connection: close\r\n"
DRAIN_S = 3.0
CONNECT_BATCH = 200
NO_EVENT, SCHEDULED, STARTED = 0, 1, 2


def address_of(i: int) -> str:
    """VM i's source address: 127.1.y.z (all of 127.0.0.0/8 is loopback)."""
    return f"127.1.{i // 200}.{i % 200 + 1}"


@dataclass
class Slice:
    """What one generator child plays."""

    first: int
    count: int
    total: int
    host: str
    port: int
    keep_alive: bool


@dataclass
class Record:
    """What a child measured in the window (arrays, so they pickle small)."""

    latency_s: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    lag_s: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    vm: array = field(default_factory=lambda: array("i"))  # type: ignore[type-arg]
    sent_at: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    seen: array = field(default_factory=lambda: array("b"))  # type: ignore[type-arg]
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    problems: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    setup_errors: int = 0


class Poll(asyncio.Protocol):
    """One VM's connection: sends a request, reads one HTTP answer at a time."""

    def __init__(self, vm: int, run: Run) -> None:
        self.vm = vm
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent: float | None = None
        self.due = 0.0
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.connected.done():
            self.connected.set_result(None)

    def send(self, due: float, started: float | None = None) -> None:
        assert self.transport is not None
        self.sent = time.monotonic() if started is None else started
        self.due = due
        self.buffer = b""
        self.transport.write(KEEP if self.run.slice.keep_alive else CLOSE)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        length_at = head.lower().find(b"content-length:")
        length = int(head[length_at + 15 :].split(b"\r\n", 1)[0]) if length_at >= 0 else 0
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        status = int(head[9:12])
        self.buffer = self.buffer[head_end + 4 + length :]
        self.run.answered(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))
        if self.sent is not None:
            self.run.failed(self, f"connection lost: {exc}")
        self.transport = None


class Run:
    """One child's VMs, their schedule, and what they measured."""

    def __init__(self, slice_: Slice, window: tuple[float, float]) -> None:
        self.slice = slice_
        self.window = window
        self.record = Record()
        self.polls: dict[int, Poll] = {}
        self.in_flight = 0
        self.pending: set[asyncio.Task[None]] = set()
        """New-connection polls still connecting."""
        self.busy: set[int] = set()
        """VMs whose new-connection poll has no answer yet (a curl loop waits for it)."""

    def measuring(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    def answered(self, poll: Poll, status: int, body: bytes) -> None:
        now = time.monotonic()
        sent = poll.sent
        poll.sent = None
        self.in_flight -= 1
        self.busy.discard(poll.vm)
        if not self.slice.keep_alive and poll.transport is not None:
            poll.transport.close()
        if sent is None or not self.measuring(poll.due):
            return
        rec = self.record
        rec.polls += 1
        if status != 200:
            rec.errors += 1
            if len(rec.problems) < 5:
                rec.problems.append(f"HTTP {status}: {body[:100]!r}")
            return
        rec.latency_s.append(now - sent)
        rec.lag_s.append(sent - poll.due)
        rec.vm.append(poll.vm)
        rec.sent_at.append(sent)
        rec.seen.append(
            STARTED if b'"Started"' in body else SCHEDULED if b'"Scheduled"' in body else NO_EVENT
        )

    def failed(self, poll: Poll, problem: str) -> None:
        due = poll.due
        poll.sent = None
        self.in_flight -= 1
        self.busy.discard(poll.vm)
        if self.measuring(due):
            self.record.polls += 1
            self.record.errors += 1
            if len(self.record.problems) < 5:
                self.record.problems.append(problem)

    async def connect(self, vm: int) -> Poll:
        loop = asyncio.get_running_loop()
        poll = Poll(vm, self)
        await loop.create_connection(
            lambda: poll,
            self.slice.host,
            self.slice.port,
            local_addr=(address_of(vm), 0),
        )
        await poll.connected
        return poll

    async def connect_all(self) -> None:
        """Keep-alive: one connection per VM, opened CONNECT_BATCH at a time."""
        vms = range(self.slice.first, self.slice.first + self.slice.count)
        for lo in range(0, len(vms), CONNECT_BATCH):
            batch = vms[lo : lo + CONNECT_BATCH]
            connects = (self.connect(v) for v in batch)
            results = await asyncio.gather(*connects, return_exceptions=True)
            for vm, result in zip(batch, results, strict=True):
                if isinstance(result, Poll):
                    self.polls[vm] = result
                else:
                    self.record.setup_errors += 1

    async def poll_new(self, vm: int, due: float) -> None:
        """A new connection for one poll (a curl loop)."""
        started = time.monotonic()
        self.in_flight += 1
        try:
            poll = await asyncio.wait_for(self.connect(vm), timeout=DRAIN_S)
        except (OSError, TimeoutError) as exc:
            self.in_flight -= 1
            self.busy.discard(vm)
            if self.measuring(due):
                self.record.polls += 1
                self.record.errors += 1
                if len(self.record.problems) < 5:
                    self.record.problems.append(f"connect: {exc!r}")
            return
        poll.send(due, started)

    async def schedule(self, t0: float, end: float) -> None:
        """Send every VM's poll at t0 + k + i/total, until end."""
        total = self.slice.total
        mine = range(self.slice.first, self.slice.first + self.slice.count)
        order = [(vm / total, vm) for vm in mine]
        pending = self.pending
        k = 0
        while True:
            for phase, vm in order:
                due = t0 + k + phase
                if due >= end:
                    return
                wait = due - time.monotonic()
                if wait > 0.0005:
                    await asyncio.sleep(wait)
                if self.slice.keep_alive:
                    poll = self.polls.get(vm)
                    if poll is None or poll.transport is None:
                        continue
                    if poll.sent is not None:
                        if self.measuring(due):
                            self.record.overruns += 1
                        continue
                    self.in_flight += 1
                    poll.send(due)
                else:
                    if vm in self.busy:
                        if self.measuring(due):
                            self.record.overruns += 1
                        continue
                    self.busy.add(vm)
                    task = asyncio.create_task(self.poll_new(vm, due))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            k += 1


async def _generate(slice_: Slice, conn: Any) -> Record:
    run = Run(slice_, (0.0, 0.0))
    if slice_.keep_alive:
        await run.connect_all()
    conn.send(("ready", len(run.polls) if slice_.keep_alive else slice_.count))
    t0, window_start, window_end = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    run.window = (window_start, window_end)
    await run.schedule(t0, window_end)
    deadline = time.monotonic() + DRAIN_S
    while run.in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for task in list(run.pending):  # still connecting: counted below as without an answer
        task.cancel()
    if run.in_flight > 0:  # due at the window's end: counted as errors
        run.record.errors += run.in_flight
        run.record.polls += run.in_flight
        run.record.problems.append(f"{run.in_flight} without an answer {DRAIN_S:g} s after the end")
    for poll in run.polls.values():
        if poll.transport is not None:
            poll.transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    run.record.cpu_s = usage.ru_utime + usage.ru_stime
    return run.record


def generate(slice_: Slice, conn: Any, cpus: set[int] | None, nice: int = 0) -> None:
    """A child process: play a slice of the VMs, send the Record back through conn."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if nice:
        os.nice(nice)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conn.send(("done", asyncio.run(_generate(slice_, conn))))
    conn.close()
