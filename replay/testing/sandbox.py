"""Run's side of the namespace: start the helper (replay.testing.netns), talk to it, stop CMD.

The helper is a separate, fresh Python process (the kernel lets only a single-threaded process
enter a new user namespace). It hands back the socket that 169.254.169.254:80 is inside the
namespace, starts CMD on `go`, and reports CMD's start and exit; `terminate` and `kill` reach
every process of CMD's through it and the namespace's init.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from replay.errors import ReplayError
from replay.testing import netns

_ROOT = str(Path(netns.__file__).resolve().parents[2])
HELPER = (
    sys.executable,
    "-I",  # no user site, PYTHON* variables or current folder: only this imds-replay
    "-c",
    f"import sys; sys.path.insert(0, {_ROOT!r}); from replay.testing.netns import main; "
    "sys.exit(main(sys.argv[1:]))",
)
"""The namespace helper's command line, importing the replay package this one is."""
READY_WITHIN_S = 10.0
StdIO = int | IO[Any] | None
"""What subprocess accepts for stdin, stdout and stderr (None: run's own)."""


class NamespaceUnavailable(ReplayError):
    """This system cannot run CMD in the namespaces `run` needs; the message says what to do."""


def check_command(command: Sequence[str]) -> None:
    """A ReplayError unless command names a program that can be run."""
    if not command:
        raise ReplayError("no command to run: put it after `--`, e.g. -- python handler.py")
    if shutil.which(command[0]) is None:
        raise ReplayError(f"command {command[0]!r} not found (nor executable) on PATH")


class Sandbox:
    """CMD in its own user, network and PID namespaces, 169.254.169.254:80 handed to us."""

    def __init__(
        self, proc: subprocess.Popen[bytes], ctl: socket.socket, command: Sequence[str]
    ) -> None:
        self.proc = proc
        self.command = list(command)
        self._ctl = ctl
        self._attached = False
        self.init_pid: int | None = None
        """init's pid (in run's PID namespace), for the curious: run never signals it."""

    @classmethod
    def spawn(
        cls,
        command: Sequence[str],
        *,
        stdin: StdIO = None,
        stdout: StdIO = None,
        stderr: StdIO = None,
    ) -> Sandbox:
        """Start setting the namespace up; needs no event loop, so a run can call it first
        thing and the helper's start-up overlaps run's own. `ready()` waits for it."""
        if not sys.platform.startswith("linux"):
            raise NamespaceUnavailable(
                f"`run` needs Linux network namespaces (this is {sys.platform}); "
                "use `imds-replay serve` and point the handler at it"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        with theirs:
            proc = subprocess.Popen(
                [*HELPER, str(theirs.fileno()), "--", *command],
                pass_fds=(theirs.fileno(),),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        return cls(proc, ours, command)

    def _attach(self) -> None:
        """Futures and the reader on the running loop (once)."""
        if self._attached:
            return
        self._attached = True
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[socket.socket] = loop.create_future()
        self._started: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[int | None] = loop.create_future()
        """CMD's wait status; None when it never reported one (killed with its namespace)."""
        self.closed: asyncio.Future[None] = loop.create_future()
        """Every process of the namespace has ended."""
        loop.add_reader(self._ctl.fileno(), self._readable)

    async def ready(self) -> socket.socket:
        """The listening socket CMD's requests reach, once the namespace is set up."""
        self._attach()
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), READY_WITHIN_S)
        except BaseException:
            self.kill()
            await self.wait_closed()
            raise

    def abandon(self) -> None:
        """Give up on a sandbox never used (e.g. the trace was not found): the helper exits."""
        if not self._attached:
            self._ctl.close()  # the helper's wait for `go` ends: it exits, CMD never starts
            self.proc.wait()

    async def start(self) -> None:
        """Start CMD (after the server accepts on the socket) and wait until it runs."""
        self._ctl.send(b"go")
        await self._started

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._ctl, 512, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._eof()
                return
            self._message(data.decode(errors="replace"), fds)

    def _message(self, text: str, fds: list[int]) -> None:
        word, _, rest = text.partition(" ")
        if word == "ready" and fds:
            _settle(self._ready, socket.socket(fileno=fds[0]))
        elif word == "error":
            error = NamespaceUnavailable(rest) if not self._ready.done() else ReplayError(rest)
            for future in (self._ready, self._started):
                if not future.done():
                    future.set_exception(error)
                    break
        elif word == "init":
            self.init_pid = int(rest)
        elif word == "started":
            _settle(self._started, None)
        elif word == "exited":
            _settle(self.exited, int(rest))
        for fd in fds[1:] if word == "ready" else fds:
            os.close(fd)

    def _eof(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._ctl.fileno())
        self._ctl.close()
        status = self.proc.wait()
        failed = ReplayError(f"the namespace helper ended (status {status}) before CMD ran")
        for future in (self._ready, self._started):
            if not future.done():
                future.set_exception(failed)
                future.exception()  # retrieved: only one of them is awaited
        _settle(self.exited, None)
        _settle(self.closed, None)

    async def stop(self) -> int:
        """Stop CMD unless it has exited: SIGTERM to all of it, SIGKILL STOP_AFTER_S later;
        wait until nothing of it is left. Returns CMD's exit code (-N: signal N)."""
        if not self.exited.done():
            self.terminate()
            with contextlib.suppress(TimeoutError):  # SIGKILL below
                await asyncio.wait_for(asyncio.shield(self.exited), netns.STOP_AFTER_S)
        if not self.exited.done():
            self.kill()
        with contextlib.suppress(TimeoutError):  # what CMD left: init stops it, or kill_all
            await asyncio.wait_for(self.wait_closed(), netns.STOP_AFTER_S + 1)
        status = self.exited.result() if self.exited.done() else None
        # No status: init died first and took CMD with it (SIGKILL).
        return -signal.SIGKILL if status is None else os.waitstatus_to_exitcode(status)

    async def kill_all(self, within_s: float) -> None:
        """SIGKILL whatever is left of the namespace and wait until it is gone."""
        self._attach()
        if not self.closed.done():
            self.kill()
            await asyncio.wait_for(self.wait_closed(), within_s)

    def terminate(self) -> None:
        """SIGTERM to every process of CMD's (the helper forwards it to the namespace's init)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the helper: init dies with it, and the kernel kills every process left in
        the namespace. (Only our own child is signalled: its pid cannot have been reused.)"""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def wait_closed(self) -> None:
        """Until every process of the namespace has ended."""
        self._attach()
        await asyncio.shield(self.closed)


def unavailable_reason(within_s: float = READY_WITHIN_S) -> str | None:
    """Why `run` cannot make its namespaces here (what it would print), or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"`run` needs Linux network namespaces (this is {sys.platform})"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        proc = subprocess.Popen(
            [*HELPER, str(theirs.fileno()), "--", "true"],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.settimeout(within_s)
        try:
            data, fds, _, _ = socket.recv_fds(ours, 512, 1)
        except TimeoutError:
            data, fds = b"error the namespace helper did not answer", []
        for fd in fds:
            os.close(fd)
    proc.wait(timeout=within_s)  # without `go` it gives up once its socket closes
    if data.startswith(b"ready"):
        return None
    return data.decode(errors="replace").removeprefix("error ") or "the helper failed"


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
