"""Push fan-out: one session's new document written to every subscribed socket at once.

All connections of one session name form a Fanout, the session's one listener. A push encodes
the message once per wire format and writes it straight to every socket that has nothing
waiting. A connection with a backlog, one that negotiated compression (aiohttp's writer keeps
that state) or one over TLS gets the message through its own bounded queue and sender task
instead, which drops the oldest when it overflows. Waking one task per connection for every
push cost as much CPU again as the writes (benchmarks/push_fanout.py).

Offering one push to many connections at once, on every CPU the process may use.

On loopback a send() of a few hundred bytes costs about 13 microseconds of kernel time on the
project's 2-core machines (the same in C; benchmarks/push_fanout.py prints this floor), so
1,000 subscribers take 13 ms from one thread. The kernel work runs without the GIL, so helper
threads taking their share of the connections at the same time cut that by the number of
CPUs.

The caller (the event loop's thread) takes the first share itself and waits for the helpers
before it returns, so nothing else on the loop runs meanwhile: no connection is written by two
threads at once, none changes state or is closed while a helper looks at it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from replay.cpus import usable_cpus
from replay.playback.ticker import Pushed

PER_THREAD_MIN = 32
"""Fewer connections than this per thread are offered by the calling thread alone: waking a
helper costs about as much as a few sends."""

HELPERS = usable_cpus() - 1
"""Helper threads by default: one fewer than the CPUs this process may run on."""

POOL_THREADS = 32
"""The most helper threads a pool keeps (they start as they are first needed)."""


def make_pool() -> ThreadPoolExecutor:
    """The helper threads of one server (made and shut down with its app)."""
    return ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="push-fanout")


class Offerable(Protocol):
    def offer(self, data: bytes) -> int:
        """Write data now if possible: the bytes written, or a negative code."""
        ...


def offer_all(
    targets: Sequence[Offerable],
    data: bytes,
    pool: ThreadPoolExecutor | None,
    *,
    helpers: int | None = None,
) -> list[int]:
    """target.offer(data) for every target, spread over the calling thread and pool's threads.

    helpers (default HELPERS, at most POOL_THREADS - 1) bounds the threads that join the
    calling one; without a pool the calling thread offers to every target.
    """
    results = [0] * len(targets)
    threads = 1 + min(HELPERS if helpers is None else helpers, len(targets) // PER_THREAD_MIN - 1)
    if threads <= 1 or pool is None:
        _offer_range(targets, data, results, 0, len(targets))
        return results
    share = -(-len(targets) // threads)
    bounds = [(lo, min(lo + share, len(targets))) for lo in range(0, len(targets), share)]
    futures = [pool.submit(_offer_range, targets, data, results, lo, hi) for lo, hi in bounds[1:]]
    _offer_range(targets, data, results, *bounds[0])
    for future in futures:
        future.result()
    return results


def _offer_range(
    targets: Sequence[Offerable], data: bytes, results: list[int], lo: int, hi: int
) -> None:
    for i in range(lo, hi):
        results[i] = targets[i].offer(data)


QUEUE_LIMIT = 256
"""Messages a slow subscriber may fall behind by before the oldest are dropped."""


@functools.lru_cache(maxsize=8)
def text_frame(message: bytes) -> bytes:
    """A message as one unmasked WebSocket text frame."""
    n = len(message)
    if n < 126:
        return bytes((0x81, n)) + message
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + message
    return struct.pack("!BBQ", 0x81, 127, n) + message


SSE_EVENT = "document"


@functools.lru_cache(maxsize=8)
def sse_chunk(message: bytes) -> bytes:
    """A message as one Server-Sent Event in one HTTP/1.1 chunk, as aiohttp-sse writes it."""
    event = b"event: " + SSE_EVENT.encode() + b"\r\ndata: " + message + b"\r\n\r\n"
    return b"%x\r\n" % len(event) + event + b"\r\n"


BUSY = -2
"""What Connection.offer answers when something is waiting before the frame (or no socket)."""
FAILED = -1
"""What Connection.offer answers when the socket refused the bytes (reset, closed)."""


class Connection:
    """One subscriber: its socket, its wire format, and its queue for when it falls behind."""

    def __init__(self, transport: asyncio.Transport | None, encode: Callable[[bytes], bytes]):
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0
        self.encode = encode
        sock = None if transport is None else transport.get_extra_info("socket")
        if transport is not None and transport.get_extra_info("sslcontext") is not None:
            sock = None  # TLS: bytes written to the fd would bypass the encryption
        self.transport = None if sock is None else transport
        """None: every message goes through the queue (compression, TLS, no socket)."""
        self.fd: int = -1 if sock is None else sock.fileno()

    def offer(self, frame: bytes) -> int:
        """Write a frame straight to the socket if it lands right after everything before it.

        Returns the bytes written (the socket may take fewer, or none, when full), BUSY when
        a backlog or a closing transport means the frame must take the queue, or FAILED.
        Called from offer_all's threads while the loop waits, so it only reads state.
        """
        transport = self.transport
        if (
            transport is None
            or not self.queue.empty()
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return BUSY
        try:
            return os.write(self.fd, frame)
        except BlockingIOError:
            return 0
        except OSError:
            return FAILED

    def put(self, message: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class Feed(Protocol):
    def message_now(self) -> bytes: ...


class Publisher(Protocol):
    """Where a Fanout's documents come from: the sessions (SessionRegistry) or a fleet's VMs."""

    def get(self, name: str, /) -> Feed | None: ...
    def subscribe(self, name: str, listener: Callable[[Pushed], None], /) -> Callable[[], None]: ...


class Fanout:
    """The connections subscribed to one session (or VM) name, grouped by wire format."""

    def __init__(
        self, registry: Publisher, name: str, pool: ThreadPoolExecutor | None = None
    ) -> None:
        self.registry = registry
        self.name = name
        self.pool = pool
        self.groups: dict[Callable[[bytes], bytes], dict[Connection, None]] = {}
        """Connections by encoder, each group in the order they subscribed."""
        self._unsubscribe: Callable[[], None] | None = None

    def add(self, conn: Connection) -> None:
        session = self.registry.get(self.name)
        assert session is not None
        conn.put(session.message_now())
        self.groups.setdefault(conn.encode, {})[conn] = None
        if self._unsubscribe is None:
            self._unsubscribe = self.registry.subscribe(self.name, self.push)

    def remove(self, conn: Connection) -> bool:
        """Drop a connection; True when it was the last one."""
        group = self.groups.get(conn.encode, {})
        if conn in group:
            del group[conn]
            if not group:
                del self.groups[conn.encode]
        if self.groups or self._unsubscribe is None:
            return not self.groups
        self._unsubscribe()
        self._unsubscribe = None
        return True

    def push(self, pushed: Pushed) -> None:
        for encode, group in list(self.groups.items()):
            frame = encode(pushed.message)
            conns = list(group)
            for conn, n in zip(conns, offer_all(conns, frame, self.pool), strict=True):
                if n == len(frame):
                    continue
                if n == BUSY:
                    conn.put(pushed.message)
                elif conn.transport is not None and n == FAILED:
                    conn.transport.abort()  # reset or closed under us; the route sees it end
                elif conn.transport is not None:
                    conn.transport.write(frame[n:])  # the rest, in order, as the socket drains
