"""A command in its own user, network and PID namespaces, where 169.254.169.254:80 is the replay.

`imds-replay run` starts `main` as a program (replay.testing.sandbox.HELPER, then FD -- CMD
...): a fresh single-threaded process, as unshare(CLONE_NEWUSER) requires, that imports
little beyond the standard library so it starts in tens of milliseconds. It

1. enters new user, network, PID and mount namespaces (the user namespace maps the caller's
   own uid and gid, so CMD is who it was outside), brings loopback up and puts
   169.254.169.254/32 on it (replay.server.linklocal, as `serve --link-local` does);
2. listens on 169.254.169.254:80 there and hands that socket to `run` over the control socket
   FD (SCM_RIGHTS): the replay server, outside, accepts CMD's connections itself, so nothing
   relays them and every IMDS rule applies to them as to any client;
3. on `go`, forks the namespace's init (PID 1), which mounts a /proc of its own, starts CMD with
   run's stdin, stdout, stderr and environment, reaps every orphan, and reports `started` and
   `exited STATUS`.

When CMD exits, init sends SIGTERM to whatever CMD left behind and exits at the latest
STOP_AFTER_S later. Run signals only this process, its child, whose pid cannot be reused
while it lives: SIGTERM is forwarded to init, which sends it to every process of the
namespace; SIGKILL kills this process, and init with it (PR_SET_PDEATHSIG). When init exits
or is killed, the kernel kills every process left in the PID namespace, and nothing keeps the
network namespace but the socket run holds. Both this process and init die with their parent,
so killing run cannot leave CMD behind either.

Messages on FD (SOCK_SEQPACKET, one datagram each): `ready` (with the listening socket) or
`error TEXT` from here; `go` from run; `init PID`; then from init `started` (or `error TEXT`)
and `exited WAITSTATUS`. EOF: everything has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from replay.errors import ReplayError
from replay.server import linklocal

IMDS_ADDRESS, IMDS_PORT = linklocal.ADDRESS, linklocal.PORT
STOP_AFTER_S = 3
"""Seconds between SIGTERM and SIGKILL."""
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG = 1
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000
HOW_TO = (
    "run imds-replay as root, allow user namespaces (sysctl -w kernel.unprivileged_userns_clone=1 "
    "or user.max_user_namespaces=10000; on Ubuntu also "
    "kernel.apparmor_restrict_unprivileged_userns=0), or use `imds-replay serve` and point "
    "the handler at it"
)
"""What a user can do when namespaces are unavailable (the second half of every refusal)."""


class Unavailable(Exception):
    """This system cannot give CMD the namespaces it needs; the message says why."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def enter_namespaces() -> None:
    """Enter new user, network, PID (for children) and mount namespaces as the same uid."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"network namespaces need Linux, not {sys.platform}")
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
    if libc.unshare(flags) != 0:
        code = ctypes.get_errno()
        raise Unavailable(
            f"cannot create a user and network namespace ({os.strerror(code)}): user "
            "namespaces are disabled here or a sandbox forbids them"
        )
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        raise Unavailable(f"cannot map the user into its namespace ({exc.strerror})") from None


def listen() -> socket.socket:
    """The socket CMD's requests to http://169.254.169.254 arrive on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((IMDS_ADDRESS, IMDS_PORT))
    sock.listen(128)
    return sock


def _die_with_parent() -> None:
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _mount_proc() -> None:
    """A /proc of the new PID namespace, so `ps` and /proc/self tell the truth inside.

    Best effort: without it CMD still runs, and sees the host's /proc.
    """
    libc = _libc()
    with contextlib.suppress(OSError):
        _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "private /")
        _check(
            libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
            "mount /proc",
        )


def _ignore(signum: int, frame: Any) -> None:
    """A handler that does nothing: unlike SIG_IGN, exec resets it, so CMD gets the default."""


def _terminate_all(signum: int = signal.SIGTERM, frame: Any = None) -> None:
    """From init: SIGTERM to every other process of the namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGTERM)


def _send(ctl: socket.socket, message: str) -> None:
    with contextlib.suppress(OSError):  # run has gone: the namespace dies with it anyway
        ctl.send(message.encode())


def _init(ctl: socket.socket, command: Sequence[str]) -> NoReturn:
    """PID 1 of the namespace: start CMD, reap everything, stop what CMD leaves behind."""
    _die_with_parent()
    signal.signal(signal.SIGINT, _ignore)  # Ctrl-C is run's to handle (it sends SIGTERM)
    signal.signal(signal.SIGTERM, _terminate_all)
    signal.signal(signal.SIGALRM, lambda *_: os._exit(0))  # the kernel kills the rest
    _mount_proc()
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        _send(ctl, f"error cannot start {command[0]}: {exc.strerror or exc}")
        os._exit(127)
    _send(ctl, "started")
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            _send(ctl, f"exited {status}")
            _terminate_all()
            signal.alarm(STOP_AFTER_S)


def main(argv: Sequence[str]) -> int:
    """The helper: namespaces, the socket for run, then init and CMD."""
    ctl = socket.socket(fileno=int(argv[0]))
    command = list(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    _die_with_parent()
    signal.signal(signal.SIGINT, _ignore)
    try:
        enter_namespaces()
        linklocal.add_to_loopback(IMDS_ADDRESS)  # a fresh namespace: lo is down and bare
        listener = listen()
    except Unavailable as exc:
        _send(ctl, f"error {exc}; {HOW_TO}")
        return 2
    except (OSError, ReplayError) as exc:
        _send(ctl, f"error cannot set up 169.254.169.254 in the namespace ({exc}); {HOW_TO}")
        return 2
    socket.send_fds(ctl, [b"ready"], [listener.fileno()])
    listener.close()
    try:
        go = ctl.recv(16)
    except OSError:  # run closed its end without reading `ready`
        go = b""
    if go != b"go":
        return 1  # run gave up before CMD started
    pid = os.fork()
    if pid == 0:
        _init(ctl, command)

    def forward(signum: int, frame: Any) -> None:
        os.kill(pid, signum)  # init cannot be gone yet: it is reaped only below

    signal.signal(signal.SIGTERM, forward)  # run's SIGTERM, for every process of CMD's
    _send(ctl, f"init {pid}")
    # Wait without reaping, so that init's pid stays init's until nothing forwards to it.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.waitpid(pid, 0)
    return 0
