"""Tests that need root and system tools: skipped on a developer's machine without them, failed
in CI (CI=true), where scripts/test installs them."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
from typing import IO

import pytest

from replay.clock import SystemClock


def require(*tools: str, root: bool = True) -> None:
    """Skip (or fail under CI) unless running as root with every tool on PATH or at its path."""
    missing = [t for t in tools if shutil.which(t) is None]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if root and os.geteuid() != 0:
        problems.append("not root")
    if not problems:
        return
    reason = f"{'; '.join(problems)} (scripts/test installs the tools when run as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for_line(stream: IO[bytes], text: str, within_s: float) -> str:
    """Read stream (unbuffered, by its file descriptor) until a line contains text; all read.

    AssertionError after within_s seconds or at end of stream.
    """
    clock = SystemClock()
    deadline = clock.now() + within_s
    fd = stream.fileno()
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not any(text in line for line in seen.decode(errors="replace").split("\n")[:-1]):
            left = deadline - clock.now()
            if left <= 0 or not sel.select(timeout=left):
                raise AssertionError(f"no {text!r} within {within_s} s:\n{seen.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"ended before {text!r}:\n{seen.decode()}")
            seen += chunk
    return seen.decode()


def stopped(proc: subprocess.Popen[bytes], within_s: float = 10.0) -> tuple[int, str]:
    """SIGTERM proc, wait for it (bounded) and close its pipes: its return code and the rest of
    its stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, (err or b"").decode(errors="replace")
