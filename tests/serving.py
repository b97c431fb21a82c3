"""Start the real `imds-replay serve` on a free local port, with a bounded wait for readiness."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from replay.clock import SystemClock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(*args: str, traces_dir: Path, ready_within_s: float = 20.0) -> Iterator[str]:
    """Run `imds-replay serve ARGS` and yield its base URL once it says it is listening."""
    port = free_port()
    command = [sys.executable, "-m", "replay", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--traces-dir", str(traces_dir)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    clock = SystemClock()
    deadline = clock.now() + ready_within_s
    seen: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while "IMDS at" not in "".join(seen):
            left = deadline - clock.now()
            if left <= 0 or proc.poll() is not None:
                proc.kill()
                rest = proc.stderr.read()
                proc.stderr.close()
                raise AssertionError("server did not start:\n" + "".join(seen) + rest)
            if sel.select(timeout=left):
                # os.read, not readline: lines that arrive together stay in readline's buffer
                # where the selector cannot see them.
                seen.append(os.read(proc.stderr.fileno(), 65536).decode(errors="replace"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()
        assert proc.returncode in (0, -15), proc.returncode
