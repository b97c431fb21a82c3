"""The episode state machine, and the capture format's lines (see parse for the entry point).

An episode runs from the empty document before an event appears until the Events array is
empty again; overlapping events stay in one episode. Its trace starts LEAD_IN_S before the
first event at the latest observation of the empty document (or at that document's first poll
when it was seen for less than LEAD_IN_S). A document whose Events equal the previous one's is a
repeat and collapses into it.

The capture format written by `imds-replay capture` (replay.recording.capture_file) is read
here, line by line: a `{"capture": ...}` header, then `{"t": ..., "document"|"approved"|...}`
lines. Logs (replay.recording.logs) feed polls in through poll, repeats and failed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from replay.core.reference import LEAD_IN_S
from replay.core.timeline import document_problems
from replay.errors import ReplayError
from replay.recording.capture_file import CAPTURE_FORMAT
from replay.recording.episodes import BadLine, BadLineError, Episode, ParsedCapture

LEAD_IN = timedelta(seconds=LEAD_IN_S)
NEVER = datetime.min.replace(tzinfo=UTC)
PROGRESS_BYTES = 1 << 20
"""Bytes read between progress callbacks."""


def _parse_t(text: Any) -> datetime:
    """An ISO-8601 timestamp with a zone (str or ASCII bytes), as an aware datetime."""
    try:
        moment = datetime.fromisoformat(text if type(text) is str else text.decode())
    except (ValueError, UnicodeDecodeError, AttributeError):
        shown = text[:40] if isinstance(text, str | bytes) else text
        raise BadLine(f"not an ISO-8601 timestamp: {shown!r}") from None
    if moment.tzinfo is None:
        raise BadLine(f"timestamp {moment.isoformat()!r} has no zone (add Z or an offset)")
    # Kept as a datetime: converting every line's time to a float would cost more than orjson.
    return moment


def _diagnose(raw: bytes, lineno: int) -> None:
    """Raise BadLine saying why a capture line failed the fast path."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if type(line) is not dict:
        raise BadLine("a capture line must be a JSON object")
    if "t" not in line:
        if "capture" in line:
            raise BadLine("a second capture header; ingest each capture file on its own")
        raise BadLine(f"no 't' timestamp (keys: {', '.join(sorted(line)) or 'none'})")
    _parse_t(line["t"])
    raise AssertionError(f"capture line failed to parse for no known reason: {raw!r}")


def _ids(document: dict[str, Any]) -> str:
    return ", ".join(e["EventId"] for e in document["Events"])


class Parser:
    """A state machine over one file's lines: quiet -> episode -> quiet, or mid (skipped)."""

    def __init__(self, parsed: ParsedCapture) -> None:
        self.p = parsed
        self.doc: dict[str, Any] | None = None  # the current document (first of its repeats)
        self.doc_line = 0
        self.last_at = NEVER  # the latest poll's time (logs): a poll before it is OutOfOrder
        self.known = False  # whether the last outcome was a document (heartbeats observe it)
        self.region = "start"
        self.quiet_since = NEVER
        self.quiet_line = 0
        self.obs: list[datetime] = []
        self.ep_docs: list[tuple[datetime, dict[str, Any], int]] = []

    def observe(self, t: datetime) -> None:
        """The quiet document was seen at t; keep only what can still become a start."""
        if self.region == "quiet":
            self.obs.append(t)

    def prune(self) -> None:
        """Forget observations superseded by a later one at least LEAD_IN before the latest.

        Called between blocks of lines: pruning on every line would cost more.
        """
        if len(self.obs) > 64:
            superseded = bisect.bisect_right(self.obs, self.obs[-1] - LEAD_IN) - 1
            if superseded > 0:
                del self.obs[:superseded]

    def error(self) -> None:
        self.known = False

    # -- polls from logs, in time order (an earlier one raises OutOfOrder) --------------

    def poll(self, t: datetime, doc: Any, lineno: int) -> None:
        if t < self.last_at:
            raise OutOfOrder
        self.last_at = t
        self.p.polls += 1
        self.document(t, doc, lineno)

    def repeats(self, times: list[datetime], first_line: int) -> None:
        """Polls that showed the previous poll's document again, at these times."""
        if times[0] < self.last_at or times != sorted(times):
            raise OutOfOrder
        self.last_at = times[-1]
        self.p.polls += len(times)
        self.known = True
        if self.region == "quiet":
            self.obs.extend(times)

    def failed(self, t: datetime, lineno: int) -> None:
        if t < self.last_at:
            raise OutOfOrder
        self.last_at = t
        self.p.failed_polls += 1
        self.known = False

    def document(self, t: datetime, doc: Any, lineno: int) -> None:
        prev = self.doc
        if doc == prev:
            self.known = True
            self.observe(t)
            return
        problems = list(document_problems(doc, "document"))
        if problems:
            raise BadLine(problems[0].removeprefix("document: "))
        events = doc["Events"]
        inc = doc["DocumentIncarnation"]
        if prev is None:
            self._first(t, doc, lineno)
            return
        prev_events, prev_inc = prev["Events"], prev["DocumentIncarnation"]
        if self.region == "quiet" and not events:
            self._quiet(t, doc, lineno)  # a new empty document; IMDS may reset incarnation
            return
        if events == prev_events:
            if inc < prev_inc:
                raise BadLine(
                    f"DocumentIncarnation went back from {prev_inc} (line {self.doc_line})"
                )
            self.known = True
            return  # an incarnation bump alone is not a change a trace can hold
        if inc <= prev_inc:
            raise BadLine(
                f"Events changed but DocumentIncarnation {inc} is not above {prev_inc} "
                f"(line {self.doc_line})"
            )
        if self.region == "quiet":
            if t <= self.quiet_since:
                raise BadLine(
                    f"timestamp is not after the previous document's (line {self.doc_line})"
                )
            self._open(t, doc, lineno)
        elif self.region == "episode":
            if t <= self.ep_docs[-1][0]:
                raise BadLine(
                    f"timestamp is not after the previous document's (line {self.doc_line})"
                )
            self.ep_docs.append((t, doc, lineno))
            if not events:
                self.p.episodes.append(Episode(tuple(self.ep_docs)))
                self._quiet(t, doc, lineno)
        elif not events:  # the end of an event the capture joined late
            self._quiet(t, doc, lineno)
        self._set(doc, lineno)

    def _not_after(self) -> str:
        return f"timestamp is not after the previous document's (line {self.doc_line})"

    def _set(self, doc: dict[str, Any], lineno: int) -> None:
        self.doc, self.doc_line, self.known = doc, lineno, True

    def _first(self, t: datetime, doc: dict[str, Any], lineno: int) -> None:
        if doc["Events"]:
            self.region = "mid"
            self.p.warnings.append(
                f"{self.p.path}:{lineno}: the capture starts mid-event ({_ids(doc)}); that "
                "episode's start was not seen, so it is skipped"
            )
            self._set(doc, lineno)
        else:
            self._quiet(t, doc, lineno)

    def _quiet(self, t: datetime, doc: dict[str, Any], lineno: int) -> None:
        self.region = "quiet"
        self.quiet_since, self.quiet_line = t, lineno
        self.obs.clear()
        self.obs.append(t)
        self._set(doc, lineno)

    def _open(self, t: datetime, doc: dict[str, Any], lineno: int) -> None:
        assert self.doc is not None
        start = self.quiet_since
        latest = bisect.bisect_right(self.obs, t - LEAD_IN) - 1  # obs[latest] <= t - LEAD_IN
        if latest >= 0 and self.obs[latest] > start:
            start = self.obs[latest]
        self.region = "episode"
        self.ep_docs = [(start, self.doc, self.quiet_line), (t, doc, lineno)]

    def finish(self) -> None:
        if self.region == "episode":
            self.p.warnings.append(
                f"{self.p.path}:{self.ep_docs[1][2]}: the episode starting here is still open "
                f"(the capture ends with {_ids(self.ep_docs[-1][1]) or 'events'} present); "
                "ingest the file again once the capture has grown"
            )

    # -- the capture format -------------------------------------------------------------

    def capture_block(self, block: list[bytes], first: int, skip_bad: bool) -> None:
        """Capture-format lines; heartbeats, most of a long capture, take the inline path."""
        loads, fromiso, obs = orjson.loads, datetime.fromisoformat, self.obs
        observing = self.known and self.region == "quiet"
        for lineno, raw in enumerate(block, first):
            try:
                line = loads(raw)
                t = fromiso(line["t"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                if raw.strip():
                    self.guarded(_diagnose, raw, lineno, skip_bad)
                continue
            if t.tzinfo is not None:
                beat = line.get("heartbeat")
                if type(beat) is dict and "stopped" not in beat:
                    if observing:
                        obs.append(t)
                    continue
                if beat is None:
                    if "error" in line and len(line) == 2:
                        self.known = observing = False
                        continue
                    if line.get("document") == self.doc and self.doc is not None:
                        self.known = True  # the same document again, after an error
                        observing = self.region == "quiet"
                        if observing:
                            obs.append(t)
                        continue
            try:
                self.capture_object(line, t, lineno)
            except BadLine as bad:
                bad_line(self.p, raw, lineno, str(bad), skip_bad)
            observing = self.known and self.region == "quiet"

    def guarded(
        self, handle: Callable[[bytes, int], None], raw: bytes, lineno: int, skip_bad: bool
    ) -> None:
        """handle(raw, lineno), turning a bad line into an error, a skip or a warning."""
        try:
            handle(raw, lineno)
        except BadLine as bad:
            bad_line(self.p, raw, lineno, str(bad), skip_bad)

    def capture_object(self, line: dict[str, Any], t: datetime, lineno: int) -> None:
        if t.tzinfo is None:
            raise BadLine(f"timestamp {line['t']!r} has no zone (add Z or an offset)")
        if "heartbeat" in line:
            if type(line["heartbeat"]) is not dict:
                raise BadLine("heartbeat must be a JSON object")
            if self.known:
                self.observe(t)
            if "stopped" in line["heartbeat"]:
                self.known = False
        elif "document" in line:
            self.document(t, line["document"], lineno)
        elif "approved" in line:
            ids = line["approved"]
            if type(ids) is not list or not all(isinstance(i, str) and i for i in ids):
                raise BadLine("approved must be a list of EventIds")
            self.p.approvals.append((t, tuple(ids)))
        elif "error" in line:
            self.error()
        else:
            raise BadLine(f"unknown line kind (keys: {', '.join(sorted(line))})")


class OutOfOrder(Exception):
    """A log's poll is earlier than the one before it: the file must be read sorted."""


def read_header(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not a capture header: {exc}") from None
    header = line.get("capture") if type(line) is dict else None
    if type(header) is not dict or type(header.get("format")) is not int:
        raise BadLine('a capture file starts with {"capture": {"format": ..., ...}}')
    if header["format"] > CAPTURE_FORMAT:
        raise ReplayError(
            f"{path}: written in capture format {header['format']}; this build of imds-replay "
            f"reads format {CAPTURE_FORMAT} and older (upgrade imds-replay)"
        )
    result: dict[str, Any] = header
    return result


def bad_line(parsed: ParsedCapture, raw: bytes, lineno: int, why: str, skip_bad: bool) -> None:
    if not raw.endswith(b"\n"):
        parsed.warnings.append(
            f"{parsed.path}:{lineno}: the last line is cut short (a capture killed "
            f"mid-write?) and was dropped: {why}"
        )
        return
    error = BadLineError(parsed.path, lineno, why)
    if not skip_bad:
        raise error from None
    parsed.skipped.append(error)
