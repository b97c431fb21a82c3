"""The capture file format: its header, its lines, and a writer that never loses a line.

A capture file (format 1) is a header line, then one line per poll outcome that differs from
the previous poll's (a new document, or an error), an `approved` line whenever the capture
approved events, and a heartbeat at least every HEARTBEAT_S seconds:

    {"capture": {"format": 1, "url": ..., "interval_s": ..., "host": ..., "started_at": ...}}
    {"t": "2025-07-01T12:00:00.000000Z", "document": {"DocumentIncarnation": 1, "Events": []}}
    {"t": "...", "error": "HTTP 410: ..."}
    {"t": "...", "approved": ["<EventId>", ...]}
    {"t": "...", "heartbeat": {"polls": 60, "documents": 1, "errors": 0, "missed": 0}}

Every line is written with one write() and fsynced, so a kill -9 loses at most the line in
flight.

Standard library only, Python 3.8 syntax: with capture and capture_main this module is also
the single-file capture script (capture_script) that runs on a bare VM's python3.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from replay.errors import ReplayError

CAPTURE_FORMAT = 1


class ApprovePolicy(str, Enum):
    """Which Scheduled events a capture approves at once."""

    none = "none"
    user = "user"
    """Events the VM's own user asked for (EventSource User)."""
    all = "all"


HEARTBEAT_S = 60.0
"""A capture writes a line at least this often (seconds), so a reader can tell it was alive."""
HEADER_PREFIX = b'{"capture":'


class CaptureError(ReplayError):
    """A capture that cannot start: a bad option or an output file that is not a capture."""


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as a capture line holds it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, as capture lines carry it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class CaptureStats:
    """What a capture run has done so far."""

    polls: int = 0
    documents: int = 0
    errors: int = 0
    missed: int = 0
    """Schedule slots skipped because a poll overran its interval."""
    approved: int = 0
    events_seen: set[str] = field(default_factory=set)
    events_completed: set[str] = field(default_factory=set)
    last_change_at: datetime | None = None
    last_error: str | None = None
    stopped: str | None = None
    """Why the run ended: duration, events or signal."""

    def heartbeat(self) -> dict[str, Any]:
        """The counters a heartbeat line carries."""
        beat: dict[str, Any] = {
            "polls": self.polls,
            "documents": self.documents,
            "errors": self.errors,
            "missed": self.missed,
        }
        if self.stopped:
            beat["stopped"] = self.stopped
        return beat


def format_status(stats: CaptureStats) -> str:
    """One status line for people: polls, documents, events, errors, last change, last error."""
    change = iso_utc(stats.last_change_at)[:19] + "Z" if stats.last_change_at else "never"
    text = (
        f"polls {stats.polls} | documents {stats.documents} | events "
        f"{len(stats.events_seen)} seen, {len(stats.events_completed)} completed | "
        f"errors {stats.errors} | last change {change}"
    )
    if stats.last_error:
        text += f" | last error: {stats.last_error}"
    return text


class CaptureWriter:
    """Appends lines to a capture file: one write and one fsync per line."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path, header: Mapping[str, Any]) -> CaptureWriter:
        """Open for appending; write the header if the file is new or empty.

        A file that already holds a capture is continued. Its last line, if a kill cut it short
        (no newline), is removed first so the new lines do not glue onto it.
        """
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise CaptureError(f"cannot open capture file {path}: {exc.strerror}") from exc
        writer = cls(path, fd)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                writer.write({"capture": dict(header)})
            else:
                writer._continue(size)
        except BaseException:
            writer.close()
            raise
        return writer

    def _continue(self, size: int) -> None:
        first = os.pread(self._fd, len(HEADER_PREFIX), 0)
        if first != HEADER_PREFIX:
            raise CaptureError(
                f"{self.path} exists and is not a capture file (its first line is not a "
                '{"capture": ...} header); choose another --out'
            )
        tail_start = max(0, size - 65536)
        tail = os.pread(self._fd, size - tail_start, tail_start)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and tail_start > 0:
            raise CaptureError(f"{self.path}: last line is over 64 KiB and unterminated")
        os.ftruncate(self._fd, tail_start + cut + 1)
        os.fsync(self._fd)

    def write(self, line: Mapping[str, Any]) -> None:
        """Append one JSON line and make it durable before returning."""
        try:
            os.write(self._fd, dumps(line) + b"\n")
            os.fsync(self._fd)
        except OSError as exc:
            raise CaptureError(f"cannot write to {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
