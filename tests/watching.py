"""Blocking waits on another process's progress: inotify and a pidfd, never a spinning loop.

A Watcher sleeps in select() until a watched folder sees a change (a file written in it,
created or renamed into it), the process exits, or its recheck period passes, and only then
looks at its condition again. Progress that makes no event worth waking for (a read offset
in /proc) is looked at every few milliseconds instead, still sleeping in between. Linux only,
like the /proc reads the crash tests make.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from replay.clock import SystemClock

IN_MODIFY = 0x002
"""A file in the folder was written."""
IN_MOVED_TO = 0x080
"""A file was renamed into the folder."""
IN_CREATE = 0x100
"""A file or folder was created in the folder."""
IN_ISDIR = 0x40000000
"""Set in an event's mask when it is about a folder."""

RECHECK_S = 1.0
"""By default, the longest a wait sleeps without looking at its condition (a net under
missed events)."""

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes, _inotify_init1.restype = [ctypes.c_int], ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int


def _usage() -> tuple[float, int]:
    """This process's CPU seconds so far, and how often it gave up the CPU to wait."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


class Watcher:
    """Watches on some folders and on one process, for waits that block until something moves.

    The counters add up, over every wait_for: wakes (condition checks after a sleep), slept
    (times this process gave up the CPU to wait: a wait that spun would not), cpu_s and
    waited_s (this process's CPU time and the real time spent waiting).
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        fd = _inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        self._pidfd: int | None = os.pidfd_open(proc.pid)
        self._trees: list[tuple[Path, int]] = []
        self.cpu_s = 0.0
        self.waited_s = 0.0
        self.wakes = 0
        self.slept = 0

    def watch(self, folder: Path, mask: int, *, subfolders: bool = False) -> None:
        """Wake on mask's events in folder (and in its subfolders, as they appear)."""
        self._add(folder, mask)
        if subfolders:
            self._trees.append((folder, mask | IN_CREATE))
            self._add_subfolders()

    def _add(self, folder: Path, mask: int) -> None:
        if _inotify_add_watch(self._fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")

    def _add_subfolders(self) -> None:
        for folder, mask in self._trees:
            self._add(folder, mask)
            for entry in os.scandir(folder):
                if entry.is_dir():
                    self._add(Path(entry.path), mask)

    def wait_for(
        self,
        what: str,
        condition: Callable[[], bool],
        within_s: float,
        *,
        every_s: float = RECHECK_S,
    ) -> None:
        """Return once condition() holds, looking at it on each event and every every_s
        seconds; fail after within_s seconds."""
        clock = SystemClock()
        start, (cpu0, slept0) = clock.now(), _usage()
        try:
            while not condition():
                left = start + within_s - clock.now()
                if left <= 0:
                    raise AssertionError(f"gave up waiting for {what} after {within_s:g} s")
                fds = [self._fd] if self._pidfd is None else [self._fd, self._pidfd]
                readable, _, _ = select.select(fds, [], [], min(left, every_s))
                self.wakes += 1
                if self._pidfd is not None and self._pidfd in readable:
                    os.close(self._pidfd)  # it exited: readable from now on, so stop asking
                    self._pidfd = None
                if self._fd in readable and self._drain() & IN_ISDIR:
                    self._add_subfolders()  # a folder made since is watched before the check
        finally:
            cpu, slept = _usage()
            self.waited_s += clock.now() - start
            self.cpu_s += cpu - cpu0
            self.slept += slept - slept0

    def _drain(self) -> int:
        """Read every pending event; the union of their masks."""
        masks = 0
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return masks
            at = 0
            while at < len(data):  # struct inotify_event: wd, mask, cookie, len, name[len]
                _, mask, _, name_len = struct.unpack_from("iIII", data, at)
                masks |= mask
                at += struct.calcsize("iIII") + name_len

    def close(self) -> None:
        os.close(self._fd)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
