"""Finding the IMDS document in a log record: at any depth, or as JSON text inside a string.

A document is a JSON object with `DocumentIncarnation` and `Events`. A record holds it directly
(a shell loop's line), under a field (a structured handler log's `Event`), or as text inside a
string field, often after a prefix (journald's `MESSAGE: "scheduled events: {...}"`). A place
is a path of steps: a key, a list index, or TEXT (parse this string as JSON after its prefix).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from replay.recording.episodes import BadLine

TEXT = None
"""A path step: the value is a string holding JSON text after a prefix."""
MARK = "DocumentIncarnation"

Step = str | int | None
Place = tuple[Step, ...]

_decoder = json.JSONDecoder()


def is_document(value: Any) -> bool:
    """Whether value looks like a Scheduled Events document (validation comes later)."""
    return type(value) is dict and MARK in value and "Events" in value


def is_error_body(value: Any) -> bool:
    """An IMDS error body (`{"error": ...}`): what a failed poll prints."""
    return (
        type(value) is dict and "Events" not in value and ("error" in value or "message" in value)
    )


def text_json(text: str | bytes) -> Any:
    """The JSON value in text after a prefix (`scheduled events: {...}`); trailing text is ignored.

    Raises BadLine when the text mentions a document but holds no readable JSON object.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    start = text.find("{")
    if start < 0:
        raise BadLine(f"mentions {MARK} but holds no JSON object")
    try:
        return orjson.loads(text[start:])
    except orjson.JSONDecodeError:
        pass
    try:
        return _decoder.raw_decode(text, start)[0]
    except ValueError as exc:
        raise BadLine(f"mentions {MARK} but its JSON does not parse: {exc}") from None


def parse_path(text: str) -> Place:
    """A dotted field path from the command line (`Event`, `data.0.doc`) as steps."""
    steps: list[Step] = []
    for part in text.split("."):
        if not part:
            raise ValueError(f"field path {text!r} has an empty step")
        steps.append(int(part) if part.isdigit() else part)
    return tuple(steps)


def show_path(path: Place) -> str:
    """A place for people: `Event`, `MESSAGE (text)`, `the record` for the record itself."""
    shown = ".".join(str(s) for s in path if s is not TEXT)
    if path and path[-1] is TEXT:
        return f"{shown} (as text)" if shown else "the text"
    return shown or "the record"


def follow(value: Any, path: Place) -> Any:
    """The value at path, or None where the path does not lead; a string at the end is read as
    text holding JSON (so `--document-field MESSAGE` works on journald)."""
    for step in path:
        if step is TEXT:
            if type(value) is not str or MARK not in value:
                return None
            value = text_json(value)
        elif type(value) is dict:
            value = value.get(step)
        elif type(value) is list and type(step) is int and step < len(value):
            value = value[step]
        else:
            return None
    if type(value) is str and MARK in value:
        return text_json(value)
    return value


def find_documents(value: Any, limit: int = 8) -> list[tuple[Place, Any]]:
    """Every document in a record, with its place, in the record's order (at most limit)."""
    found: list[tuple[Place, Any]] = []
    stack: list[tuple[Place, Any]] = [((), value)]
    while stack and len(found) < limit:
        path, v = stack.pop()
        kind = type(v)
        if kind is dict:
            if MARK in v and "Events" in v:
                found.append((path, v))
                continue
            stack.extend(((*path, k), x) for k, x in reversed(v.items()))
        elif kind is list:
            stack.extend(((*path, i), x) for i, x in reversed(list(enumerate(v))))
        elif kind is str and MARK in v:
            stack.append(((*path, TEXT), text_json(v)))
    return found


def locate(record: Any, path: Place | None, forced: bool) -> tuple[Place | None, Any]:
    """The record's document and its place: path first (the place the last record used, or
    --document-field when forced), else a search. (None, None) when the record holds none."""
    if path is not None:
        doc = follow(record, path)
        if is_document(doc):
            return path, doc
        if forced:
            return None, None
    found = find_documents(record)
    if not found:
        return None, None
    if len(found) > 1:
        places = ", ".join(show_path(p) for p, _ in found)
        raise BadLine(
            f"holds {len(found)} documents ({places}); pick one with --document-field PATH"
        )
    return found[0]
