"""What parsing a capture produces: episodes, the parsed file, and bad lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from replay.errors import ReplayError


class BadLineError(ReplayError):
    """A line of a capture file that cannot be used; the message is FILE:LINE: why."""

    def __init__(self, path: Path, lineno: int | str, why: str) -> None:
        super().__init__(f"{path}:{lineno}: {why}")
        self.path, self.lineno, self.why = path, lineno, why

    def __reduce__(self) -> tuple[type[BadLineError], tuple[Path, int | str, str]]:
        return type(self), (self.path, self.lineno, self.why)  # crosses --jobs processes


class BadLine(Exception):
    """Raised inside a parser: the line being parsed is bad, for this reason."""


@dataclass(frozen=True, slots=True)
class Episode:
    """One episode as parsed: documents (changes only, the first one empty, at the episode's
    start) with their times and line numbers."""

    docs: tuple[tuple[datetime, dict[str, Any], int], ...]

    @property
    def start_at(self) -> datetime:
        return self.docs[0][0]

    @property
    def end_at(self) -> datetime:
        return self.docs[-1][0]

    @property
    def lines(self) -> str:
        return f"{self.docs[0][2]}-{self.docs[-1][2]}"


@dataclass
class ParsedCapture:
    """Everything read from one capture file, before anything is written."""

    path: Path
    format: str
    """The shape read: capture, plain, json or curl (replay.recording.logs)."""
    header: dict[str, Any]
    identity: bytes
    """Bytes that never change as the capture grows (its header or first line)."""
    lines: int = 0
    bytes_read: int = 0
    detail: str = ""
    """Where the time and the document were found, for the summary."""
    polls: int = 0
    failed_polls: int = 0
    no_document: int = 0
    """Records (and blank lines) holding no document: skipped, never errors."""
    episodes: list[Episode] = field(default_factory=list)
    approvals: list[tuple[datetime, tuple[str, ...]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[BadLineError] = field(default_factory=list)
