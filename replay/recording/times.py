"""Times in logs: a timestamp at the start of a line, or a record's time field, as aware UTC.

Accepted: ISO 8601 with `T` or a space, any number of fraction digits (`.` or `,`; digits past
microseconds are dropped), `Z`, `UTC`, `GMT` or an offset; date(1)'s default output
(`Mon Sep  1 06:00:00 UTC 2025`); epoch numbers, whose unit follows from their size (seconds,
milliseconds, microseconds as journald's `__REALTIME_TIMESTAMP`, or nanoseconds). A time without
a zone takes the one given with --tz; without --tz it is an error naming the flag.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from replay.errors import ReplayError

TIME_FIELDS = ("@timestamp", "time", "timestamp", "ts", "__REALTIME_TIMESTAMP")
"""Record fields holding a time, tried in this order when no --time-field is given."""

_ISO = (
    rb"(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)"
    rb"(?P<zone> ?(?:Z|[+-]\d{2}(?::?\d{2})?|UTC|GMT)(?![\w:]))?"
)
_DATE1 = (
    rb"(?P<date1>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
    rb"Nov|Dec) [ \d]\d \d{2}:\d{2}:\d{2}) (?P<date1zone>[A-Z]{1,5}) (?P<date1year>\d{4})"
)
_EPOCH = rb"(?P<epoch>\d{10}(?:\.\d+)?|\d{13}(?:\.\d+)?)(?![\d.])"
PREFIX_RE = re.compile(rb"[ \t]*\[?(?:" + _ISO + rb"|" + _DATE1 + rb"|" + _EPOCH + rb")\]?")
"""A timestamp at the start of a line (optionally in square brackets)."""
_VALUE_RE = re.compile(rb"(?:" + _ISO + rb"|" + _DATE1 + rb")")
_UTC_NAMES = (b"Z", b"UTC", b"GMT")


def parse_tz(name: str) -> tzinfo:
    """The zone --tz names: an IANA name (Europe/Berlin) or UTC."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReplayError(
            f"--tz {name!r} is not a time zone; give an IANA name such as Europe/Berlin, or UTC"
        ) from exc


def _from_epoch(number: float) -> datetime:
    """An epoch number in s, ms, µs or ns (told apart by size: dates 1973 to 5138)."""
    for scale in (1.0, 1e3, 1e6, 1e9):
        if abs(number) < 1e11 * scale:
            return datetime.fromtimestamp(number / scale, UTC)
    raise ValueError(f"epoch number {number} is out of range")


def _from_match(match: re.Match[bytes]) -> datetime:
    """The moment a PREFIX_RE or _VALUE_RE match names; naive when the text has no zone."""
    groups = match.groupdict()
    if groups.get("epoch"):
        return _from_epoch(float(groups["epoch"]))
    if groups.get("date1"):
        text = b" ".join([groups["date1"], groups["date1year"]]).decode()
        moment = datetime.strptime(text, "%a %b %d %H:%M:%S %Y")
        return moment.replace(tzinfo=UTC) if groups["date1zone"] in _UTC_NAMES else moment
    iso = groups["iso"].replace(b",", b".")
    zone = (groups["zone"] or b"").strip()
    moment = datetime.fromisoformat(iso.decode())
    if not zone:
        return moment
    if zone in _UTC_NAMES:
        return moment.replace(tzinfo=UTC)
    return datetime.fromisoformat(iso.decode() + zone.decode())


def prefix_time(line: bytes) -> tuple[datetime, int] | None:
    """The timestamp a line starts with and where the rest begins, or None (maybe naive)."""
    match = PREFIX_RE.match(line)
    if match is None:
        return None
    end = match.end()
    if end < len(line) and line[end] not in b" \t\r\n":
        return None  # "2025-09-01T06:00:00Zfoo" or a longer number: not a timestamp
    try:
        return _from_match(match), end
    except (ValueError, OverflowError, OSError):
        return None


def value_time(value: Any) -> datetime | None:
    """A record field's time (ISO text, epoch number, or epoch digits as text), or None."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return _from_epoch(float(value))
        if isinstance(value, str):
            text = value.strip()
            if text.replace(".", "", 1).isdigit():
                return _from_epoch(float(text))
            match = _VALUE_RE.fullmatch(text.encode())
            return _from_match(match) if match else None
    except (ValueError, OverflowError, OSError):
        return None
    return None


def shown(text: Any) -> str:
    """A short, printable rendering of a bad time for messages."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text[:40] if isinstance(text, str) else text)
