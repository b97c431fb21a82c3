"""HTTP for a capture: blocking requests in worker threads, each abortable from the event loop.

Standard library only, Python 3.8 syntax (part of the capture script, see capture_script).
http.client uses no proxy, as IMDS wants; a request given up on has its socket shut, which
ends the thread waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


class Http:
    """Blocking HTTP requests in worker threads, each one abortable from the event loop."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="capture-http")
        self.live: set[http.client.HTTPConnection] = set()
        self.lock = threading.Lock()

    async def request(self, method: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Status and body; raises OSError or http.client.HTTPException."""
        headers = {"Metadata": "true"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection_class = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        # A safety net in real seconds: the capture's own timeout (on its clock) comes first.
        conn = connection_class(self.host, self.port, timeout=self.timeout_s * 2 + 5)
        with self.lock:
            self.live.add(conn)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._send, conn, method, body, headers)
        finally:
            self._abort(conn)

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        try:
            conn.request(method, self.target, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _abort(self, conn: http.client.HTTPConnection) -> None:
        """Unblock the thread waiting on conn (its answer is no longer wanted)."""
        with self.lock:
            self.live.discard(conn)
            sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self.lock:
            live = list(self.live)
        for conn in live:
            self._abort(conn)
        self.pool.shutdown(wait=True)
