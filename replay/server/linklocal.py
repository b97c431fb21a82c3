"""Serving at IMDS's own address: 169.254.169.254 on the loopback interface of this namespace.

In a network namespace of its own (a pod, `--network container:NAME`, `unshare -n`), every
process that shares the namespace then reaches the replay at the real address, unmodified.
Adding the address takes CAP_NET_ADMIN; it goes through rtnetlink directly, so the image needs
no iproute2. Before adding it, a probe makes sure nothing answers there already: a replay must
never shadow a real VM's IMDS.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from replay.errors import ReplayError

ADDRESS = "169.254.169.254"
PORT = 80
PROBE_TIMEOUT_S = 1.0
"""A real IMDS answers within milliseconds; a dropped or black-holed probe gives up after this."""

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h, linux/if.h)
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWADDR, RTM_DELADDR = 16, 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
CAP_NET_BIND_SERVICE, CAP_NET_ADMIN = 10, 12  # linux/capability.h
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
NEEDS_ADMIN = (
    "--link-local adds {address} to the loopback interface, which needs CAP_NET_ADMIN: run as "
    "root in a network namespace of its own (unshare -n), or in a container with --cap-add "
    "NET_ADMIN (docker and Kubernetes give added capabilities to root only: --user 0)"
)


def probe(
    address: str = ADDRESS, port: int = PORT, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """What answers at address:port within timeout_s (its HTTP status line), or None."""
    try:
        conn = socket.create_connection((address, port), timeout=timeout_s)
    except OSError:  # refused, unreachable, timed out: nothing answers there
        return None
    with conn:
        request = (
            f"GET /metadata/instance?api-version=2021-02-01 HTTP/1.0\r\nHost: {address}\r\n"
            "Metadata: true\r\n\r\n"
        )
        try:
            conn.sendall(request.encode())
            first = conn.recv(256).split(b"\r\n", 1)[0].decode("latin-1").strip()
        except OSError:
            first = ""
    return first or "a connection, but no HTTP answer"


def refuse_if_answered(address: str = ADDRESS, port: int = PORT) -> None:
    """Raise ReplayError when something already answers at address:port (a real IMDS?)."""
    answer = probe(address, port)
    if answer is not None:
        raise ReplayError(
            f"{address}:{port} already answers ({answer}): on a cloud VM that is the real "
            "IMDS, and a replay must never shadow it; use --link-local only in a network "
            "namespace of its own (a pod sidecar, --network container:NAME, unshare -n)"
        )


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """This process's effective capability bits (CapEff)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def preflight(address: str = ADDRESS, port: int = PORT) -> None:
    """Raise ReplayError unless this process may add address and serve on it, and nothing
    answers there yet; changes nothing."""
    if not hasattr(socket, "AF_NETLINK"):
        raise ReplayError("--link-local needs Linux (rtnetlink)")
    caps = effective_capabilities()
    if not caps & (1 << CAP_NET_ADMIN):
        raise ReplayError(NEEDS_ADMIN.format(address=address))
    lowest = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if port < lowest and not caps & (1 << CAP_NET_BIND_SERVICE):
        raise ReplayError(
            f"serving on port {port} needs CAP_NET_BIND_SERVICE (ports below {lowest} are "
            "privileged in this namespace): add that capability too, or run as root"
        )
    refuse_if_answered(address, port)


def _attr(kind: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def _request(kind: int, flags: int, body: bytes) -> None:
    """Send one rtnetlink request and wait for its acknowledgement; OSError on refusal."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        header = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags | NLM_F_ACK, 1, 0)
        nl.sendall(header + body)
        while True:
            reply = nl.recv(65536)
            offset = 0
            while offset + NLMSG_HEADER.size <= len(reply):
                length, reply_kind, _, sequence, _ = NLMSG_HEADER.unpack_from(reply, offset)
                if reply_kind == NLMSG_ERROR and sequence == 1:
                    (code,) = struct.unpack_from("=i", reply, offset + NLMSG_HEADER.size)
                    if code:
                        raise OSError(-code, errno.errorcode.get(-code, str(-code)))
                    return
                offset += max(length, NLMSG_HEADER.size) + (-length % 4)


def _address_message(address: str, index: int) -> bytes:
    packed = ipaddress.IPv4Address(address).packed
    return (
        IFADDRMSG.pack(socket.AF_INET, 32, 0, 0, index)
        + _attr(IFA_LOCAL, packed)
        + _attr(IFA_ADDRESS, packed)
    )


def _loopback_index() -> int:
    return socket.if_nametoindex("lo")


def add_to_loopback(address: str = ADDRESS) -> bool:
    """Bring lo up and add address/32 to it; False when it was there already."""
    index = _loopback_index()
    try:
        _request(
            RTM_NEWLINK, NLM_F_REQUEST, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        )
        _request(
            RTM_NEWADDR, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, _address_message(address, index)
        )
    except PermissionError:
        raise ReplayError(NEEDS_ADMIN.format(address=address)) from None
    except FileExistsError:
        return False
    return True


def remove_from_loopback(address: str = ADDRESS) -> None:
    """Remove address/32 from lo (gone already is fine)."""
    try:
        _request(RTM_DELADDR, NLM_F_REQUEST, _address_message(address, _loopback_index()))
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL:
            raise


@contextmanager
def on_loopback(address: str = ADDRESS) -> Iterator[None]:
    """Add address to lo for the block; take it away after if it was ours to add."""
    added = add_to_loopback(address)
    try:
        yield
    finally:
        if added:
            remove_from_loopback(address)
