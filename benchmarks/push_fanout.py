"""Push fan-out: lateness of /s/{session}/stream with many subscribers on one session.

Usage: .venv/bin/python benchmarks/push_fanout.py [--subscribers N,...] [--duration S]
       [--trace NAME] [--speed X] [--receivers kernel,aiohttp] [--variants shipped,...]
       [--no-baseline] [--no-pin] [--no-floor]

Issue 7's target: 1,000 subscribers on one session at 60x, push lateness p99 at most 2 ms,
lateness measured from the moment the document became current (the message's "at").

For each server variant, subscriber count (1 as a baseline, then N) and receiver, it starts a
fresh `imds-replay serve --trace spot-eviction --speed 60 --start now --loop --log-level info`
on a free port (spot-eviction loops every 2 s at 60x: 3 documents a round, 1.5 a second), opens
the subscribers to /s/default/stream, lets them settle, then records every message for
--duration seconds. Lateness = receive time - "at" (both this machine's realtime clock; the
server's wall clock is pinned to its monotonic clock at start, and the script reports whether
realtime - monotonic moved during the run). Receivers:

- kernel: plain non-blocking sockets speaking just enough WebSocket, read with recvmsg and
  SO_TIMESTAMPNS. "socket" lateness is the kernel's receive timestamp (on loopback, taken in
  the server's send() call), so it is the server's lateness with no client processing in it;
  "app" lateness is when this script's loop got the bytes (after the frames of the
  subscribers it read first).
- aiohttp: one ClientSession (connector limit off), one reading task per ws_connect, the time
  taken when the task sees the message: what a typical asyncio client observes, client
  overhead included.

Server variants (patched into the server process before the app is built):

- shipped: replay/stream.py, replay/fanout.py and replay/clock.py as they are: the session's
  Fanout encodes the frame once and writes it straight to every socket with nothing waiting,
  the sockets split between the loop's thread and a helper per further CPU; the ticker wakes
  on a timerfd 1 ms early and spins to the deadline (a session with subscribers only).
- no-spin: shipped, but the ticker sleeps right up to the deadline.
- one-thread: no-spin, every socket written by the loop's thread.
- coarse-timer: no-spin, but the ticker sleeps on asyncio's timers (epoll's whole
  milliseconds), waking early before long sleeps.
- tasks: every push through each connection's queue and sender task (ws.send_str), one thread.
- before: tasks, and one long asyncio sleep per transition (the code before issue 7's work).

Also reported: the ticker's own lateness (the "transition" log lines), the spread of one
transition across subscribers (last socket timestamp - first), the server's CPU time per
transition, messages missing, and (unless --no-floor) two floors on N already-connected
loopback sockets: one Python loop send()ing one frame on each, and replay.server.fanout.offer_all
doing the same on every CPU. No server that writes each subscriber's socket can beat them.
The receivers run on CPU 1 under SCHED_IDLE, so they take only CPU time the server leaves
(the server may use both CPUs; --no-pin leaves both unpinned at normal priority).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from processes import cpu_s, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
PATH = "/s/default/stream"
SO_TIMESTAMPNS = 35  # Linux (asm-generic); Python 3.11's socket module lacks the name
SETTLE_S = 1.5
"""Seconds between the last subscriber connecting and the start of the measurement."""
GRACE_S = 1.0
"""Seconds the receivers keep reading after the measurement, for messages still in flight."""
VARIANTS = ("shipped", "no-spin", "one-thread", "coarse-timer", "tasks", "before")


# -- server variants (run inside the server process) -------------------------------------------
def _patch(variant: str) -> None:
    """Put back an earlier push path in the server process (before make_app runs)."""
    import replay.clock as clock
    import replay.playback.ticker as ticker
    import replay.server.fanout as fanout

    if variant != "shipped":
        ticker.SPIN_S = 0.0  # the ticker sleeps right up to each deadline
    if variant in ("coarse-timer", "before"):
        clock._timerfd_create = None  # asyncio's own timers, as before the timerfd
    if variant == "before":
        clock.SHORT_WAIT_S = float("inf")  # and one long sleep per transition
    if variant in ("one-thread", "tasks", "before"):
        fanout.HELPERS = 0
    if variant in ("tasks", "before"):
        fanout.Connection.offer = lambda self, frame: fanout.BUSY  # type: ignore[method-assign]


def _serve(argv: list[str]) -> None:
    """`push_fanout.py _serve VARIANT serve-args...`: the CLI's serve with a patched route."""
    _patch(argv[0])
    from replay.cli import main

    sys.argv = ["imds-replay", "serve", *argv[1:]]
    main()


# -- the server process --------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    transitions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    """(realtime when the log line arrived, the "transition" JSON line)."""
    other: list[str] = field(default_factory=list)

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        return cpu_s(self.proc.pid)


def start_server(args: argparse.Namespace, variant: str) -> Server:
    port = free_port()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_serve",
        variant,
        "--trace",
        args.trace,
        "--speed",
        str(args.speed),
        "--start",
        "now",
        "--loop",
        "--log-level",
        "info",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    if os.sched_getscheduler(0) == os.SCHED_IDLE:  # the server runs at normal priority
        os.sched_setscheduler(proc.pid, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(proc.pid, {0, 1})
    server = Server(proc, port)
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith('{"event":"transition"'):
                server.transitions.append((time.time(), orjson.loads(line)))
                continue
            server.other.append(line)
            if line.startswith("PUSH"):
                print(line.strip(), flush=True)
            if "IMDS at" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise SystemExit("server did not start:\n" + "".join(server.other))
    return server


def stop_server(server: Server) -> None:
    stop(server.proc)


# -- receivers -----------------------------------------------------------------------------------
@dataclass
class Capture:
    """What the subscribers received during one run."""

    subscribers: int
    start: float
    end: float
    """Realtime bounds of the measurement: transitions whose "at" falls in them count."""
    messages: list[list[tuple[float, float | None, bytes]]]
    """Per subscriber: (app receive time, kernel socket timestamp or None, payload)."""
    connect_s: float


def _handshake(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("the server closed the connection during the handshake")
        head += chunk
    status, rest = head.split(b"\r\n\r\n", 1)
    if not status.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {status.splitlines()[0]!r}")
    sock.setblocking(False)
    return sock, rest


def _frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Complete (opcode, payload) frames taken off the front of buf (server frames: unmasked)."""
    out = []
    while len(buf) >= 2:
        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
        head = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, head = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, head = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < head + n:
            break
        out.append((opcode, bytes(buf[head : head + n])))
        del buf[: head + n]
    return out


def _pong(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x8A, 0x80 | len(payload))) + mask + masked


def receive_kernel(port: int, n: int, duration_s: float, mark: Callable[[], None]) -> Capture:
    """Raw sockets read with recvmsg: kernel receive timestamps and this loop's own times."""
    t0 = time.time()
    conns = [_handshake(port) for _ in range(n)]
    socks = [c[0] for c in conns]
    bufs = [bytearray(c[1]) for c in conns]
    messages: list[list[tuple[float, float | None, bytes]]] = [[] for _ in range(n)]
    index = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    connected = time.time()
    start = connected + SETTLE_S
    end = start + duration_s
    stop = end + GRACE_S
    anc_size = socket.CMSG_SPACE(16)
    marks = [start, end]
    try:
        while (now := time.time()) < stop:
            if marks and now >= marks[0]:
                mark()
                marks.pop(0)
            wake = marks[0] if marks else stop
            for fd, _ in poller.poll(max(0.0, wake - now)):
                i = index[fd]
                try:
                    data, anc, _, _ = socks[i].recvmsg(65536, anc_size)
                except BlockingIOError:
                    continue
                app_at = time.time()
                if not data:
                    poller.unregister(fd)
                    continue
                kernel_at = None
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        kernel_at = sec + nsec / 1e9
                bufs[i] += data
                for opcode, payload in _frames(bufs[i]):
                    if opcode == 0x1:
                        messages[i].append((app_at, kernel_at, payload))
                    elif opcode == 0x9:
                        socks[i].sendall(_pong(payload))
    finally:
        poller.close()
        for s in socks:
            s.close()
    return Capture(n, start, end, messages, connected - t0)


def receive_aiohttp(port: int, n: int, duration_s: float, mark: Callable[[], None]) -> Capture:
    """aiohttp ClientSession.ws_connect per subscriber, one reading task each."""
    import aiohttp

    async def run() -> Capture:
        messages: list[list[tuple[float, float | None, bytes]]] = [[] for _ in range(n)]
        gate = asyncio.Semaphore(64)  # stay inside the server's listen backlog
        t0 = time.time()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def connect() -> aiohttp.ClientWebSocketResponse:
                async with gate:
                    return await http.ws_connect(f"http://127.0.0.1:{port}{PATH}")

            sockets = await asyncio.gather(*(connect() for _ in range(n)))

            async def read(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
                got = messages[i].append
                async for msg in ws:
                    got((time.time(), None, msg.data.encode()))

            readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
            connected = time.time()
            start = connected + SETTLE_S
            end = start + duration_s
            await asyncio.sleep(start - time.time())
            mark()
            await asyncio.sleep(end - time.time())
            mark()
            await asyncio.sleep(end + GRACE_S - time.time())
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return Capture(n, start, end, messages, connected - t0)

    return asyncio.run(run())


# -- figures -------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


@dataclass
class Result:
    variant: str
    receiver: str
    subscribers: int
    transitions: int
    messages: int
    missing: int
    lateness_ms: dict[str, list[float]]
    """Sorted lateness per measure (socket, app)."""
    ticker_ms: list[float]
    spread_ms: list[float]
    cpu_ms_per_transition: float
    connect_s: float


def analyse(variant: str, receiver: str, cap: Capture, server: Server, cpu_s: float) -> Result:
    at_of: dict[bytes, float] = {}
    seen: dict[tuple[int, float], int] = defaultdict(int)
    app: list[float] = []
    kernel: list[float] = []
    stamps: dict[tuple[int, float], list[float]] = defaultdict(list)
    for per_sub in cap.messages:
        for app_at, kernel_at, payload in per_sub:
            head, _, at_raw = payload.rpartition(b',"at":')
            at = at_of.get(at_raw)
            if at is None:
                at = at_of[at_raw] = datetime.fromisoformat(orjson.loads(at_raw[:-1])).timestamp()
            if not cap.start <= at <= cap.end:
                continue
            incarnation = orjson.loads(head[len(b'{"document":') :])["DocumentIncarnation"]
            key = (incarnation, at)
            seen[key] += 1
            app.append((app_at - at) * 1000)
            if kernel_at is not None:
                kernel.append((kernel_at - at) * 1000)
                stamps[key].append(kernel_at)
    # Transitions the server logged inside the window count even if no subscriber got them.
    logged = [
        line
        for arrived, line in server.transitions
        if cap.start + 0.05 <= arrived <= cap.end - 0.05
    ]
    expected = {k[0] for k in seen} | {line["incarnation"] for line in logged}
    got_by_incarnation: dict[int, int] = defaultdict(int)
    for (incarnation, _), count in seen.items():
        got_by_incarnation[incarnation] += count
    missing = sum(cap.subscribers - got_by_incarnation.get(i, 0) for i in expected)
    lateness = {"app": sorted(app)}
    if kernel:
        lateness["socket"] = sorted(kernel)
    return Result(
        variant=variant,
        receiver=receiver,
        subscribers=cap.subscribers,
        transitions=len(expected),
        messages=sum(seen.values()),
        missing=missing,
        lateness_ms=lateness,
        ticker_ms=sorted(line["lateness_ms"] for line in logged),
        spread_ms=sorted((max(v) - min(v)) * 1000 for v in stamps.values()),
        cpu_ms_per_transition=cpu_s * 1000 / max(1, len(expected)),
        connect_s=cap.connect_s,
    )


def row(r: Result) -> list[str]:
    def fig(values: list[float]) -> str:
        return "/".join(f"{pct(values, q):.2f}" for q in (50, 90, 99)) + f" max {values[-1]:.2f}"

    socket_fig = fig(r.lateness_ms["socket"]) if "socket" in r.lateness_ms else "-"
    spread = f"{statistics.median(r.spread_ms):.2f}" if r.spread_ms else "-"
    ticker = f"{pct(r.ticker_ms, 50):.2f}/{pct(r.ticker_ms, 99):.2f}" if r.ticker_ms else "-"
    return [
        r.variant,
        r.receiver,
        str(r.subscribers),
        str(r.transitions),
        str(r.messages),
        str(r.missing),
        socket_fig,
        fig(r.lateness_ms["app"]),
        ticker,
        spread,
        f"{r.cpu_ms_per_transition:.1f}",
    ]


HEADER = [
    "variant",
    "receiver",
    "subs",
    "transitions",
    "messages",
    "missing",
    "socket p50/p90/p99 ms",
    "app p50/p90/p99 ms",
    "ticker p50/p99",
    "spread p50",
    "cpu ms/tr",
]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), flush=True)


@dataclass
class _Raw:
    fd: int

    def offer(self, data: bytes) -> int:
        return os.write(self.fd, data)


def floor_ms(n: int, rounds: int = 20, *, parallel: bool = False) -> list[float]:
    """Milliseconds one Python loop takes to send() a 400-byte frame on each of n sockets
    (parallel: replay.server.fanout.offer_all on every CPU instead)."""
    from replay.server.fanout import offer_all

    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    port = listener.getsockname()[1]
    pairs = []
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        server.setblocking(False)
        pairs.append((server, client))
    frame = bytes((0x81, 126, 1, 144)) + b"x" * 400
    targets = [_Raw(server.fileno()) for server, _ in pairs]
    spans = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            if parallel:
                offer_all(targets, frame)
            else:
                for server, _ in pairs:
                    server.send(frame)
            spans.append((time.perf_counter() - t0) * 1000)
            for _, client in pairs:
                client.recv(4096)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        listener.close()
    return sorted(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1000", help="counts, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--trace", default="spot-eviction")
    parser.add_argument("--speed", default="60")
    parser.add_argument("--receivers", default="kernel,aiohttp")
    parser.add_argument("--variants", default="shipped", help=f"any of {','.join(VARIANTS)}")
    parser.add_argument("--no-baseline", action="store_true", help="skip the 1-subscriber runs")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    receivers = {"kernel": receive_kernel, "aiohttp": receive_aiohttp}
    chosen = [r for r in args.receivers.split(",") if r]
    variants = [v for v in args.variants.split(",") if v]
    if not set(chosen) <= set(receivers) or not set(variants) <= set(VARIANTS):
        parser.error(f"receivers: {','.join(receivers)}; variants: {','.join(VARIANTS)}")
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    counts = [int(n) for n in args.subscribers.split(",") if n]
    print(
        f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, "
        f"{'receivers on CPU 1 at SCHED_IDLE' if pin else 'not pinned'}; "
        f"trace {args.trace} at {args.speed}x, {args.duration:g} s measured per run",
        flush=True,
    )
    if not args.no_floor:
        if pin:  # measured at normal priority, with both CPUs
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            os.sched_setaffinity(0, {0, 1})
        for n in counts:
            for parallel, how in ((False, "one Python loop send()ing"), (True, "offer_all of")):
                spans = floor_ms(n, parallel=parallel)
                print(
                    f"floor: {how} a 404-byte frame on {n} loopback sockets takes "
                    f"{pct(spans, 50):.2f} ms (p50 of {len(spans)}; min {spans[0]:.2f}, "
                    f"max {spans[-1]:.2f})",
                    flush=True,
                )
        if pin:
            os.sched_setaffinity(0, {1})
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    counts = ([1] if not args.no_baseline and 1 not in counts else []) + counts
    drift0 = time.time() - time.monotonic()
    rows = []
    for variant in variants:
        for n in counts:
            for receiver in chosen:
                server = start_server(args, variant)
                cpu: list[float] = []

                def mark(server: Server = server, cpu: list[float] = cpu) -> None:
                    cpu.append(server.cpu_s())

                try:
                    cap = receivers[receiver](server.port, n, args.duration, mark)
                finally:
                    stop_server(server)
                result = analyse(variant, receiver, cap, server, cpu[1] - cpu[0])
                rows.append(row(result))
                print(", ".join(f"{h} {c}" for h, c in zip(HEADER, rows[-1], strict=True)))
    drift_ms = (time.time() - time.monotonic() - drift0) * 1000
    print(
        f"\nload average now {os.getloadavg()[0]:.2f}; realtime - monotonic moved {drift_ms:.3f} ms"
    )
    print('\nsummary (lateness in ms from the document\'s "at"; socket = kernel receive')
    print("timestamp, app = seen by the receiving loop; spread = last - first subscriber):")
    print_table(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        _serve(sys.argv[2:])
    else:
        main()
