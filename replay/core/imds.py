"""The IMDS wire format: api-versions, rendering a document for a client, error bodies.

Pure: standard library and orjson only. How a request is checked (headers, query) is the
server's business (replay.server.imds); what the answers look like is decided here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from replay.core.schedule import Transition
from replay.core.timeline import format_rfc1123

# Oldest first. Each version shows the fields (and event types) it knew.
VERSIONS = (
    "2017-03-01",
    "2017-08-01",
    "2017-11-01",
    "2019-01-01",
    "2019-04-01",
    "2019-08-01",
    "2020-07-01",
)
LATEST_VERSION = VERSIONS[-1]
"""The newest Scheduled Events api-version: what documentation, status and push use."""
VERSION_SET = frozenset(VERSIONS)
NEWEST_VERSIONS = list(reversed(VERSIONS[-3:]))
"""What an error about the api-version lists as "newest-versions", newest first."""
INSTANCE_VERSIONS = (
    *VERSIONS,
    "2017-04-02",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-06-01",
    "2019-06-04",
    "2019-11-01",
    "2020-06-01",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
    "2025-04-07",
)
"""api-versions that /metadata/instance accepts."""
INSTANCE_VERSION_SET = frozenset(INSTANCE_VERSIONS)
BASE_FIELDS = ("EventId", "EventStatus", "EventType", "ResourceType", "Resources", "NotBefore")
ADDED_FIELDS = {
    "2019-04-01": "Description",
    "2019-08-01": "EventSource",
    "2020-07-01": "DurationInSeconds",
}
ADDED_TYPES = {"2017-11-01": "Preempt", "2019-01-01": "Terminate"}
CONTENT_TYPE = "application/json; charset=utf-8"


@functools.lru_cache(maxsize=64)  # a handful of api-versions; render() asks each time
def fields_for(version: str) -> tuple[str, ...]:
    """The event keys an api-version shows, in the service's order."""
    added = [field for since, field in ADDED_FIELDS.items() if version >= since]
    return (*BASE_FIELDS, *added)


@functools.lru_cache(maxsize=64)
def hidden_types_for(version: str) -> frozenset[str]:
    """Event types an api-version did not know yet (not shown to its clients)."""
    return frozenset(t for since, t in ADDED_TYPES.items() if version < since)


def error_body(message: str, *, versions: bool = False) -> bytes:
    """IMDS's error shape: {"error": ...} and, for version problems, "newest-versions"."""
    body: dict[str, Any] = {"error": message}
    if versions:
        body["newest-versions"] = NEWEST_VERSIONS
    return orjson.dumps(body)


ERR_METADATA = "Bad request. Required metadata header not specified"
ERR_NO_VERSION = (
    "Bad request. api-version was not specified in the request. "
    "For more information refer to aka.ms/azureimds"
)
ERR_BAD_VERSION = (
    "Bad request. api-version is invalid or was not specified in the request. "
    "For more information refer to aka.ms/azureimds"
)
ERR_FORWARDED = "Bad request. Requests with the X-Forwarded-For header are not allowed"
ERR_NOT_FOUND = "Not found"
ERR_METHOD = "Method not allowed"
ERR_BODY = "Bad request. The request body is not a valid StartRequests document"
ERR_TOO_MANY = "Too many requests"
ERR_FORMAT = "Bad request. format must be json or text"


def parse_start_requests(body: bytes) -> list[str] | None:
    """EventIds of a StartRequests body, or None when it is malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("StartRequests"), list):
        return None
    ids = []
    for item in doc["StartRequests"]:
        if not isinstance(item, dict) or not isinstance(item.get("EventId"), str):
            return None
        ids.append(item["EventId"])
    return ids


def render(
    transition: Transition,
    version: str,
    *,
    event_id: Callable[[str], str],
    wall_of: Callable[[float], datetime],
    resources: Sequence[str] | None,
) -> bytes:
    """The document bytes a client of this api-version sees for a transition."""
    fields = fields_for(version)
    hidden = hidden_types_for(version)
    events = []
    for state in transition.events:
        source = state.event
        if source["EventType"] in hidden:
            continue
        shown = {key: source[key] for key in fields if key in source}
        shown["EventId"] = event_id(state.event_id)
        shown["EventStatus"] = state.status
        if resources is not None:
            shown["Resources"] = list(resources)
        if state.status == "Started" or state.not_before_s is None:
            shown["NotBefore"] = ""
        else:
            shown["NotBefore"] = format_rfc1123(wall_of(state.not_before_s))
        events.append(shown)
    body = orjson.dumps({"DocumentIncarnation": transition.incarnation, "Events": events})
    # orjson's bytes keep its whole ~4 KB buffer; bodies are cached and kept in the session's
    # history, so keep a copy of just the bytes (benchmarks/sessions_scale.py).
    return bytes(memoryview(body))
