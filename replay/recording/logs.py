"""Log shapes: the records of a log, each a poll (a document, or a failure) at a time.

- `plain`: a time, then what the poll printed, one line per record: a shell loop
  (`<time> <document>`), kubectl --timestamps, any `<time> <message>` log whose message holds
  the document as JSON (after a prefix, or nested in a JSON record);
- `json`: one JSON record per line (structured handler logs, `journalctl -o json`), the time in
  a field and the document at any depth or as text in a string field;
- `curl`: multi-line records: a line with only a time, an optional status line (`200 OK;`,
  `HTTP/1.1 200 OK`, headers after it are ignored), then the body.

The shape is detected from a file's first records (`detect`) or forced. Records without a
document are counted and skipped; a non-2xx status, an empty body or an IMDS error body is a
failed poll. Each record goes to a Sink (the episode state machine, or a collector that sorts).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol

import orjson

from replay.recording.documents import (
    MARK,
    Place,
    is_error_body,
    locate,
    show_path,
    text_json,
)
from replay.recording.episodes import BadLine, BadLineError, ParsedCapture
from replay.recording.times import TIME_FIELDS, prefix_time, shown, value_time

SHAPES = ("capture", "plain", "json", "curl")
DETECT_LINES = 20
"""How many non-blank lines detection looks at."""
_MARK = MARK.encode()
_STATUS_RE = re.compile(rb"[ \t]*(?:HTTP/[\d.]+[ \t]+)?(\d{3})(?:[ \t]+[^{}\[\]\"]*)?;?[ \t]*")
_HEADER_RE = re.compile(rb"[\w-]+:[ \t]")
_NOWHERE = object()
"""A key no record has: the short path then always misses."""


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How to read logs: the zone of naive times, where time and document are, a forced shape."""

    tz: tzinfo | None = None
    time_field: Place | None = None
    document_field: Place | None = None
    log_format: str | None = None


class Sink(Protocol):
    def poll(self, t: datetime, doc: Any, lineno: int) -> None: ...
    def repeats(self, times: list[datetime], first_line: int) -> None:
        """Polls that showed the previous poll's document again, on consecutive lines."""
        ...

    def failed(self, t: datetime, lineno: int) -> None: ...


BadFn = Callable[[bytes, int, str], None]


def detect(lines: list[bytes]) -> str | None:
    """The shape of a log from its first non-blank lines, or None when none is recognised."""
    candidates = [raw for raw in lines if raw.strip()][:DETECT_LINES]
    for i, raw in enumerate(candidates):
        if raw.lstrip().startswith(b"{"):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            return "capture" if type(value) is dict and "capture" in value else "json"
        got = prefix_time(raw)
        if got is None:
            continue
        if raw[got[1] :].strip():
            return "plain"
        following = candidates[i + 1] if i + 1 < len(candidates) else b""
        return "plain" if prefix_time(following) is not None else "curl"
    return None


def _epoch(stamp: bytes) -> datetime | None:
    """An epoch-seconds or -milliseconds stamp as a time, else None."""
    got = prefix_time(stamp) if stamp[:1].isdigit() else None
    return got[0] if got is not None and got[1] == len(stamp) else None


class Shape:
    """Reads one file's lines (in blocks) into records for a sink."""

    name = ""
    whole = "is the record"
    """Where the document is when it is the whole of what the record printed."""

    def __init__(self, parsed: ParsedCapture, options: LogOptions, sink: Sink, bad: BadFn):
        self.p, self.options, self.sink, self.bad = parsed, options, sink, bad
        self.forced = options.document_field is not None
        self.place: Place | None = options.document_field
        self.doc_desc = ""
        self.time_desc = ""
        self.times: list[datetime] = []  # repeats on the lines just before, not yet given

    def block(self, block: list[bytes], first: int) -> None:
        raise NotImplementedError

    def flush(self, next_line: int) -> None:
        """Give the sink the repeats on the lines before next_line (before any other record)."""
        if self.times:
            times = self.times
            self.times = []
            self.sink.repeats(times, next_line - len(times))

    def end(self) -> None:
        """The file ended: flush a record still open."""

    def detail(self) -> str:
        return "; ".join(d for d in (self.time_desc, self.doc_desc) if d)

    def localize(self, t: datetime, lineno: int, text: Any) -> datetime:
        """t with the --tz zone when it has none; an error naming file, line and flag if no --tz."""
        if t.tzinfo is not None:
            return t
        if self.options.tz is None:
            raise BadLineError(  # not a BadLine: --skip-bad would skip every line
                self.p.path,
                lineno,
                f"time {shown(text)} has no zone; say which with --tz ZONE (an IANA name such "
                "as Europe/Berlin, or UTC)",
            )
        return t.replace(tzinfo=self.options.tz)

    def found(self, place: Place | None, prefix: str) -> None:
        if not self.doc_desc:
            where = f"{prefix}{show_path(place)}" if place else self.whole
            self.doc_desc = f"document {where}"

    def body(self, text: bytes, lineno: int) -> tuple[str, Any]:
        """What a poll printed: ('failed', None), ('document', doc) or ('other', None)."""
        if not text:
            return "failed", None  # curl printed nothing: the poll failed
        if text[:1] in b"{[":
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                if _MARK in text:
                    value = text_json(text)
                elif text[:1] == b"[":
                    return "other", None  # "[INFO] ...": a message, not a cut-short document
                else:
                    raise BadLine(f"not a JSON document after the timestamp: {exc}") from None
            if is_error_body(value):
                return "failed", None
            place, doc = locate(value, self.place, self.forced)
            if doc is not None:
                self.found(place, "at ")
        elif _MARK in text:
            place, doc = locate(text_json(text), self.place, self.forced)
            if doc is not None and not self.doc_desc:
                inner = f" at {show_path(place)}" if place else ""
                self.doc_desc = f"document in the text {self.whole}{inner}"
        else:
            return "other", None
        return ("other", None) if doc is None else ("document", doc)


class Plain(Shape):
    name = "plain"
    whole = "after the time"

    def __init__(self, parsed: ParsedCapture, options: LogOptions, sink: Sink, bad: BadFn):
        super().__init__(parsed, options, sink, bad)
        self.last_body = b"\0"  # never a line's tail: what followed the time on the last poll
        self.time_desc = "time at the line start"

    def block(self, block: list[bytes], first: int) -> None:
        """A repeat of the previous poll's output, the common case, skips JSON parsing."""
        fromiso, tz, times = datetime.fromisoformat, self.options.tz, self.times
        body = self.last_body
        for lineno, raw in enumerate(block, first):
            stamp, _, tail = raw.partition(b" ")
            if tail == body:
                t: datetime | None
                try:
                    t = fromiso(stamp.decode())
                except ValueError:
                    t = _epoch(stamp)  # epoch seconds or milliseconds
                if t is not None:
                    if t.tzinfo is not None:
                        times.append(t)
                        continue
                    if tz is not None and len(stamp) > 10:  # a time, not a date alone
                        times.append(t.replace(tzinfo=tz))
                        continue
            self.flush(lineno)
            try:
                self.line(raw, lineno)
            except BadLine as exc:
                self.bad(raw, lineno, str(exc))
            body, times = self.last_body, self.times
        self.flush(first + len(block))

    def line(self, raw: bytes, lineno: int) -> None:
        stripped = raw.strip()
        if not stripped:
            self.p.no_document += 1
            return
        got = prefix_time(raw)
        if got is None:
            if _MARK in stripped:
                token = stripped.split(None, 1)[0]
                raise BadLine(f"not an ISO-8601 or epoch timestamp: {shown(token)}")
            self.p.no_document += 1
            return
        moment, end = got
        t = self.localize(moment, lineno, raw[:end].strip())
        kind, doc = self.body(raw[end:].strip(), lineno)
        if kind == "failed":
            self.sink.failed(t, lineno)
        elif kind == "other":
            self.p.no_document += 1
        else:
            self.sink.poll(t, doc, lineno)
            self.last_body = raw.partition(b" ")[2]


class JsonLines(Shape):
    name = "json"

    def __init__(self, parsed: ParsedCapture, options: LogOptions, sink: Sink, bad: BadFn):
        super().__init__(parsed, options, sink, bad)
        self.prev: Any = None  # the previous poll's document
        self.key: Any = _NOWHERE  # the field holding it, when at the top level
        self.tkey: Any = _NOWHERE  # the field holding the time, when at the top level

    def block(self, block: list[bytes], first: int) -> None:
        """Each line is parsed once. A record whose document, at the place the previous one's
        was, equals it, and whose time field is ISO with a zone takes the short path."""
        loads, fromiso = orjson.loads, datetime.fromisoformat
        times, key, tkey, prev = self.times, self.key, self.tkey, self.prev
        for lineno, raw in enumerate(block, first):
            try:
                record = loads(raw)
                doc = record[key]
                t = fromiso(record[tkey])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
                record = doc = t = None
            if doc is not None and doc == prev and t is not None and t.tzinfo is not None:
                times.append(t)
                continue
            self.flush(lineno)
            self.line(raw, record, lineno)
            times, key, tkey, prev = self.times, self.key, self.tkey, self.prev
        self.flush(first + len(block))

    def line(self, raw: bytes, record: Any, lineno: int) -> None:
        """Any record: parse it if the short path could not, find document and time."""
        if record is None:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if raw.strip():
                    self.bad(raw, lineno, f"not JSON: {exc}")
                else:
                    self.p.no_document += 1
                return
        try:
            place, doc = locate(record, self.place, self.forced)
            if doc is None:
                self.p.no_document += 1
                return
            t = self.record_time(record, lineno)
            if doc == self.prev:
                self.sink.repeats([t], lineno)
                return
            self.place = place
            self.key = place[0] if place is not None and len(place) == 1 else _NOWHERE
            self.found(place, "at ")
            self.sink.poll(t, doc, lineno)
            self.prev = doc
        except BadLine as exc:
            self.bad(raw, lineno, str(exc))

    def record_time(self, record: Any, lineno: int) -> datetime:
        """The record's time from --time-field, or the first of TIME_FIELDS it has."""
        fields = (
            [self.options.time_field]
            if self.options.time_field
            else [(key,) for key in TIME_FIELDS]
        )
        for path in fields:
            value: Any = record
            for step in path:
                value = value.get(step) if type(value) is dict else None
            if value is None:
                continue
            moment = value_time(value)
            if moment is None:
                raise BadLine(f"field {'.'.join(map(str, path))} is not a time: {shown(value)}")
            self.tkey = path[0] if len(path) == 1 else _NOWHERE
            if not self.time_desc:
                self.time_desc = f"time from field {'.'.join(map(str, path))}"
            return self.localize(moment, lineno, value)
        wanted = (
            ".".join(map(str, fields[0])) if self.options.time_field else ", ".join(TIME_FIELDS)
        )
        raise BadLine(f"a document but no time (fields: {wanted}; name another with --time-field)")


class Curl(Shape):
    name = "curl"
    whole = "is the body"

    def __init__(self, parsed: ParsedCapture, options: LogOptions, sink: Sink, bad: BadFn):
        super().__init__(parsed, options, sink, bad)
        self.time_desc = "time on its own line"
        self.t: datetime | None = None
        self.at = 0  # the line of the record's time
        self.status: int | None = None
        self.body_lines: list[bytes] = []
        self.body_line = 0
        self.last_text = b"\0"

    def block(self, block: list[bytes], first: int) -> None:
        for lineno, raw in enumerate(block, first):
            stripped = raw.strip()
            if not stripped:
                continue
            got = prefix_time(raw)
            if got is not None and not raw[got[1] :].strip():
                self.end()
                try:
                    self.t = self.localize(got[0], lineno, stripped)
                except BadLine as exc:
                    self.bad(raw, lineno, str(exc))
                    continue
                self.at, self.status, self.body_lines = lineno, None, []
                continue
            if self.t is None:
                self.p.no_document += 1  # before the first record
            elif (
                not self.body_lines
                and self.status is None
                and (status := _STATUS_RE.fullmatch(stripped))
            ):
                self.status = int(status.group(1))
            elif not self.body_lines and self.status is not None and _HEADER_RE.match(stripped):
                continue
            else:
                if not self.body_lines:
                    self.body_line = lineno
                self.body_lines.append(stripped)

    def end(self) -> None:
        if self.t is None:
            return
        t, text, status = self.t, b"".join(self.body_lines), self.status
        self.t = None
        if status is not None and not 200 <= status < 300:
            self.sink.failed(t, self.at)
            return
        if text == self.last_text:
            self.sink.repeats([t], self.at)
            return
        lineno = self.body_line or self.at
        try:
            kind, doc = self.body(text, lineno)
            if kind == "failed":
                self.sink.failed(t, self.at)
            elif kind == "other":
                self.p.no_document += 1
            else:
                self.sink.poll(t, doc, self.at)
                self.last_text = text
        except BadLine as exc:
            self.bad(b"\n", lineno, str(exc))


LOG_SHAPES: dict[str, type[Shape]] = {"plain": Plain, "json": JsonLines, "curl": Curl}
