"""Push fan-out on real loopback sockets: direct writes, the queue when a socket falls behind."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.ticker import Pushed
from replay.server.fanout import (
    BUSY,
    FAILED,
    QUEUE_LIMIT,
    Connection,
    Fanout,
    make_pool,
    offer_all,
    text_frame,
)


@dataclass
class Raw:
    sock: socket.socket

    def offer(self, data: bytes) -> int:
        return self.sock.send(data)


def test_offer_all_reaches_every_target_once_across_threads() -> None:
    pairs = [socket.socketpair() for _ in range(200)]
    try:
        targets = [Raw(a) for a, _ in pairs]
        with make_pool() as pool:
            results = offer_all(targets, b"push", pool, helpers=3)
        assert results == [4] * 200
        for _, b in pairs:
            b.setblocking(False)
            assert b.recv(64) == b"push"
            with pytest.raises(BlockingIOError):
                b.recv(64)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@dataclass
class Link:
    """A server-side asyncio transport and the raw client socket at the other end."""

    transport: asyncio.Transport
    client: socket.socket


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.set_result(transport)

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
    client.setblocking(False)
    await loop.sock_connect(client, ("127.0.0.1", port))
    transport = await accepted
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield Link(transport, client)
    transport.abort()
    client.close()
    server.close()
    await server.wait_closed()


def pushed(i: int) -> Pushed:
    message = b'{"n":%d,"pad":"%s"}' % (i, b"x" * 900)
    return Pushed(DEFAULT, b"{}", datetime(2025, 7, 1, tzinfo=UTC), 0.0, message)


def frames(data: bytes | bytearray, *, whole: bool = True) -> list[bytes]:
    """The payloads of the unmasked WebSocket text frames at the front of data.

    whole: every byte must belong to a complete frame; else a frame still arriving is left.
    """
    out, view = [], bytes(data)
    while len(view) >= 2:
        assert view[0] == 0x81, "not a text frame: a torn or interleaved one"
        n, head = view[1] & 0x7F, 2
        if n == 126:
            if len(view) < 4:
                break
            n, head = struct.unpack_from("!H", view, 2)[0], 4
        if len(view) < head + n:
            break
        out.append(view[head : head + n])
        view = view[head + n :]
    assert not (whole and view), "a torn frame"
    return out


def subscribe(link: Link, registry: SessionRegistry) -> tuple[Fanout, Connection, bytes]:
    """A Fanout of one connection on link, and the message it got on connect, taken off its
    queue (the route's sender task would write it)."""
    fanout = Fanout(registry, DEFAULT)
    conn = Connection(link.transport, text_frame)
    fanout.add(conn)
    return fanout, conn, conn.queue.get_nowait()


async def test_a_subscriber_that_falls_behind_gets_every_frame_whole_and_in_order(
    link: Link, registry: SessionRegistry
) -> None:
    fanout, conn, first = subscribe(link, registry)
    link.transport.write(text_frame(first))
    count = QUEUE_LIMIT * 3
    for i in range(count):
        fanout.push(pushed(i))
    # the socket filled: the rest of a frame sits in the transport, later ones in the queue,
    # whose oldest went when it overflowed
    assert link.transport.get_write_buffer_size() > 0
    assert conn.queue.full()
    assert conn.dropped > 0
    assert conn.offer(text_frame(b"{}")) == BUSY
    received = bytearray()
    loop = asyncio.get_running_loop()

    async def drain_client() -> None:
        while len(frames(received, whole=False)) < count - conn.dropped + 1:
            received.extend(await loop.sock_recv(link.client, 65536))

    reader = asyncio.create_task(drain_client())
    while not conn.queue.empty():  # the route's sender task does this as the socket drains
        link.transport.write(text_frame(conn.queue.get_nowait()))
    await asyncio.wait_for(reader, 10)
    got = frames(bytes(received))
    assert got[0] == first
    numbers = [int(p.split(b",")[0][5:]) for p in got[1:]]
    assert numbers == sorted(numbers)
    assert len(numbers) == count - conn.dropped
    assert numbers[-1] == count - 1  # the newest are kept, the oldest dropped


async def test_a_reset_subscriber_is_aborted_not_written_again(
    link: Link, registry: SessionRegistry
) -> None:
    fanout, conn, _ = subscribe(link, registry)
    link.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    link.client.close()  # a reset, not a goodbye (on loopback it lands within close())
    assert conn.offer(b"x" * 10) == FAILED
    fanout.push(pushed(1))
    assert link.transport.is_closing()
    assert conn.offer(b"x") == BUSY


def test_the_last_connection_leaving_unsubscribes(registry: SessionRegistry) -> None:
    fanout = Fanout(registry, DEFAULT)
    a, b = Connection(None, text_frame), Connection(None, text_frame)
    fanout.add(a)
    fanout.add(b)
    assert len(registry.listeners[DEFAULT]) == 1
    assert not fanout.remove(a)
    assert fanout.remove(b)
    assert not registry.listeners[DEFAULT]
    fanout.push(pushed(1))  # harmless once empty


def test_a_connection_without_a_socket_takes_the_queue(registry: SessionRegistry) -> None:
    fanout = Fanout(registry, DEFAULT)
    conn = Connection(None, text_frame)  # e.g. a compressed WebSocket
    fanout.add(conn)
    fanout.push(pushed(7))
    assert conn.queue.qsize() == 2
    conn.queue.get_nowait()
    assert conn.queue.get_nowait() == pushed(7).message


class SocketTransport:
    """What a transport tells Connection: its socket and, on TLS, its SSL context."""

    def __init__(self, sock: socket.socket, sslcontext: ssl.SSLContext | None) -> None:
        self.extra = {"socket": sock, "sslcontext": sslcontext}
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written.append(data)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_frames_go_straight_to_the_socket_only_without_tls(
    registry: SessionRegistry, pair: tuple[socket.socket, socket.socket], tls: bool
) -> None:
    a, b = pair
    context = ssl.create_default_context() if tls else None
    transport = SocketTransport(a, context)
    conn = Connection(cast(asyncio.Transport, transport), text_frame)
    fanout = Fanout(registry, DEFAULT)
    fanout.add(conn)
    conn.queue.get_nowait()  # the document on connect
    fanout.push(pushed(3))
    if tls:  # bytes written to the fd would bypass the encryption: the sender task's queue
        assert conn.offer(text_frame(b"{}")) == BUSY
        assert conn.queue.get_nowait() == pushed(3).message
        with pytest.raises(BlockingIOError):
            b.recv(65536)
    else:
        assert frames(b.recv(65536)) == [pushed(3).message]
        assert conn.queue.empty()
    assert transport.written == []
