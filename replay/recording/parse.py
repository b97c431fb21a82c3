"""Reading one capture file or log into episodes (nothing is written here; see ingest).

The shape is detected from the file's first records (replay.recording.logs.detect) or forced:
the capture format (replay.recording.machine), or a log (plain, json, curl). A log is read in
one pass while its polls come in time order; at the first poll earlier than the one before it
(a viewer's export, newest first) it is read again, its polls sorted by time.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from replay.errors import ReplayError
from replay.recording.episodes import BadLine, BadLineError, ParsedCapture
from replay.recording.logs import LOG_SHAPES, SHAPES, LogOptions, Shape, detect
from replay.recording.machine import OutOfOrder, Parser, bad_line, read_header
from replay.recording.sources import Source, open_source

__all__ = ["SHAPES", "BadLineError", "LogOptions", "parse_capture"]

PROGRESS_BYTES = 1 << 20
"""Bytes read between progress callbacks."""
PRUNE_EVERY = 4096


class _Collector:
    """A sink that keeps every poll, to be sorted by time and fed to the state machine."""

    def __init__(self) -> None:
        self.records: list[tuple[datetime, int, Any]] = []
        self.last: Any = None

    def poll(self, t: datetime, doc: Any, lineno: int) -> None:
        self.records.append((t, lineno, doc))
        self.last = doc

    def repeats(self, times: list[datetime], first_line: int) -> None:
        last = self.last
        self.records.extend((t, lineno, last) for lineno, t in enumerate(times, first_line))

    def failed(self, t: datetime, lineno: int) -> None:
        self.records.append((t, lineno, None))

    def replay(self, machine: Parser, bad: Callable[[bytes, int, str], None]) -> None:
        """Feed the polls in time order; of polls at the same time, the file's order is kept
        (newest-first files are reversed first). A record seen twice counts once."""
        records = self.records
        if records and records[0][0] > records[-1][0]:
            records.reverse()
        records.sort(key=itemgetter(0))
        previous: tuple[datetime, Any] | None = None
        for n, (t, lineno, doc) in enumerate(records):
            if previous is not None and previous[0] == t and previous[1] == doc:
                continue
            previous = (t, doc)
            if doc is None:
                machine.failed(t, lineno)
            else:
                try:
                    machine.poll(t, doc, lineno)
                except BadLine as exc:
                    bad(b"\n", lineno, str(exc))
            if n % PRUNE_EVERY == 0:
                machine.prune()


class _CaptureLines:
    """The capture format: the header on the first non-blank line, then its lines."""

    def __init__(self, parsed: ParsedCapture, machine: Parser, skip_bad: bool) -> None:
        self.p, self.machine, self.skip_bad = parsed, machine, skip_bad
        self.started = False

    def block(self, block: list[bytes], first: int) -> None:
        if not self.started:
            for i, raw in enumerate(block):
                if raw.strip():
                    self.started = True
                    try:
                        self.p.header = read_header(raw, self.p.path)
                    except BadLine as exc:
                        bad_line(self.p, raw, first + i, str(exc), self.skip_bad)
                    block, first = block[i + 1 :], first + i + 1
                    break
            else:
                return
        self.machine.capture_block(block, first, self.skip_bad)


def parse_capture(
    path: Path,
    *,
    skip_bad: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    options: LogOptions | None = None,
) -> ParsedCapture:
    """Read one capture file or log (`-`: stdin; gzip or zstd) into episodes.

    Raises BadLineError on a bad line; with skip_bad, bad lines are skipped and listed in
    `skipped`. A last line without a newline that does not parse (a capture killed mid-write)
    is dropped with a warning. on_bytes(n) is called now and then with the (compressed) bytes
    read since its previous call.
    """
    options = options or LogOptions()
    reported = 0

    def progress(position: int) -> None:
        nonlocal reported
        if on_bytes is not None and position > reported:
            on_bytes(position - reported)
            reported = position

    with open_source(path) as source:
        try:
            return _read(source, options, skip_bad, progress, sort=False)[0]
        except OutOfOrder:
            source.rewind()
            parsed, earliest = _read(source, options, skip_bad, progress, sort=True)
            if earliest:
                # Named by its earliest poll, not its first line: a viewer's export, newest
                # first, starts with a different line each time it is exported again.
                source.rewind()
                parsed.identity = _line_at(source, earliest).strip()
            return parsed


def _read(
    source: Source,
    options: LogOptions,
    skip_bad: bool,
    progress: Callable[[int], None],
    *,
    sort: bool,
) -> tuple[ParsedCapture, int]:
    """The parsed file, and (when sorted) the line of its earliest poll (0 if none)."""
    parsed = ParsedCapture(source.name, "plain", {}, b"")
    machine = Parser(parsed)
    collector = _Collector() if sort else None

    def bad(raw: bytes, lineno: int, why: str) -> None:
        bad_line(parsed, raw, lineno, why, skip_bad)

    block = source.readlines(PROGRESS_BYTES)
    shape_name = options.log_format or detect(block)
    if shape_name is None and any(raw.strip() for raw in block):
        raise ReplayError(
            f"{source.name}: cannot tell what kind of log this is from its first lines (no "
            "time at a line's start, no JSON record); name it with --log-format "
            f"{'|'.join(SHAPES)}"
        )
    shape_name = shape_name or "plain"
    parsed.format = shape_name
    parsed.identity = next((raw.strip() for raw in block if raw.strip()), b"")
    shape: Shape | None = None
    if shape_name == "capture":
        handle = _CaptureLines(parsed, machine, skip_bad).block
    else:
        shape = LOG_SHAPES[shape_name](parsed, options, collector or machine, bad)
        handle = shape.block
    while block:
        handle(block, parsed.lines + 1)
        machine.prune()
        parsed.lines += len(block)
        parsed.bytes_read = source.position()
        progress(parsed.bytes_read)
        block = source.readlines(PROGRESS_BYTES)
    if shape is not None:
        shape.end()
        parsed.detail = shape.detail()
    earliest = 0
    if collector is not None:
        collector.replay(machine, bad)
        parsed.detail = "; ".join(d for d in (parsed.detail, "sorted by time") if d)
        earliest = collector.records[0][1] if collector.records else 0
    machine.finish()
    return parsed, earliest


def _line_at(source: Source, lineno: int) -> bytes:
    """Line lineno (from 1) of a rewound source."""
    seen = 0
    while block := source.readlines(PROGRESS_BYTES):
        if seen + len(block) >= lineno:
            return block[lineno - seen - 1]
        seen += len(block)
    return b""


# -- in worker processes (replay.recording.ingest.parse_files) --------------------------

_progress: multiprocessing.Queue[int] | None = None


def start_worker(progress: multiprocessing.Queue[int]) -> None:
    """In a worker process (ingest --jobs): where to report bytes read. Here, not in ingest,
    so a worker imports the parsers and not the store (pyarrow)."""
    global _progress
    _progress = progress


def parse_in_worker(path: Path, skip_bad: bool, options: LogOptions) -> ParsedCapture:
    """parse_capture in a worker process, reporting progress to the parent."""
    report = _progress.put if _progress is not None else None
    return parse_capture(path, skip_bad=skip_bad, on_bytes=report, options=options)
